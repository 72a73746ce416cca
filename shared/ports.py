"""What the services need from the outside world (implemented in shared/adapters)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol


class ObjectStore(Protocol):
    """GCS-like storage with generations."""

    def open(self, uri: str, generation: str | None = None, start: int = 0) -> AbstractContextManager[BinaryIO]:
        """A streaming reader of one object (of that generation, when given), from byte ``start`` on.

        Read it in blocks (``shared.core.lines.iter_lines``): like GCS's reader, it has no
        fast ``readline``, so iterating it line by line reads one byte per call.
        """

    def read(self, uri: str) -> tuple[bytes, int] | None:
        """``(data, generation)``, or None when the object does not exist."""

    def generation(self, uri: str) -> str | None:
        """The object's current generation, or None when it does not exist."""

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write a small object; 0 means "create only". Raises ConflictError when the condition fails."""

    def writer(self, uri: str) -> AbstractContextManager[BinaryIO]:
        """A streaming writer for a large object (it appears whole when closed, never half-written)."""

    def copy(self, source_uri: str, target_uri: str, *, if_generation_match: int | None = None) -> int:
        """Copy an object, server-side (however large), to another name or bucket; the copy's generation."""

    def upload(self, path: Path, uri: str) -> int:
        """Upload a local file as a new object (create-only, ConflictError when it exists); its generation."""

    def list(self, prefix_uri: str, updated_since: datetime | None = None) -> list[str]:
        """URIs of the objects under a prefix (``updated_since``: those not written since may be left out)."""

    def delete(self, uri: str) -> None:
        """Delete an object if it exists."""

    def set_custom_time(self, uri: str, when: datetime) -> None:
        """Set the object's custom time (lifecycle rules delete work files a while after it)."""


@dataclass(frozen=True, slots=True)
class JobError:
    """A Vertex job's ``error`` (a google.rpc.Status): its code, canonical name and message."""

    code: int | None
    status: str | None
    message: str


@dataclass(frozen=True, slots=True)
class VertexJob:
    """What the pipeline needs to know of a Vertex batch job."""

    name: str
    state: str
    error: JobError | None = None


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


class LoadState(StrEnum):
    """How a load job ended."""

    DONE = "DONE"  # loaded without error
    FAILED = "FAILED"  # DONE with an error: nothing was loaded


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A finished load job."""

    job_id: str
    state: LoadState
    error: str = ""
    retryable: bool = False  # the error is the service's (backend, rate, quota), not the data's


class Warehouse(Protocol):
    """BigQuery (every job named with the dataset's location)."""

    def load_once(self, job_id: str, source_uri: str | list[str], table: str, wait_seconds: float) -> LoadResult:
        """The load job ``job_id`` of ``source_uri`` (one file or up to 10,000) into ``table``, created when absent.

        A job id is single-use: when it exists (409), that job is the one waited for. Raises
        StillRunning when it is not done after ``wait_seconds``, TransientError when BigQuery
        answers with a rate or quota error.
        """

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Counts per outcome, attempts and tokens of one run (from latest_predictions)."""

    def output_history(self, prefix: str, days: int) -> dict[str, tuple[float, int]]:
        """Per ``model_version`` starting with ``prefix``: output tokens and answered rows lately.

        Output is candidates + thinking tokens of SUCCEEDED or TRUNCATED rows of the last ``days`` days.
        """

    def results(self, run_id: str, outcomes: list[str]) -> tuple[int, Iterator[Any]]:
        """A run's latest rows (of ``outcomes``, when given): their count and Arrow record batches."""

    def selected_keys(
        self, run_id: str, outcomes: list[str], error_statuses: list[str]
    ) -> Iterator[tuple[str, int | None]]:
        """(request key, chunk) of a run's latest rows sent to Vertex (attempt > 0) with one of ``outcomes``.

        And, when ``error_statuses`` is not empty, one of those ``error_status`` values. The chunk
        is None on rows loaded before rows had one.
        """

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
