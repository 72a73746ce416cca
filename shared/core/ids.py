"""Every idempotency key and deterministic name, derived from stable facts (never random ids or the clock)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One generation of one object: what a finalize event names."""

    bucket: str
    name: str
    generation: str

    @property
    def uri(self) -> str:
        """``gs://bucket/name`` (without the generation)."""
        return f"gs://{self.bucket}/{self.name}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def run_id_for_object(ref: ObjectRef) -> str:
    """The run of one uploaded object generation: the same however often the event comes."""
    return "r" + _digest("object", ref.bucket, ref.name, ref.generation)


def run_id_for_message(message_id: str) -> str:
    """The run of one ``batch-requests`` message."""
    return "m" + _digest("message", message_id)


def job_key(run_id: str, chunk: int, attempt: int) -> str:
    """Names one job attempt of one chunk (ledger records, labels, prefixes)."""
    return f"{run_id}-c{chunk:04d}-a{attempt}"


def job_labels(run_id: str, chunk: int, attempt: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Labels of a Vertex job: enough to find it again with ``batches.list`` after a crash."""
    labels = {label_key(k): label_value(v) for k, v in (extra or {}).items()}
    labels.update(gbp_run=run_id, gbp_chunk=str(chunk), gbp_attempt=str(attempt))
    return labels


def label_value(value: str) -> str:
    """A string made acceptable as a label value (<= 63 chars of [a-z0-9_-])."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def label_key(key: str) -> str:
    """A string made acceptable as a label key (a lowercase letter first)."""
    cleaned = label_value(key)
    return cleaned if cleaned[:1].isalpha() else f"l{cleaned}"[:63]


def load_job_id(table: str, run_id: str, chunk: int, attempt: int) -> str:
    """The BigQuery load job of one job attempt's rows into ``table``: loading twice is refused."""
    return f"gbp_{table}_{job_key(run_id, chunk, attempt)}".replace("-", "_")


def invalid_rows_job_id(run_id: str) -> str:
    """The load job of a run's rejected lines (SKIP_INVALID_LINES)."""
    return f"gbp_predictions_{run_id}_invalid"
