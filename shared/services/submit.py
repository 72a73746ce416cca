"""Submit: validate a request file, give every line a key, stage chunks, one Vertex job per chunk.

Exactly once per run however often the event comes: the run and every job attempt are
claimed in the ledger before ``batches.create``, and before creating, a job with the same
labels is looked for, so a crash between create and the ledger write never bills twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import orjson

from shared.config import Settings
from shared.core.errors import ConflictError, PermanentError, TransientError
from shared.core.ids import invalid_rows_job_id, job_key, job_labels
from shared.core.keys import JobLimits, KeyedLine, assign_chunks, assigned_key
from shared.core.normalize import FAILED, missing_row
from shared.core.records import (
    JOB_CLAIMED,
    JOB_SUBMITTED,
    RUN_COMPLETE,
    RUN_REJECTED,
    RUN_RUNNING,
    RUN_SUBMITTING,
    JobRecord,
    Run,
)
from shared.core.validate import ValidationOptions, ValidationSummary, scan
from shared.ports import Ports
from shared.services.ledger import Ledger, lease_held, stamp

log = logging.getLogger("gbp.submit")
INVALID_REQUEST = "INVALID_REQUEST"


@dataclass(frozen=True)
class Submission:
    """What to run: where the requests are and how to name the run."""

    run_id: str
    source: str  # gs://bucket/name or bq://project.dataset.table
    generation: str | None = None
    model: str = ""
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def staging_uri(settings: Settings, run_id: str, chunk: int, attempt: int) -> str:
    """Where the input of one job attempt is staged."""
    return f"gs://{settings.work_bucket}/staging/{run_id}/{job_key(run_id, chunk, attempt)}.jsonl"


def output_prefix(settings: Settings, run_id: str, chunk: int, attempt: int) -> str:
    """The job attempt's own ``dest`` (Vertex's output folder name cannot be predicted)."""
    return f"gs://{settings.work_bucket}/outputs/{run_id}/{job_key(run_id, chunk, attempt)}"


def submit(sub: Submission, settings: Settings, ports: Ports, now: datetime) -> str:
    """Run ``sub``: returns "submitted", "duplicate" or "rejected"; raises TransientError to be retried."""
    ledger = Ledger(ports.store, settings.work_bucket)
    run = Run(
        sub.run_id,
        sub.source,
        sub.model or settings.model,
        claimed_at=stamp(now),
        updated_at=stamp(now),
        display_name=sub.display_name,
        labels=dict(sub.labels),
    )
    generation = ledger.create_run(run)
    if generation is None:
        found = ledger.get_run(sub.run_id)
        if found is None:
            raise TransientError("the run record vanished; retry")
        run, generation = found
        if run.status != RUN_SUBMITTING:
            log.info("duplicate: skipped", extra={"run_id": run.run_id, "status": run.status})
            return "duplicate"
        if lease_held(run.claimed_at, now, settings.lease_seconds):
            raise TransientError(f"run {run.run_id} is being submitted by another delivery")
        run.claimed_at = stamp(now)
        generation = _put_run(ledger, run, generation)
    summary, chunks = _stage(sub, run, settings, ports)
    if (summary.invalid and not settings.skip_invalid_lines) or summary.valid == 0:
        return _reject(sub, run, generation, summary, settings, ports, ledger, now)
    if summary.invalid:
        _load_invalid_rows(sub, run, settings, ports, now)
    run.chunks, run.requests, run.invalid = len(chunks), summary.valid, summary.invalid
    generation = _put_run(ledger, run, generation)
    for chunk, count in enumerate(chunks):
        submit_job(ledger, settings, ports, run, chunk, 1, staging_uri(settings, run.run_id, chunk, 1), count, now)
    run.status, run.updated_at = RUN_RUNNING, stamp(now)
    _put_run(ledger, run, generation)
    log.info(
        "run submitted", extra={"run_id": run.run_id, "gcs_uri": sub.source, "jobs": len(chunks), "rows": run.requests}
    )
    return "submitted"


def _put_run(ledger: Ledger, run: Run, generation: int) -> int:
    try:
        return ledger.put_run(run, generation)
    except ConflictError as exc:
        raise TransientError(f"run {run.run_id} changed under us; retry") from exc


class _Source:
    """The requests as a binary stream, whatever the source."""

    def __init__(self, sub: Submission, settings: Settings, ports: Ports) -> None:
        self.sub, self.settings, self.ports = sub, settings, ports

    def open(self, stack: ExitStack) -> BinaryIO:
        if self.sub.source.startswith("gs://"):
            return stack.enter_context(self.ports.store.open(self.sub.source, self.sub.generation))
        if self.sub.source.startswith("bq://"):
            # Export the table's rows to a staged JSONL first: one validation path for both.
            # The first export wins: row order is not stable between reads, and keyless rows get
            # keys from their line numbers, so a retried submission must see the same lines.
            uri = f"gs://{self.settings.work_bucket}/staging/{self.sub.run_id}/source.jsonl"
            if uri not in self.ports.store.list(uri):
                with self.ports.store.writer(uri) as out:  # the object appears whole when closed
                    for line in self.ports.warehouse.request_lines(self.sub.source):
                        out.write(line + b"\n")
            return stack.enter_context(self.ports.store.open(uri))
        raise PermanentError(f"unsupported source {self.sub.source!r}: expected gs:// or bq://")


def _stage(sub: Submission, run: Run, settings: Settings, ports: Ports) -> tuple[ValidationSummary, list[int]]:
    """One pass: validate every line and write the valid ones, keyed, into job-sized chunks."""
    limits = JobLimits(settings.max_requests_per_job, settings.max_bytes_per_job)
    options = ValidationOptions(limits=limits, max_line_bytes=settings.max_line_bytes, max_examples=100)
    summary = ValidationSummary(max_requests=limits.max_requests, max_bytes=limits.max_bytes)
    counts: list[int] = []
    invalid_uri = f"gs://{settings.work_bucket}/staging/{run.run_id}/invalid.jsonl"
    with ExitStack() as stack:
        stream = _Source(sub, settings, ports).open(stack)
        lines = scan(stream, options, summary)
        invalid_out = stack.enter_context(ports.store.writer(invalid_uri)) if settings.skip_invalid_lines else None

        def valid_lines() -> Iterator[KeyedLine]:
            for line in lines:
                if line.issue is None:
                    yield line.keyed()
                elif invalid_out is not None:
                    invalid_out.write(
                        orjson.dumps(
                            {
                                "line": line.line_number,
                                "key": line.key,
                                "reason": line.issue.reason,
                                "detail": line.issue.detail,
                            }
                        )
                        + b"\n"
                    )

        out = None
        current = -1
        with ExitStack() as chunk_files:
            for index, keyed in assign_chunks(valid_lines(), limits):
                if index != current:
                    chunk_files.close()
                    out = chunk_files.enter_context(ports.store.writer(staging_uri(settings, run.run_id, index, 1)))
                    counts.append(0)
                    current = index
                assert out is not None
                out.write(keyed.data + b"\n")
                counts[index] += 1
    return summary, counts


def _reject(
    sub: Submission,
    run: Run,
    generation: int,
    summary: ValidationSummary,
    settings: Settings,
    ports: Ports,
    ledger: Ledger,
    now: datetime,
) -> str:
    """Write a line-numbered report next to the input and record the run as REJECTED."""
    report = {"run_id": run.run_id, "source": sub.source, "generation": sub.generation, **summary.as_dict()}
    if summary.valid == 0 and summary.invalid == 0:
        report["error"] = "the file has no requests"
    if sub.source.startswith("gs://"):
        bucket, _, name = sub.source[5:].partition("/")
        run.report_uri = f"gs://{bucket}/rejected/{name}.errors.json"
    else:
        run.report_uri = f"gs://{settings.work_bucket}/rejected/{run.run_id}.errors.json"
    ports.store.write(run.report_uri, orjson.dumps(report, option=orjson.OPT_INDENT_2))
    run.status, run.updated_at, run.invalid = RUN_REJECTED, stamp(now), summary.invalid
    _put_run(ledger, run, generation)
    log.warning(
        "run rejected: invalid input",
        extra={"run_id": run.run_id, "gcs_uri": sub.source, "invalid": summary.invalid, "report": run.report_uri},
    )
    return "rejected"


def _load_invalid_rows(sub: Submission, run: Run, settings: Settings, ports: Ports, now: datetime) -> None:
    """SKIP_INVALID_LINES: each rejected line becomes a FAILED row with its reason (loaded once)."""
    job_id = invalid_rows_job_id(run.run_id)
    if ports.warehouse.load_state(job_id) == "DONE":
        return
    from shared.core.normalize import RowContext

    context = RowContext(run.run_id, None, sub.source, 1, stamp(now))
    rows_uri = f"gs://{settings.work_bucket}/rows/{run.run_id}/invalid.ndjson"
    with (
        ports.store.open(f"gs://{settings.work_bucket}/staging/{run.run_id}/invalid.jsonl") as lines,
        ports.store.writer(rows_uri) as out,
    ):
        for raw in lines:
            issue: dict[str, Any] = orjson.loads(raw)
            row = missing_row(issue["key"] or assigned_key(issue["line"]), context)
            message = f"line {issue['line']}: {issue['reason']}: {issue['detail']}"
            row.update(outcome=FAILED, error_status=INVALID_REQUEST, error_message=message, retryable=False)
            out.write(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
    ports.warehouse.load(rows_uri, "predictions", job_id)


def submit_job(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    run: Run,
    chunk: int,
    attempt: int,
    input_uri: str,
    requests: int,
    now: datetime,
) -> JobRecord:
    """Create one job attempt exactly once (claim, look for it, create, record)."""
    record = JobRecord(
        run.run_id,
        chunk,
        attempt,
        input_uri,
        output_prefix(settings, run.run_id, chunk, attempt),
        requests,
        claimed_at=stamp(now),
        location=settings.location,
    )
    generation = ledger.create_job(record)
    if generation is None:
        found = ledger.get_job(run.run_id, chunk, attempt)
        if found is None:
            raise TransientError("the job record vanished; retry")
        record, generation = found
        if record.status != JOB_CLAIMED:
            return record  # already submitted
        if lease_held(record.claimed_at, now, settings.lease_seconds):
            raise TransientError(f"job {job_key(run.run_id, chunk, attempt)} is being submitted by another delivery")
        record.claimed_at = stamp(now)
        try:
            generation = ledger.put_job(record, generation)
        except ConflictError as exc:
            raise TransientError("the job claim changed under us; retry") from exc
    labels = job_labels(run.run_id, chunk, attempt, run.labels)
    identity = {k: labels[k] for k in ("gbp_run", "gbp_chunk", "gbp_attempt")}
    job = ports.jobs.find(identity, record.location)  # a crash after create must not bill twice
    if job is None:
        display = f"{run.display_name or run.run_id}-c{chunk}-a{attempt}"[:128]
        job = ports.jobs.create(
            model=run.model,
            input_uri=input_uri,
            dest_prefix=record.dest_prefix,
            display_name=display,
            labels=labels,
            location=record.location,
        )
        log.info(
            "batch job submitted",
            extra={"run_id": run.run_id, "job_name": job.name, "chunk": chunk, "attempt": attempt, "rows": requests},
        )
    else:
        log.info("batch job found: adopted", extra={"run_id": run.run_id, "job_name": job.name})
    record.status, record.job_name, record.vertex_state = JOB_SUBMITTED, job.name, job.state
    record.submitted_at = stamp(now)
    record.history.append({"state": job.state, "at": stamp(now)})
    ledger.activate(record)
    try:
        ledger.put_job(record, generation)
    except ConflictError as exc:
        raise TransientError("the job record changed under us; retry") from exc
    return record


__all__ = ["RUN_COMPLETE", "Submission", "submit", "submit_job"]
