"""One job attempt of one chunk, created exactly once (submit, the collector's retries, the poller's redrive).

An attempt is first recorded QUEUED (create-only, with its queue marker); admission.py admits it
when a slot of the concurrent-job limit is free: it is claimed (and followed by the poller)
before anything is created. A 429 on create queues it again in its place. Before creating, a job
with the attempt's labels is looked for, so a holder that died after creating never bills twice.
A create that certainly did not happen (no connection) releases the claim so that the next try
need not wait; one whose outcome is unknown (a 5xx, a timeout, an answer lost) keeps it for its
lease, after which the next holder looks again and adopts the job if Vertex made it. A refused
create (an unknown model, an invalid request) ends the attempt FINISHED with the reason, and its
rows become MISSING with that reason.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

import orjson

from shared.config import Settings
from shared.core.errors import ConflictError, PermanentError, RefusedError, Throttled, TransientError
from shared.core.failures import JOB_GONE, job_error
from shared.core.ids import PIPELINE_LABELS, job_key, job_labels
from shared.core.records import JOB_CLAIMED, JOB_QUEUED, VERTEX_FINAL, JobRecord, Run
from shared.ports import Ports, VertexJob
from shared.services.ledger import Claim, Invocation, Ledger, stamp

log = logging.getLogger("gbp.attempts")
CREATE_NEEDS: Final = 90.0  # seconds of invocation (and lease) needed around batches.create (60 s timeout)
_STATUS_OF: Final = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def output_prefix(settings: Settings, run_id: str, chunk: int, attempt: int) -> str:
    """The job attempt's own ``dest`` (Vertex's output folder name cannot be predicted)."""
    return f"gs://{settings.io_bucket}/outputs/{run_id}/{job_key(run_id, chunk, attempt)}"


def finished_message(record: JobRecord) -> dict[str, Any]:
    """The ``batch-finished`` message of a job attempt."""
    return {
        "run_id": record.run_id,
        "chunk": record.chunk,
        "attempt": record.attempt,
        "job_name": record.job_name,
        "location": record.location,
        "state": record.vertex_state,
    }


def observe(record: JobRecord, job: VertexJob, now: datetime) -> bool:
    """Record what Vertex says of the attempt's job (state, history, error); True when its state changed."""
    changed = job.state != record.vertex_state
    if changed:
        record.vertex_state = job.state
        record.history.append({"state": job.state, "at": stamp(now)})
    if job.error is not None and (job.state in VERTEX_FINAL or job.state == JOB_GONE):
        record.error = job_error(job.error.status or job.error.code, job.error.message, "vertex")
    return changed


def queue_attempt(
    ledger: Ledger,
    settings: Settings,
    inv: Invocation,
    run_id: str,
    chunk: int,
    attempt: int,
    input_uri: str,
    requests: int,
    estimate: dict[str, Any] | None = None,
    *,
    model: str = "",
    base: int = 1,
) -> JobRecord:
    """Record attempt ``attempt`` of ``chunk`` once, QUEUED (admission.py creates its job); return it as it stands.

    ``model``: the model when not the run's; ``base``: the first attempt of its series (MAX_ATTEMPTS counts from it).
    """
    now = inv.now()
    new = JobRecord(
        run_id,
        chunk,
        attempt,
        input_uri,
        output_prefix(settings, run_id, chunk, attempt),
        requests,
        status=JOB_QUEUED,
        queued_at=stamp(now),
        location=settings.location,
        estimate=dict(estimate or {}),
        model=model,
        base=base,
    )
    new.history.append({"state": JOB_QUEUED, "at": new.queued_at})
    uri = ledger.job_uri(run_id, chunk, attempt)
    ledger.mark_queued(new)  # in the queue from before it exists: admission drops a marker whose record never came
    try:
        ledger.write(uri, orjson.dumps(new.to_json()), 0)
    except ConflictError:
        found = ledger.get_job(run_id, chunk, attempt)
        if found is None:
            raise TransientError(f"{uri} vanished between two reads; retry") from None
        if found[0].queued_at != new.queued_at:
            ledger.unmark_queued(new)  # queued before (its own marker stands), or further on
        return found[0]
    log.info("batch job queued", extra={"run_id": run_id, "chunk": chunk, "attempt": attempt, "rows": requests})
    return new


def create_claimed(claim: Claim[JobRecord], settings: Settings, ports: Ports, run: Run) -> str:
    """Create the claimed (admitted) attempt's job exactly once.

    Returns "submitted", "adopted" (a job with its labels existed), "refused" (FINISHED with
    the reason) or "throttled" (429: QUEUED again in its place, nothing created).
    """
    record, inv = claim.record, claim.inv
    fields = {"run_id": run.run_id, "chunk": record.chunk, "attempt": record.attempt}
    with claim.released_on_error():
        labels = job_labels(run.run_id, record.chunk, record.attempt, run.labels)
        identity = {k: labels[k] for k in PIPELINE_LABELS}
        try:
            job = ports.jobs.find(identity, record.location)  # a holder that died after creating must not bill twice
            outcome = "adopted"
            if job is None:
                cancelled = claim.ledger.cancelled(run.run_id)
                if cancelled is not None:  # cancelled since it was admitted: never created
                    drop(claim, settings, ports, cancelled.get("why", ""))
                    return "dropped"
                _into_vertex_bucket(claim, settings, ports)
                claim.confirm("creating a batch job", CREATE_NEEDS)
                try:
                    job = ports.jobs.create(
                        model=record.model or run.model,
                        input_uri=record.input_uri,
                        dest_prefix=record.dest_prefix,
                        display_name=f"{run.display_name or run.run_id}-c{record.chunk}-a{record.attempt}"[:128],
                        labels=labels,
                        location=record.location,
                    )
                except RefusedError as exc:
                    record.error = job_error(exc.status or _STATUS_OF.get(exc.code or 0), str(exc), "create")
                    record.history.append({"state": "REFUSED", "at": stamp(inv.now())})
                    claim.move("refused")
                    log.error("batch job refused", extra={**fields, "error": str(exc)})
                    ports.bus.publish(settings.batch_finished_topic, finished_message(record))
                    record.finished_at = stamp(inv.now())
                    claim.save()
                    return "refused"
                outcome = "submitted"
        except Throttled as exc:  # a 429 on the look-up or the create: nothing was created
            record.throttled += 1
            record.queued_at = record.queued_at or stamp(inv.now())  # one queued before admission existed
            record.history.append({"state": "THROTTLED", "at": stamp(inv.now())})
            claim.ledger.mark_queued(record)  # back in its own place (its queued_at is kept)
            claim.move("throttled")
            claim.ledger.deactivate(record)
            log.warning("batch job create throttled: queued again", extra={**fields, "error": str(exc)})
            return "throttled"
        if outcome == "submitted":
            log.info("batch job submitted", extra={**fields, "job_name": job.name, "rows": record.requests})
        else:
            log.info("batch job found: adopted", extra={**fields, "job_name": job.name})
        record.job_name, record.vertex_state = job.name, job.state
        record.submitted_at = stamp(inv.now())
        record.history.append({"state": job.state, "at": record.submitted_at})
        claim.move("submitted")
    return outcome


def drop(claim: Claim[JobRecord], settings: Settings, ports: Ports, why: str) -> None:
    """A QUEUED or CLAIMED attempt of a cancelled run: FINISHED with no job, its rows MISSING (cancelled)."""
    record = claim.record
    record.cancelled = why or "cancelled"
    record.history.append({"state": "DROPPED", "at": stamp(claim.inv.now())})
    claim.move("dropped")
    claim.ledger.activate(record.run_id, record.chunk, record.attempt, claim.inv.now())  # followed: collected
    claim.ledger.unmark_queued(record)
    ports.bus.publish(settings.batch_finished_topic, finished_message(record))
    record.finished_at = stamp(claim.inv.now())
    claim.save()
    log.info("batch job dropped: its run is cancelled", extra={"run_id": record.run_id, "chunk": record.chunk,
                                                                 "attempt": record.attempt})  # fmt: skip


def _into_vertex_bucket(claim: Claim[JobRecord], settings: Settings, ports: Ports) -> None:
    """An attempt recorded before the deployment had a Vertex bucket: its files move there before its job exists.

    (Its input is copied, server-side; its outputs go to its own folder there.) Saved before the
    create: a successor adopts the job with these paths, and the collector reads them.
    """
    record, io = claim.record, f"gs://{settings.io_bucket}/"
    if record.input_uri.startswith(io) and record.dest_prefix.startswith(io):
        return
    if not record.input_uri.startswith(io):
        moved = f"{io}staging/{record.run_id}/{job_key(record.run_id, record.chunk, record.attempt)}.moved.jsonl"
        ports.store.copy(record.input_uri, moved)
        record.input_uri = moved
    record.dest_prefix = output_prefix(settings, record.run_id, record.chunk, record.attempt)
    claim.save()
    log.info("attempt moved to the Vertex bucket", extra={"run_id": record.run_id, "gcs_uri": record.input_uri})


def redrive(ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, record: JobRecord) -> str:
    """An admitted attempt whose holder failed or died (its lease lapsed): find its job or create it."""
    uri = ledger.job_uri(record.run_id, record.chunk, record.attempt)
    found = ledger.get_run(record.run_id)
    if found is None:
        raise PermanentError(f"unknown run {record.run_id}")
    record, claim = ledger.claim(JobRecord, uri, inv, states=frozenset({JOB_CLAIMED}))
    if claim is None:
        return "moved on"
    return create_claimed(claim, settings, ports, found[0])
