"""The ledger, and the one claim/lease helper every service uses.

Layout under ``gs://WORK_BUCKET/ledger/``: ``runs/<run>.json``, ``jobs/<run>/<job key>.json``,
``active/<job key>`` (one marker per job attempt the poller follows), ``queued/<when>-<job key>``
(one per attempt waiting for admission, named so that a listing is oldest first),
``active-runs/<run>`` (one per run not yet finished and announced) and ``admission.json``
(the concurrent-job slots in use, see admission.py). Creating a record is create-only
(``if_generation_match=0``); every update is conditional on the generation read, so two
deliveries of one event can never both win.

A :class:`Claim` is a record held by one invocation: its generation is the fencing token,
its ``claimed_at`` the lease (stamped with the real clock when made or renewed). Right before
a side effect that costs money or cannot be undone, the holder calls :meth:`Claim.confirm`:
the record is re-read (same generation: nobody took over), the lease renewed when it runs
short, and the invocation's own deadline checked — Cloud Run does not stop a handler at its
timeout, so a late holder must find out by itself that it has been replaced.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import orjson

from shared.core.errors import ConflictError, PermanentError, TransientError, UncertainError
from shared.core.ids import job_key
from shared.core.records import Admission, JobRecord, Run, Window, move
from shared.ports import ObjectStore

R = TypeVar("R", Run, JobRecord, Admission, Window)
log = logging.getLogger("gbp.ledger")


def stamp(now: datetime) -> str:
    """A ledger timestamp (ISO 8601, UTC)."""
    return now.isoformat(timespec="microseconds")


def _marker(now: datetime) -> bytes:
    return orjson.dumps({"at": stamp(now)})


def lease_left(claimed_at: str, now: datetime, seconds: int) -> float:
    """Seconds left of a lease taken at ``claimed_at`` (<= 0: lapsed or released)."""
    if not claimed_at:
        return 0.0
    return (datetime.fromisoformat(claimed_at) + timedelta(seconds=seconds) - now).total_seconds()


class ClaimHeld(TransientError):
    """Another invocation holds the claim and its lease stands.

    Nothing is lost by leaving it alone: the holder finishes, or fails and its own event is
    retried, or dies and the poller drives the record on once the lease lapses.
    """


class LostClaim(TransientError):
    """Someone else took the claim over (our lease lapsed): stop before any side effect."""

    def __init__(self, message: str, uri: str) -> None:
        super().__init__(message)
        self.uri = uri


class DeadlineNear(TransientError):
    """The invocation is too close to its timeout to start this: stop, let a redelivery go on."""


@dataclass(frozen=True)
class Invocation:
    """One handler invocation: the real clock, its own deadline (start + FUNCTION_TIMEOUT_SECONDS), its id.

    The id names the holder in every claim it makes (a random token, not an idempotency key):
    two invocations never write the same bytes to a record.
    """

    clock: Callable[[], datetime]
    deadline: datetime
    id: str

    @classmethod
    def starting(cls, clock: Callable[[], datetime], timeout_seconds: float, id: str) -> Invocation:
        """An invocation starting now with ``timeout_seconds`` to run."""
        return cls(clock, clock() + timedelta(seconds=timeout_seconds), id)

    def now(self) -> datetime:
        """The real time (claims are stamped with it, not with the invocation's start)."""
        return self.clock()

    def time_left(self) -> float:
        """Seconds until the deadline."""
        return (self.deadline - self.clock()).total_seconds()

    def check(self, what: str, needs: float) -> None:
        """Raise DeadlineNear unless ``needs`` seconds are left."""
        left = self.time_left()
        if left < needs:
            raise DeadlineNear(f"{what}: {left:.0f} s left of the invocation, {needs:.0f} s needed; retried")


class Ledger:
    """Runs and job attempts of one deployment."""

    def __init__(self, store: ObjectStore, bucket: str, lease_seconds: int) -> None:
        self.store = store
        self.root = f"gs://{bucket}/ledger"
        self.lease_seconds = lease_seconds

    def run_uri(self, run_id: str) -> str:
        """Where a run record lives."""
        return f"{self.root}/runs/{run_id}.json"

    def job_uri(self, run_id: str, chunk: int, attempt: int) -> str:
        """Where a job attempt record lives."""
        return f"{self.root}/jobs/{run_id}/{job_key(run_id, chunk, attempt)}.json"

    @property
    def admission_uri(self) -> str:
        """Where the admission record lives."""
        return f"{self.root}/admission.json"

    def window_uri(self, table: str, seconds: int, window: int) -> str:
        """Where the load window ``window`` (``seconds`` long) of ``table`` lives."""
        return f"{self.root}/loads/{table}/windows/s{seconds}-w{window:010d}.json"

    def uri_of(self, record: Run | JobRecord | Admission | Window) -> str:
        """Where ``record`` lives."""
        if isinstance(record, Run):
            return self.run_uri(record.run_id)
        if isinstance(record, Admission):
            return self.admission_uri
        if isinstance(record, Window):
            return self.window_uri(record.table, record.seconds, record.window)
        return self.job_uri(record.run_id, record.chunk, record.attempt)

    # --- reading and conditional writes -----------------------------------------------------
    def get_run(self, run_id: str) -> tuple[Run, int] | None:
        """The run and its generation."""
        found = self.store.read(self.run_uri(run_id))
        return None if found is None else (Run.from_json(orjson.loads(found[0])), found[1])

    def get_job(self, run_id: str, chunk: int, attempt: int) -> tuple[JobRecord, int] | None:
        """The job attempt and its generation."""
        found = self.store.read(self.job_uri(run_id, chunk, attempt))
        return None if found is None else (JobRecord.from_json(orjson.loads(found[0])), found[1])

    def put(self, record: Run | JobRecord | Admission | Window, generation: int) -> int:
        """Update ``record`` if nobody else did since ``generation`` (else ConflictError)."""
        return self.write(self.uri_of(record), orjson.dumps(record.to_json()), generation)

    def write(self, uri: str, data: bytes, generation: int) -> int:
        """A conditional write; a 412 on a write that was our own (retried after its answer was lost) is ours.

        The storage client retries a conditional upload whose answer was lost; the retry then
        fails its precondition against our own first write. Claimed records carry their holder's
        id, so the same bytes can only be ours.
        """
        try:
            return self.store.write(uri, data, if_generation_match=generation)
        except ConflictError:
            found = self.store.read(uri)
            if found is not None and found[0] == data:
                return found[1]
            raise

    def jobs_of(self, run_id: str) -> list[JobRecord]:
        """Every job attempt of a run."""
        records = []
        for uri in self.store.list(f"{self.root}/jobs/{run_id}/"):
            found = self.store.read(uri)
            if found is not None:
                records.append(JobRecord.from_json(orjson.loads(found[0])))
        return records

    # --- claims -----------------------------------------------------------------------------
    def claim(
        self, cls: type[R], uri: str, inv: Invocation, *, create: R | None = None, states: frozenset[str]
    ) -> tuple[R, Claim[R] | None]:
        """Create ``create`` claimed, or take the claim of the record at ``uri``.

        Returns the record as it stands and the claim, or ``(record, None)`` when its status is
        not one of ``states`` (nothing to do: a duplicate). Raises ClaimHeld while another
        holder's lease stands, and PermanentError when there is no such record to take.
        """
        now = inv.now()
        if create is not None:
            create.claimed_at, create.holder = stamp(now), inv.id
            try:
                generation = self.write(uri, orjson.dumps(create.to_json()), 0)
            except ConflictError:
                pass
            else:
                return create, Claim(self, create, generation, inv)
        for _ in range(5):  # a write that lost to another one: read again, look again
            found = self.store.read(uri)
            if found is None:
                if create is not None:
                    raise TransientError(f"{uri} vanished between two reads; retry")
                raise PermanentError(f"no ledger record at {uri}")
            record: R = cls.from_json(orjson.loads(found[0]))
            if record.status not in states:
                return record, None
            if lease_left(record.claimed_at, now, self.lease_seconds) > 0:
                raise ClaimHeld(f"{uri} is held by another invocation (claimed at {record.claimed_at})")
            record.claimed_at, record.holder = stamp(now), inv.id
            try:
                generation = self.write(uri, orjson.dumps(record.to_json()), found[1])
            except ConflictError:
                continue  # the poller wrote it, or another invocation claimed it: the next look says which
            return record, Claim(self, record, generation, inv)
        raise TransientError(f"{uri} keeps changing under us; retry")

    # --- what the poller follows ------------------------------------------------------------
    # A marker is written before its record exists (and again whenever a record is found held), so
    # that no record is ever without one: the poller drops a marker whose record never came.
    def activate(self, run_id: str, chunk: int, attempt: int, now: datetime) -> None:
        """Follow a job attempt (idempotent)."""
        self.store.write(f"{self.root}/active/{job_key(run_id, chunk, attempt)}", _marker(now))

    def deactivate(self, record: JobRecord) -> None:
        """Stop following a job attempt."""
        self.store.delete(f"{self.root}/active/{job_key(record.run_id, record.chunk, record.attempt)}")

    def active(self) -> list[tuple[str, int, int]]:
        """``(run_id, chunk, attempt)`` of every followed job attempt."""
        followed = []
        for uri in self.store.list(f"{self.root}/active/"):
            try:
                run_id, chunk, attempt = uri.rsplit("/", 1)[1].rsplit("-", 2)
                followed.append((run_id, int(chunk.removeprefix("c")), int(attempt.removeprefix("a"))))
            except ValueError:  # not one of ours (a console "folder"): it must not stop the tick
                log.error("unreadable active marker: ignored", extra={"gcs_uri": uri})
        return followed

    def activate_run(self, run_id: str, now: datetime) -> None:
        """Follow a run until it is finished and announced (idempotent)."""
        self.store.write(f"{self.root}/active-runs/{run_id}", _marker(now))

    def drop_orphan(self, run_id: str, now: datetime, chunk: int = -1, attempt: int = -1) -> bool:
        """Delete the marker of a record that was never created (a run's, or an attempt's), once a lease old."""
        name = f"active/{job_key(run_id, chunk, attempt)}" if chunk >= 0 else f"active-runs/{run_id}"
        uri = f"{self.root}/{name}"
        found = self.store.read(uri)
        if found is None:
            return False
        at = str(orjson.loads(found[0] or b"{}").get("at") or "")
        if lease_left(at, now, self.lease_seconds) > 0:
            return False
        self.store.delete(uri)
        return True

    # --- what waits for admission ----------------------------------------------------------
    # Written before the record is queued (and again whenever it is queued again), deleted once
    # it is admitted; named by when it was queued so that one listing is the queue in order.
    def queued_uri(self, record: JobRecord) -> str:
        """The queue marker of a QUEUED attempt."""
        at = record.queued_at.replace("-", "").replace(":", "").replace(".", "")[:21]  # 20261129T231049123456
        return f"{self.root}/queued/{at}-{job_key(record.run_id, record.chunk, record.attempt)}"

    def mark_queued(self, record: JobRecord) -> None:
        """Put an attempt in the queue (idempotent)."""
        self.store.write(self.queued_uri(record), b"")

    def unmark_queued(self, record: JobRecord) -> None:
        """Take an attempt out of the queue."""
        self.store.delete(self.queued_uri(record))

    def queued(self) -> list[Queued]:
        """Every attempt waiting for admission, oldest first."""
        waiting = []
        for uri in self.store.list(f"{self.root}/queued/"):
            name = uri.rsplit("/", 1)[1]
            try:
                at, key = name.split("-", 1)
                run_id, chunk, attempt = key.rsplit("-", 2)
                queued_at = datetime.strptime(at, "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
                entry = Queued(queued_at, run_id, int(chunk.removeprefix("c")), int(attempt.removeprefix("a")), uri)
            except ValueError:  # not one of ours: it must not stop the queue
                log.error("unreadable queue marker: ignored", extra={"gcs_uri": uri})
                continue
            waiting.append(entry)
        return sorted(waiting, key=lambda q: q.at)

    # --- cancel requests: one create-only marker a run, read by whoever would start or retry work of it
    def cancel_uri(self, run_id: str) -> str:
        """The cancel marker of a run (``{"at", "why"}``)."""
        return f"{self.root}/cancel/{run_id}.json"

    def cancelled(self, run_id: str) -> dict[str, str] | None:
        """The run's cancel request, if one was made (and not undone by a retry)."""
        found = self.store.read(self.cancel_uri(run_id))
        return None if found is None else dict(orjson.loads(found[0]))

    def cancelled_runs(self) -> set[str]:
        """Every run with a cancel marker (one listing)."""
        return {uri.rsplit("/", 1)[1].removesuffix(".json") for uri in self.store.list(f"{self.root}/cancel/")}

    def deactivate_run(self, run_id: str) -> None:
        """Stop following a run."""
        self.store.delete(f"{self.root}/active-runs/{run_id}")

    def active_runs(self) -> list[str]:
        """Every followed run."""
        return [uri.rsplit("/", 1)[1] for uri in self.store.list(f"{self.root}/active-runs/")]


@dataclass(frozen=True, slots=True)
class Queued:
    """An attempt waiting for admission, as its queue marker names it."""

    at: datetime
    run_id: str
    chunk: int
    attempt: int
    uri: str

    @property
    def key(self) -> str:
        """Its job key."""
        return job_key(self.run_id, self.chunk, self.attempt)


class Claim(Generic[R]):
    """A ledger record held by this invocation; every write is conditional on our generation."""

    def __init__(self, ledger: Ledger, record: R, generation: int, inv: Invocation) -> None:
        self.ledger, self.generation, self.inv = ledger, generation, inv
        self.record: R = record

    @property
    def uri(self) -> str:
        """Where the record lives."""
        return self.ledger.uri_of(self.record)

    def save(self) -> None:
        """Write the record as it is now (LostClaim when someone else wrote it since)."""
        try:
            self.generation = self.ledger.put(self.record, self.generation)
        except ConflictError as exc:
            raise LostClaim(f"{self.uri} was taken over by another invocation", self.uri) from exc

    def move(self, transition: str) -> None:
        """Apply a named transition (records.TRANSITIONS) and save; the lease goes unless the move holds it."""
        record = self.record
        if isinstance(record, (Admission, Window)):
            raise TypeError(f"a {type(record).__name__} record has no transitions")
        if not move(record, transition).holds:
            record.claimed_at = ""
        if isinstance(record, Run):
            record.updated_at = stamp(self.inv.now())
        self.save()

    def lease_left(self) -> float:
        """Seconds left of our lease."""
        return lease_left(self.record.claimed_at, self.inv.now(), self.ledger.lease_seconds)

    def renew(self) -> None:
        """Stamp the lease with the real time now."""
        self.record.claimed_at = stamp(self.inv.now())
        self.save()

    def keep_alive(self) -> None:
        """During long work: renew the lease when half of it is spent; stop when the deadline has come."""
        self.inv.check(f"working on {self.uri}", 0)
        if self.lease_left() < self.ledger.lease_seconds / 2:
            self.renew()

    def confirm(self, what: str, needs: float) -> None:
        """Right before a side effect: still ours, with lease and invocation time for ``needs`` seconds.

        Raises DeadlineNear (the invocation has not the time), LostClaim (someone else holds
        the record now). Renews the lease when less than ``needs`` (or half of it) is left.
        """
        self.inv.check(what, needs)
        found = self.ledger.store.read(self.uri)
        if found is None or found[1] != self.generation:
            raise LostClaim(f"{what}: {self.uri} was taken over by another invocation", self.uri)
        if self.lease_left() < max(needs, self.ledger.lease_seconds / 2):
            self.renew()

    def release(self) -> None:
        """Give the claim up at once (after a failure), so that the next delivery need not wait the lease."""
        self.record.claimed_at = ""
        with contextlib.suppress(Exception):  # best effort: the lease lapses anyway
            self.save()

    @contextlib.contextmanager
    def released_on_error(self, keep: tuple[type[Exception], ...] = ()) -> Iterator[Claim[R]]:
        """Release the claim when the block fails, so that the next try need not wait for the lease.

        Kept: when this claim was lost (it is not ours any more), by the innermost claim around
        a side effect whose outcome is unknown (UncertainError: only its lease protects against
        doing it twice), and for the error types in ``keep`` (the caller goes on holding it).
        """
        try:
            yield self
        except LostClaim as exc:
            if exc.uri != self.uri:
                self.release()
            raise
        except UncertainError as exc:
            if exc.kept_by is None:
                exc.kept_by = self.uri
            elif exc.kept_by != self.uri:
                self.release()
            raise
        except Exception as exc:
            if not isinstance(exc, keep):
                self.release()
            raise
