"""Loads batched per table and time window: BigQuery takes 1,500 load jobs per table per day.

One load per job attempt would stop a deployment that collects a few thousand small files a
day. So a collector does not load its files itself: it *registers* each one in the current
window of its table (``LOAD_WINDOW_SECONDS`` long) and the poller loads every closed window in
one load job (a job takes up to 10,000 files): at most one load per table per window, however
many files, e.g. 720 a day at 120 s.

Exactly once:

1. The owner (an attempt's claim) records ``{"window": w, "source": uri}`` in its own
   ``loads`` entry, then writes a marker ``ledger/loads/<table>/pending/w<w>/<bucket>/<path>``.
2. Once the window is closed (plus a grace), a loader lists its markers and creates the
   window record with the sorted file list, create-only: whoever wins, that list is the
   window's for good, fixed before any load job exists; its jobs are loads.py's (recorded
   ids, versions). A part that fails for its data is split in two until the bad file is alone
   (recorded in ``failed``), so one bad file never holds the others back.
3. The owner looks at its window: loaded with its file -> DONE; its file alone in a failed
   load -> FAILED; the window made without its file (the marker came too late) -> it
   registers again in the current window. A file is thus in at most one window's list.
4. The loader deletes the window's markers and publishes ``batch-finished`` for each owner
   (whose collection goes on from its records); a crash before that is done again next tick.

``LOAD_WINDOW_SECONDS=0`` loads every file at once, one job each (loads.py alone).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Any, Final

import orjson

from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.records import WINDOW_DONE, WINDOW_LOADING, Window
from shared.ports import Ports
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, stamp
from shared.services.loads import DONE, FAILED, LOAD_NEEDS, load_once

log = logging.getLogger("gbp.windows")
WINDOW_TABLES: Final = ("predictions", "batch_jobs")
MAX_SOURCES: Final = 10_000  # source URIs one load job takes
SPLIT: Final = "SPLIT"


class AwaitingLoad(Exception):
    """A registered file is not loaded yet: its window loads it, then its owner is woken."""


def window_of(now: datetime, seconds: int) -> int:
    """The window ``now`` falls in."""
    return int(now.timestamp() // seconds)


def is_closed(window: int, seconds: int, now: datetime) -> bool:
    """No file is registered in ``window`` any more (its end plus a grace for slow registrations)."""
    return now.timestamp() >= (window + 1) * seconds + min(30.0, float(seconds))


def _pending(ledger: Ledger, table: str) -> str:
    return f"{ledger.root}/loads/{table}/pending/"


def _marker(ledger: Ledger, table: str, window: int, source: str) -> str:
    return f"{_pending(ledger, table)}w{window:010d}/{source.removeprefix('gs://')}"


def settle(claim: Claim[Any], name: str, table: str, source_uri: str, settings: Settings, ports: Ports) -> bool:
    """The file ``source_uri`` loaded into ``table`` once, as the load ``name`` of the claimed record.

    True once it is loaded; False while its window has not loaded it yet. PermanentError when
    it cannot be loaded for its data. With LOAD_WINDOW_SECONDS=0 it is loaded at once.
    """
    seconds = settings.load_window_seconds
    entry: dict[str, Any] | None = claim.record.loads.get(name)
    if seconds == 0 or (entry is not None and "window" not in entry):  # an entry of an immediate load goes on
        load_once(claim, name, table, source_uri, ports)
        return True
    ledger, now = claim.ledger, claim.inv.now()
    if entry is None:
        entry = {"table": table, "source": source_uri, "window": window_of(now, seconds)}
        claim.record.loads[name] = entry
        claim.save()  # recorded before the marker: a successor registers the same file in the same window
    if entry.get("state") == DONE:
        return True
    if entry.get("state") == FAILED:
        raise PermanentError(f"load of {entry['source']} into {table} failed: {entry.get('errors', [])[-1:]}")
    found = ledger.store.read(ledger.window_uri(table, entry["window"]))
    if found is None:
        ledger.store.write(_marker(ledger, table, entry["window"], entry["source"]), b"")
        return False
    window = Window.from_json(orjson.loads(found[0]))
    if entry["source"] not in window.sources:  # the window was made before the marker came: a later one
        entry["window"] = max(window_of(now, seconds), entry["window"] + 1)
        claim.save()
        ledger.store.write(_marker(ledger, table, entry["window"], entry["source"]), b"")
        log.warning(
            "load registered too late for its window: moved on", extra={"table": table, "gcs_uri": entry["source"]}
        )
        return False
    if window.status != WINDOW_DONE:
        return False
    error = window.failed.get(entry["source"])
    entry["state"] = FAILED if error else DONE
    if error:
        entry.setdefault("errors", []).append(error)
    claim.save()
    if error:
        raise PermanentError(f"load of {entry['source']} into {table} failed: {error}")
    return True


def load_windows(ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, reserve: float) -> dict[str, int]:
    """Load every closed window of every table (the poller's tick); keep ``reserve`` seconds of the invocation."""
    counts = {"windows": 0, "files": 0, "woken": 0}
    if settings.load_window_seconds == 0:
        return counts
    for table in WINDOW_TABLES:
        by_window: dict[int, list[str]] = defaultdict(list)
        prefix = _pending(ledger, table)
        for uri in ledger.store.list(prefix):
            name, _, path = uri.removeprefix(prefix).partition("/")
            by_window[int(name.removeprefix("w"))].append(f"gs://{path}")
        for window in sorted(by_window):
            if not is_closed(window, settings.load_window_seconds, inv.now()):
                break
            if inv.time_left() < reserve + 2 * LOAD_NEEDS:
                return counts
            try:
                loaded = _load_window(ledger, settings, ports, inv, table, window, by_window[window])
            except ClaimHeld:
                continue  # another tick is loading it
            counts["windows"] += loaded
            counts["files"] += len(by_window[window]) if loaded else 0
            counts["woken"] += _sweep(ledger, settings, ports, table, window, by_window[window])
    return counts


def _load_window(
    ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, table: str, window: int, sources: list[str]
) -> int:
    """Load the window (1), or find it loaded already (0)."""
    files = sorted(set(sources))
    parts = [
        {"name": f"p{n}", "start": start, "end": min(start + MAX_SOURCES, len(files))}
        for n, start in enumerate(range(0, len(files), MAX_SOURCES))
    ]
    new = Window(table, window, sources=files, parts=parts, updated_at=stamp(inv.now()))
    record, claim = ledger.claim(
        Window, ledger.window_uri(table, window), inv, create=new, states=frozenset({WINDOW_LOADING})
    )
    if claim is None:
        return 0
    with claim.released_on_error():
        index = 0
        while index < len(record.parts):  # grows when a part is split
            part = record.parts[index]
            index += 1
            if part.get("state") in (DONE, FAILED, SPLIT):
                continue
            chunk = record.sources[part["start"] : part["end"]]
            try:
                load_once(claim, part["name"], table, chunk, ports)
            except PermanentError as exc:
                _split(record, part, str(exc))
                log.warning("window load failed for its data: split", extra={"table": table, "files": len(chunk)})
            else:
                part["state"] = DONE
            claim.save()
        record.status, record.claimed_at, record.updated_at = WINDOW_DONE, "", stamp(inv.now())
        claim.save()
    log.info(
        "load window done",
        extra={"table": table, "window": window, "files": len(record.sources), "failed": len(record.failed),
               "load_jobs": len(record.loads)},
    )  # fmt: skip
    return 1


def _split(record: Window, part: dict[str, Any], error: str) -> None:
    """A part refused for its data: in two halves, or, when alone, its file recorded as failed."""
    start, end = part["start"], part["end"]
    if end - start == 1:
        part["state"] = FAILED
        record.failed[record.sources[start]] = error
        return
    part["state"] = SPLIT
    middle = (start + end) // 2
    record.parts += [
        {"name": f"{part['name']}a", "start": start, "end": middle},
        {"name": f"{part['name']}b", "start": middle, "end": end},
    ]


def owner_of_file(uri: str) -> tuple[str, int, int] | None:
    """The job attempt whose rows (or batch_jobs row) a staged file holds: ``rows/<run>/<key>.g<n>[.job].ndjson``."""
    key = uri.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        run_id, chunk, attempt = key.rsplit("-", 2)
        return run_id, int(chunk.removeprefix("c")), int(attempt.removeprefix("a"))
    except ValueError:
        return None


def _sweep(ledger: Ledger, settings: Settings, ports: Ports, table: str, window: int, sources: list[str]) -> int:
    """A loaded window's markers deleted and their owners woken (a marker that came too late: its owner moves on)."""
    found = ledger.store.read(ledger.window_uri(table, window))
    if found is None or Window.from_json(orjson.loads(found[0])).status != WINDOW_DONE:
        return 0
    owners = {owner for owner in map(owner_of_file, sources) if owner is not None}
    for run_id, chunk, attempt in sorted(owners):  # woken before the markers go: a crash wakes them again
        ports.bus.publish(settings.batch_finished_topic, {"run_id": run_id, "chunk": chunk, "attempt": attempt})
    for source in sources:
        ledger.store.delete(_marker(ledger, table, window, source))
    return len(owners)
