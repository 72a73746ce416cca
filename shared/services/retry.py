"""Retry: chosen rows of a finished run sent again as a new attempt of their chunks, once per selection.

``gemini-batch retry RUN --outcome … [--error-status …] [--model M]`` publishes
``{"retry": run, "selection": id, "outcomes", "error_statuses", "model"}`` on ``batch-requests``.
The selection id names the filter, the model and the run's latest attempt of every chunk (which
rows are its latest): the same call made twice, or its message delivered twice, names the same
id and is acted on once; one made before the run changed (another retry since) is stale.

Under the run's claim: the matching latest rows are read from BigQuery (their keys); every input
file is checked to still exist (a run's work files are deleted some days after it ends: replay the
file then) before the run is reopened (COMPLETE or CANCELLED -> RUNNING, ``reopen`` recorded with
the attempt number each chunk gets); then, chunk by chunk, the first input of a chunk with selected
rows (rows carry their chunk) is streamed for the selected keys' original request lines, written as
the new attempt's input, and the attempt
queued: a series of its own (MAX_ATTEMPTS counts from it), on ``model`` when given, counted
against the day's budget. A holder that dies goes on from the chunks recorded (the poller sends
the message again); the run completes and is announced again once the new attempts are collected.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.config import Settings
from shared.core.errors import PermanentError, PipelineError, TransientError
from shared.core.ids import job_key
from shared.core.keys import KeyIndex, compact_keys, key_member
from shared.core.lines import iter_lines
from shared.core.records import RUN_FINISHED, RUN_RUNNING, JobRecord, Run
from shared.ports import Ports
from shared.services.admission import try_admit
from shared.services.attempts import queue_attempt
from shared.services.budget import chunk_estimate, count_retry, day_of, price_of, retry_estimate, retry_label, spent
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, stamp
from shared.services.run_states import record_state
from shared.services.runs import complete_run, latest_attempts

log = logging.getLogger("gbp.retry")
DEFAULT_OUTCOMES: Final = ("FAILED", "MISSING")
KEEP_ALIVE_LINES: Final = 20_000


@dataclass(frozen=True)
class RetryRequest:
    """A checked ``retry`` message."""

    run_id: str
    selection: str
    outcomes: tuple[str, ...] = DEFAULT_OUTCOMES
    error_statuses: tuple[str, ...] = ()
    model: str = ""  # "" = the run's
    approved: bool = False  # a person accepts its cost over the budget limits (gemini-batch retry --approve)
    nonce: str = ""  # names this sending: its answer, if it is not made, is its own (retry --wait reads it)

    def message(self) -> dict[str, Any]:
        """The ``batch-requests`` message."""
        return {
            "retry": self.run_id,
            "selection": self.selection,
            "outcomes": list(self.outcomes),
            "error_statuses": list(self.error_statuses),
            **({"model": self.model} if self.model else {}),
            **({"approved": True} if self.approved else {}),
            **({"nonce": self.nonce} if self.nonce else {}),
        }


def selection_id(
    run_id: str, latest: dict[int, int], outcomes: Iterable[str], error_statuses: Iterable[str], model: str
) -> str:
    """Names a retry: its filter and model, and the run's latest attempt of every chunk (chunk -> attempt)."""
    named = {
        "run": run_id,
        "latest": sorted(latest.items()),
        "outcomes": sorted(set(outcomes)),
        "error_statuses": sorted(set(error_statuses)),
        "model": model,
    }
    return "s" + hashlib.sha256(orjson.dumps(named)).hexdigest()[:16]


def request_for(
    ledger: Ledger, run_id: str, outcomes: Iterable[str], error_statuses: Iterable[str], model: str
) -> RetryRequest:
    """The retry of ``run_id``'s rows as its attempts stand now (what ``gemini-batch retry`` sends)."""
    latest = {chunk: r.attempt for chunk, r in latest_attempts(ledger.jobs_of(run_id)).items()}
    outcomes, error_statuses = tuple(sorted(set(outcomes))), tuple(sorted(set(error_statuses)))
    return RetryRequest(
        run_id, selection_id(run_id, latest, outcomes, error_statuses, model), outcomes, error_statuses, model
    )


def retry(request: RetryRequest, settings: Settings, ports: Ports, inv: Invocation) -> str:
    """Handle a ``retry`` message: "retried", "duplicate", "stale", "nothing", "refused", "over budget" or "busy".

    Every outcome but "retried" and "duplicate" is answered (:func:`answer_uri`), a permanent error too.
    """
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    try:
        return _retry(ledger, request, settings, ports, inv)
    except PermanentError as exc:
        found = ledger.get_run(request.run_id)
        reopen = found[0].reopen if found else {}
        if reopen.get("id") != request.selection or reopen.get("done"):  # (a reopened one is sent again)
            _answer(ledger, request, "failed", str(exc))
        raise


def _retry(ledger: Ledger, request: RetryRequest, settings: Settings, ports: Ports, inv: Invocation) -> str:
    found = ledger.get_run(request.run_id)
    if found is None:
        raise PermanentError(f"retry: unknown run {request.run_id}")
    run = found[0]
    fields = {"run_id": run.run_id, "selection": request.selection}
    if request.selection in run.retries:
        log.info("retry: done before", extra=fields)
        return "duplicate"
    pending = run.reopen if run.reopen and not run.reopen.get("done") else None
    if pending is not None and pending["id"] != request.selection:
        log.warning("retry: another retry of the run is being queued; this one is stale once it is", extra=fields)
        return _answer(ledger, request, "busy", "another retry of the run is being queued")
    if pending is None and run.status in RUN_FINISHED and not run.announced:
        raise TransientError(f"retry of {run.run_id}: the run is being announced; retried")  # a moment from now
    if pending is None and run.status not in RUN_FINISHED:
        log.warning("retry refused: the run has not finished", extra={**fields, "status": run.status})
        return _answer(ledger, request, "refused", f"the run is {run.status}")
    try:
        run, claim = ledger.claim(Run, ledger.run_uri(run.run_id), inv, states=frozenset({*RUN_FINISHED, RUN_RUNNING}))
    except ClaimHeld as exc:
        raise TransientError(f"retry of {run.run_id}: the run is held by another invocation; retried") from exc
    if claim is None:
        return _answer(ledger, request, "refused", f"the run is {run.status}")
    with claim.released_on_error():
        if request.selection in run.retries:  # done by a holder that saved just before this claim
            claim.release()
            return "duplicate"
        outcome, why = _check_claimed(claim, ports, request) if run.reopen.get("id") != request.selection else ("", "")
        if outcome:
            claim.release()
            return _answer(ledger, request, outcome, why)
        if run.reopen.get("id") == request.selection and ledger.cancelled(run.run_id) is not None:
            keys = Selected(KeyIndex())  # cancelled while it was queued: the chunks left keep their rows (no query)
        else:
            keys = select(ports, request)
        selected = keys.count
        if run.reopen.get("id") != request.selection:
            if not selected:
                claim.release()
                log.info("retry: no row matches", extra=fields)
                return _answer(ledger, request, "nothing", "no latest row matches")
            over = [] if request.approved else _over_budget(claim, settings, ports, request, selected)
            if over:
                claim.release()
                log.warning("retry refused: over the budget limits", extra={**fields, "reasons": over})
                return _answer(ledger, request, "over budget", "; ".join(over) + ": approve it (retry --approve)")
            _reopen(claim, request, selected)
        queued = _queue_chunks(claim, settings, ports, keys)
        run.reopen["done"], run.reopen["unmatched"] = True, max(0, selected - queued)
        run.retries.append(request.selection)
        run.claimed_at = ""
        claim.save()
    ledger.activate_run(run.run_id, inv.now())  # (again: a tick that read it announced may have let it go)
    log.info("rows re-submitted by retry", extra={**fields, "rows": queued, "unmatched": run.reopen["unmatched"]})
    try_admit(ledger, settings, ports, inv)
    complete_run(ledger, settings, ports, inv, run.run_id)  # nothing was queued (every key unmatched): done again
    return "retried"


@dataclass
class Selected:
    """A retry's keys (~20 bytes each) and the chunks they are in."""

    keys: KeyIndex
    chunks: set[int] = field(default_factory=set)
    anywhere: bool = False  # some rows have no chunk (loaded before rows had one): every chunk is read

    @property
    def count(self) -> int:
        """How many keys."""
        return self.keys.sealed + len(self.keys.current)

    def in_chunk(self, chunk: int) -> bool:
        """Whether ``chunk`` may hold a selected key (its input must be read)."""
        return self.anywhere or chunk in self.chunks


def select(ports: Ports, request: RetryRequest) -> Selected:
    """The latest rows a retry chooses, from BigQuery."""
    chunks: set[int] = set()
    anywhere = False

    def keys() -> Iterator[str]:
        nonlocal anywhere
        for key, chunk in ports.warehouse.selected_keys(
            request.run_id, list(request.outcomes), list(request.error_statuses)
        ):
            if chunk is None:
                anywhere = True
            else:
                chunks.add(chunk)
            yield key

    index = compact_keys(keys())
    return Selected(index, chunks, anywhere)


def _over_budget(claim: Claim[Run], settings: Settings, ports: Ports, request: RetryRequest, rows: int) -> list[str]:
    """Why the retry may not run without a person's approval (MAX_RUN_COST_USD, MAX_DAILY_COST_USD)."""
    run = claim.record
    if not settings.budget_guard:
        return []
    model = request.model or run.model
    price = price_of(settings, ports, model, run.run_id)
    if price is None:
        return [f"the model {model} has no price: the retry's cost cannot be estimated"]
    share = rows / run.requests if run.requests else 1.0  # the run's counts, in proportion to the rows chosen
    state = run.staged.get("estimator") or [run.requests]
    expected = float(chunk_estimate(run, price, state, share)["expected_usd"] or 0)
    reasons = []
    so_far = float(run.cost.get("usd") or 0.0)  # what the run's attempts cost until now
    if settings.max_run_cost_usd is not None and so_far + expected > settings.max_run_cost_usd:
        reasons.append(
            f"the run's cost {so_far:.2f} USD and this retry's expected {expected:.2f} USD are over "
            f"MAX_RUN_COST_USD {settings.max_run_cost_usd:.2f}"
        )
    if settings.max_daily_cost_usd is not None:
        day = day_of(claim.inv.now())
        today = spent(claim.ledger, day)
        if today + expected > settings.max_daily_cost_usd:
            reasons.append(
                f"{day}: {today:.2f} USD spent or expected, with this retry {today + expected:.2f}, "
                f"is over MAX_DAILY_COST_USD {settings.max_daily_cost_usd:.2f}"
            )
    return reasons


def answer_uri(ledger: Ledger, run_id: str, selection: str, nonce: str = "") -> str:
    """Where a retry that was not made says why (``gemini-batch retry --wait`` reads it).

    Each sending has its own (``nonce``): an earlier one's answer (refused over budget yesterday, a
    redelivery) is never taken for this one's.
    """
    return f"{ledger.root}/retries/{run_id}/{selection}{'.' + nonce if nonce else ''}.json"


def _answer(ledger: Ledger, request: RetryRequest, outcome: str, why: str) -> str:
    """Record why the retry was not made (create-only, best effort); return ``outcome``."""
    body = orjson.dumps({"outcome": outcome, "why": why})
    with contextlib.suppress(PipelineError):  # (a redelivery of the same sending answers once)
        uri = answer_uri(ledger, request.run_id, request.selection, request.nonce)
        ledger.store.write(uri, body, if_generation_match=0)
    return outcome


def _check_claimed(claim: Claim[Run], ports: Ports, request: RetryRequest) -> tuple[str, str]:
    """Why a new retry may not start on the claimed run (("", "") = it may): checked on what the claim read."""
    run, ledger = claim.record, claim.ledger
    fields = {"run_id": run.run_id, "selection": request.selection}
    if run.status not in RUN_FINISHED or not run.announced:
        log.warning("retry refused: another retry of the run is under way", extra={**fields, "status": run.status})
        return "busy", "another retry of the run is under way"
    records = ledger.jobs_of(run.run_id)
    latest = {chunk: r.attempt for chunk, r in latest_attempts(records).items()}
    if selection_id(run.run_id, latest, request.outcomes, request.error_statuses, request.model) != request.selection:
        log.warning("retry refused: the run changed since the rows were chosen (stale)", extra=fields)
        return "stale", "the run changed since the rows were chosen: choose them again"
    gone = [r.input_uri for r in records if r.attempt == 1 and ports.store.generation(r.input_uri) is None]
    if gone:
        log.error("retry refused: the run's staged inputs are deleted; replay its file", extra={**fields,
                  "gcs_uri": gone[0], "missing_files": len(gone)})  # fmt: skip
        return "refused", "its staged inputs are deleted (work_retention_days after it ended): replay its file"
    return "", ""


def _reopen(claim: Claim[Run], request: RetryRequest, rows: int) -> None:
    """The run RUNNING again, with the attempt number every chunk's retry gets (fixed before any is queued)."""
    run, ledger = claim.record, claim.ledger
    latest = latest_attempts(ledger.jobs_of(run.run_id))
    run.reopen = {
        "id": request.selection,
        "outcomes": list(request.outcomes),
        "error_statuses": list(request.error_statuses),
        "model": request.model,
        "at": stamp(claim.inv.now()),
        "rows": rows,
        "next": {str(chunk): record.attempt + 1 for chunk, record in latest.items()},
        "chunks": {},
        "done": False,
    }
    ledger.store.delete(ledger.cancel_uri(run.run_id))  # a cancelled run goes on
    now = claim.inv.now()
    for record in latest.values():  # kept while the retry is made: the lifecycle counts from now again
        with contextlib.suppress(PermanentError):
            ledger.store.set_custom_time(_first_input(ledger, run.run_id, record), now)
    run.announced, run.finished_at, run.cancel = False, "", {}
    run.counts, run.attempts, run.cost = {}, 0, {}  # those of its last end: known again at the next
    ledger.activate_run(run.run_id, now)  # followed before it is RUNNING: a crash in between leaves it followed
    claim.move("reopen")


def _first_inputs(ledger: Ledger, run_id: str) -> dict[int, JobRecord]:
    return {r.chunk: r for r in ledger.jobs_of(run_id) if r.attempt == 1}


def _first_input(ledger: Ledger, run_id: str, latest: JobRecord) -> str:
    """The chunk's first attempt's input (every request line of the chunk)."""
    if latest.attempt == 1:
        return latest.input_uri
    found = ledger.get_job(run_id, latest.chunk, 1)
    return found[0].input_uri if found else latest.input_uri


def _queue_chunks(claim: Claim[Run], settings: Settings, ports: Ports, keys: Selected) -> int:
    """Every chunk's selected request lines written and queued as its next attempt; the rows queued.

    A chunk whose input cannot be read (deleted after all) keeps its rows as they are, and so do
    the chunks left when the run is cancelled meanwhile: the retry always ends (``errors``).
    """
    run, ledger, inv = claim.record, claim.ledger, claim.inv
    reopen, model = run.reopen, run.reopen.get("model", "")
    price = price_of(settings, ports, model or run.model, run.run_id)
    firsts = _first_inputs(ledger, run.run_id)
    queued = sum(int(n) for n in reopen["chunks"].values())
    for chunk_text, attempt in sorted(reopen["next"].items(), key=lambda item: int(item[0])):
        if chunk_text in reopen["chunks"]:
            continue
        chunk, first = int(chunk_text), firsts[int(chunk_text)]
        existing = ledger.get_job(run.run_id, chunk, attempt)
        if existing is not None:  # queued by a holder that died before recording it
            rows = existing[0].requests
            count_retry(ledger, existing[0], retry_label(run.run_id, reopen["id"]))  # (counted once: one name)
        elif ledger.cancelled(run.run_id) is not None:
            rows = 0
            reopen["stopped"] = "the run was cancelled before every chunk was queued"
        elif not keys.in_chunk(chunk):
            rows = 0  # none of its rows is chosen: its input is not read
        else:
            name = f"{job_key(run.run_id, chunk, attempt)}.{reopen['id']}.jsonl"
            uri = f"gs://{settings.io_bucket}/staging/{run.run_id}/{name}"
            try:
                rows = _write_selected(claim, ports, first.input_uri, uri, keys.keys, settings.max_line_bytes + 1024)
            except PermanentError as exc:
                log.error("retry: a chunk's input cannot be read; its rows stay as they are",
                          extra={"run_id": run.run_id, "chunk": chunk, "error": str(exc)})  # fmt: skip
                rows = 0
                reopen.setdefault("errors", {})[chunk_text] = str(exc)
            if rows:
                expected = retry_estimate(run, price, first, rows)  # counted in the day (count_retry)
                child = queue_attempt(
                    ledger, settings, inv, run.run_id, chunk, attempt, uri, rows, expected,
                    model=model, base=attempt,
                )  # fmt: skip
                count_retry(ledger, child, retry_label(run.run_id, reopen["id"]))
        reopen["chunks"][chunk_text] = rows
        queued += rows
        claim.save()
    record_state(claim, settings, ports)
    return queued


def _write_selected(claim: Claim[Run], ports: Ports, source: str, target: str, keys: KeyIndex, cap: int) -> int:
    """The lines of ``source`` whose key is in ``keys``, written to ``target``; how many."""
    written = 0
    with ports.store.open(source) as inputs, ports.store.writer(target) as out:
        for number, line in enumerate(iter_lines(inputs, cap), 1):
            if number % KEEP_ALIVE_LINES == 0:
                claim.keep_alive()
            if not isinstance(line, bytes) or not line.strip():
                continue  # staged lines are validated: never over the cap
            if keys.earlier(str(key_member(line))) is not None:
                out.write(line + b"\n")
                written += 1
    if not written:
        ports.store.delete(target)
    return written


__all__ = ["DEFAULT_OUTCOMES", "RetryRequest", "request_for", "retry", "selection_id"]
