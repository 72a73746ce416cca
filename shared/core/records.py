"""What the ledger keeps: runs and job attempts, as plain values (JSON in the ledger store)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, Self

RUN_SUBMITTING: Final = "SUBMITTING"
RUN_REJECTED: Final = "REJECTED"
RUN_RUNNING: Final = "RUNNING"
RUN_COMPLETE: Final = "COMPLETE"

JOB_CLAIMED: Final = "CLAIMED"  # about to call batches.create
JOB_SUBMITTED: Final = "SUBMITTED"  # Vertex has it; ``vertex_state`` follows it
JOB_FINISHED: Final = "FINISHED"  # Vertex reached a final state; batch-finished published
JOB_COLLECTING: Final = "COLLECTING"  # a collector holds it (lease)
JOB_COLLECTED: Final = "COLLECTED"  # rows loaded, retries submitted

VERTEX_FINAL: Final = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
    }
)


class _Record:
    """JSON round trip shared by the ledger's records."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Read back, ignoring members a newer version may have added."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Run(_Record):
    """One uploaded file (or one request message) and where it stands."""

    run_id: str
    source: str
    model: str
    status: str = RUN_SUBMITTING
    chunks: int = 0
    requests: int = 0
    invalid: int = 0
    claimed_at: str = ""
    updated_at: str = ""
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    report_uri: str = ""
    announced: bool = False


@dataclass
class JobRecord(_Record):
    """One attempt of one chunk: its Vertex job and what has been done with it."""

    run_id: str
    chunk: int
    attempt: int
    input_uri: str
    dest_prefix: str
    requests: int
    status: str = JOB_CLAIMED
    job_name: str = ""
    location: str = ""
    vertex_state: str = ""
    history: list[dict[str, str]] = field(default_factory=list)
    claimed_at: str = ""
    submitted_at: str = ""
    finished_at: str = ""
    stuck: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # rows sent to the next attempt
    child: str = ""  # the next attempt's key, when there is one
