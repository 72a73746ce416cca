"""Admission: at most MAX_CONCURRENT_JOBS batch jobs live on Vertex; the rest wait QUEUED in the ledger.

Vertex runs a limited number of Gemini batch jobs at once per project and region and queues
the rest itself, where a job waiting past 72 h expires; ``batches.create`` also answers 429
when its request rate is spent. So attempts wait in *our* queue (no expiry clock, visible in
the ledger) and are created as slots free:

- One admitter at a time holds ``ledger/admission.json`` (a claim with a lease): the poller
  every tick, and a submitter or collector right after it queued something (when another
  admitter holds it, that one or the next tick does the work).
- ``live`` in that record is the set of admitted attempts; when it looks full, the admitter
  drops those whose records are no longer CLAIMED or SUBMITTED. The keys of a round are added
  (in one write) before their attempts are claimed, so that an admitter that dies half-way
  over-counts, never under-counts.
- Fair across runs: the run that was given the fewest jobs so far goes first, its oldest
  attempt first (a small run is not stuck behind a 50-job one); ties go to the run waiting
  longest; an attempt queued for STARVING_SECONDS goes before any share (nothing waits forever).
- A 429 on create queues the attempt again in its place and pauses admission for
  CREATE_BACKOFF_SECONDS, doubling with each 429 in a row (at most 32x).
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from itertools import islice
from typing import Final

from shared.config import Settings
from shared.core.errors import PipelineError
from shared.core.records import (
    ADMISSION_OPEN,
    JOB_CLAIMED,
    JOB_QUEUED,
    JOB_SUBMITTED,
    VERTEX_FINAL,
    Admission,
    JobRecord,
)
from shared.ports import Ports
from shared.services.attempts import CREATE_NEEDS, create_claimed
from shared.services.ledger import Claim, ClaimHeld, Invocation, Ledger, Queued, lease_left, stamp

log = logging.getLogger("gbp.admission")
ADMIT_RESERVE: Final = CREATE_NEEDS + 30.0  # seconds of invocation one more admission needs
MAX_BACKOFF_DOUBLINGS: Final = 5
STARVING_SECONDS: Final = 6 * 3600.0  # queued longer: admitted before any fair share


def fair_order(
    queued: Iterable[Queued], served: Mapping[str, int], now: datetime, starving: float = STARVING_SECONDS
) -> Iterator[Queued]:
    """The queue in admission order: fair shares across runs, and nobody waits forever.

    ``queued`` is oldest first; ``served`` how many jobs each run has been given so far. The
    run that was given the fewest goes first (its oldest attempt), ties to the one waiting
    longest; each admission counts for the next choice. An attempt waiting longer than
    ``starving`` seconds goes before all of them (oldest first), so that a stream of new runs
    cannot hold a large one back for ever.
    """
    entries = list(queued)
    taken: set[str] = set()
    for entry in entries:
        if (now - entry.at).total_seconds() > starving:
            taken.add(entry.key)
            yield entry
    waiting: dict[str, list[Queued]] = defaultdict(list)
    for entry in entries:
        if entry.key not in taken:
            waiting[entry.run_id].append(entry)
    heap = [(served.get(run, 0), run_entries[0].at, run) for run, run_entries in waiting.items()]
    heapq.heapify(heap)
    heads = dict.fromkeys(waiting, 0)
    while heap:
        count, _, run = heapq.heappop(heap)
        run_entries = waiting[run]
        yield run_entries[heads[run]]
        heads[run] += 1
        if heads[run] < len(run_entries):
            heapq.heappush(heap, (count + 1, run_entries[heads[run]].at, run))


def admit(
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    seen_live: Iterable[str] = (),
    seen_done: Iterable[str] = (),
    throttled: bool = False,
    waiting: list[Queued] | None = None,
) -> dict[str, int]:
    """Create the jobs of queued attempts while slots are free; return what was done.

    ``seen_live``: keys the caller has just seen CLAIMED or SUBMITTED (the poller's tick),
    counted as live even when the admission record lost track of them; ``seen_done``: keys it
    has just seen past their job (final, collecting, collected), which never hold a slot again.
    Neither needs reading again. ``throttled``: the caller met a 429 creating a job itself
    (the poller's redrive): admission pauses as for its own. ``waiting``: the queue as the
    caller has just listed it (an attempt admitted meanwhile is found so when it is read).
    """
    counts = dict.fromkeys(("admitted", "throttled", "queued", "live"), 0)
    if inv.time_left() < ADMIT_RESERVE:
        return counts
    waiting = ledger.queued() if waiting is None else waiting
    if not waiting:
        return counts  # nothing to admit: the admission record is not touched (one object: ~1 write a second)
    try:
        _, claim = ledger.claim(
            Admission, ledger.admission_uri, inv, create=Admission(), states=frozenset({ADMISSION_OPEN})
        )
    except ClaimHeld:
        return counts  # another admitter is at work; whatever it leaves, the next tick admits
    if claim is None:
        return counts
    with claim.released_on_error():
        if throttled:
            _pause(claim.record, settings, inv, counts)
        _admit(claim, ledger, settings, ports, inv, waiting, (set(seen_live), set(seen_done)), counts)
        claim.record.claimed_at, claim.record.updated_at = "", stamp(inv.now())
        claim.save()
    if counts["admitted"] or counts["throttled"]:
        log.info("admission done", extra=counts)
    return counts


def _admit(
    claim: Claim[Admission],
    ledger: Ledger,
    settings: Settings,
    ports: Ports,
    inv: Invocation,
    waiting: list[Queued],
    seen: tuple[set[str], set[str]],
    counts: dict[str, int],
) -> None:
    admission = claim.record
    now = inv.now()
    _prune(ledger, admission, seen, waiting, now, settings.max_concurrent_jobs)
    counts["queued"], counts["live"] = len(waiting), len(admission.live)
    if lease_left(admission.paused_until, now, 0) > 0:
        return  # a 429's backoff
    picks = list(islice(fair_order(waiting, admission.served, now), settings.max_concurrent_jobs - len(admission.live)))
    if not picks:
        return
    # The slots are taken in one write before any attempt is claimed (GCS takes about one write a
    # second to one object): a crash in between over-counts until the next admitter looks.
    at = stamp(now)
    admission.live.update((entry.key, at) for entry in picks)
    claim.confirm("admitting batch jobs", CREATE_NEEDS)
    claim.save()
    for index, entry in enumerate(picks):
        if inv.time_left() < ADMIT_RESERVE:
            for left in picks[index:]:
                admission.live.pop(left.key, None)
            break
        claim.confirm("admitting a batch job", CREATE_NEEDS)
        outcome = _admit_one(claim, ledger, settings, ports, inv, entry)
        if outcome in ("absent", "stale", "dropped"):  # dropped: its run was cancelled, nothing created
            admission.live.pop(entry.key, None)
        elif outcome == "throttled":
            for left in picks[index:]:
                admission.live.pop(left.key, None)
            _pause(admission, settings, inv, counts)
            break
        elif outcome in ("submitted", "adopted", "refused"):
            admission.throttles = 0
            admission.served[entry.run_id] = admission.served.get(entry.run_id, 0) + 1
            counts["admitted"] += 1
    counts["queued"] -= counts["admitted"]
    counts["live"] = len(admission.live)


def _pause(admission: Admission, settings: Settings, inv: Invocation, counts: dict[str, int]) -> None:
    """A 429 on create: no admission for CREATE_BACKOFF_SECONDS, doubled with each 429 in a row (at most 32x)."""
    admission.throttles += 1
    pause = settings.create_backoff_seconds * 2 ** min(admission.throttles - 1, MAX_BACKOFF_DOUBLINGS)
    admission.paused_until = stamp(inv.now() + timedelta(seconds=pause))
    counts["throttled"] += 1
    log.warning("admission paused after a 429", extra={"seconds": pause, "live": len(admission.live)})


def _prune(
    ledger: Ledger,
    admission: Admission,
    seen: tuple[set[str], set[str]],
    waiting: list[Queued],
    now: datetime,
    limit: int,
) -> None:
    """Keep in ``live`` only attempts whose records are CLAIMED or SUBMITTED and not final.

    What the caller has just seen is taken as it is; the other records are read only when every
    slot looks taken and something waits (a free slot needs no proof): at most ``limit`` reads.
    """
    seen_live, seen_done = seen
    for key in seen_live:
        admission.live.setdefault(key, stamp(now))
    for key in seen_done:
        admission.live.pop(key, None)
    if waiting and len(admission.live) >= limit:
        for key in sorted(set(admission.live) - seen_live, key=admission.live.__getitem__):
            run_id, chunk, attempt = key.rsplit("-", 2)
            found = ledger.get_job(run_id, int(chunk.removeprefix("c")), int(attempt.removeprefix("a")))
            if found is None:
                # Admitted by an admitter that died before the record was claimed: free after a lease.
                if lease_left(admission.live[key], now, ledger.lease_seconds) <= 0:
                    del admission.live[key]
            elif not _holds_slot(found[0]):
                del admission.live[key]
    # A run's share is remembered while it has a job live or waiting.
    active = {key.rsplit("-", 2)[0] for key in admission.live} | {q.run_id for q in waiting}
    admission.served = {run: n for run, n in admission.served.items() if run in active}


def _holds_slot(record: JobRecord) -> bool:
    if record.status == JOB_CLAIMED:
        return True
    return record.status == JOB_SUBMITTED and record.vertex_state not in VERTEX_FINAL


def _admit_one(
    claim: Claim[Admission], ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation, entry: Queued
) -> str:
    found = ledger.get_job(entry.run_id, entry.chunk, entry.attempt)
    if found is None:  # its queuer died between the marker and the record
        if lease_left(stamp(entry.at), inv.now(), ledger.lease_seconds) <= 0:
            ledger.store.delete(entry.uri)
        return "absent"
    record = found[0]
    if record.status == JOB_CLAIMED:
        return "live"  # being created, or being queued again after a 429 (its marker written first): left
    if record.status != JOB_QUEUED or ledger.queued_uri(record) != entry.uri:
        ledger.store.delete(entry.uri)  # a marker left behind: admitted already, or queued again elsewhere
        return "live" if _holds_slot(record) else "stale"
    run = ledger.get_run(entry.run_id)
    if run is None:
        return "absent"
    ledger.activate(entry.run_id, entry.chunk, entry.attempt, inv.now())  # followed from before it is claimed
    uri = ledger.job_uri(entry.run_id, entry.chunk, entry.attempt)
    try:
        record, job_claim = ledger.claim(JobRecord, uri, inv, states=frozenset({JOB_QUEUED}))
    except ClaimHeld:
        return "held"
    if job_claim is None:
        return "moved on"
    job_claim.move("admit")
    ledger.unmark_queued(record)
    log.info(
        "batch job admitted",
        extra={"run_id": entry.run_id, "chunk": entry.chunk, "attempt": entry.attempt, "live": len(claim.record.live)},
    )
    return create_claimed(job_claim, settings, ports, run[0])


def try_admit(ledger: Ledger, settings: Settings, ports: Ports, inv: Invocation) -> None:
    """Admit right after queueing, when the admission is free: a failure is left to the poller's next tick."""
    try:
        admit(ledger, settings, ports, inv)
    except PipelineError as exc:  # the attempts are queued (or claimed): nothing is lost, the poller goes on
        log.warning("admission left to the poller", extra={"error": str(exc)})


__all__ = ["admit", "fair_order", "try_admit"]
