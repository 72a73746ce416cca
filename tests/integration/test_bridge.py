"""The event bridge delivers Eventarc-shaped CloudEvents to functions-framework processes."""

from __future__ import annotations

import base64
import os
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from google.api_core import exceptions

from local.clients import publisher, storage_client, subscriber
from local.stack import Endpoints, Stack
from tests.integration.conftest import TIME_SCALE, wait_for


def _log(function: str, phase: str) -> list[dict[str, Any]]:
    log = Path(os.environ["ECHO_LOG"])
    if not log.exists():
        return []
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    return [e for e in entries if e["function"] == function and e["phase"] == phase]


def _events(function: str) -> list[dict[str, Any]]:
    """The deliveries ``function`` received (their start lines), oldest first."""
    return _log(function, "start")


def _deliveries(function: str, event_id: str) -> list[dict[str, Any]]:
    return [e for e in _events(function) if e["attributes"]["id"] == event_id]


def _gaps(deliveries: list[dict[str, Any]]) -> list[float]:
    """Seconds between the starts of consecutive deliveries."""
    return [b["at"] - a["at"] for a, b in pairwise(deliveries)]


def _publish(cloud: Endpoints, topic: str, data: bytes, **attributes: str) -> str:
    client = publisher(cloud)
    return str(client.publish(client.topic_path(cloud.project, topic), data, **attributes).result(timeout=30))


def test_bridge_delivers_storage_finalized_events_like_eventarc(cloud: Endpoints) -> None:
    bucket = storage_client(cloud).bucket("gbp-input")
    name = f"incoming/{time.time_ns()}.jsonl"
    blob = bucket.blob(name)
    blob.upload_from_string(b'{"request": {}}\n')
    bucket.blob(f"elsewhere/{time.time_ns()}.jsonl").upload_from_string(b"{}\n")  # outside the prefix
    event = wait_for(lambda: [e for e in _events("echo_storage") if e["data"]["name"] == name])[0]
    attributes = event["attributes"]
    assert attributes["type"] == "google.cloud.storage.object.v1.finalized"
    assert attributes["source"] == "//storage.googleapis.com/projects/_/buckets/gbp-input"
    assert attributes["subject"] == f"objects/{name}"
    assert attributes["specversion"] == "1.0" and attributes["id"] and attributes["time"]
    data = event["data"]
    assert (data["bucket"], data["name"], data["generation"]) == ("gbp-input", name, str(blob.generation))
    assert data["size"] == "16" and isinstance(data["size"], str)
    time.sleep(0.5)
    assert all(e["data"]["name"].startswith("incoming/") for e in _events("echo_storage"))


def test_bridge_delivers_pubsub_messages_as_message_published_events(cloud: Endpoints) -> None:
    payload = orjson.dumps({"hello": time.time_ns()})
    message_id = _publish(cloud, "poll-tick", payload, origin="test")
    event = wait_for(lambda: [e for e in _events("echo_pubsub") if e["attributes"]["id"] == message_id])[0]
    attributes = event["attributes"]
    assert attributes["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert attributes["source"] == f"//pubsub.googleapis.com/projects/{cloud.project}/topics/poll-tick"
    message = event["data"]["message"]
    assert base64.b64decode(message["data"]) == payload
    assert message["attributes"] == {"origin": "test"}
    assert message["messageId"] == message["message_id"] == message_id
    assert message["publishTime"] == message["publish_time"]
    assert event["data"]["subscription"] == f"projects/{cloud.project}/subscriptions/eventarc-echo_pubsub"


def test_bridge_retries_a_failing_delivery_after_a_real_exponential_backoff(cloud: Endpoints) -> None:
    message_id = _publish(cloud, "poll-tick", b'{"note": "fail-twice"}')
    deliveries = wait_for(lambda: (d := _deliveries("echo_pubsub", message_id)) and len(d) >= 3 and d)
    time.sleep(0.5)
    assert len(_deliveries("echo_pubsub", message_id)) == len(deliveries) == 3
    # Eventarc's backoff (10 s, then 20 s) at the stack's time scale, really waited for.
    first, second = _gaps(deliveries)
    assert first >= 10 * TIME_SCALE and second >= 20 * TIME_SCALE, (first, second)


def test_bridge_dead_letters_after_max_attempts(cloud: Endpoints) -> None:
    subs = subscriber(cloud)
    dead = subs.subscription_path(cloud.project, f"dead-letter-test-{time.time_ns()}")
    subs.create_subscription(name=dead, topic=publisher(cloud).topic_path(cloud.project, "dead-letter"))
    message_id = _publish(cloud, "poll-tick", b'{"note": "fail-always"}', origin="doomed")

    def dead_lettered() -> list[Any]:
        try:
            reply = subs.pull(subscription=dead, max_messages=10, timeout=5)
        except exceptions.DeadlineExceeded:
            return []
        return [m.message for m in reply.received_messages if m.message.attributes.get("origin") == "doomed"]

    [message] = wait_for(dead_lettered)
    assert message.data == b'{"note": "fail-always"}'
    assert message.attributes["source_topic"] == "poll-tick"
    assert message.attributes["function"] == "echo_pubsub"
    assert message.attributes["delivery_attempts"] == "3"
    deliveries = _deliveries("echo_pubsub", message_id)
    assert len(deliveries) == 3
    assert all(gap >= backoff * TIME_SCALE for gap, backoff in zip(_gaps(deliveries), (10, 20), strict=True))


def test_bridge_redelivers_after_the_timeout_while_the_first_handler_still_runs(stack: Stack, cloud: Endpoints) -> None:
    timeout = next(f.timeout_seconds for f in stack.wiring.functions if f.name == "echo_slow")
    sleep = timeout + 1.0  # the first delivery outlives its timeout by a second
    message_id = _publish(cloud, "batch-results", orjson.dumps({"sleep_first_seconds": sleep}))

    def first_ended() -> list[dict[str, Any]]:
        return [e for e in _log("echo_slow", "end") if e["id"] == message_id and e["delivery"] == 1]

    [first_end] = wait_for(first_ended)
    first, second = _deliveries("echo_slow", message_id)
    # Cloud Run: at the timeout the request fails and the event is redelivered (after the backoff),
    # but the handler is not stopped: the redelivery starts while the first delivery still runs.
    assert second["at"] - first["at"] >= timeout
    assert second["at"] < first_end["at"]
    assert first_end["at"] - first["at"] >= sleep and first_end["outcome"] == "ok"  # ran to its end
    ends = [e for e in _log("echo_slow", "end") if e["id"] == message_id]
    assert {(e["delivery"], e["outcome"]) for e in ends} == {(1, "ok"), (2, "ok")}
    time.sleep(20 * TIME_SCALE)  # longer than the next backoff: the answered redelivery settled the event
    assert len(_deliveries("echo_slow", message_id)) == 2


def test_bridge_scheduler_ticks_the_topic(cloud: Endpoints) -> None:
    def ticks() -> list[dict[str, Any]]:
        return [
            e for e in _events("echo_pubsub") if e["data"]["message"]["attributes"].get("source") == "local-scheduler"
        ]

    first = len(ticks())
    wait_for(lambda: len(ticks()) >= first + 2, timeout=20)
