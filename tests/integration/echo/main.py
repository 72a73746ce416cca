"""Test functions for the bridge: record every CloudEvent they receive (a JSON line each).

An event whose data contains ``fail-always`` is answered with 500 every time; one with
``fail-twice`` fails its first two deliveries.
"""

import base64
import json
import os
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent


def _record(name: str, event: CloudEvent) -> None:
    data = event.get_data()
    text = json.dumps(data) if not isinstance(data, (bytes, str)) else str(data)
    if isinstance(data, dict) and "message" in data:  # Pub/Sub: the payload is base64
        text += base64.b64decode(data["message"].get("data", "")).decode(errors="replace")
    entry = {"function": name, "attributes": dict(event.get_attributes()), "data": data}
    log = Path(os.environ["ECHO_LOG"])
    with log.open("a") as out:
        out.write(json.dumps(entry, default=str) + "\n")
    if "fail-always" in text:
        raise RuntimeError("asked to fail")
    if "fail-twice" in text:
        seen = sum(1 for line in log.read_text().splitlines() if json.loads(line)["attributes"]["id"] == event["id"])
        if seen <= 2:
            raise RuntimeError("asked to fail twice")


@functions_framework.cloud_event
def echo_storage(event: CloudEvent) -> None:
    _record("echo_storage", event)


@functions_framework.cloud_event
def echo_pubsub(event: CloudEvent) -> None:
    _record("echo_pubsub", event)
