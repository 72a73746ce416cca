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

``LOAD_WINDOW_SECONDS=0`` loads every file at once, one job each (loads.py alone). A file
registered before the setting changed stays in its window (its length is in its entry, its
marker and its record), and the poller loads every window it finds, whatever the setting.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from shared.config import Settings
from shared.core.errors import PermanentError, PipelineError, StillRunning, TransientError
from shared.core.ids import load_job_id
from shared.core.records import WINDOW_DONE, WINDOW_LOADING, Window
from shared.ports import Ports
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, lease_left, stamp
from shared.services.loads import DONE, FAILED, LOAD_NEEDS, load_once, owner_of

log = logging.getLogger("gbp.windows")
WINDOW_TABLES: Final = ("predictions", "batch_jobs", "run_states")
MAX_SOURCES: Final = 10_000  # source URIs one load job takes
SPLIT: Final = "SPLIT"
RETRY_SECONDS: Final = 60
DATA_REASONS: Final = frozenset({"invalid"})  # a load refused for what is in its files: split to find which


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


def _folder(seconds: int, window: int) -> str:
    return f"s{seconds}-w{window:010d}"


def _marker(ledger: Ledger, table: str, seconds: int, window: int, source: str) -> str:
    return f"{_pending(ledger, table)}{_folder(seconds, window)}/{source.removeprefix('gs://')}"


def settle(claim: Claim[Any], name: str, table: str, source_uri: str, settings: Settings, ports: Ports) -> bool:
    """The file ``source_uri`` loaded into ``table`` once, as the load ``name`` of the claimed record.

    True once it is loaded; False while its window has not loaded it yet. PermanentError when
    it cannot be loaded for its data. With LOAD_WINDOW_SECONDS=0 it is loaded at once.
    """
    entry: dict[str, Any] | None = claim.record.loads.get(name)
    if (entry is None and settings.load_window_seconds == 0) or (entry is not None and "window" not in entry):
        load_once(claim, name, table, source_uri, ports)  # no windows (or an immediate load recorded before)
        return True
    ledger, now = claim.ledger, claim.inv.now()
    if entry is None:
        seconds = settings.load_window_seconds
        entry = {"table": table, "source": source_uri, "seconds": seconds, "window": window_of(now, seconds)}
        claim.record.loads[name] = entry
        claim.save()  # recorded before the marker: a successor registers the same file in the same window
    if entry.get("state") == DONE:
        return True
    if entry.get("state") == FAILED:
        raise PermanentError(f"load of {entry['source']} into {table} failed: {entry.get('errors', [])[-1:]}")
    seconds = int(entry["seconds"])
    found = ledger.store.read(ledger.window_uri(table, seconds, entry["window"]))
    if found is None:
        ledger.store.write(_marker(ledger, table, seconds, entry["window"], entry["source"]), b"")
        return False
    window = Window.from_json(orjson.loads(found[0]))
    if entry["source"] not in window.sources:  # the window was made before the marker came: a later one
        entry["window"] = max(window_of(now, seconds), entry["window"] + 1)
        claim.save()
        ledger.store.write(_marker(ledger, table, seconds, entry["window"], entry["source"]), b"")
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


def register(claim: Claim[Any], name: str, table: str, source_uri: str, settings: Settings, ports: Ports) -> None:
    """Register ``source_uri`` for loading into ``table`` as the load ``name`` and go on: nobody waits for it.

    For files no step depends on (a run's ``run_states`` rows). Its window loads it; a marker
    that comes too late for its window is moved on to the current one by the loader (the file
    has no owner to wake). With LOAD_WINDOW_SECONDS=0 it is loaded at once.
    """
    if settings.load_window_seconds == 0:
        try:
            load_once(claim, name, table, source_uri, ports)
        except PermanentError:  # nobody waits for it: a file BigQuery refuses stops nothing
            log.exception("file not loaded", extra={"table": table, "gcs_uri": source_uri})
        return
    entry: dict[str, Any] | None = claim.record.loads.get(name)
    if entry is None:
        seconds, window = settings.load_window_seconds, window_of(claim.inv.now(), settings.load_window_seconds)
        entry = {"table": table, "source": source_uri, "seconds": seconds, "window": window}
        claim.record.loads[name] = entry
        claim.save()  # recorded before the marker (one name, one file)
    claim.ledger.store.write(_marker(claim.ledger, table, int(entry["seconds"]), entry["window"], entry["source"]), b"")


def load_windows(ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, reserve: float) -> dict[str, int]:
    """Load every closed window of every table (the poller's tick); keep ``reserve`` seconds of the invocation.

    Every window found is loaded, whatever LOAD_WINDOW_SECONDS says now. A window that cannot
    be loaded (BigQuery failed, a table missing) stops its table until the next tick, never
    the other table.
    """
    counts = {"windows": 0, "files": 0, "woken": 0, "window_errors": 0}
    for table in WINDOW_TABLES:
        by_window: dict[tuple[int, int], list[str]] = defaultdict(list)
        prefix = _pending(ledger, table)
        for uri in ledger.store.list(prefix):
            name, _, path = uri.removeprefix(prefix).partition("/")
            try:
                seconds, window = (int(part[1:]) for part in name.split("-"))
            except ValueError:
                log.error("unreadable load marker: ignored", extra={"gcs_uri": uri})
                continue
            by_window[(seconds, window)].append(f"gs://{path}")
        now = inv.now()
        for seconds, window in sorted(by_window, key=lambda sw: (sw[1] + 1) * sw[0]):  # by their end
            if not is_closed(window, seconds, now):
                continue
            if inv.time_left() < reserve + 2 * LOAD_NEEDS:
                return counts
            sources = by_window[(seconds, window)]
            found = ledger.store.read(ledger.window_uri(table, seconds, window))
            if found is not None and lease_left(Window.from_json(orjson.loads(found[0])).retry_at, now, 0) > 0:
                break  # refused for a reason outside its files: it waits for its next try, and so does its table
            try:
                loaded = _load_window(ledger, ports, inv, table, seconds, window, sources)
                counts["woken"] += _sweep(ledger, settings, ports, inv, reserve, table, seconds, window, sources)
            except ClaimHeld:
                continue  # another tick is loading it
            except StillRunning:  # a long load: the next tick waits on (under the same job id)
                log.info("load window still loading", extra={"table": table, "window": _folder(seconds, window)})
                break
            except PipelineError as exc:
                counts["window_errors"] += 1
                log.error(
                    "load window not loaded: tried again next tick",
                    extra={"table": table, "window": _folder(seconds, window), "error": str(exc)},
                )
                break
            counts["windows"] += loaded
            counts["files"] += len(sources) if loaded else 0
    return counts


def _load_window(
    ledger: Ledger, ports: Ports, inv: Invocation, table: str, seconds: int, window: int, sources: list[str]
) -> int:
    """Load the window (1), or find it loaded already (0)."""
    files = sorted(set(sources))
    parts = [
        {"name": f"p{n}", "start": start, "end": min(start + MAX_SOURCES, len(files))}
        for n, start in enumerate(range(0, len(files), MAX_SOURCES))
    ]
    new = Window(table, window, seconds, sources=files, parts=parts, updated_at=stamp(inv.now()))
    record, claim = ledger.claim(
        Window, ledger.window_uri(table, seconds, window), inv, create=new, states=frozenset({WINDOW_LOADING})
    )
    if claim is None:
        return 0
    with claim.released_on_error():
        index = 0
        while index < len(record.parts):  # grows when a part is split
            part = record.parts[index]
            index += 1
            if part.get("state") in (FAILED, SPLIT) or record.loads.get(part["name"], {}).get("state") == DONE:
                continue
            chunk = record.sources[part["start"] : part["end"]]
            try:
                load_once(claim, part["name"], table, chunk, ports)
            except PermanentError as exc:
                entry = record.loads.get(part["name"], {})
                data = entry.get("state") == FAILED and entry.get("reason") in DATA_REASONS
                record.data_failures += data
                if not data or record.data_failures > _split_budget(len(record.sources)):
                    # Not one file's fault (access, a missing table, a schema the table does not
                    # have): tried again under the next job id, later each time; nothing is split.
                    _retry_later(claim, part["name"])
                    raise TransientError(f"load of {len(chunk)} files into {table}: {exc}") from exc
                _split(record, part, str(exc))
                claim.save()
                log.warning("window load failed for its data: split", extra={"table": table, "files": len(chunk)})
        record.status, record.claimed_at, record.updated_at = WINDOW_DONE, "", stamp(inv.now())
        claim.save()
    log.info(
        "load window done",
        extra={"table": table, "window": _folder(seconds, window), "files": len(record.sources),
               "failed": len(record.failed), "load_jobs": len(record.loads)},
    )  # fmt: skip
    return 1


def _split_budget(files: int) -> int:
    """Data failures that isolate one bad file by halving; past them, the fault is not one file's."""
    return 2 * max(1, math.ceil(math.log2(max(files, 2)))) + 1


def _retry_later(claim: Claim[Window], name: str) -> None:
    """A load refused for a reason outside one file: its next job id, tried after a backoff.

    RETRY_SECONDS, doubling up to an hour: a fault that lasts costs ~24 failed loads a day,
    which count against the table's 1,500.
    """
    record = claim.record
    entry = record.loads.get(name)
    if entry is not None and entry.get("state") == FAILED:
        entry.pop("state")
        entry["version"] += 1
        entry["job_id"] = load_job_id(name, owner_of(claim), entry["version"])
    record.failures += 1
    pause = min(RETRY_SECONDS * 2 ** (record.failures - 1), 3600)
    record.retry_at = stamp(claim.inv.now() + timedelta(seconds=pause))
    claim.save()


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
    """Whom to wake once a staged file is loaded: the attempt of ``rows/<run>/<key>.g<n>[.job].ndjson``.

    For a run's rejected lines (``rows/<run>/invalid.g<n>.ndjson``) its chunk 0, attempt 1, whose
    collector completes the run (a run with rejected lines has at least one valid one). None for
    a file nobody waits for (a run's state rows, ``rows/<run>/run.s<n>.g<n>.ndjson``).
    """
    folder, name = uri.rsplit("/", 2)[-2:]
    key = name.split(".", 1)[0]
    if key == "invalid":
        return folder, 0, 1
    if key == "run":
        return None
    try:
        run_id, chunk, attempt = key.rsplit("-", 2)
        return run_id, int(chunk.removeprefix("c")), int(attempt.removeprefix("a"))
    except ValueError:
        return None


def _sweep(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    reserve: float,
    table: str,
    seconds: int,
    window: int,
    sources: list[str],
) -> int:
    """A loaded window's markers deleted and their owners woken (a marker that came too late: its owner moves on).

    Within the invocation's time: what is left is swept (its owners woken again) next tick.
    """
    found = ledger.store.read(ledger.window_uri(table, seconds, window))
    if found is None:
        return 0
    record = Window.from_json(orjson.loads(found[0]))
    if record.status != WINDOW_DONE:
        return 0
    loaded = set(record.sources)
    woken: set[tuple[str, int, int]] = set()
    for source in sorted(sources):
        if inv.time_left() < reserve:
            break
        owner = owner_of_file(source)
        if owner is None and source not in loaded:  # came too late, and nobody would register it again: moved on
            later = window_of(inv.now(), seconds)
            ledger.store.write(_marker(ledger, table, seconds, max(later, window + 1), source), b"")
            log.warning("load marker too late for its window: moved on", extra={"table": table, "gcs_uri": source})
        if owner is not None and owner not in woken:  # woken before its marker goes: a crash wakes it again
            run_id, chunk, attempt = owner
            ports.bus.publish(settings.batch_finished_topic, {"run_id": run_id, "chunk": chunk, "attempt": attempt})
            woken.add(owner)
        ledger.store.delete(_marker(ledger, table, seconds, window, source))
    return len(woken)
