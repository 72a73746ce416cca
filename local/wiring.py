"""The one declarative description of what listens to what (read by the stack and the bridge).

``local/wiring.json`` is the project's; ``LOCAL_CLOUD_WIRING`` points at another (tests).
A function's trigger is either ``{"event_type": "google.cloud.storage.object.v1.finalized",
"bucket": B, "prefix"?: P}`` or ``{"event_type": "google.cloud.pubsub.topic.v1.messagePublished",
"topic": T}``; its ``source`` folder holds ``main.py``; ``env`` is what it is started with;
``timeout_seconds`` (default and most 540, as for an event-driven Cloud Run function; real seconds,
never time-scaled) is how long the bridge waits for an answer before it redelivers the event.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

DEFAULT = Path(__file__).with_name("wiring.json")
STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
MAX_TIMEOUT_SECONDS = 540.0  # an event-driven function's longest timeout on GCP


@dataclass(frozen=True)
class Function:
    """One function: its entry point (= folder name), trigger and environment."""

    name: str
    source: Path
    event_type: str
    target: str = ""  # the entry point, when the same code is deployed under another name
    topic: str | None = None
    bucket: str | None = None
    prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = MAX_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Schedule:
    """A Cloud Scheduler job publishing to ``topic`` every ``every_seconds``."""

    topic: str
    every_seconds: float


@dataclass(frozen=True)
class Wiring:
    """Topics, buckets, schedules and functions of one deployment."""

    path: Path
    project: str
    location: str
    gcs_events_topic: str
    buckets: tuple[str, ...]
    topics: tuple[str, ...]
    dead_letter_topic: str
    max_delivery_attempts: int
    schedules: tuple[Schedule, ...]
    functions: tuple[Function, ...]
    dataset: str = ""  # the BigQuery dataset the pipeline writes (created at start)

    @classmethod
    def load(cls, path: Path | None = None) -> Wiring:
        """Read and check a wiring file."""
        path = path or Path(os.environ.get("LOCAL_CLOUD_WIRING", DEFAULT))
        raw: dict[str, Any] = orjson.loads(path.read_bytes())
        base = path.parent
        functions = []
        for spec in raw.get("functions", []):
            trigger = spec["trigger"]
            function = Function(
                name=spec["name"],
                source=(base / spec["source"]).resolve(),
                event_type=trigger["event_type"],
                topic=trigger.get("topic"),
                bucket=trigger.get("bucket"),
                prefix=trigger.get("prefix", ""),
                env={k: str(v) for k, v in spec.get("env", {}).items()},
                target=spec.get("target", spec["name"]),
                timeout_seconds=float(spec.get("timeout_seconds", MAX_TIMEOUT_SECONDS)),
            )
            if not 0 < function.timeout_seconds <= MAX_TIMEOUT_SECONDS:
                raise ValueError(f"{function.name}: timeout_seconds must be in (0, {MAX_TIMEOUT_SECONDS:.0f}]")
            if function.event_type == PUBSUB_PUBLISHED and function.topic not in raw["topics"]:
                raise ValueError(f"{function.name}: topic {function.topic!r} is not declared")
            if function.event_type == STORAGE_FINALIZED and function.bucket not in raw["buckets"]:
                raise ValueError(f"{function.name}: bucket {function.bucket!r} is not declared")
            if function.event_type not in (PUBSUB_PUBLISHED, STORAGE_FINALIZED):
                raise ValueError(f"{function.name}: unsupported event type {function.event_type}")
            functions.append(function)
        return cls(
            path=path.resolve(),
            project=raw["project"],
            location=raw["location"],
            gcs_events_topic=raw["gcs_events_topic"],
            buckets=tuple(raw["buckets"]),
            topics=tuple(raw["topics"]),
            dead_letter_topic=raw["dead_letter_topic"],
            max_delivery_attempts=int(raw["max_delivery_attempts"]),
            schedules=tuple(Schedule(s["topic"], float(s["every_seconds"])) for s in raw.get("schedules", [])),
            functions=tuple(functions),
            dataset=raw.get("dataset", ""),
        )
