"""Why a request has no output line, and whether sending it again can help.

A row can fail on its own (its output line says so: see normalize.parse_status), or be
left without output because the whole job ended badly. Rows of a job that failed for a
permanent reason (e.g. INVALID_ARGUMENT: an unknown model) are not re-submitted; a
job-level failure is retried only when it is the service's (RESOURCE_EXHAUSTED, INTERNAL,
UNAVAILABLE, DEADLINE_EXCEEDED), the job EXPIRED in the queue, or our own deadlines
cancelled it. The reason goes on the MISSING rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from shared.core.normalize import RETRYABLE_STATUSES

# google.rpc.Code: the code of a Vertex job's ``error``, by number.
RPC_STATUSES: Final = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
# The HTTP code of each canonical status (the ``error_code`` column is HTTP-style).
HTTP_CODES: Final = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
JOB_GONE: Final = "JOB_STATE_GONE"  # not a Vertex state: the job no longer exists (deleted)
JOB_EXPIRED: Final = "JOB_EXPIRED"
JOB_CANCELLED: Final = "JOB_CANCELLED"
JOB_FAILED: Final = "JOB_FAILED"


@dataclass(frozen=True, slots=True)
class MissingReason:
    """What a MISSING row says: whether to retry it, and why it has no output."""

    retryable: bool
    code: int | None = None
    status: str | None = None
    message: str | None = None

    def columns(self) -> dict[str, Any]:
        """The row columns it sets (non-null ones)."""
        columns: dict[str, Any] = {"retryable": self.retryable}
        for name, value in (("error_code", self.code), ("error_status", self.status), ("error_message", self.message)):
            if value is not None:
                columns[name] = value
        return columns


def job_error(code: object, message: object, source: str) -> dict[str, Any]:
    """A job-level error as the ledger keeps it: ``{"code", "status", "message", "source"}``.

    ``code`` is a google.rpc code (a Vertex job's error) or a canonical status name.
    """
    status = RPC_STATUSES.get(code) if isinstance(code, int) else (code if isinstance(code, str) else None)
    return {"code": HTTP_CODES.get(status or ""), "status": status, "message": str(message or ""), "source": source}


def missing_reason(vertex_state: str, error: dict[str, Any], stuck: bool, cancelled: str = "") -> MissingReason:
    """Why an input key of a job in ``vertex_state`` has no output line, and whether to retry it.

    ``cancelled``: why its run was cancelled by an operator (never retried; ``gemini-batch retry`` can).
    """
    if cancelled:
        return MissingReason(False, HTTP_CODES["CANCELLED"], "CANCELLED", f"the run was cancelled: {cancelled}")
    status = error.get("status")
    message = error.get("message") or None
    if error.get("source") == "create":  # batches.create refused the job for good
        return MissingReason(False, error.get("code"), status, f"the batch job was refused: {message}")
    if vertex_state == "JOB_STATE_FAILED":
        retryable = status is None or status in RETRYABLE_STATUSES
        return MissingReason(retryable, error.get("code"), status or JOB_FAILED, f"the batch job failed: {message}")
    if vertex_state == "JOB_STATE_EXPIRED":
        return MissingReason(True, None, JOB_EXPIRED, "the batch job expired before it ran")
    if vertex_state == JOB_GONE:
        return MissingReason(False, 404, "NOT_FOUND", "the batch job no longer exists on Vertex (deleted)")
    if vertex_state in ("JOB_STATE_CANCELLED", "JOB_STATE_CANCELLING"):
        if stuck:  # cancelled (or given up on while cancelling) by the pipeline's own deadlines
            return MissingReason(True, None, None, "cancelled by the pipeline: past its queue or run deadline")
        return MissingReason(False, None, JOB_CANCELLED, "the batch job was cancelled (not by the pipeline)")
    return MissingReason(True)  # the job ended well but wrote no line for this request: send it again
