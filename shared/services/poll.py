"""Poll: Vertex has no completion event, so a scheduled tick follows every job attempt and run not yet done.

It drives every state on when nothing else does (records.TIMEOUTS): a CLAIMED attempt whose
holder failed or died is found or created; a Vertex state change is recorded, a final one
published on ``batch-finished`` (again when nobody collected it within a lease, or when its
collector died); jobs past their deadlines are cancelled and marked stuck; a run whose
submitter died gets a resume message; a run with nothing left to follow is nudged to
completion. Then it admits queued attempts as slots free (admission.py) and loads the closed
load windows (windows.py). Followed attempts are read several at a time; queued ones cost one
listing. One failing job never stops the tick for the others.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Final

from shared.config import Settings
from shared.core.errors import ConflictError, PipelineError, RefusedError
from shared.core.failures import JOB_GONE
from shared.core.ids import job_key
from shared.core.records import (
    JOB_CLAIMED,
    JOB_COLLECTING,
    JOB_FINISHED,
    JOB_QUEUED,
    JOB_SUBMITTED,
    JOB_TERMINAL,
    RUN_AWAITING_APPROVAL,
    RUN_FINISHED,
    RUN_REJECTED,
    RUN_RUNNING,
    RUN_SUBMITTING,
    VERTEX_FINAL,
    JobRecord,
    Run,
    move,
)
from shared.ports import JobError, Ports, VertexJob
from shared.services.admission import ADMIT_RESERVE, admit
from shared.services.attempts import finished_message, observe, redrive
from shared.services.cancel import enforce
from shared.services.ledger import ClaimHeld, Invocation, Ledger, lease_left, stamp
from shared.services.retry import RetryRequest
from shared.services.runs import decline, latest_attempts
from shared.services.windows import load_windows

log = logging.getLogger("gbp.poll")
QUEUED_STATES: Final = frozenset({"JOB_STATE_QUEUED", "JOB_STATE_PENDING"})
RUNNING_STATES: Final = frozenset({"JOB_STATE_RUNNING", "JOB_STATE_UPDATING"})
PAUSED: Final = "JOB_STATE_PAUSED"
CANCELLING: Final = "JOB_STATE_CANCELLING"
POLL_WORKERS: Final = 8  # within the storage client's connection pool (10)
TICK_RESERVE: Final = 30.0  # seconds of the invocation kept back: what is not followed now is next tick's


def poll(settings: Settings, ports: Ports, inv: Invocation) -> dict[str, int]:
    """Follow every active job attempt and run once; return counts of what happened."""
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    counts = dict.fromkeys(
        (
            "followed",
            "changed",
            "finished",
            "republished",
            "stuck",
            "redriven",
            "resumed",
            "nudged",
            "expired",
            "overdue",
            "cancelling",
            "retries_resent",
            "errors",
        ),
        0,
    )
    followed = ledger.active()
    if followed:  # a different start each tick: what one tick has no time for is not always the same
        turn = int(inv.now().timestamp() // 60) % len(followed)
        followed = followed[turn:] + followed[:turn]
    waiting = ledger.queued()
    busy_runs = {run_id for run_id, _, _ in followed} | {q.run_id for q in waiting}
    seen_live: set[str] = set()  # set.add is atomic: the workers share them
    seen_done: set[str] = set()

    def follow(key: tuple[str, int, int]) -> Counter[str]:
        run_id, chunk, attempt = key
        done: Counter[str] = Counter()
        if inv.time_left() < TICK_RESERVE + ADMIT_RESERVE:
            done["left"] += 1
            return done
        done["followed"] += 1
        try:
            _follow(ledger, settings, ports, inv, run_id, chunk, attempt, done, (seen_live, seen_done))
        except Exception as exc:  # one job must never stop the tick for the others
            done["errors"] += 1
            expected = isinstance(exc, PipelineError)
            log.log(
                logging.WARNING if expected else logging.ERROR,
                "job could not be polled",
                extra={"run_id": run_id, "chunk": chunk, "attempt": attempt, "error": str(exc)},
                exc_info=not expected,
            )
        return done

    # Each followed attempt is a ledger read and, while its job runs, a Vertex read: I/O, so in
    # parallel (one attempt per worker at a time; the clients are thread-safe).
    with ThreadPoolExecutor(max_workers=POLL_WORKERS) as pool:
        totals = sum(pool.map(follow, followed), Counter())
    left = totals.pop("left", 0)
    for name, value in totals.items():
        counts[name] = counts.get(name, 0) + value
    if left:
        log.warning("poll tick out of time: the rest next tick", extra={"left": left})
    try:
        throttled = bool(totals["redrive_throttled"])
        if throttled:
            waiting = ledger.queued()  # the attempts the redrive has just queued again
        admitted = admit(ledger, settings, ports, inv, seen_live, seen_done, throttled=throttled, waiting=waiting)
    except Exception as exc:  # the queue waits for the next tick
        counts["errors"] += 1
        log.warning("admission failed", extra={"error": str(exc)}, exc_info=not isinstance(exc, PipelineError))
    else:
        counts.update(admitted)
    try:
        counts.update(load_windows(ledger, settings, ports, inv, reserve=TICK_RESERVE))
    except Exception as exc:  # the windows wait for the next tick
        counts["errors"] += 1
        log.warning("load windows failed", extra={"error": str(exc)}, exc_info=not isinstance(exc, PipelineError))
    runs = ledger.active_runs()
    cancelled = ledger.cancelled_runs() if runs else set()  # one listing a tick
    for run_id in runs:
        if inv.time_left() < TICK_RESERVE:
            break
        try:
            if run_id in cancelled:
                counts["cancelling"] += enforce(ledger, settings, ports, inv, run_id) in ("cancelling", "cancelled")
            _follow_run(ledger, settings, ports, inv, run_id, run_id in busy_runs, counts)
        except Exception as exc:
            counts["errors"] += 1
            log.warning("run could not be polled", extra={"run_id": run_id, "error": str(exc)}, exc_info=True)
    log.info("poll done", extra=counts)
    return counts


def _follow(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    run_id: str,
    chunk: int,
    attempt: int,
    counts: dict[str, int],
    seen: tuple[set[str], set[str]],
) -> None:
    found = ledger.get_job(run_id, chunk, attempt)
    if found is None:
        ledger.drop_orphan(run_id, inv.now(), chunk, attempt)  # its holder died before creating the record
        return
    record, generation = found
    now = inv.now()
    seen_live, seen_done = seen
    key = job_key(run_id, chunk, attempt)
    if record.status in (JOB_FINISHED, JOB_COLLECTING, *JOB_TERMINAL):
        seen_done.add(key)
    if record.status in JOB_TERMINAL:
        ledger.deactivate(record)  # a marker left by a crash after the last write
    elif record.status == JOB_QUEUED:
        # Queued again (429) by a holder that died before dropping this marker, once it is a lease old
        # (a fresh one is an admission under way: its admitter wrote it before claiming the attempt).
        ledger.drop_orphan(run_id, now, chunk, attempt)
    elif record.status == JOB_CLAIMED:
        seen_live.add(key)
        if lease_left(record.claimed_at, now, settings.lease_seconds) <= 0:
            log.warning("job claim lapsed: submitting", extra={"run_id": run_id, "chunk": chunk})
            if redrive(ledger, settings, ports, inv, record) == "throttled":
                counts["redrive_throttled"] += 1
            counts["redriven"] += 1
    elif record.status in (JOB_FINISHED, JOB_COLLECTING):
        # Published already; again when nobody collected it within a lease (at least once),
        # or when its collector's lease lapsed.
        quiet = lease_left(record.finished_at, now, settings.lease_seconds) <= 0
        idle = record.status == JOB_FINISHED or lease_left(record.claimed_at, now, settings.lease_seconds) <= 0
        if quiet and idle:
            record.finished_at = stamp(now)
            ledger.put(record, generation)  # first: a tick that overlaps this one does not publish too
            ports.bus.publish(settings.batch_finished_topic, finished_message(record))
            counts["republished"] += 1
    elif record.status == JOB_SUBMITTED:
        live = _follow_submitted(ledger, settings, ports, inv, record, generation, counts)
        (seen_live if live else seen_done).add(key)


def _follow_submitted(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    record: JobRecord,
    generation: int,
    counts: dict[str, int],
) -> bool:
    """Drive a submitted attempt on; True while its job still holds a slot (not final)."""
    try:
        job = ports.jobs.get(record.job_name, record.location)
    except RefusedError as exc:
        if exc.code != 404:
            raise
        job = VertexJob(record.job_name, JOB_GONE, JobError(5, "NOT_FOUND", "the batch job no longer exists"))
    now = inv.now()
    changed = observe(record, job, now)
    counts["changed"] += changed
    fields = {"run_id": record.run_id, "job_name": record.job_name, "state": job.state}
    if job.state in VERTEX_FINAL or job.state == JOB_GONE or _abandon(record, settings, now):
        if job.state == CANCELLING:
            record.stuck = True
            move(record, "abandoned")
            log.error("batch job stuck cancelling: abandoned", extra=fields)
        else:
            move(record, "finished")
        record.finished_at = ""  # published below; a crash before that is republished at once
        generation = ledger.put(record, generation)
        ports.bus.publish(settings.batch_finished_topic, finished_message(record))
        record.finished_at = stamp(inv.now())
        ledger.put(record, generation)
        counts["finished"] += 1
        log.info("batch job finished", extra=fields)
        return False
    asked = lease_left(record.cancel_requested_at, now, settings.lease_seconds) > 0
    if job.state != CANCELLING and not asked and _past_deadline(record, settings, now):
        # Recorded before asking: once cancelled, its rows must be known as ours to retry.
        record.stuck, record.cancel_requested_at = True, stamp(now)
        ledger.put(record, generation)
        try:
            ports.jobs.cancel(record.job_name, record.location)
        except PipelineError as exc:  # e.g. it ended meanwhile: the next tick sees it (or asks again)
            log.warning("batch job stuck: cancel refused", extra={**fields, "error": str(exc)})
        else:
            counts["stuck"] += 1
            log.warning("batch job stuck: cancelled", extra=fields)
        return True
    if changed:
        ledger.put(record, generation)
    return True


def _entered(record: JobRecord, state: str) -> datetime:
    """When the job entered ``state`` (its latest entry in the history)."""
    for entry in reversed(record.history):
        if entry["state"] == state:
            return datetime.fromisoformat(entry["at"])
    return datetime.fromisoformat(record.submitted_at)


def _past_deadline(record: JobRecord, settings: Settings, now: datetime) -> bool:
    """Queued (or paused) longer than the queue timeout, or running (or updating) longer than the run timeout."""
    state = record.vertex_state
    if state in QUEUED_STATES:
        waited = now - datetime.fromisoformat(record.submitted_at)
        return waited > timedelta(seconds=settings.queue_timeout_seconds)
    if state == PAUSED:
        return now - _entered(record, PAUSED) > timedelta(seconds=settings.queue_timeout_seconds)
    if state in RUNNING_STATES:
        started = next((h["at"] for h in record.history if h["state"] in RUNNING_STATES), record.submitted_at)
        return now - datetime.fromisoformat(started) > timedelta(seconds=settings.run_timeout_seconds)
    return False


def _abandon(record: JobRecord, settings: Settings, now: datetime) -> bool:
    """CANCELLING for longer than the cancel timeout: give up waiting for Vertex."""
    if record.vertex_state != CANCELLING:
        return False
    return now - _entered(record, CANCELLING) > timedelta(seconds=settings.cancel_timeout_seconds)


def _follow_run(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    run_id: str,
    busy: bool,
    counts: dict[str, int],
) -> None:
    found = ledger.get_run(run_id)
    now = inv.now()
    if found is None:
        ledger.drop_orphan(run_id, now)  # its holder died before creating the record
        return
    run, generation = found
    lapsed = lease_left(run.claimed_at, now, settings.lease_seconds) <= 0
    ended = run.status == RUN_REJECTED or (run.status in RUN_FINISHED and run.announced)
    if not ended:
        _check_sla(ledger, settings, run, now, counts)
    if ended:
        ledger.deactivate_run(run_id)
    elif not lapsed:
        return  # its holder is at work (submitting, completing it, queueing a retry)
    elif run.status == RUN_RUNNING and run.reopen and not run.reopen.get("done"):
        if lease_left(run.resume_sent_at, now, settings.lease_seconds) <= 0:  # the retry's holder died: again
            run.resume_sent_at = stamp(now)
            ledger.put(run, generation)  # first: a tick that overlaps this one does not publish too
            reopen = run.reopen
            fields = (tuple(reopen["outcomes"]), tuple(reopen["error_statuses"]), reopen.get("model", ""))
            again = RetryRequest(run_id, reopen["id"], *fields)  # (its budget was checked when it was reopened)
            ports.bus.publish(settings.batch_requests_topic, again.message(), run_id=run_id)
            counts["retries_resent"] += 1
            log.warning("run retry lapsed: retry sent again", extra={"run_id": run_id})
    elif run.status == RUN_AWAITING_APPROVAL:
        if lease_left(run.held_at, now, settings.approval_timeout_seconds) <= 0:
            _expire(ledger, settings, ports, inv, run_id, counts)
    elif run.status == RUN_SUBMITTING:
        if lease_left(run.resume_sent_at, now, settings.lease_seconds) <= 0:
            run.resume_sent_at = stamp(now)
            ledger.put(run, generation)  # first: a tick that overlaps this one does not publish too
            ports.bus.publish(settings.batch_requests_topic, {"resume": run_id}, run_id=run_id)
            counts["resumed"] += 1
            log.warning("run submission lapsed: resume sent", extra={"run_id": run_id})
    elif (run.status == RUN_RUNNING and not busy) or run.status in RUN_FINISHED:
        records = ledger.jobs_of(run_id)
        open_attempts = [r for r in records if r.status not in JOB_TERMINAL]
        for record in open_attempts:  # a backstop: an attempt nobody follows (or queues) is again
            if record.status == JOB_QUEUED:
                ledger.mark_queued(record)
            else:
                ledger.activate(record.run_id, record.chunk, record.attempt, now)
        latest = latest_attempts(records)
        if latest and not open_attempts and lease_left(run.nudged_at, now, settings.lease_seconds) <= 0:
            run.nudged_at = stamp(now)
            ledger.put(run, generation)
            ports.bus.publish(settings.batch_finished_topic, finished_message(latest[min(latest)]))
            counts["nudged"] += 1


def _expire(
    ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, run_id: str, counts: dict[str, int]
) -> None:
    """A held run nobody decided on within APPROVAL_TIMEOUT_SECONDS: REJECTED (once, under its claim)."""
    try:
        _, claim = ledger.claim(Run, ledger.run_uri(run_id), inv, states=frozenset({RUN_AWAITING_APPROVAL}))
    except ClaimHeld:
        return  # a decision is being made right now
    if claim is None:
        return
    with claim.released_on_error():
        hours = settings.approval_timeout_seconds / 3600
        decline(claim, settings, ports, "expired", f"no approve or reject message within {hours:g} h")
    counts["expired"] += 1


def _check_sla(ledger: Ledger, settings: Settings, run: Run, now: datetime, counts: dict[str, int]) -> None:
    """A run not complete RUN_SLA_SECONDS after it was created is logged "run overdue", once.

    Once: a create-only marker (``ledger/overdue/<run>``), never a write to the run record,
    which its holder may be updating.
    """
    created = run.created_at or run.updated_at
    if not created or lease_left(created, now, settings.run_sla_seconds) > 0:
        return
    marker = f"{ledger.root}/overdue/{run.run_id}"
    if ledger.store.generation(marker) is not None:
        return  # logged before (a metadata read each tick, not a refused write)
    try:
        ledger.store.write(marker, stamp(now).encode(), if_generation_match=0)
    except ConflictError:
        return  # logged before
    age = (now - datetime.fromisoformat(created)).total_seconds() / 3600
    counts["overdue"] += 1
    extra = {"run_id": run.run_id, "status": run.status, "age_hours": round(age, 2)}
    log.warning("run overdue", extra={**extra, "sla_hours": round(settings.run_sla_seconds / 3600, 3)})
