"""collect_results: batch-finished -> rows in BigQuery exactly once, retries, the run announced."""

import os

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters import ports
from shared.config import Settings
from shared.runtime import event_handler, invocation, pubsub_message
from shared.services.collect import collect, finished_job

SETTINGS = Settings.from_env(os.environ)


@functions_framework.cloud_event
@event_handler("google.cloud.pubsub.topic.v1.messagePublished", SETTINGS.max_event_age_seconds)
def collect_results(event: CloudEvent) -> str:
    """Collect the finished job the message names."""
    inv = invocation(SETTINGS)
    payload, _ = pubsub_message(event)
    finished_job(payload)  # a malformed message is dropped before any client is built
    return collect(payload, SETTINGS, ports(SETTINGS), inv)
