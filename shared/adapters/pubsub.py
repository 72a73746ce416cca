"""Bus on Pub/Sub (and its emulator through PUBSUB_EMULATOR_HOST)."""

from __future__ import annotations

from typing import Any

import orjson
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from shared.adapters.errors import call


class PubSubBus:
    """Publishes JSON messages to the project's topics."""

    def __init__(self, client: pubsub_v1.PublisherClient, project: str) -> None:
        self.client, self.project = client, project

    def publish(self, topic: str, message: dict[str, Any], **attributes: str) -> str:
        """Publish and wait for the id (so a crash after return means it was sent)."""
        path = self.client.topic_path(self.project, topic)
        future = self.client.publish(path, orjson.dumps(message), **attributes)
        return str(call(f"publishing to {topic}", lambda: future.result(timeout=60)))
