"""Collect: a finished job's rows into BigQuery exactly once; retryable rows to the next attempt.

The ``batch-finished`` message is a hint: the ledger (and Vertex) are read again. A collector
claims the attempt (lease, renewed while it works) and goes through steps whose results are
recorded on the attempt, so a successor picks up where a dead or replaced holder stopped:

1. stage: every ``*.jsonl`` under the job's own output prefix is normalized (streaming, in
   blocks); each input key with no output line gets a MISSING row saying why; a key seen
   twice is kept once; the retryable rows' requests are written as the next attempt's
   input. Both files carry this holder's own name and are recorded in one conditional write.
2. load the rows: registered in their table's load window (windows.py), loaded with other
   files by one job; the attempt waits, released, until the loader wakes it (the steps below
   wait for it: a file refused for its data ends the attempt with nothing else done);
3. queue the next attempt (attempts.py; admission.py creates it), 4. load the attempt's ``batch_jobs`` row,
5. COLLECTED, and the run completed when it was the last (runs.py).

A permanent error ends the attempt UNCOLLECTABLE with its reason, never a record that nothing
touches again.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import ExitStack
from typing import Any, BinaryIO, Final

import orjson

from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.failures import missing_reason
from shared.core.ids import job_key
from shared.core.keys import key_member
from shared.core.lines import Oversize, iter_lines
from shared.core.normalize import FAILED, MISSING, UNPARSEABLE_OUTPUT, Normalizer, RowContext, missing_row
from shared.core.records import (
    JOB_COLLECTING,
    JOB_FINISHED,
    JOB_SUBMITTED,
    JOB_TERMINAL,
    VERTEX_FINAL,
    JobRecord,
)
from shared.ports import Ports
from shared.services.admission import try_admit
from shared.services.attempts import finished_message, observe, queue_attempt
from shared.services.budget import count_retry, job_estimate, price_of, retry_estimate
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, stamp
from shared.services.loads import load_once
from shared.services.runs import complete_run
from shared.services.windows import AwaitingLoad, settle

log = logging.getLogger("gbp.collect")
OUTPUT_LINE_CAP: Final = 100 << 20  # BigQuery's largest JSON row; a longer output line becomes a FAILED row
KEEP_ALIVE_LINES: Final = 20_000
GIVE_UP: Final = "batch_jobs_uncollectable"  # the load of an UNCOLLECTABLE attempt's batch_jobs row


def finished_job(message: dict[str, Any]) -> tuple[str, int, int]:
    """``(run_id, chunk, attempt)`` of a ``batch-finished`` message (PermanentError when it is not one)."""
    try:
        return str(message["run_id"]), int(message["chunk"]), int(message["attempt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"not a batch-finished message: {message!r}") from exc


def collect(message: dict[str, Any], settings: Settings, ports: Ports, inv: Invocation) -> str:
    """Handle one ``batch-finished`` message: "collected", "uncollectable", "duplicate" or "not final"."""
    run_id, chunk, attempt = finished_job(message)
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    found = ledger.get_job(run_id, chunk, attempt)
    if found is None:
        raise PermanentError(f"unknown job attempt {job_key(run_id, chunk, attempt)}")
    record = found[0]
    if record.status in JOB_TERMINAL:
        log.info("duplicate: skipped", extra={"run_id": run_id, "job_name": record.job_name})
        complete_run(ledger, settings, ports, inv, run_id)  # in case the holder died between the two
        return "duplicate"
    job = None
    if record.status == JOB_SUBMITTED and record.vertex_state not in VERTEX_FINAL:
        job = ports.jobs.get(record.job_name, record.location)
        if job.state not in VERTEX_FINAL:
            extra = {"run_id": run_id, "job_name": record.job_name, "state": job.state}
            log.info("job not final: ignored", extra=extra)
            return "not final"
    states = frozenset({JOB_SUBMITTED, JOB_FINISHED, JOB_COLLECTING})
    try:
        record, claim = ledger.claim(JobRecord, ledger.job_uri(run_id, chunk, attempt), inv, states=states)
    except ClaimHeld:
        log.info("duplicate: held by another invocation", extra={"run_id": run_id, "job_name": record.job_name})
        return "busy"  # its holder finishes it, or its own event is retried, or the poller republishes it
    if claim is None:
        return "not final" if record.status not in JOB_TERMINAL else "duplicate"
    if record.status == JOB_SUBMITTED and job is not None:  # final on Vertex, not yet seen by the poller
        observe(record, job, inv.now())
    claim.move("collect")
    fields = {"run_id": run_id, "job_name": record.job_name, "chunk": chunk, "attempt": attempt}
    try:
        with claim.released_on_error(keep=(PermanentError,)):
            _collect(claim, ledger, settings, ports, inv)
    except AwaitingLoad:  # released: the window's loader wakes it (batch-finished) once its rows are in
        log.info("rows wait for their load window", extra=fields)
        return "loading"
    except PermanentError as exc:
        with claim.released_on_error():
            _give_up(claim, settings, ports, str(exc))
        log.error("job attempt uncollectable", extra={**fields, "error": str(exc)}, exc_info=True)
        result = "uncollectable"
    else:
        claim.move("collected")
        log.info("results loaded", extra={**fields, "rows": sum(record.counts.values()), "counts": record.counts,
                                          "retried": record.retried})  # fmt: skip
        model = record.staged.get("model", "")
        for outcome, rows in sorted(record.counts.items()):  # one line an outcome: the rows_loaded metric sums them
            log.info("rows collected", extra={**fields, "outcome": outcome, "model": model, "rows": rows})
        result = "collected"
    ledger.deactivate(record)
    complete_run(ledger, settings, ports, inv, run_id)
    return result


def _collect(claim: Claim[JobRecord], ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation) -> None:
    record = claim.record
    if GIVE_UP in record.loads:  # a holder that died had given it up: that decision stands
        raise PermanentError(record.collect_error or "given up by an earlier collector")
    record.collect_error = ""  # a give-up that failed before it was recorded does not stand
    if not record.staged:
        _stage_rows(claim, settings, ports)
    if not settle(claim, "predictions", "predictions", record.staged["rows"], settings, ports):
        # Nothing else before the rows are in: a file refused for its data ends the attempt
        # UNCOLLECTABLE, with no retry queued and no COLLECTED batch_jobs row on its way.
        raise AwaitingLoad(f"{job_key(record.run_id, record.chunk, record.attempt)}: rows registered for loading")
    retry = int(record.staged["retry"])
    if retry and not record.child and ledger.cancelled(record.run_id) is not None:
        retry = 0  # cancelled since its rows were staged: the rows it has stand (retryable, not retried)
        log.info("run cancelled: retryable rows not re-submitted", extra={"run_id": record.run_id})
    if retry and not record.child:
        retry_input, next_attempt = record.staged["retry_input"], record.attempt + 1
        child = queue_attempt(
            ledger, settings, inv, record.run_id, record.chunk, next_attempt, retry_input, retry,
            estimate=record.staged.get("retry_estimate") or {}, model=record.model, base=record.base,
        )  # fmt: skip
        count_retry(ledger, child)  # retries count against the day's budget too
        record.child, record.retried = job_key(record.run_id, record.chunk, next_attempt), retry
        claim.save()
        try_admit(ledger, settings, ports, inv)
        log.info(
            "retryable rows re-submitted",
            extra={"run_id": record.run_id, "chunk": record.chunk, "attempt": next_attempt, "rows": retry},
        )
    if not _load_job_row(claim, settings, ports):
        raise AwaitingLoad(f"{job_key(record.run_id, record.chunk, record.attempt)}: batch_jobs row registered")


def _stage_rows(claim: Claim[JobRecord], settings: Settings, ports: Ports) -> None:
    """Normalize the outputs and add MISSING rows into this holder's own rows file; write the retry input."""
    record = claim.record
    key = job_key(record.run_id, record.chunk, record.attempt)
    tag = f"g{claim.generation}"  # this holder's own names: a replaced holder cannot overwrite its successor's
    rows_uri = f"gs://{settings.work_bucket}/rows/{record.run_id}/{key}.{tag}.ndjson"
    next_key = job_key(record.run_id, record.chunk, record.attempt + 1)
    retry_uri = f"gs://{settings.io_bucket}/staging/{record.run_id}/{next_key}.{tag}.jsonl"
    loaded_at = stamp(claim.inv.now())
    found = claim.ledger.get_run(record.run_id)
    if found is None:
        raise PermanentError(f"the run {record.run_id} of {key} has no record")
    run = found[0]
    model = record.model or run.model
    price = price_of(settings, ports, model, record.run_id)
    if record.attempt == 1 and not record.estimate:
        record.estimate = job_estimate(run, price, record.chunk)
    retryable: dict[str, bool] = {}  # request key -> worth sending again
    cancel = claim.ledger.cancelled(record.run_id)
    if cancel is not None and not record.cancelled:
        record.cancelled = cancel.get("why") or "cancelled"
    # MAX_ATTEMPTS counts from the first attempt of its series; a cancelled run retries nothing.
    final_attempt = record.attempt - record.base + 1 >= settings.max_attempts or bool(record.cancelled)
    reason = missing_reason(record.vertex_state, record.error, record.stuck, record.cancelled)
    retry = 0
    record.counts = {}  # a renewal may have saved a dead holder's partial counts
    costs: Counter[str] = Counter()  # outcome -> USD
    with ExitStack() as stack:
        out = stack.enter_context(ports.store.writer(rows_uri))
        outputs = sorted(u for u in ports.store.list(record.dest_prefix + "/") if u.endswith(".jsonl"))
        for index, uri in enumerate(outputs):
            context = RowContext(record.run_id, record.job_name, uri, record.attempt, loaded_at, price, record.chunk)
            _normalize_file(claim, ports, uri, Normalizer(context), index, retryable, out, costs)
        context = RowContext(record.run_id, record.job_name, None, record.attempt, loaded_at, price, record.chunk)
        retry_out: BinaryIO | None = None
        with ports.store.open(record.input_uri) as inputs:
            for number, line in enumerate(iter_lines(inputs, settings.max_line_bytes + 1024), 1):
                if not isinstance(line, bytes) or not line.strip():
                    continue  # staged lines are validated: never over the cap
                if number % KEEP_ALIVE_LINES == 0:
                    claim.keep_alive()
                request_key = str(key_member(line))  # staged lines are valid: only the key is decoded
                worth = retryable.get(request_key)
                if worth is None:
                    worth = retryable[request_key] = reason.retryable
                    row = missing_row(request_key, context)
                    row.update(reason.columns())
                    out.write(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
                    record.counts[MISSING] = record.counts.get(MISSING, 0) + 1
                if worth and not final_attempt:
                    if retry_out is None:
                        retry_out = stack.enter_context(ports.store.writer(retry_uri))
                    retry_out.write(line + b"\n")
                    retry += 1
    record.staged = {"rows": rows_uri, "retry_input": retry_uri if retry else "", "retry": retry, "model": model}
    if retry:
        # Counted against the day it is queued, when the run's own spend is counted (not a run of an earlier release).
        record.staged["retry_estimate"] = retry_estimate(run, price, record, retry) if run.budget_day else {}
    record.cost = {}
    if price is not None:  # MISSING rows cost 0
        usd = {outcome: costs.get(outcome, 0.0) for outcome in record.counts}
        record.cost = {"usd": sum(usd.values()), "by_outcome": usd, "price_version": price.version}
    claim.save()


def _normalize_file(
    claim: Claim[JobRecord],
    ports: Ports,
    uri: str,
    normalizer: Normalizer,
    index: int,
    retryable: dict[str, bool],
    out: BinaryIO,
    costs: Counter[str],
) -> None:
    """Normalize one output file into ``out``: one row per line, a key seen before is kept once.

    ``costs`` gathers the rows' cost per outcome.
    """
    record = claim.record
    counts: Counter[str] = Counter(record.counts)
    with ports.store.open(uri) as stream:
        for number, line in enumerate(iter_lines(stream, OUTPUT_LINE_CAP), 1):
            if number % KEEP_ALIVE_LINES == 0:
                claim.keep_alive()
            if isinstance(line, Oversize):
                data = _oversize_row(normalizer.context, f"{index}-{number}", line.size)
                facts: dict[str, Any] = {"request_key": "", "outcome": FAILED, "retryable": False}
            elif not line.strip():
                continue
            else:
                data, facts = normalizer.ndjson_with_facts(line)
            request_key = facts["request_key"]
            if request_key in retryable:
                log.warning(
                    "duplicate output line: kept the first", extra={"run_id": record.run_id, "key": request_key}
                )
                continue
            if request_key:
                retryable[request_key] = bool(facts.get("retryable"))
            counts[facts["outcome"]] += 1
            cost = facts.get("cost_usd")
            if cost:
                costs[facts["outcome"]] += cost
            out.write(data)
    record.counts = dict(counts)


def _oversize_row(context: RowContext, where: str, size: int) -> bytes:
    row = missing_row(f"unkeyed-oversize-{where}", context)
    message = f"output line of {size} bytes is longer than {OUTPUT_LINE_CAP}: not loaded"
    row.update(outcome=FAILED, error_status=UNPARSEABLE_OUTPUT, error_message=message, retryable=False)
    return orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n"


def job_row(record: JobRecord, loaded_at: str) -> dict[str, Any]:
    """The attempt's ``batch_jobs`` row."""
    error = {**record.error, **({"collect": record.collect_error} if record.collect_error else {})}
    row = {
        **finished_message(record),
        "status": record.status,
        "error": error or None,
        "stuck": record.stuck,
        "requests": record.requests,
        "counts": record.counts,
        "retried": record.retried,
        "cost_usd": record.cost.get("usd"),
        "cost_by_outcome": record.cost.get("by_outcome"),
        "estimated_cost_usd": record.estimate.get("expected_usd"),
        "estimate": record.estimate or None,
        "price_version": record.cost.get("price_version") or record.estimate.get("price_version") or None,
        "input_uri": record.input_uri,
        "output_prefix": record.dest_prefix,
        "history": record.history,
        "submitted_at": record.submitted_at or None,
        "finished_at": record.finished_at or None,
        "loaded_at": loaded_at,
    }
    return {k: v for k, v in row.items() if v is not None}


def _load_job_row(claim: Claim[JobRecord], settings: Settings, ports: Ports, load: str = "batch_jobs") -> bool:
    """One ``batch_jobs`` row per job attempt, loaded once (``load``: COLLECTED, or given up at once).

    True once loaded (a COLLECTED row goes through its table's load window).
    """
    record = claim.record
    uri = ""
    if load not in record.loads:
        key = job_key(record.run_id, record.chunk, record.attempt)
        uri = f"gs://{settings.work_bucket}/rows/{record.run_id}/{key}.g{claim.generation}.job.ndjson"
        row = job_row(record, stamp(claim.inv.now()))
        row["status"] = "COLLECTED" if load == "batch_jobs" else "UNCOLLECTABLE"
        ports.store.write(uri, orjson.dumps(row) + b"\n")
    if load == GIVE_UP:
        load_once(claim, load, "batch_jobs", uri, ports)
        return True
    return settle(claim, load, "batch_jobs", uri, settings, ports)


def _give_up(claim: Claim[JobRecord], settings: Settings, ports: Ports, reason: str) -> None:
    """End the attempt UNCOLLECTABLE with its reason, in the ledger and (best effort) in batch_jobs.

    The give-up is recorded (its own batch_jobs load) before the attempt moves: a successor of
    a holder that died in between gives up too, and never loads a second, COLLECTED row.
    """
    record = claim.record
    record.collect_error = reason
    try:
        _load_job_row(claim, settings, ports, load=GIVE_UP)
    except PermanentError:
        log.exception("batch_jobs row of an uncollectable attempt not loaded", extra={"run_id": record.run_id})
    claim.move("uncollectable")


__all__ = ["collect", "finished_job"]
