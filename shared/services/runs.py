"""A run's end: completed when every attempt is terminal, its work files released, announced once.

Whoever sees the run complete first (a collector, or the submitter when the jobs were
collected while it was still submitting) claims it; the announcement on ``batch-results``
is at least once (consumers key on ``run_id``), re-checked against the ledger right before
it is published. Work files get a custom time once nothing needs them any more: the
bucket's lifecycle rule deletes them a while after it, never before.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.records import (
    JOB_TERMINAL,
    JOB_UNCOLLECTABLE,
    RUN_FINISHED,
    RUN_RUNNING,
    JobRecord,
    Run,
)
from shared.ports import Ports
from shared.services.budget import settle_spend
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, stamp
from shared.services.run_states import move_target, record_state
from shared.services.windows import settle

log = logging.getLogger("gbp.runs")
ANNOUNCE_NEEDS: Final = 30.0
WORK_PREFIXES: Final = ("staging", "rows", "outputs")
VERTEX_PREFIXES: Final = ("staging", "outputs")  # in the Vertex I/O bucket when it is another


def latest_attempts(records: list[JobRecord]) -> dict[int, JobRecord]:
    """The newest attempt of every chunk."""
    latest: dict[int, JobRecord] = {}
    for record in records:
        if record.chunk not in latest or record.attempt > latest[record.chunk].attempt:
            latest[record.chunk] = record
    return latest


def release_work_files(settings: Settings, ports: Ports, run_id: str, now: datetime) -> int:
    """Give every work file of a finished run its custom time (the lifecycle rule counts from it)."""
    marked = 0
    folders = [f"gs://{settings.work_bucket}/{prefix}/{run_id}/" for prefix in WORK_PREFIXES]
    if settings.io_bucket != settings.work_bucket:  # and those of runs staged before it existed, in the work bucket
        folders += [f"gs://{settings.io_bucket}/{prefix}/{run_id}/" for prefix in VERTEX_PREFIXES]
    for folder in folders:
        for uri in ports.store.list(folder):
            ports.store.set_custom_time(uri, now)
            marked += 1
    return marked


def complete_run(ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, run_id: str) -> str:
    """Complete and announce ``run_id`` if every chunk has an attempt and every attempt is terminal.

    Returns "announced" (now or before), "open" (not complete yet, or another invocation is
    completing it) or "unknown".
    """
    found = ledger.get_run(run_id)
    if found is None:
        return "unknown"
    run = found[0]
    if run.status in RUN_FINISHED and run.announced:
        return "announced"
    if run.status not in (RUN_RUNNING, *RUN_FINISHED) or (run.reopen and not run.reopen.get("done")):
        return "open"  # (a retry still queueing its attempts: retry.py completes it, or its message is resent)
    records = ledger.jobs_of(run_id)
    # Every attempt, not only the latest of each chunk: a parent still loading its batch_jobs
    # row after its child attempt was collected keeps the run open.
    if len(latest_attempts(records)) < run.chunks or any(r.status not in JOB_TERMINAL for r in records):
        return "open"
    try:
        run, claim = ledger.claim(Run, ledger.run_uri(run_id), inv, states=frozenset({RUN_RUNNING, *RUN_FINISHED}))
    except ClaimHeld:
        return "open"  # another invocation is completing it; the poller nudges if it dies
    if claim is None or run.announced:
        return "announced"
    with claim.released_on_error():
        if run.status == RUN_RUNNING:  # what was read before the claim, read again under it
            records = ledger.jobs_of(run_id)
            reopening = run.reopen and not run.reopen.get("done")
            if reopening or len(latest_attempts(records)) < run.chunks or any(r.status not in JOB_TERMINAL
                                                                              for r in records):  # fmt: skip
                claim.release()
                return "open"
        if not _invalid_rows_loaded(claim, settings, ports):
            claim.release()
            return "open"  # its load window wakes it (batch-finished of chunk 0) once loaded
        if run.status == RUN_RUNNING:
            cancel = ledger.cancelled(run_id)
            run.cancel = cancel or {}
            claim.move("cancel" if cancel is not None else "complete")
        settle_spend(ledger, run, records)  # the day's spend: what it cost, no longer what was expected
        summary = ports.warehouse.run_summary(run_id)
        run.counts, run.attempts, run.cost = summary["counts"], len(records), cost_of(records)
        run.finished_at = stamp(inv.now())
        record_state(claim, settings, ports)
        release_work_files(settings, ports, run_id, inv.now())
        claim.confirm("announcing the run", ANNOUNCE_NEEDS)
        revision = str(len(run.retries))  # announced again after each retry: consumers key on both
        ports.bus.publish(
            settings.batch_results_topic, announcement(run, records, summary), run_id=run_id, revision=revision
        )
        if run.cancel:  # kept in the run record; nothing reads the marker now
            ledger.store.delete(ledger.cancel_uri(run_id))
        run.announced = True
        claim.move("announce")
    ledger.deactivate_run(run_id)
    rows = sum(summary["counts"].values())
    failed = summary["counts"].get("FAILED", 0) + summary["counts"].get("MISSING", 0)
    log.info(
        "run complete",
        extra={
            "run_id": run_id,
            "model": run.model,
            "counts": summary["counts"],
            "rows": rows,
            "failed_share": round(failed / rows, 6) if rows else 0.0,  # the run_failed_share metric
        },
    )
    return "announced"


def _invalid_rows_loaded(claim: Claim[Run], settings: Settings, ports: Ports) -> bool:
    """The rows of a SKIP_INVALID_LINES run's rejected lines are loaded (or failed for good, and said so)."""
    entry = claim.record.loads.get("invalid")
    if entry is None or entry.get("state"):
        return True
    try:
        return settle(claim, "invalid", "predictions", entry["source"], settings, ports)
    except PermanentError:
        log.exception("rejected lines could not be loaded", extra={"run_id": claim.record.run_id})
        return True


def decline(claim: Claim[Run], settings: Settings, ports: Ports, verdict: str, why: str) -> None:
    """A held run not approved (``verdict``: rejected, expired, or cancelled): REJECTED (CANCELLED) with no job."""
    run, now = claim.record, claim.inv.now()
    run.decision = {"verdict": verdict, "at": stamp(now), "why": why}
    run.error = f"not approved ({verdict}): {why}"
    transition = "cancel" if verdict == "cancelled" else "decline"
    if verdict == "cancelled":
        run.cancel = {"at": stamp(now), "why": why}
    run.finished_at = stamp(now)
    record_state(claim, settings, ports, status=move_target(run, transition))
    claim.confirm("announcing the declined run", ANNOUNCE_NEEDS)
    message = {
        "run_id": run.run_id,
        "status": move_target(run, transition),
        "source": run.source,
        "model": run.model,
        "requests": run.requests,
        "error": run.error,
        "decision": run.decision,
        "estimate": run.estimate,
        "report": run.report_uri,
        "revision": len(run.retries),
    }
    ports.bus.publish(settings.batch_results_topic, message, run_id=run.run_id)  # before the move: at least once
    run.announced = True
    claim.move(transition)
    release_work_files(settings, ports, run.run_id, now)
    claim.ledger.deactivate_run(run.run_id)
    claim.ledger.store.delete(claim.ledger.cancel_uri(run.run_id))
    log.warning("run not approved", extra={"run_id": run.run_id, "verdict": verdict, "why": why})


def cost_of(records: list[JobRecord]) -> dict[str, Any]:
    """What a run's attempts cost (every attempt's rows, at the batch rate), per outcome, beside its estimate."""
    priced = [r.cost for r in records if r.cost.get("usd") is not None]
    by_outcome: dict[str, float] = {}
    for cost in priced:
        for outcome, usd in cost.get("by_outcome", {}).items():
            by_outcome[outcome] = by_outcome.get(outcome, 0.0) + usd
    versions = sorted({c.get("price_version", "") for c in priced} - {""})
    return {
        "usd": round(sum(c["usd"] for c in priced), 9) if priced else None,
        "by_outcome": {k: round(v, 9) for k, v in sorted(by_outcome.items())},
        "price_version": ",".join(versions),
        # Some attempts have no cost (no price when they were collected, or given up before their
        # rows were read): ``usd`` is what the priced ones cost, not the run's whole bill.
        "partial": 0 < len(priced) < len(records),
    }


def announcement(run: Run, records: list[JobRecord], summary: dict[str, Any]) -> dict[str, Any]:
    """The ``batch-results`` message of a run."""
    failed_loads = {
        name: entry.get("errors", []) for name, entry in run.loads.items() if entry.get("state") == "FAILED"
    }
    return {
        "run_id": run.run_id,
        "status": run.status,
        "source": run.source,
        "model": run.model,
        "chunks": run.chunks,
        "requests": run.requests,
        "invalid": run.invalid,
        **({"error": run.error} if run.error else {}),  # e.g. a source that could not be read to its end
        "jobs": sorted(r.job_name for r in records if r.job_name),
        **({"cancel": run.cancel} if run.cancel else {}),
        "uncollectable": [
            {"chunk": r.chunk, "attempt": r.attempt, "job_name": r.job_name, "error": r.collect_error}
            for r in sorted(records, key=lambda r: (r.chunk, r.attempt))
            if r.status == JOB_UNCOLLECTABLE
        ],
        **({"failed_loads": failed_loads} if failed_loads else {}),
        "cost": {**cost_of(records), "estimate": run.estimate},
        "revision": len(run.retries),  # 0, then 1 after the first retry...
        **summary,
    }
