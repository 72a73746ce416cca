"""Cancel: an operator stops a run; what was loaded stays, the rest ends MISSING (cancelled), never retried.

``{"cancel": run, "reason"}`` on ``batch-requests`` (``gemini-batch cancel``). The request is a
create-only marker (``ledger/cancel/<run>.json``), not a write to the run record its holders
update; whoever would start or go on with work of the run reads it: a create (the attempt is
dropped, FINISHED with no job), the collector (no retry is queued; MISSING rows say the run was
cancelled) and the completion (the run ends CANCELLED, announced). Then, here and on every poller
tick until the run ends, its queued attempts are dropped and its live jobs cancelled on Vertex
(whatever they wrote is collected). A held run ends CANCELLED at once; a run still being staged
is stopped the same way once its attempts are queued.
"""

from __future__ import annotations

import logging
from datetime import datetime

import orjson

from shared.config import Settings
from shared.core.errors import ConflictError, PermanentError, PipelineError
from shared.core.records import (
    JOB_QUEUED,
    JOB_SUBMITTED,
    RUN_AWAITING_APPROVAL,
    RUN_FINISHED,
    RUN_REJECTED,
    RUN_RUNNING,
    VERTEX_FINAL,
    JobRecord,
    Run,
)
from shared.ports import Ports
from shared.services.attempts import drop
from shared.services.ledger import ClaimHeld, Invocation, Ledger, lease_left, stamp
from shared.services.runs import complete_run, decline

log = logging.getLogger("gbp.cancel")


def cancel(run_id: str, why: str, settings: Settings, ports: Ports, inv: Invocation, reopen: str | None = None) -> str:
    """Handle a ``cancel`` message: "finished" (nothing left to cancel), "stale", or what :func:`enforce` did.

    ``reopen``: the run's latest retry when the cancel was asked (``gemini-batch cancel`` sends it):
    a cancel delivered again after a retry has reopened the run is not taken for one of the retry.
    """
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    found = ledger.get_run(run_id)
    if found is None:
        raise PermanentError(f"cancel: unknown run {run_id}")
    run = found[0]
    if run.status == RUN_REJECTED or (run.status in RUN_FINISHED and run.announced):
        log.info("cancel: the run has finished already", extra={"run_id": run_id, "status": run.status})
        return "finished"
    if reopen is not None and reopen != run.reopen.get("id", ""):
        log.warning("cancel: asked before the run's latest retry (stale)", extra={"run_id": run_id})
        return "stale"
    marker = {"at": stamp(inv.now()), "why": why or "a cancel message"}
    try:
        ports.store.write(ledger.cancel_uri(run_id), orjson.dumps(marker), if_generation_match=0)
    except ConflictError:
        pass  # asked before: that request stands
    else:
        log.warning("run cancel requested", extra={"run_id": run_id, "status": run.status, "why": marker["why"]})
    ledger.activate_run(run_id, inv.now())  # the poller enforces it every tick until the run ends
    return enforce(ledger, settings, ports, inv, run_id)


def enforce(ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, run_id: str) -> str:
    """Drive a cancelled run to its end: "cancelled" (a held run), "cancelling", "waiting" (still staging)."""
    cancel_request = ledger.cancelled(run_id)
    found = ledger.get_run(run_id)
    if cancel_request is None or found is None:
        return "not cancelled"
    run, why = found[0], cancel_request.get("why", "")
    if run.status == RUN_AWAITING_APPROVAL:
        try:
            _, claim = ledger.claim(Run, ledger.run_uri(run_id), inv, states=frozenset({RUN_AWAITING_APPROVAL}))
        except ClaimHeld:
            return "waiting"  # a decision is being made right now; the next tick looks again
        if claim is None:
            return "waiting"
        with claim.released_on_error():
            decline(claim, settings, ports, "cancelled", why)
        return "cancelled"
    if run.status != RUN_RUNNING:
        return "waiting"  # staging: its attempts are dropped once queued; finished: nothing to do
    now = inv.now()
    for record in sorted(ledger.jobs_of(run_id), key=lambda r: (r.chunk, r.attempt)):
        if record.status == JOB_QUEUED:
            uri = ledger.job_uri(run_id, record.chunk, record.attempt)
            try:
                _, job_claim = ledger.claim(JobRecord, uri, inv, states=frozenset({JOB_QUEUED}))
            except ClaimHeld:
                continue  # being admitted: its create reads the marker
            if job_claim is not None:
                with job_claim.released_on_error():
                    drop(job_claim, settings, ports, why)
        elif record.status == JOB_SUBMITTED and record.vertex_state not in VERTEX_FINAL:
            if lease_left(record.cancel_requested_at, now, settings.lease_seconds) > 0:
                continue  # asked lately: Vertex is cancelling it
            _cancel_job(ledger, ports, record.run_id, record.chunk, record.attempt, why, now)
    complete_run(ledger, settings, ports, inv, run_id)  # a run with nothing open ends CANCELLED
    return "cancelling"


def _cancel_job(ledger: Ledger, ports: Ports, run_id: str, chunk: int, attempt: int, why: str, now: datetime) -> None:
    """Ask Vertex to cancel a live job, recorded first (a conditional write: the poller may be writing it too)."""
    found = ledger.get_job(run_id, chunk, attempt)
    if found is None:
        return
    record, generation = found
    if record.status != JOB_SUBMITTED or record.vertex_state in VERTEX_FINAL:
        return
    record.cancelled, record.cancel_requested_at = why or "cancelled", stamp(now)
    try:
        ledger.put(record, generation)
    except ConflictError:
        return  # written meanwhile: the next tick asks
    fields = {"run_id": run_id, "chunk": chunk, "attempt": attempt, "job_name": record.job_name}
    try:
        ports.jobs.cancel(record.job_name, record.location)
    except PipelineError as exc:  # e.g. it ended meanwhile: the poller sees it final
        log.warning("batch job cancel refused", extra={**fields, "error": str(exc)})
    else:
        log.warning("batch job cancelled: its run is cancelled", extra=fields)


__all__ = ["cancel", "enforce"]
