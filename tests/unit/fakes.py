"""Small in-memory fakes of the ports, for unit tests of the services only.

They fail like the real services do — a store whose readers have no fast ``readline`` (like
GCS's BlobReader) and whose writers leave nothing behind when they fail; a job service that
answers 429, loses a create's answer, refuses a model, and cancels through CANCELLING; a
warehouse whose load jobs stay RUNNING, end FAILED, and whose ids are single-use — so that
the paths that lose data are exercised. The integration tests run the same services against
the real local cloud.
"""

from __future__ import annotations

import bisect
import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from shared.core.errors import (
    ConflictError,
    PermanentError,
    RefusedError,
    StillRunning,
    Throttled,
    TransientError,
    UncertainError,
)
from shared.ports import JobError, LoadResult, LoadState, Ports, VertexJob
from shared.services.ledger import Invocation

SMALL_READ = 4096


class BlobLikeReader(io.RawIOBase):
    """A reader like GCS's: no ``peek``, so ``readline``/iteration read one byte per call (counted)."""

    def __init__(self, data: bytes, reads: list[int]) -> None:
        self._data, self._pos, self._reads = data, 0, reads

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), len(self._data) - self._pos)
        buffer[:size] = self._data[self._pos : self._pos + size]
        self._pos += size
        self._reads.append(len(buffer))
        return size


class MemoryStore:
    """Objects with generations; preconditions as GCS applies them."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, int]] = {}
        self.custom_times: dict[str, datetime] = {}
        self.reads: list[int] = []  # the size asked for by every read() of every stream
        self._generations = itertools.count(1)
        self.fail_writes: dict[str, int] = {}  # uri substring -> writes still to fail (TransientError)
        # Conditional writes whose answer is lost and that the client retries: the retry meets its
        # own first write and answers 412, as GCS does.
        self.ghost_conflicts = 0

    @contextmanager
    def open(self, uri: str, generation: str | None = None, start: int = 0) -> Iterator[BinaryIO]:
        if uri not in self.objects:
            raise RefusedError(f"reading {uri}: 404 not found", 404, "NOT_FOUND")
        data, current = self.objects[uri]
        if generation is not None and int(generation) != current:
            raise RefusedError(f"reading {uri}#{generation}: 404 not found", 404, "NOT_FOUND")
        yield BlobLikeReader(data[start:], self.reads)  # type: ignore[misc]

    def small_reads(self) -> int:
        """Reads that asked for fewer than SMALL_READ bytes (one per byte when a stream is iterated)."""
        return sum(1 for size in self.reads if size < SMALL_READ)

    def read(self, uri: str) -> tuple[bytes, int] | None:
        return self.objects.get(uri)

    def generation(self, uri: str) -> str | None:
        found = self.objects.get(uri)
        return None if found is None else str(found[1])

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        for part, left in self.fail_writes.items():
            if part in uri and left:
                self.fail_writes[part] = left - 1
                raise TransientError(f"writing {uri}: 503")
        current = self.objects.get(uri, (b"", 0))[1]
        if if_generation_match is not None and if_generation_match != current:
            raise ConflictError(uri)
        generation = next(self._generations)
        self.objects[uri] = (data, generation)
        if if_generation_match is not None and self.ghost_conflicts:
            self.ghost_conflicts -= 1
            raise ConflictError(f"{uri}: 412 on the retry of a write that succeeded")
        return generation

    @contextmanager
    def writer(self, uri: str) -> Iterator[BinaryIO]:
        buffer = io.BytesIO()
        yield buffer  # a failure in the block leaves nothing behind
        self.write(uri, buffer.getvalue())

    def list(self, prefix_uri: str, updated_since: datetime | None = None) -> list[str]:
        names = sorted(self.objects)  # no write times kept: every object (the port allows more than asked)
        start = bisect.bisect_left(names, prefix_uri)
        end = bisect.bisect_left(names, prefix_uri + "\U0010ffff")
        return names[start:end]

    def delete(self, uri: str) -> None:
        self.objects.pop(uri, None)

    def copy(self, source_uri: str, target_uri: str, *, if_generation_match: int | None = None) -> int:
        data, _ = self.objects[source_uri]
        return self.write(target_uri, data, if_generation_match=if_generation_match)

    def upload(self, path: Path, uri: str) -> int:
        return self.write(uri, path.read_bytes(), if_generation_match=0)

    def set_custom_time(self, uri: str, when: datetime) -> None:
        if uri in self.objects:
            self.custom_times[uri] = max(when, self.custom_times.get(uri, when))


@dataclass
class FakeClock:
    """The real clock of a test: it moves when the test says so."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    invocations: int = 0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def invocation(self, timeout: float = 540) -> Invocation:
        self.invocations += 1
        return Invocation.starting(self, timeout, f"inv-{self.invocations}")


@dataclass
class FakeJobs:
    """Vertex batch jobs whose states the test sets; create can fail, lose its answer or refuse."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "429" (refused: not created), "503" (outcome unknown: not created), "lost" (created, the answer
    # lost: outcome unknown), "400" (refused for good)
    create_faults: list[str] = field(default_factory=list)
    get_faults: dict[str, int] = field(default_factory=dict)  # job name -> gets still to fail (-1: always)
    list_faults: list[str] = field(default_factory=list)  # "403": IAM still propagating
    creates: int = 0

    def create(
        self, *, model: str, input_uri: str, dest_prefix: str, display_name: str, labels: dict[str, str], location: str
    ) -> VertexJob:
        fault = self.create_faults.pop(0) if self.create_faults else ""
        if fault == "429":
            raise Throttled("creating a batch job: 429 RESOURCE_EXHAUSTED")
        if fault == "503":
            raise UncertainError("creating a batch job: 503 UNAVAILABLE")
        if fault == "400":
            raise RefusedError(f"creating a batch job: 400 model {model} not found", 400, "INVALID_ARGUMENT")
        self.creates += 1
        name = f"projects/p/locations/{location}/batchPredictionJobs/{len(self.jobs) + 1}"
        self.jobs[name] = {
            "state": "JOB_STATE_QUEUED", "labels": labels, "input": input_uri, "dest": dest_prefix, "model": model
        }  # fmt: skip
        if fault == "lost":
            raise UncertainError("creating a batch job: RemoteProtocolError: Server disconnected")
        return VertexJob(name, "JOB_STATE_QUEUED")

    def get(self, name: str, location: str) -> VertexJob:
        left = self.get_faults.get(name, 0)
        if left:
            self.get_faults[name] = left - 1 if left > 0 else left
            raise TransientError(f"reading {name}: ReadError")
        if name not in self.jobs:
            raise RefusedError(f"reading {name}: 404 not found", 404, "NOT_FOUND")
        job = self.jobs[name]
        error = job.get("error")
        return VertexJob(name, job["state"], JobError(error[0], None, error[1]) if error else None)

    def find(self, labels: dict[str, str], location: str) -> VertexJob | None:
        if self.list_faults:
            raise TransientError(f"listing batch jobs: {self.list_faults.pop(0)}")
        for name, job in self.jobs.items():
            if all(job["labels"].get(k) == v for k, v in labels.items()):
                return VertexJob(name, job["state"])
        return None

    def cancel(self, name: str, location: str) -> None:
        if self.jobs[name]["state"].endswith(("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")):
            raise RefusedError(f"cancelling {name}: 400 already final", 400, "FAILED_PRECONDITION")
        self.jobs[name]["state"] = "JOB_STATE_CANCELLING"


@dataclass
class FakeWarehouse:
    """Load jobs by id (single-use, like BigQuery's); loads can stay RUNNING or end FAILED."""

    store: MemoryStore
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> {table, rows, state, error}
    load_faults: list[dict[str, Any]] = field(default_factory=list)  # {"running": n} or {"fail": reason}
    insert_faults: list[str] = field(default_factory=list)  # "quotaExceeded" ... (no job created)
    clock: FakeClock | None = None  # waiting on a running load takes the time waited
    bad_files: set[str] = field(default_factory=set)  # a load with any of these fails for its data

    def load_once(self, job_id: str, source_uri: str | list[str], table: str, wait_seconds: float) -> LoadResult:
        job = self.jobs.get(job_id)
        if job is None:
            if self.insert_faults:
                raise TransientError(f"loading {source_uri}: 403 {self.insert_faults.pop(0)}")
            fault = self.load_faults.pop(0) if self.load_faults else {}
            sources = [source_uri] if isinstance(source_uri, str) else source_uri
            rows = []
            for source in sources:
                data, _ = self.store.objects[source]
                rows += [orjson.loads(line) for line in data.splitlines() if line]
            bad = [s for s in sources if s in self.bad_files]
            if bad and "fail" not in fault:
                fault = {**fault, "fail": "invalid"}
            job = self.jobs[job_id] = {"table": table, "rows": rows, "running": fault.get("running", 0),
                                       "error": fault.get("fail")}  # fmt: skip
        if job["running"]:
            job["running"] -= 1
            if self.clock is not None:
                self.clock.advance(wait_seconds)
            raise StillRunning(f"load job {job_id} still RUNNING")
        if job["error"]:
            reason = job["error"]
            return LoadResult(
                job_id,
                LoadState.FAILED,
                f"{reason}: failed",
                reason in ("backendError", "rateLimitExceeded", "quotaExceeded"),
            )
        return LoadResult(job_id, LoadState.DONE)

    def loaded(self, table: str) -> list[dict[str, Any]]:
        return [j for j in self.jobs.values() if j["table"] == table and not j["error"] and not j["running"]]

    def rows(self, table: str = "predictions") -> list[dict[str, Any]]:
        return [row for job in self.loaded(table) for row in job["rows"]]

    def latest(self, run_id: str) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            if row["run_id"] == run_id and row["attempt"] >= latest.get(row["request_key"], {"attempt": 0})["attempt"]:
                latest[row["request_key"]] = row
        return latest

    def run_summary(self, run_id: str) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for row in self.latest(run_id).values():
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        return {"counts": counts, "rows": sum(counts.values()), "max_attempt": 0, "tokens": {}, "table": "latest"}

    def output_history(self, prefix: str, days: int) -> dict[str, tuple[float, int]]:
        history: dict[str, tuple[float, int]] = {}
        for row in self.rows():
            version = str(row.get("model_version") or "")
            if row["outcome"] in ("SUCCEEDED", "TRUNCATED") and version.startswith(prefix):
                total, rows = history.get(version, (0.0, 0))
                output = (row.get("candidates_tokens") or 0) + (row.get("thoughts_tokens") or 0)
                history[version] = (total + output, rows + 1)
        return history

    def selected_keys(
        self, run_id: str, outcomes: list[str], error_statuses: list[str]
    ) -> Iterator[tuple[str, int | None]]:
        for key, row in self.latest(run_id).items():
            status_ok = not error_statuses or row.get("error_status") in error_statuses
            if row["attempt"] > 0 and row["outcome"] in outcomes and status_ok:
                yield key, row.get("chunk")

    def request_lines(self, table_uri: str) -> Iterator[bytes]:
        raise PermanentError(f"reading {table_uri}: 404 Not found: Table")


@dataclass
class FakeBus:
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_next: int = 0

    def publish(self, topic: str, message: dict[str, Any], **attributes: str) -> str:
        if self.fail_next:
            self.fail_next -= 1
            raise TransientError(f"publishing to {topic}: 503")
        self.messages.append((topic, message))
        return str(len(self.messages))

    def take(self, topic: str) -> list[dict[str, Any]]:
        """The messages published to ``topic`` since the last take (removed)."""
        taken = [m for t, m in self.messages if t == topic]
        self.messages[:] = [(t, m) for t, m in self.messages if t != topic]
        return taken


def fake_ports() -> Ports:
    store = MemoryStore()
    return Ports(store=store, jobs=FakeJobs(), warehouse=FakeWarehouse(store), bus=FakeBus())
