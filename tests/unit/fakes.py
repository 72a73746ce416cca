"""Small in-memory fakes of the ports, for unit tests of the services only.

The integration tests run the same services against the real local cloud.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from shared.core.errors import ConflictError, TransientError
from shared.ports import Ports, VertexJob


class MemoryStore:
    """Objects with generations; preconditions as GCS applies them."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, int]] = {}
        self._generations = itertools.count(1)

    @contextmanager
    def open(self, uri: str, generation: str | None = None) -> Iterator[BinaryIO]:
        data, current = self.objects[uri]
        assert generation is None or int(generation) == current, "generation pinned reads"
        yield io.BytesIO(data)

    def read(self, uri: str) -> tuple[bytes, int] | None:
        return self.objects.get(uri)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        current = self.objects.get(uri, (b"", 0))[1]
        if if_generation_match is not None and if_generation_match != current:
            raise ConflictError(uri)
        generation = next(self._generations)
        self.objects[uri] = (data, generation)
        return generation

    @contextmanager
    def writer(self, uri: str) -> Iterator[BinaryIO]:
        buffer = io.BytesIO()
        yield buffer
        self.write(uri, buffer.getvalue())

    def list(self, prefix_uri: str) -> list[str]:
        return sorted(u for u in self.objects if u.startswith(prefix_uri))

    def delete(self, uri: str) -> None:
        self.objects.pop(uri, None)


@dataclass
class FakeJobs:
    """Vertex batch jobs whose states the test sets."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next_create: bool = False

    def create(
        self, *, model: str, input_uri: str, dest_prefix: str, display_name: str, labels: dict[str, str], location: str
    ) -> VertexJob:
        if self.fail_next_create:
            self.fail_next_create = False
            raise TransientError("503 on create")
        name = f"projects/p/locations/{location}/batchPredictionJobs/{len(self.jobs) + 1}"
        self.jobs[name] = {"state": "JOB_STATE_QUEUED", "labels": labels, "input": input_uri, "dest": dest_prefix}
        return VertexJob(name, "JOB_STATE_QUEUED")

    def get(self, name: str, location: str) -> VertexJob:
        return VertexJob(name, self.jobs[name]["state"])

    def find(self, labels: dict[str, str], location: str) -> VertexJob | None:
        for name, job in self.jobs.items():
            if all(job["labels"].get(k) == v for k, v in labels.items()):
                return VertexJob(name, job["state"])
        return None

    def cancel(self, name: str, location: str) -> None:
        self.jobs[name]["state"] = "JOB_STATE_CANCELLED"


@dataclass
class FakeWarehouse:
    """Load jobs by id; latest_predictions computed from the loaded rows."""

    store: MemoryStore
    loads: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def load_state(self, job_id: str) -> str | None:
        return "DONE" if job_id in self.loads else None

    def load(self, source_uri: str, table: str, job_id: str) -> None:
        assert job_id not in self.loads, f"load job {job_id} submitted twice"
        data, _ = self.store.objects[source_uri]
        self.loads[job_id] = (table, [orjson.loads(line) for line in data.splitlines() if line])

    def rows(self, table: str = "predictions") -> list[dict[str, Any]]:
        return [row for t, rows in self.loads.values() if t == table for row in rows]

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

    def request_lines(self, table_uri: str) -> Iterator[bytes]:
        raise NotImplementedError


@dataclass
class FakeBus:
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, topic: str, message: dict[str, Any], **attributes: str) -> str:
        self.messages.append((topic, message))
        return str(len(self.messages))


def fake_ports() -> Ports:
    store = MemoryStore()
    return Ports(store=store, jobs=FakeJobs(), warehouse=FakeWarehouse(store), bus=FakeBus())
