"""Submit: validate a request file, give every line a key, stage chunks, one Vertex job per chunk.

Exactly once per run however often the event comes: the run is claimed in the ledger (with a
lease) before anything is read, its chunks are staged under the holder's own names and
recorded, and every job attempt is claimed before ``batches.create`` (see attempts.py). A
holder that fails releases its claim; one that dies leaves a lapsing lease, after which a
redelivery or the poller's resume message goes on from what the ledger records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

import orjson

from shared.config import Settings
from shared.core.cost import STATE_SIZE, Estimator
from shared.core.errors import PermanentError, RefusedError, TransientError
from shared.core.ids import job_key
from shared.core.keys import JobLimits, KeyedLine, KeyIndex, assigned_key
from shared.core.lines import iter_lines
from shared.core.messages import check_model, check_source
from shared.core.normalize import FAILED, RowContext, missing_row
from shared.core.records import RUN_AWAITING_APPROVAL, RUN_REJECTED, RUN_RUNNING, RUN_SUBMITTING, Run
from shared.core.validate import Marks, ScannedLine, ValidationOptions, ValidationSummary, scan
from shared.ports import Ports
from shared.services.admission import try_admit
from shared.services.attempts import CREATE_NEEDS, queue_attempt
from shared.services.budget import guard, run_table
from shared.services.ledger import Claim, ClaimHeld, DeadlineNear, Invocation, Ledger, stamp
from shared.services.loads import load_entry
from shared.services.run_states import record_state
from shared.services.runs import complete_run, decline, release_work_files
from shared.services.windows import settle

log = logging.getLogger("gbp.submit")
INVALID_REQUEST: Final = "INVALID_REQUEST"
UPLOAD: Final = "upload"
MESSAGE: Final = "message"
KEEP_ALIVE_LINES: Final = 20_000
EXPORT_TRIES: Final = 3  # invocations a bq:// read may take before the run is rejected
CHECK_BYTES: Final = 64 << 20  # the lease and the time are looked at every 64 MiB too (long lines)
# Settings a run is staged with, frozen when it is created: every invocation that goes on with it
# (submit_batch, submit_request, after a redeploy) splits and checks it the same way.
STAGING_SETTINGS: Final = (
    "max_requests_per_job",
    "max_bytes_per_job",
    "max_line_bytes",
    "skip_invalid_lines",
    "submit_bytes_per_invocation",
)
# Seconds kept back when staging: closing a chunk, writing its keys, creating its job, handing on.
SEGMENT_RESERVE: Final = CREATE_NEEDS + 60.0


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
        created_at=stamp(inv.now()),
        display_name=sub.display_name,
        labels=dict(sub.labels),
        # A guarded run starts no job before its whole file is estimated (and passed): frozen here, so
        # that a limit set while it is staged never finds some of its jobs started.
        options={**{name: getattr(settings, name) for name in STAGING_SETTINGS}, "budget_guard": settings.budget_guard},
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
        if not run.state_rows:
            record_state(claim, settings, ports)  # SUBMITTING: in the runs view from the start
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


def decide(run_id: str, verdict: str, why: str, settings: Settings, ports: Ports, inv: Invocation) -> str:
    """An ``approve`` or ``reject`` message for a run the budget guard holds; once, however often delivered.

    Returns what the run became ("submitted", "continued"... for an approval, "rejected"), or
    "duplicate" when it is not waiting any more. A decision racing another one waits (ClaimHeld
    is retried) and then finds the run decided.
    """
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    if ledger.get_run(run_id) is None:
        raise PermanentError(f"{verdict}: unknown run {run_id}")
    run, claim = ledger.claim(Run, ledger.run_uri(run_id), inv, states=frozenset({RUN_AWAITING_APPROVAL}))
    if claim is None:
        if run.status == RUN_SUBMITTING and not run.budget_day and not run.decision:
            # Not decided by the guard yet (the hold is announced right before it is saved, and a big
            # file is still being staged): the decision is redelivered until there is one to make.
            raise TransientError(f"{verdict} {run_id}: the run is not waiting for approval yet; retried")
        log.info("duplicate: skipped", extra={"run_id": run_id, "status": run.status, "verdict": verdict})
        return "duplicate"
    with claim.released_on_error():
        if verdict == "reject":
            decline(claim, settings, ports, "rejected", why or "a reject message")
            return "rejected"
        run.decision = {"verdict": "approved", "at": stamp(inv.now()), "why": why or "an approve message"}
        run.error = ""
        claim.move("approve")
        log.info("run approved", extra={"run_id": run_id, "expected_usd": run.estimate.get("expected_usd")})
        return _submit_claimed(claim, ledger, settings, ports, inv)


def _submit_claimed(claim: Claim[Run], ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation) -> str:
    run = claim.record
    settings = dataclasses.replace(settings, **{k: v for k, v in run.options.items() if k in STAGING_SETTINGS})
    _upgrade(run)
    if run.staged.get("done"):
        summary: ValidationSummary | None = ValidationSummary.restore(run.staged["summary"])
    else:
        try:
            summary = _stage(claim, ledger, settings, ports, inv)
        except SourceUnreadable as exc:
            if not _paid_for(run, settings):
                return _reject(claim, ledger, settings, ports, None, str(exc))  # nothing was submitted
            _cut_short(claim, str(exc))  # jobs run already: the run goes on with what was staged
            summary = ValidationSummary.restore(run.staged["summary"])
        if summary is None:
            return _continue(claim, settings, ports)
    assert summary is not None
    # Checked again on every try: a rejection that failed half-way is not taken for a valid file.
    if (summary.invalid and not settings.skip_invalid_lines) or summary.valid == 0:
        return _reject(claim, ledger, settings, ports, summary, run.staged.get("error", ""))
    if not guard(claim, settings, ports):  # over a cost limit: held, nothing queued, nothing loaded
        return "held"
    if run.invalid:
        _load_invalid_rows(claim, settings, ports)
    files, counts = run.staged["files"], run.staged["counts"]
    for chunk in range(len(files)):  # every chunk: one a dead holder never queued too
        if ledger.get_job(run.run_id, chunk, 1) is None:
            if inv.time_left() < SEGMENT_RESERVE:
                return _continue(claim, settings, ports)  # the rest in a fresh invocation
            queue_attempt(ledger, settings, inv, run.run_id, chunk, 1, files[chunk], counts[chunk])
            claim.keep_alive()
    record_state(claim, settings, ports, status=RUN_RUNNING)
    claim.move("start")
    try_admit(ledger, settings, ports, inv)  # the jobs start now when slots are free, else as they free
    log.info(
        "run submitted",
        extra={"run_id": run.run_id, "gcs_uri": run.source, "jobs": run.chunks, "rows": run.requests},
    )
    complete_run(ledger, settings, ports, inv, run.run_id)  # its jobs may all be collected already
    return "submitted"


def _early(run: Run, settings: Settings) -> bool:
    """Jobs start as chunks are recorded: SKIP_INVALID_LINES (nothing can reject the run), no cost limit."""
    return settings.skip_invalid_lines and not run.options.get("budget_guard")


def _paid_for(run: Run, settings: Settings) -> bool:
    """Jobs may exist for the run (started early, as chunks were recorded)."""
    return _early(run, settings) and bool(run.staged.get("files"))


def _cut_short(claim: Claim[Run], error: str) -> None:
    """The source cannot be read any more, but jobs of its first chunks run: staging ends where it stands.

    The lines after the checkpoint cannot be known (nor their keys): the run goes on with the
    recorded chunks, and says why it is short (``error``, in its announcement).
    """
    run = claim.record
    staged = run.staged
    staged["done"], staged["error"] = True, f"the source could not be read past line {staged['line']}: {error}"
    summary = staged["summary"]
    run.chunks, run.requests, run.invalid = len(staged["files"]), summary["valid"], summary["invalid"]
    run.error = staged["error"]
    claim.save()
    log.error("run cut short: source unreadable", extra={"run_id": run.run_id, "line": staged["line"]})


def _upgrade(run: Run) -> None:
    """A run staged by an earlier release (``{"prefix", "counts"}``, written only once it was staged)."""
    staged = run.staged
    if "prefix" in staged and "files" not in staged:
        prefix, counts = staged["prefix"], staged["counts"]
        files = [f"{prefix}/{job_key(run.run_id, chunk, 1)}.jsonl" for chunk in range(len(counts))]
        invalid = [f"{prefix}/invalid.jsonl"] if run.invalid else []
        total = run.requests + run.invalid
        summary = ValidationSummary(lines=total, valid=run.requests, invalid=run.invalid).checkpoint()
        staged.update(files=files, invalid=invalid, keys=[], done=True, summary=summary, offset=0, line=0)
        if run.invalid:  # it was staged with invalid lines, so in skip mode (a rejected run was not staged)
            run.options.setdefault("skip_invalid_lines", True)


def _continue(claim: Claim[Run], settings: Settings, ports: Ports) -> str:
    """Hand the rest of the file on to a fresh invocation: the checkpoint is saved, the claim released."""
    run = claim.record
    if _paid_for(run, settings):  # chunks queued so far may start meanwhile
        try_admit(claim.ledger, settings, ports, claim.inv)
    run.claimed_at, run.resume_sent_at = "", stamp(claim.inv.now())  # the poller need not send one too
    claim.save()
    ports.bus.publish(settings.batch_requests_topic, {"resume": run.run_id}, run_id=run.run_id)
    staged = run.staged
    log.info(
        "submission continued",
        extra={"run_id": run.run_id, "line": staged["line"], "offset": staged["offset"], "jobs": len(staged["files"])},
    )
    return "continued"


class SourceUnreadable(PermanentError):
    """The run's source cannot be read (gone, replaced, refused)."""


@contextlib.contextmanager
def _unreadable_when_gone(reading: Callable[[], str]) -> Iterator[None]:
    """A 404 while the file ``reading()`` names is being read (deleted or replaced meanwhile) is SourceUnreadable.

    Only that read's: a 404 from any other call in the block (a ledger read, Vertex) stays what it is.
    """
    try:
        yield
    except RefusedError as exc:
        if exc.code != 404 or f"reading {reading()}" not in str(exc):
            raise
        raise SourceUnreadable(str(exc)) from exc


class _Source:
    """The requests as a binary stream from a checkpoint on, whatever the source."""

    def __init__(self, claim: Claim[Run], prefix: str, ports: Ports) -> None:
        self.claim, self.prefix, self.ports = claim, prefix, ports

    def open(self, stack: ExitStack, start: int) -> BinaryIO:
        run, staged = self.claim.record, self.claim.record.staged
        try:
            if run.source.startswith("gs://"):
                if not run.generation:
                    raise PermanentError(f"{run.source} does not exist")
                return stack.enter_context(self.ports.store.open(run.source, run.generation, start))
            if not staged["source"]:
                self._export()
            return stack.enter_context(self.ports.store.open(staged["source"], None, start))
        except PermanentError as exc:
            raise SourceUnreadable(str(exc)) from exc

    def _export(self) -> None:
        """Read a bq:// table once into a file under this holder's prefix, and record it.

        Its row order is not stable between reads, and keyless rows get keys from their line
        numbers. The read is not checkpointed: it must fit one invocation, and after
        EXPORT_TRIES that did not finish the run is rejected with the reason (no endless retry).
        """
        run, staged = self.claim.record, self.claim.record.staged
        tries = staged.get("export_tries", 0)
        if tries >= EXPORT_TRIES:
            raise PermanentError(
                f"{run.source} could not be read within one invocation ({tries} tries): "
                "export it to files (gs://) and submit those"
            )
        staged["export_tries"] = tries + 1
        self.claim.save()
        uri = f"{self.prefix}/source.jsonl"
        try:
            with self.ports.store.writer(uri) as out:
                for number, line in enumerate(self.ports.warehouse.request_lines(run.source), 1):
                    if number % KEEP_ALIVE_LINES == 0:
                        self.claim.keep_alive()  # renews the lease; stops at the deadline
                    out.write(line + b"\n")
        except TransientError as exc:
            if not isinstance(exc, DeadlineNear):
                staged["export_tries"] = tries  # only a read that ran out of time counts (saved on release)
            raise
        staged["source"] = uri
        self.claim.save()


def _stage(
    claim: Claim[Run], ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation
) -> ValidationSummary | None:
    """Validate and stage the file from its checkpoint on; the summary once the whole file is done.

    Every valid line is written, keyed, into job-sized chunks under this holder's own
    prefix. Each closed chunk is recorded with the checkpoint (the byte offset and line where
    the next chunk starts, the counts so far) in one conditional write, with its keys beside
    it for the duplicate check of later chunks. With SKIP_INVALID_LINES nothing can reject the
    run any more, so a chunk's job is created as soon as it is recorded (unless a cost limit is
    set: the budget guard decides on the whole file first); without it, only once the whole
    file is known valid (nothing is paid for a file that will be rejected), and once
    a line is invalid nothing more is written: the rest of the file is only checked, for the
    report.

    Returns None when this invocation has read its share (SUBMIT_BYTES_PER_INVOCATION, or its
    time) and a continuation should go on from the checkpoint. The share and the time are
    checked on every line, valid or not: a checkpoint is taken before a valid line or after an
    invalid one.
    """
    run = claim.record
    staged = run.staged
    if not staged:
        staged.update(files=[], counts=[], keys=[], invalid=[], offset=0, line=0, summary=None, source="", done=False)
        staged.update(estimator=[], estimates=[])
    if "estimates" not in staged:  # begun by an earlier release: its chunks so far have counts only
        staged["estimates"] = [[count] for count in staged["counts"]]
    table, price = run_table(run, settings, ports)
    # No state: staging begun by an earlier release (its estimate covers the rest of the file).
    estimator = Estimator.for_price(table.estimator, price, staged.get("estimator"))
    limits = JobLimits(settings.max_requests_per_job, settings.max_bytes_per_job)
    options = ValidationOptions(limits=limits, max_line_bytes=settings.max_line_bytes, max_examples=100)
    if staged["summary"]:
        summary = ValidationSummary.restore(staged["summary"])
    else:
        summary = ValidationSummary(max_requests=limits.max_requests, max_bytes=limits.max_bytes)
    keys = KeyIndex()
    keys.add_sealed(_read_keys(ports, uri) for uri in staged["keys"])
    # This holder's files go under a prefix of its own (its claim's generation): a holder that
    # was replaced can never overwrite what its successor staged.
    prefix = f"gs://{settings.io_bucket}/staging/{run.run_id}/s{claim.generation}"
    stage = _Chunks(claim, ports, prefix, keys, estimator)
    budget_end = staged["offset"] + settings.submit_bytes_per_invocation
    early = _early(run, settings)  # jobs start as chunks are recorded
    skip = settings.skip_invalid_lines  # invalid lines are kept as rows, and the valid ones after them staged

    def recorded(chunk: int | None) -> None:
        if chunk is not None and early:
            queue_attempt(ledger, settings, inv, run.run_id, chunk, 1, staged["files"][chunk], stage.last)

    out_of_time = False
    marks = Marks()
    check_at = staged["offset"] + CHECK_BYTES
    read_from = lambda: run.source if run.source.startswith("gs://") else staged["source"]  # noqa: E731
    with ExitStack() as stack, _unreadable_when_gone(read_from):
        stack.enter_context(stage.files)  # a failure cancels the open writers: no half-written chunk
        source = _Source(claim, prefix, ports).open(stack, staged["offset"])
        start = (staged["offset"], staged["line"])
        for scanned in scan(source, options, summary, keys=keys, start=start, marks=marks):
            if scanned.line_number % KEEP_ALIVE_LINES == 0 or marks.at[0] >= check_at:
                claim.keep_alive()
                out_of_time = inv.time_left() < SEGMENT_RESERVE
                check_at = marks.at[0] + CHECK_BYTES
            stop = out_of_time or marks.at[0] >= budget_end
            if scanned.issue is not None:
                if skip:
                    stage.invalid(scanned)
                if stop:  # a checkpoint right after this line
                    recorded(stage.close(None, marks.checkpoint(summary), marks.at))
                    return None
                continue
            line = scanned.keyed()
            size = len(line.data) + 1
            full = stage.count >= limits.max_requests or stage.size + size > limits.max_bytes
            if (stage.count and full) or stop:  # a checkpoint right before this line
                recorded(stage.close(line.key, marks.checkpoint(summary), marks.at))
                if stop or inv.time_left() < SEGMENT_RESERVE:
                    return None
            # Without SKIP_INVALID_LINES a file with an invalid line is rejected: nothing more to write.
            stage.add(line, size, write=skip or not summary.invalid)
        # The whole file is read: the scan has added its counts to the summary.
        recorded(stage.close(None, summary.checkpoint(), None))  # the last chunk and "done", in one write
    return summary


class _Chunks:
    """The chunk being filled (and the invalid lines since the last checkpoint) of one holder."""

    def __init__(self, claim: Claim[Run], ports: Ports, prefix: str, keys: KeyIndex, estimator: Estimator) -> None:
        self.claim, self.ports, self.prefix, self.keys = claim, ports, prefix, keys
        self.estimator = estimator
        self.counted = [0] * STATE_SIZE  # the chunk's counts (Estimator.state's shape)
        self.files = ExitStack()
        self.out: BinaryIO | None = None
        self.invalid_out: BinaryIO | None = None
        self.count = self.size = self.last = self.written = 0

    @property
    def chunk(self) -> int:
        return len(self.claim.record.staged["keys"])

    def _uri(self, suffix: str) -> str:
        return f"{self.prefix}/{job_key(self.claim.record.run_id, self.chunk, 1)}{suffix}"

    def add(self, line: KeyedLine, size: int, write: bool = True) -> None:
        """Add a line to the chunk (only counted, not written, when the run will be rejected)."""
        counted = self.counted
        for i, value in enumerate(self.estimator.add(line.data)):
            counted[i] += value
        if write:
            if self.out is None:
                self.out = self.files.enter_context(self.ports.store.writer(self._uri(".jsonl")))
            self.out.write(line.data + b"\n")
            self.written += 1
        self.count += 1
        self.size += size

    def invalid(self, line: ScannedLine) -> None:
        if self.invalid_out is None:
            self.invalid_out = self.files.enter_context(self.ports.store.writer(self._uri(".invalid.jsonl")))
        issue = line.issue
        assert issue is not None
        kept = {"line": line.line_number, "key": line.key, "reason": issue.reason, "detail": issue.detail}
        self.invalid_out.write(orjson.dumps(kept) + b"\n")

    def close(self, keep: str | None, summary: dict[str, Any], at: tuple[int, int] | None) -> int | None:
        """Close the files, and record them with the checkpoint ``at`` (offset, line; None: the end).

        Returns the chunk recorded as a job's input, if one was. ``keep``: the key of a line
        scanned already that belongs to the next chunk (not sealed with this one). At the end
        the run is recorded as staged in the same write, and the last chunk's keys are not kept
        (no later chunk is checked against them).
        """
        run = self.claim.record
        staged, base = run.staged, self._uri("")  # the names the open files were given
        # Every write first, then the record changes, saved at once: a failure in between
        # leaves nothing recorded (a release saves the record as it is in memory).
        self.files.close()  # the objects appear whole now
        sealed = self.count and at is not None
        if sealed:
            self.ports.store.write(f"{base}.keys", self.keys.seal(keep))
        if self.invalid_out is not None:
            staged["invalid"].append(f"{base}.invalid.jsonl")
        recorded = None
        if sealed:
            staged["keys"].append(f"{base}.keys")
        if self.written:
            staged["files"].append(f"{base}.jsonl")
            staged["counts"].append(self.written)
            staged["estimates"].append(self.counted)
            recorded = len(staged["files"]) - 1
        staged["estimator"] = self.estimator.state()
        if at is not None:
            staged["offset"], staged["line"] = at
        else:
            staged["done"] = True
            run.chunks, run.requests, run.invalid = len(staged["files"]), summary["valid"], summary["invalid"]
        staged["summary"] = summary
        self.claim.save()  # LostClaim when another holder took over: its own files are the ones recorded
        self.claim.keep_alive()
        self.last, self.count, self.size, self.written = self.written, 0, 0, 0
        self.counted = [0] * STATE_SIZE
        self.out = self.invalid_out = None
        return recorded


def _read_keys(ports: Ports, uri: str) -> bytes:
    found = ports.store.read(uri)
    if found is None:
        raise TransientError(f"the keys {uri} are missing")
    return found[0]


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
    run.finished_at = stamp(claim.inv.now())
    record_state(claim, settings, ports, status=RUN_REJECTED)
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
    run's announcement. The run goes on while its load window waits; it is announced once loaded.
    """
    run = claim.record
    entry = load_entry(claim, "invalid")
    if entry is not None and entry.get("state"):
        return
    rows_uri = f"gs://{settings.work_bucket}/rows/{run.run_id}/invalid.g{claim.generation}.ndjson"
    if entry is None:
        # Attempt 0: never sent. A late duplicate's row must not hide the answer its key got
        # (latest_predictions keeps the highest attempt), whichever was loaded first.
        context = RowContext(run.run_id, None, run.source, 0, stamp(claim.inv.now()))
        with ports.store.writer(rows_uri) as out:
            for segment in run.staged["invalid"]:
                claim.keep_alive()
                with ports.store.open(segment) as stream:
                    for raw in iter_lines(stream, settings.max_line_bytes):
                        if not isinstance(raw, bytes) or not raw.strip():
                            continue
                        issue: dict[str, Any] = orjson.loads(raw)
                        row = missing_row(issue["key"] or assigned_key(issue["line"]), context)
                        message = f"line {issue['line']}: {issue['reason']}: {issue['detail']}"
                        row.update(outcome=FAILED, error_status=INVALID_REQUEST, error_message=message, retryable=False)
                        out.write(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
    try:  # in the table's load window: the run is announced once it is loaded (runs.py)
        settle(claim, "invalid", "predictions", rows_uri, settings, ports)
    except PermanentError:
        log.exception("rejected lines could not be loaded", extra={"run_id": run.run_id})


__all__ = ["Submission", "resume", "submit"]
