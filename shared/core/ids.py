"""Every idempotency key and deterministic name, derived from stable facts (never random ids or the clock)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from shared.core.errors import PermanentError

MAX_LABELS: Final = 64  # Vertex (and every Google Cloud resource) takes at most 64 labels
RESERVED_LABEL_PREFIX: Final = "gbp_"
PIPELINE_LABELS: Final = ("gbp_run", "gbp_chunk", "gbp_attempt")


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


def run_id_for_message(deployment: str, message_id: str) -> str:
    """The run of one ``batch-requests`` message to one deployment (named by its work bucket).

    Message ids are unique per topic only; job ids and labels are project-wide.
    """
    return "m" + _digest("message", deployment, message_id)


def deployment_tag(identity: str) -> str:
    """A short, stable name for one deployment (from its ledger's location), for project-wide ids."""
    return _digest("deployment", identity)[:10]


def job_key(run_id: str, chunk: int, attempt: int) -> str:
    """Names one job attempt of one chunk (ledger records, labels, prefixes)."""
    return f"{run_id}-c{chunk:04d}-a{attempt}"


def user_labels(raw: dict[str, str]) -> dict[str, str]:
    """A user's labels made valid for Vertex, or PermanentError naming what cannot be.

    Keys and values are lowercased, other characters than ``[a-z0-9_-]`` become ``-`` and
    both are cut to 63 characters; two keys that become the same, a key in our reserved
    ``gbp_`` space, or more labels than fit beside the pipeline's own are errors (a silent
    overwrite would lose one of them).
    """
    labels: dict[str, str] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if not key:
            problems.append("an empty label key")
            continue
        clean = label_key(key)
        if clean.startswith(RESERVED_LABEL_PREFIX):
            problems.append(f"label {key!r}: keys starting with {RESERVED_LABEL_PREFIX!r} are the pipeline's")
        elif clean in labels:
            originals = [k for k in raw if k and label_key(k) == clean]
            problems.append(f"labels {originals!r} all become {clean!r}")
        else:
            labels[clean] = label_value(value)
    room = MAX_LABELS - len(PIPELINE_LABELS)
    if len(raw) > room:
        problems.append(f"{len(raw)} labels; at most {room} fit beside the pipeline's own {len(PIPELINE_LABELS)}")
    if problems:
        raise PermanentError("bad labels: " + "; ".join(dict.fromkeys(problems)))
    return labels


def job_labels(run_id: str, chunk: int, attempt: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Labels of a Vertex job: enough to find it again with ``batches.list`` after a crash."""
    labels = user_labels(extra or {})
    labels.update(gbp_run=run_id, gbp_chunk=str(chunk), gbp_attempt=str(attempt))
    return labels


def label_value(value: str) -> str:
    """A string made acceptable as a label value (<= 63 chars of [a-z0-9_-])."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def label_key(key: str) -> str:
    """A string made acceptable as a label key (a lowercase letter first)."""
    cleaned = label_value(key)
    return cleaned if cleaned[:1].isalpha() else f"l{cleaned}"[:63]


def load_job_id(name: str, owner: str, version: int) -> str:
    """The BigQuery load job ``name`` of a ledger record (a run id or a job key), version ``version``.

    Job ids are single-use (BigQuery answers 409 to a second insert, even of a failed job):
    a load that ended with an error is tried again under the next version, which is
    recorded in the ledger before the job is created.
    """
    return f"gbp_{name}_{owner}_v{version}".replace("-", "_")
