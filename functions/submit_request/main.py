"""submit_request: a batch-requests message names a gs:// or bq:// source -> submitted once (or a run resumed)."""

import os

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters import ports
from shared.config import Settings
from shared.core.ids import run_id_for_message
from shared.core.messages import parse_request_message
from shared.runtime import event_handler, invocation, pubsub_message
from shared.services.cancel import cancel
from shared.services.retry import RetryRequest, retry
from shared.services.submit import MESSAGE, Submission, decide, resume, submit

SETTINGS = Settings.from_env(os.environ)


@functions_framework.cloud_event
@event_handler("google.cloud.pubsub.topic.v1.messagePublished", SETTINGS.max_event_age_seconds)
def submit_request(event: CloudEvent) -> str:
    """Submit the source the message names, once per message; or resume, approve, reject, cancel or retry a run."""
    inv = invocation(SETTINGS)
    payload, message_id = pubsub_message(event)
    message = parse_request_message(payload)  # checked before any run is claimed or client built
    if message.resume:
        return resume(message.resume, SETTINGS, ports(SETTINGS), inv)
    if message.cancel:
        return cancel(message.cancel, message.reason, SETTINGS, ports(SETTINGS), inv, message.reopen)
    if message.retry:
        what = RetryRequest(
            message.retry, message.selection, message.outcomes, message.error_statuses, message.model,
            message.approved, message.nonce,
        )  # fmt: skip
        return retry(what, SETTINGS, ports(SETTINGS), inv)
    if message.approve or message.reject:
        verdict = "approve" if message.approve else "reject"
        return decide(message.approve or message.reject, verdict, message.reason, SETTINGS, ports(SETTINGS), inv)
    submission = Submission(
        run_id_for_message(SETTINGS.work_bucket, message_id),
        message.source,
        model=message.model,
        display_name=message.display_name,
        labels=message.labels,
        origin=MESSAGE,
    )
    return submit(submission, SETTINGS, ports(SETTINGS), inv)
