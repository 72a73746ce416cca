"""Poll: Vertex has no completion event, so a scheduled tick follows every job not yet collected.

A state change is recorded in the ledger; a final state becomes our own ``batch-finished``
message. Jobs queued or running past their deadlines are cancelled and marked stuck (their
unprocessed rows then come back as MISSING and go to the next attempt). A job left CLAIMED by
a crashed submitter is driven on once its lease has passed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared.config import Settings
from shared.core.errors import ConflictError, PipelineError
from shared.core.records import JOB_CLAIMED, JOB_FINISHED, JOB_SUBMITTED, VERTEX_FINAL, JobRecord
from shared.ports import Ports
from shared.services.ledger import Ledger, lease_held, stamp

log = logging.getLogger("gbp.poll")
QUEUED_STATES = frozenset({"JOB_STATE_QUEUED", "JOB_STATE_PENDING"})


def finished_message(record: JobRecord) -> dict[str, object]:
    """The ``batch-finished`` message of a job attempt."""
    return {
        "run_id": record.run_id,
        "chunk": record.chunk,
        "attempt": record.attempt,
        "job_name": record.job_name,
        "location": record.location,
        "state": record.vertex_state,
    }


def poll(settings: Settings, ports: Ports, now: datetime) -> dict[str, int]:
    """Follow every active job once; return counts of what happened."""
    ledger = Ledger(ports.store, settings.work_bucket)
    counts = {"followed": 0, "changed": 0, "finished": 0, "stuck": 0, "redriven": 0}
    for run_id, chunk, attempt in ledger.active():
        counts["followed"] += 1
        try:
            _follow(ledger, settings, ports, now, run_id, chunk, attempt, counts)
        except ConflictError:
            log.info("job changed while polling: next tick", extra={"run_id": run_id, "chunk": chunk})
        except PipelineError:
            log.exception("job could not be polled", extra={"run_id": run_id, "chunk": chunk, "attempt": attempt})
    log.info("poll done", extra=counts)
    return counts


def _follow(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    now: datetime,
    run_id: str,
    chunk: int,
    attempt: int,
    counts: dict[str, int],
) -> None:
    found = ledger.get_job(run_id, chunk, attempt)
    if found is None:
        return
    record, generation = found
    if record.status == JOB_CLAIMED:
        if not lease_held(record.claimed_at, now, settings.lease_seconds):
            _redrive(ledger, settings, ports, now, record)
            counts["redriven"] += 1
        return
    if record.status == JOB_FINISHED:
        # Published already; publish again if nobody has collected it for a lease (at least once).
        if not lease_held(record.finished_at, now, settings.lease_seconds):
            ports.bus.publish(settings.batch_finished_topic, finished_message(record))
        return
    if record.status != JOB_SUBMITTED:
        return
    job = ports.jobs.get(record.job_name, record.location)
    changed = job.state != record.vertex_state
    if changed:
        record.vertex_state = job.state
        record.history.append({"state": job.state, "at": stamp(now)})
        counts["changed"] += 1
    if job.state in VERTEX_FINAL:
        record.status, record.finished_at = JOB_FINISHED, stamp(now)
        ledger.put_job(record, generation)
        ports.bus.publish(settings.batch_finished_topic, finished_message(record))
        counts["finished"] += 1
        log.info("batch job finished", extra={"run_id": run_id, "job_name": record.job_name, "state": job.state})
        return
    if not record.stuck and _past_deadline(record, settings, now):
        ports.jobs.cancel(record.job_name, record.location)
        record.stuck = True
        changed = True
        counts["stuck"] += 1
        log.warning(
            "batch job stuck: cancelled", extra={"run_id": run_id, "job_name": record.job_name, "state": job.state}
        )
    if changed:
        ledger.put_job(record, generation)


def _past_deadline(record: JobRecord, settings: Settings, now: datetime) -> bool:
    """Queued longer than the queue timeout, or running longer than the run timeout."""
    if record.vertex_state in QUEUED_STATES:
        since = datetime.fromisoformat(record.submitted_at)
        return now - since > timedelta(seconds=settings.queue_timeout_seconds)
    if record.vertex_state == "JOB_STATE_RUNNING":
        started = next((h["at"] for h in record.history if h["state"] == "JOB_STATE_RUNNING"), record.submitted_at)
        return now - datetime.fromisoformat(started) > timedelta(seconds=settings.run_timeout_seconds)
    return False


def _redrive(ledger: Ledger, settings: Settings, ports: Ports, now: datetime, record: JobRecord) -> None:
    """A submitter crashed after claiming: finish its work (find-or-create, then record)."""
    from shared.services.submit import submit_job

    found = ledger.get_run(record.run_id)
    if found is None:
        return
    log.warning("job claim expired: submitting", extra={"run_id": record.run_id, "chunk": record.chunk})
    submit_job(ledger, settings, ports, found[0], record.chunk, record.attempt, record.input_uri, record.requests, now)
