"""Test functions for the bridge: record every delivery they receive in ECHO_LOG (JSON lines).

Each delivery writes a ``"phase": "start"`` line (the CloudEvent's attributes and data, the
delivery's number for this event, a UNIX timestamp ``at``) and, when the handler is done, an
``"phase": "end"`` line (``outcome`` ok or error). What a handler does comes from its payload
(the Pub/Sub message's data, or the storage object resource):

- ``fail-always`` anywhere in it: answered with 500 every time;
- ``fail-twice``: the first two deliveries fail;
- JSON ``{"sleep_first_seconds": S}``: the first delivery takes S seconds (later ones answer at once).
"""

import base64
import contextlib
import json
import os
import threading
import time
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent

_lock = threading.Lock()  # functions-framework runs deliveries on several threads


def _write(entry: dict) -> None:
    with Path(os.environ["ECHO_LOG"]).open("a") as out:
        out.write(json.dumps(entry, default=str) + "\n")


def _start(name: str, event: CloudEvent) -> int:
    """Log the delivery's start; return its number for this event (1 = first)."""
    log = Path(os.environ["ECHO_LOG"])
    with _lock:
        earlier = log.read_text().splitlines() if log.exists() else []
        number = 1 + sum(
            1
            for line in map(json.loads, earlier)
            if line["function"] == name and line["phase"] == "start" and line["attributes"]["id"] == event["id"]
        )
        entry = {"function": name, "phase": "start", "delivery": number, "at": time.time()}
        _write({**entry, "attributes": dict(event.get_attributes()), "data": event.get_data()})
    return number


def _payload(event: CloudEvent) -> str:
    data = event.get_data()
    text = json.dumps(data) if not isinstance(data, (bytes, str)) else str(data)
    if isinstance(data, dict) and "message" in data:  # Pub/Sub: the payload is base64
        text = base64.b64decode(data["message"].get("data", "")).decode(errors="replace")
    return text


def _record(name: str, event: CloudEvent) -> None:
    number = _start(name, event)
    outcome = "error"
    try:
        text = _payload(event)
        instructions = {}
        with contextlib.suppress(ValueError):
            loaded = json.loads(text)
            instructions = loaded if isinstance(loaded, dict) else {}
        if number == 1 and instructions.get("sleep_first_seconds"):
            time.sleep(float(instructions["sleep_first_seconds"]))
        if "fail-always" in text:
            raise RuntimeError("asked to fail")
        if "fail-twice" in text and number <= 2:
            raise RuntimeError("asked to fail twice")
        outcome = "ok"
    finally:
        with _lock:
            _write({"function": name, "phase": "end", "id": event["id"], "delivery": number, "at": time.time(),
                    "outcome": outcome})  # fmt: skip


@functions_framework.cloud_event
def echo_storage(event: CloudEvent) -> None:
    _record("echo_storage", event)


@functions_framework.cloud_event
def echo_pubsub(event: CloudEvent) -> None:
    _record("echo_pubsub", event)


@functions_framework.cloud_event
def echo_slow(event: CloudEvent) -> None:
    _record("echo_slow", event)
