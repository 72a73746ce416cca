"""What the services need from the outside world (implemented in shared/adapters)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol


class ObjectStore(Protocol):
    """GCS-like storage with generations."""

    def open(self, uri: str, generation: str | None = None) -> AbstractContextManager[BinaryIO]:
        """A streaming reader of one object (of that generation, when given)."""

    def read(self, uri: str) -> tuple[bytes, int] | None:
        """``(data, generation)``, or None when the object does not exist."""

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write a small object; 0 means "create only". Raises ConflictError when the condition fails."""

    def writer(self, uri: str) -> AbstractContextManager[BinaryIO]:
        """A streaming writer for a large object (replaced whole when closed)."""

    def list(self, prefix_uri: str) -> list[str]:
        """URIs of the objects under a prefix."""

    def delete(self, uri: str) -> None:
        """Delete an object if it exists."""


@dataclass(frozen=True, slots=True)
class VertexJob:
    """What the pipeline needs to know of a Vertex batch job."""

    name: str
    state: str
    error: str | None = None


class BatchJobs(Protocol):
    """Vertex AI batch prediction."""

    def create(
        self, *, model: str, input_uri: str, dest_prefix: str, display_name: str, labels: dict[str, str], location: str
    ) -> VertexJob:
        """Submit one job (not idempotent: callers look for it first)."""

    def get(self, name: str, location: str) -> VertexJob:
        """The job as it stands."""

    def find(self, labels: dict[str, str], location: str) -> VertexJob | None:
        """A job carrying all these labels, if one exists."""

    def cancel(self, name: str, location: str) -> None:
        """Ask Vertex to cancel a job."""


class Warehouse(Protocol):
    """BigQuery."""

    def load_state(self, job_id: str) -> str | None:
        """``DONE``, ``RUNNING``/``PENDING``, ``FAILED: …`` or None when no such load job exists."""

    def load(self, source_uri: str, table: str, job_id: str) -> None:
        """Append an NDJSON file to ``table`` with a load job named ``job_id``."""

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Counts per outcome, attempts and tokens of one run (from latest_predictions)."""

    def request_lines(self, table_uri: str) -> Iterator[bytes]:
        """The rows of a ``bq://`` request table as JSONL lines (``{"key"?, "request"}``)."""


class Bus(Protocol):
    """Pub/Sub."""

    def publish(self, topic: str, message: dict[str, Any], **attributes: str) -> str:
        """Publish a JSON message; return its id."""


@dataclass(frozen=True)
class Ports:
    """Everything the services talk to (built by shared.adapters.ports)."""

    store: ObjectStore
    jobs: BatchJobs
    warehouse: Warehouse
    bus: Bus
