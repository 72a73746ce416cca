"""submit_batch: a request file landed in the input bucket -> validated, keyed, split, submitted."""

import os

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters import ports
from shared.config import Settings
from shared.core.ids import run_id_for_object
from shared.runtime import event_handler, invocation, log, storage_object
from shared.services.submit import Submission, submit

SETTINGS = Settings.from_env(os.environ)


@functions_framework.cloud_event
@event_handler("google.cloud.storage.object.v1.finalized", SETTINGS.max_event_age_seconds)
def submit_batch(event: CloudEvent) -> str:
    """Submit the uploaded object's generation, once."""
    inv = invocation(SETTINGS)
    ref = storage_object(event)
    if not ref.name.startswith(SETTINGS.input_prefix) or not ref.name.endswith(".jsonl"):
        log.info("event ignored: not a request file", extra={"gcs_uri": ref.uri})
        return "ignored"
    submission = Submission(run_id_for_object(ref), ref.uri, ref.generation)
    return submit(submission, SETTINGS, ports(SETTINGS), inv)
