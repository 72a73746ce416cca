"""One job attempt of one chunk, created exactly once (submit, the collector's retries, the poller's redrive).

The attempt is claimed in the ledger (and followed by the poller) before anything else.
Before creating, a job with the attempt's labels is looked for, so a holder that died after
creating never bills twice. A create that certainly did not happen (429, no connection)
releases the claim so that the next try need not wait; one whose outcome is unknown (a 5xx, a
timeout, an answer lost) keeps it for its lease, after which the next holder looks again and
adopts the job if Vertex made it. A refused create (an unknown model, an invalid request) ends
the attempt FINISHED with the reason, and its rows become MISSING with that reason.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

from shared.config import Settings
from shared.core.errors import RefusedError
from shared.core.failures import JOB_GONE, job_error
from shared.core.ids import PIPELINE_LABELS, job_key, job_labels
from shared.core.records import JOB_CLAIMED, VERTEX_FINAL, JobRecord, Run
from shared.ports import Ports, VertexJob
from shared.services.ledger import Invocation, Ledger, stamp

log = logging.getLogger("gbp.attempts")
CREATE_NEEDS: Final = 90.0  # seconds of invocation (and lease) needed around batches.create (60 s timeout)
_STATUS_OF: Final = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def output_prefix(settings: Settings, run_id: str, chunk: int, attempt: int) -> str:
    """The job attempt's own ``dest`` (Vertex's output folder name cannot be predicted)."""
    return f"gs://{settings.work_bucket}/outputs/{run_id}/{job_key(run_id, chunk, attempt)}"


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


def submit_attempt(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    run: Run,
    chunk: int,
    attempt: int,
    input_uri: str,
    requests: int,
) -> JobRecord:
    """Create attempt ``attempt`` of ``chunk`` exactly once; return its record as it stands."""
    new = JobRecord(
        run.run_id,
        chunk,
        attempt,
        input_uri,
        output_prefix(settings, run.run_id, chunk, attempt),
        requests,
        location=settings.location,
    )
    uri = ledger.job_uri(run.run_id, chunk, attempt)
    ledger.activate(run.run_id, chunk, attempt, inv.now())  # followed by the poller from before it exists
    record, claim = ledger.claim(JobRecord, uri, inv, create=new, states=frozenset({JOB_CLAIMED}))
    if claim is None:
        return record  # submitted (or further) already
    ledger.activate(run.run_id, chunk, attempt, inv.now())  # again: a marker a lease old with no record is dropped
    fields = {"run_id": run.run_id, "chunk": chunk, "attempt": attempt}
    with claim.released_on_error():
        labels = job_labels(run.run_id, chunk, attempt, run.labels)
        identity = {k: labels[k] for k in PIPELINE_LABELS}
        job = ports.jobs.find(identity, record.location)  # a holder that died after creating must not bill twice
        if job is None:
            claim.confirm("creating a batch job", CREATE_NEEDS)
            try:
                job = ports.jobs.create(
                    model=run.model,
                    input_uri=record.input_uri,
                    dest_prefix=record.dest_prefix,
                    display_name=f"{run.display_name or run.run_id}-c{chunk}-a{attempt}"[:128],
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
                return record
            log.info("batch job submitted", extra={**fields, "job_name": job.name, "rows": record.requests})
        else:
            log.info("batch job found: adopted", extra={**fields, "job_name": job.name})
        record.job_name, record.vertex_state = job.name, job.state
        record.submitted_at = stamp(inv.now())
        record.history.append({"state": job.state, "at": record.submitted_at})
        claim.move("submitted")
    return record
