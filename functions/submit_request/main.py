"""submit_request: a batch-requests message names a gs:// or bq:// source -> submitted once."""

import os

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters import ports
from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.ids import run_id_for_message
from shared.runtime import event_handler, now, pubsub_message
from shared.services.submit import Submission, submit

SETTINGS = Settings.from_env(os.environ)


def _submission(payload: dict, message_id: str) -> Submission:
    source = payload.get("source")
    if not isinstance(source, str) or not source.startswith(("gs://", "bq://")):
        raise PermanentError('the message needs "source": "gs://…" or "bq://…"')
    labels = payload.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise PermanentError('"labels" must be an object of strings')
    return Submission(
        run_id_for_message(message_id),
        source,
        model=str(payload.get("model") or ""),
        display_name=str(payload.get("display_name") or ""),
        labels=labels,
    )


@functions_framework.cloud_event
@event_handler("google.cloud.pubsub.topic.v1.messagePublished", SETTINGS.max_event_age_seconds)
def submit_request(event: CloudEvent) -> str:
    """Submit the source the message names, once per message."""
    payload, message_id = pubsub_message(event)
    submission = _submission(payload, message_id)  # checked before any client is built
    return submit(submission, SETTINGS, ports(SETTINGS), now())
