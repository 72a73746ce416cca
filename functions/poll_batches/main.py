"""poll_batches: a scheduler tick -> every followed job and run driven on once; final states announced."""

import os

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters import ports
from shared.config import Settings
from shared.runtime import event_handler, invocation
from shared.services.poll import poll

SETTINGS = Settings.from_env(os.environ)


@functions_framework.cloud_event
@event_handler("google.cloud.pubsub.topic.v1.messagePublished", SETTINGS.max_event_age_seconds)
def poll_batches(event: CloudEvent) -> dict:
    """Poll the jobs and runs the ledger follows."""
    return poll(SETTINGS, ports(SETTINGS), invocation(SETTINGS))
