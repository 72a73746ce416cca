"""Submit: validate a request file, give every line a key, stage chunks, one Vertex job per chunk.

Exactly once per run however often the event comes: the run is claimed in the ledger (with a
lease) before anything is read, its chunks are staged under the holder's own names and
recorded, and every job attempt is claimed before ``batches.create`` (see attempts.py). A
holder that fails releases its claim; one that dies leaves a lapsing lease, after which a
redelivery or the poller's resume message goes on from what the ledger records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

import orjson

from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.ids import job_key
from shared.core.keys import JobLimits, KeyedLine, assign_chunks, assigned_key
from shared.core.lines import iter_lines
from shared.core.messages import check_model, check_source
from shared.core.normalize import FAILED, RowContext, missing_row
from shared.core.records import RUN_SUBMITTING, Run
from shared.core.validate import ValidationOptions, ValidationSummary, scan
from shared.ports import Ports
from shared.services.attempts import submit_attempt
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, stamp
from shared.services.loads import load_entry, load_once
from shared.services.runs import complete_run, release_work_files

log = logging.getLogger("gbp.submit")
INVALID_REQUEST: Final = "INVALID_REQUEST"
UPLOAD: Final = "upload"
MESSAGE: Final = "message"
KEEP_ALIVE_LINES: Final = 20_000


@dataclass(frozen=True)
class Submission:
    """What to run: where the requests are and how to name the run."""

    run_id: str
    source: str  # gs://bucket/name or bq://project.dataset.table
    generation: str | None = None  # an upload's generation (a message's source is pinned at first delivery)
    model: str = ""
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    origin: str = UPLOAD  # where a report may be written: next to an upload, or in the work bucket


def submit(sub: Submission, settings: Settings, ports: Ports, inv: Invocation) -> str:
    """Run ``sub``: "submitted", "duplicate" or "rejected"; raises TransientError to be retried."""
    check_source(sub.source)
    model = check_model(sub.model or settings.model)
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    generation = sub.generation
    if generation is None and sub.source.startswith("gs://") and ledger.get_run(sub.run_id) is None:
        generation = ports.store.generation(sub.source)  # pinned: a later upload is not this run's
    new = Run(
        sub.run_id,
        sub.source,
        model,
        generation=generation or "",
        origin=sub.origin,
        updated_at=stamp(inv.now()),
        display_name=sub.display_name,
        labels=dict(sub.labels),
    )
    ledger.activate_run(sub.run_id, inv.now())  # followed by the poller from before it exists
    try:
        run, claim = ledger.claim(Run, ledger.run_uri(sub.run_id), inv, create=new, states=frozenset({RUN_SUBMITTING}))
    except ClaimHeld:
        log.info("duplicate: held by another invocation", extra={"run_id": sub.run_id})
        return "busy"  # its holder finishes it, or its own event is retried, or the poller resumes it
    if claim is None:
        log.info("duplicate: skipped", extra={"run_id": run.run_id, "status": run.status})
        return "duplicate"
    ledger.activate_run(run.run_id, inv.now())  # again: a marker a lease old with no record is dropped
    with claim.released_on_error():
        return _submit_claimed(claim, ledger, settings, ports, inv)


def resume(run_id: str, settings: Settings, ports: Ports, inv: Invocation) -> str:
    """Go on with a run whose holder died (the poller's resume message)."""
    found = Ledger(ports.store, settings.work_bucket, settings.lease_seconds).get_run(run_id)
    if found is None:
        raise PermanentError(f"resume: unknown run {run_id}")
    run = found[0]
    if run.status != RUN_SUBMITTING:
        log.info("duplicate: skipped", extra={"run_id": run_id, "status": run.status})
        return "duplicate"
    sub = Submission(run_id, run.source, run.generation, run.model, run.display_name, run.labels, run.origin)
    return submit(sub, settings, ports, inv)


def _submit_claimed(claim: Claim[Run], ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation) -> str:
    run = claim.record
    if not run.staged:
        # This holder's files go under a prefix of its own (its claim's generation): a holder that
        # was replaced can never overwrite what its successor staged.
        prefix = f"gs://{settings.work_bucket}/staging/{run.run_id}/s{claim.generation}"
        with ExitStack() as stack:
            try:
                source = _Source(run, prefix, ports).open(stack)
            except PermanentError as exc:  # the source cannot be read: nothing will change that by retrying
                return _reject(claim, ledger, settings, ports, None, str(exc))
            summary = _stage(claim, settings, ports, source, prefix)
        if (summary.invalid and not settings.skip_invalid_lines) or summary.valid == 0:
            return _reject(claim, ledger, settings, ports, summary, "")
    if run.invalid:
        _load_invalid_rows(claim, settings, ports)
    prefix = run.staged["prefix"]
    for chunk, count in enumerate(run.staged["counts"]):
        input_uri = f"{prefix}/{job_key(run.run_id, chunk, 1)}.jsonl"
        try:
            submit_attempt(ledger, settings, ports, inv, run, chunk, 1, input_uri, count)
        except ClaimHeld:  # claimed already (by the poller's redrive): it exists, and is followed
            log.info("job attempt held by another invocation", extra={"run_id": run.run_id, "chunk": chunk})
        claim.keep_alive()
    claim.move("start")
    log.info(
        "run submitted",
        extra={"run_id": run.run_id, "gcs_uri": run.source, "jobs": run.chunks, "rows": run.requests},
    )
    complete_run(ledger, settings, ports, inv, run.run_id)  # its jobs may all be collected already
    return "submitted"


class _Source:
    """The requests as a binary stream, whatever the source."""

    def __init__(self, run: Run, prefix: str, ports: Ports) -> None:
        self.run, self.prefix, self.ports = run, prefix, ports

    def open(self, stack: ExitStack) -> BinaryIO:
        source = self.run.source
        if source.startswith("gs://"):
            if not self.run.generation:
                raise PermanentError(f"{source} does not exist")
            return stack.enter_context(self.ports.store.open(source, self.run.generation))
        # A bq:// table is exported once, under this holder's own staging prefix: its row order
        # is not stable between reads, and keyless rows get keys from their line numbers.
        uri = f"{self.prefix}/source.jsonl"
        with self.ports.store.writer(uri) as out:
            for line in self.ports.warehouse.request_lines(source):
                out.write(line + b"\n")
        return stack.enter_context(self.ports.store.open(uri))


def _stage(claim: Claim[Run], settings: Settings, ports: Ports, source: BinaryIO, prefix: str) -> ValidationSummary:
    """One pass: validate every line and write the valid ones, keyed, into job-sized chunks under ``prefix``.

    The prefix is recorded with the chunk counts in one conditional write.
    """
    run = claim.record
    limits = JobLimits(settings.max_requests_per_job, settings.max_bytes_per_job)
    options = ValidationOptions(limits=limits, max_line_bytes=settings.max_line_bytes, max_examples=100)
    summary = ValidationSummary(max_requests=limits.max_requests, max_bytes=limits.max_bytes)
    counts: list[int] = []
    with ExitStack() as stack:
        lines = scan(source, options, summary)
        skipped = f"{prefix}/invalid.jsonl"
        invalid_out = stack.enter_context(ports.store.writer(skipped)) if settings.skip_invalid_lines else None

        def valid_lines() -> Iterator[KeyedLine]:
            for line in lines:
                if line.line_number % KEEP_ALIVE_LINES == 0:
                    claim.keep_alive()
                if line.issue is None:
                    yield line.keyed()
                elif invalid_out is not None:
                    issue = line.issue
                    kept = {"line": line.line_number, "key": line.key, "reason": issue.reason, "detail": issue.detail}
                    invalid_out.write(orjson.dumps(kept) + b"\n")

        out: BinaryIO | None = None
        current = -1
        with ExitStack() as chunk_files:
            for index, keyed in assign_chunks(valid_lines(), limits):
                if index != current:
                    chunk_files.close()
                    uri = f"{prefix}/{job_key(run.run_id, index, 1)}.jsonl"
                    out = chunk_files.enter_context(ports.store.writer(uri))
                    counts.append(0)
                    current = index
                assert out is not None
                out.write(keyed.data + b"\n")
                counts[index] += 1
    if summary.valid and (settings.skip_invalid_lines or not summary.invalid):
        run.staged = {"prefix": prefix, "counts": counts}
        run.chunks, run.requests, run.invalid = len(counts), summary.valid, summary.invalid
        claim.save()
    return summary


def _reject(
    claim: Claim[Run],
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    summary: ValidationSummary | None,
    error: str,
) -> str:
    """Write a line-numbered report and record the run as REJECTED.

    An upload's report goes next to it (``rejected/<name>.errors.json`` in the input
    bucket); a message's goes to the work bucket, where submit_request may write (and so
    does an upload's when the invocation may not write beside it: a resumed run).
    """
    run = claim.record
    report: dict[str, Any] = {"run_id": run.run_id, "source": run.source, "generation": run.generation}
    if summary is not None:
        report.update(summary.as_dict())
        if summary.valid == 0 and summary.invalid == 0:
            error = "the file has no requests"
    if error:
        report["error"] = error
    body = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    run.report_uri = f"gs://{settings.work_bucket}/rejected/{run.run_id}.errors.json"
    if run.origin == UPLOAD and run.source.startswith(f"gs://{settings.input_bucket}/"):
        beside = f"gs://{settings.input_bucket}/rejected/{run.source.split('/', 3)[3]}.errors.json"
        try:
            ports.store.write(beside, body)
            run.report_uri = beside
        except PermanentError:  # 403: this function may only read the input bucket
            log.warning("report not written beside the upload", extra={"run_id": run.run_id, "report": beside})
    if run.report_uri.startswith(f"gs://{settings.work_bucket}/"):
        ports.store.write(run.report_uri, body)
    run.invalid, run.error = (summary.invalid if summary else 0), error
    claim.move("reject")
    release_work_files(settings, ports, run.run_id, claim.inv.now())
    ledger.deactivate_run(run.run_id)
    log.warning(
        "run rejected",
        extra={"run_id": run.run_id, "gcs_uri": run.source, "invalid": run.invalid, "report": run.report_uri},
    )
    return "rejected"


def _load_invalid_rows(claim: Claim[Run], settings: Settings, ports: Ports) -> None:
    """SKIP_INVALID_LINES: each rejected line becomes a FAILED row with its reason (loaded once).

    A load that fails for good does not stop the run: it is recorded, and named in the
    run's announcement.
    """
    run = claim.record
    entry = load_entry(claim, "invalid")
    if entry is not None and entry.get("state"):
        return
    rows_uri = f"gs://{settings.work_bucket}/rows/{run.run_id}/invalid.g{claim.generation}.ndjson"
    if entry is None:
        context = RowContext(run.run_id, None, run.source, 1, stamp(claim.inv.now()))
        with (
            ports.store.open(f"{run.staged['prefix']}/invalid.jsonl") as stream,
            ports.store.writer(rows_uri) as out,
        ):
            for raw in iter_lines(stream, settings.max_line_bytes):
                if not isinstance(raw, bytes) or not raw.strip():
                    continue
                issue: dict[str, Any] = orjson.loads(raw)
                row = missing_row(issue["key"] or assigned_key(issue["line"]), context)
                message = f"line {issue['line']}: {issue['reason']}: {issue['detail']}"
                row.update(outcome=FAILED, error_status=INVALID_REQUEST, error_message=message, retryable=False)
                out.write(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
    try:
        load_once(claim, "invalid", "predictions", rows_uri, ports)
    except PermanentError:
        log.exception("rejected lines could not be loaded", extra={"run_id": run.run_id})


__all__ = ["Submission", "resume", "submit"]
