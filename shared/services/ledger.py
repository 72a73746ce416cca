"""The ledger: runs and job attempts as small JSON objects, written with generation preconditions.

Layout under ``gs://WORK_BUCKET/ledger/``: ``runs/<run>.json``, ``jobs/<run>/<job key>.json``
and ``active/<job key>`` (one marker per job the poller still follows). Creating a record is
create-only (``if_generation_match=0``); updating one is conditional on the generation read,
so two deliveries of one event can never both win.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from shared.core.errors import ConflictError
from shared.core.ids import job_key
from shared.core.records import JobRecord, Run
from shared.ports import ObjectStore


def stamp(now: datetime) -> str:
    """A ledger timestamp (ISO 8601, UTC)."""
    return now.isoformat(timespec="microseconds")


def lease_held(claimed_at: str, now: datetime, seconds: int) -> bool:
    """Whether a claim made at ``claimed_at`` still stands at ``now``."""
    return bool(claimed_at) and datetime.fromisoformat(claimed_at) + timedelta(seconds=seconds) > now


class Ledger:
    """Runs and jobs of one deployment."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.root = f"gs://{bucket}/ledger"

    def _run_uri(self, run_id: str) -> str:
        return f"{self.root}/runs/{run_id}.json"

    def _job_uri(self, run_id: str, chunk: int, attempt: int) -> str:
        return f"{self.root}/jobs/{run_id}/{job_key(run_id, chunk, attempt)}.json"

    def _active_uri(self, run_id: str, chunk: int, attempt: int) -> str:
        return f"{self.root}/active/{job_key(run_id, chunk, attempt)}"

    # --- runs -------------------------------------------------------------------------------
    def create_run(self, run: Run) -> int | None:
        """Create the run record; None when it already exists."""
        try:
            return self.store.write(self._run_uri(run.run_id), orjson.dumps(run.to_json()), if_generation_match=0)
        except ConflictError:
            return None

    def get_run(self, run_id: str) -> tuple[Run, int] | None:
        """The run and its generation."""
        found = self.store.read(self._run_uri(run_id))
        return None if found is None else (Run.from_json(orjson.loads(found[0])), found[1])

    def put_run(self, run: Run, generation: int) -> int:
        """Update the run if nobody else did since ``generation`` (else ConflictError)."""
        return self.store.write(self._run_uri(run.run_id), orjson.dumps(run.to_json()), if_generation_match=generation)

    # --- jobs -------------------------------------------------------------------------------
    def create_job(self, record: JobRecord) -> int | None:
        """Create the job record; None when it already exists."""
        uri = self._job_uri(record.run_id, record.chunk, record.attempt)
        try:
            return self.store.write(uri, orjson.dumps(record.to_json()), if_generation_match=0)
        except ConflictError:
            return None

    def get_job(self, run_id: str, chunk: int, attempt: int) -> tuple[JobRecord, int] | None:
        """The job record and its generation."""
        found = self.store.read(self._job_uri(run_id, chunk, attempt))
        return None if found is None else (JobRecord.from_json(orjson.loads(found[0])), found[1])

    def put_job(self, record: JobRecord, generation: int) -> int:
        """Update the job record if nobody else did since ``generation`` (else ConflictError)."""
        uri = self._job_uri(record.run_id, record.chunk, record.attempt)
        return self.store.write(uri, orjson.dumps(record.to_json()), if_generation_match=generation)

    def jobs_of(self, run_id: str) -> list[JobRecord]:
        """Every job record of a run."""
        records = []
        for uri in self.store.list(f"{self.root}/jobs/{run_id}/"):
            found = self.store.read(uri)
            if found is not None:
                records.append(JobRecord.from_json(orjson.loads(found[0])))
        return records

    # --- what the poller follows --------------------------------------------------------------
    def activate(self, record: JobRecord) -> None:
        """Mark a job as followed by the poller (idempotent)."""
        body = orjson.dumps({"run_id": record.run_id, "chunk": record.chunk, "attempt": record.attempt})
        self.store.write(self._active_uri(record.run_id, record.chunk, record.attempt), body)

    def deactivate(self, record: JobRecord) -> None:
        """Stop following a job."""
        self.store.delete(self._active_uri(record.run_id, record.chunk, record.attempt))

    def active(self) -> list[tuple[str, int, int]]:
        """``(run_id, chunk, attempt)`` of every followed job."""
        followed = []
        for uri in self.store.list(f"{self.root}/active/"):
            found = self.store.read(uri)
            if found is not None:
                data = orjson.loads(found[0])
                followed.append((str(data["run_id"]), int(data["chunk"]), int(data["attempt"])))
        return followed
