"""Collect: a finished job's rows into BigQuery exactly once; retryable rows to the next attempt.

The ``batch-finished`` message is a hint: the ledger and Vertex are read again. Every
``*.jsonl`` under the job's own output prefix is normalized (streaming); each input key with
no output line gets a MISSING row; a key seen twice is kept once. Rows are staged as NDJSON and
loaded with a load job whose id is derived from the job attempt, after checking that no such
load exists: a redelivered message or a crash half-way neither duplicates nor loses a row. A
collector holds the job with a lease, so two deliveries never load at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from datetime import datetime
from typing import Any

import orjson

from shared.config import Settings
from shared.core.errors import ConflictError, PermanentError, TransientError
from shared.core.ids import job_key, load_job_id
from shared.core.normalize import MISSING, Normalizer, RowContext, missing_row
from shared.core.records import (
    JOB_COLLECTED,
    JOB_COLLECTING,
    JOB_FINISHED,
    RUN_COMPLETE,
    RUN_RUNNING,
    VERTEX_FINAL,
    JobRecord,
)
from shared.ports import Ports
from shared.services.ledger import Ledger, lease_held, stamp
from shared.services.poll import finished_message
from shared.services.submit import staging_uri, submit_job

log = logging.getLogger("gbp.collect")


def finished_job(message: dict[str, Any]) -> tuple[str, int, int]:
    """``(run_id, chunk, attempt)`` of a ``batch-finished`` message (PermanentError when it is not one)."""
    try:
        return str(message["run_id"]), int(message["chunk"]), int(message["attempt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"not a batch-finished message: {message!r}") from exc


def collect(message: dict[str, Any], settings: Settings, ports: Ports, now: datetime) -> str:
    """Handle one ``batch-finished`` message: "collected", "duplicate" or "not final"."""
    run_id, chunk, attempt = finished_job(message)
    ledger = Ledger(ports.store, settings.work_bucket)
    found = ledger.get_job(run_id, chunk, attempt)
    if found is None:
        raise PermanentError(f"unknown job attempt {job_key(run_id, chunk, attempt)}")
    record, generation = found
    if record.status == JOB_COLLECTED:
        log.info("duplicate: skipped", extra={"run_id": run_id, "job_name": record.job_name})
        _complete_run(ledger, settings, ports, run_id, now)  # in case a crash came between the two
        return "duplicate"
    if record.status == JOB_COLLECTING and lease_held(record.claimed_at, now, settings.lease_seconds):
        raise TransientError(f"job {record.job_name} is being collected by another delivery")
    if record.status != JOB_FINISHED and record.vertex_state not in VERTEX_FINAL:
        job = ports.jobs.get(record.job_name, record.location)
        if job.state not in VERTEX_FINAL:
            log.info(
                "job not final: ignored", extra={"run_id": run_id, "job_name": record.job_name, "state": job.state}
            )
            return "not final"
        record.vertex_state = job.state
    record.status, record.claimed_at = JOB_COLLECTING, stamp(now)
    try:
        generation = ledger.put_job(record, generation)
    except ConflictError as exc:
        raise TransientError("the job record changed under us; retry") from exc
    _collect(ledger, settings, ports, record, now)
    record.status = JOB_COLLECTED
    try:
        ledger.put_job(record, generation)
    except ConflictError as exc:
        raise TransientError("lost the job record while collecting; retry") from exc
    ledger.deactivate(record)
    log.info(
        "results loaded",
        extra={
            "run_id": run_id,
            "job_name": record.job_name,
            "rows": sum(record.counts.values()),
            "counts": record.counts,
            "retried": record.retried,
        },
    )
    _complete_run(ledger, settings, ports, run_id, now)
    return "collected"


def _collect(ledger: Ledger, settings: Settings, ports: Ports, record: JobRecord, now: datetime) -> None:
    """Normalize, add MISSING rows, load once, submit the next attempt, load the job's row."""
    key = job_key(record.run_id, record.chunk, record.attempt)
    rows_uri = f"gs://{settings.work_bucket}/rows/{record.run_id}/{key}.ndjson"
    context = RowContext(record.run_id, record.job_name, None, record.attempt, stamp(now))
    outcomes: dict[str, tuple[str, bool]] = {}  # key -> (outcome, retryable)
    final_attempt = record.attempt >= settings.max_attempts
    with ports.store.writer(rows_uri) as out:
        for uri in sorted(u for u in ports.store.list(record.dest_prefix + "/") if u.endswith(".jsonl")):
            normalizer = Normalizer(RowContext(record.run_id, record.job_name, uri, record.attempt, stamp(now)))
            with ports.store.open(uri) as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    data, facts = normalizer.ndjson_with_facts(line)
                    request_key = facts["request_key"]
                    if request_key in outcomes:
                        log.warning(
                            "duplicate output line: kept the first", extra={"run_id": record.run_id, "key": request_key}
                        )
                        continue
                    outcomes[request_key] = (facts["outcome"], bool(facts.get("retryable")))
                    out.write(data)
        retry: set[str] = set()
        with ports.store.open(record.input_uri) as inputs:
            for line in inputs:
                if not line.strip():
                    continue
                request_key = str(orjson.loads(line)["key"])
                outcome = outcomes.get(request_key)
                if outcome is None:
                    outcomes[request_key] = (MISSING, True)
                    row = missing_row(request_key, context)
                    out.write(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
                    outcome = outcomes[request_key]
                if outcome[1] and not final_attempt:
                    retry.add(request_key)
    job_id = load_job_id("predictions", record.run_id, record.chunk, record.attempt)
    state = ports.warehouse.load_state(job_id)
    if state is None:
        ports.warehouse.load(rows_uri, "predictions", job_id)
    elif state.startswith("FAILED"):
        raise PermanentError(f"load job {job_id} failed: {state}; rows are in {rows_uri}")
    record.counts = dict(Counter(outcome for outcome, _ in outcomes.values()))
    if retry:
        _submit_retry(ledger, settings, ports, record, retry, now)
    _load_job_row(settings, ports, record, now)


def _submit_retry(
    ledger: Ledger, settings: Settings, ports: Ports, record: JobRecord, keys: set[str], now: datetime
) -> None:
    """The retryable rows' requests as the next attempt of the same chunk."""
    attempt = record.attempt + 1
    child_uri = staging_uri(settings, record.run_id, record.chunk, attempt)
    written = 0
    with ports.store.open(record.input_uri) as inputs, ports.store.writer(child_uri) as out:
        for line in inputs:
            if line.strip() and str(orjson.loads(line)["key"]) in keys:
                out.write(line if line.endswith(b"\n") else line + b"\n")
                written += 1
    found = ledger.get_run(record.run_id)
    if found is None:
        raise PermanentError(f"unknown run {record.run_id}")
    submit_job(ledger, settings, ports, found[0], record.chunk, attempt, child_uri, written, now)
    record.retried, record.child = written, job_key(record.run_id, record.chunk, attempt)
    log.info(
        "retryable rows re-submitted",
        extra={"run_id": record.run_id, "chunk": record.chunk, "attempt": attempt, "rows": written},
    )


def _load_job_row(settings: Settings, ports: Ports, record: JobRecord, now: datetime) -> None:
    """One ``batch_jobs`` row per job attempt, loaded once."""
    job_id = load_job_id("batch_jobs", record.run_id, record.chunk, record.attempt)
    if ports.warehouse.load_state(job_id) is not None:
        return
    row = {
        **finished_message(record),
        "stuck": record.stuck,
        "requests": record.requests,
        "counts": record.counts,
        "retried": record.retried,
        "input_uri": record.input_uri,
        "output_prefix": record.dest_prefix,
        "history": record.history,
        "submitted_at": record.submitted_at or None,
        "finished_at": record.finished_at or None,
        "loaded_at": stamp(now),
    }
    key = job_key(record.run_id, record.chunk, record.attempt)
    uri = f"gs://{settings.work_bucket}/rows/{record.run_id}/{key}.job.ndjson"
    ports.store.write(uri, orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
    ports.warehouse.load(uri, "batch_jobs", job_id)


def _complete_run(ledger: Ledger, settings: Settings, ports: Ports, run_id: str, now: datetime) -> None:
    """When every chunk's latest attempt is collected with nothing re-submitted, announce the run once."""
    found = ledger.get_run(run_id)
    if found is None:
        return
    run, generation = found
    if run.status == RUN_COMPLETE and run.announced:
        return
    if run.status not in (RUN_RUNNING, RUN_COMPLETE):
        return
    latest: dict[int, JobRecord] = {}
    for record in ledger.jobs_of(run_id):
        if record.chunk not in latest or record.attempt > latest[record.chunk].attempt:
            latest[record.chunk] = record
    if len(latest) < run.chunks or any(r.status != JOB_COLLECTED or r.child for r in latest.values()):
        return
    if run.status == RUN_RUNNING:
        run.status, run.updated_at = RUN_COMPLETE, stamp(now)
        try:
            generation = ledger.put_run(run, generation)
        except ConflictError:
            return  # another collector completed it
    summary = ports.warehouse.run_summary(run_id)
    ports.bus.publish(
        settings.batch_results_topic,
        {
            "run_id": run_id,
            "source": run.source,
            "model": run.model,
            "chunks": run.chunks,
            "requests": run.requests,
            "invalid": run.invalid,
            "jobs": sorted(r.job_name for r in ledger.jobs_of(run_id)),
            **summary,
        },
        run_id=run_id,
    )
    run.announced = True
    with contextlib.suppress(ConflictError):  # another collector announced it too: at least once
        ledger.put_run(run, generation)
    log.info("run complete", extra={"run_id": run_id, "counts": summary["counts"]})
