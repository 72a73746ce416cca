"""The event bridge: what Eventarc and Cloud Scheduler do in GCP, for the local cloud.

- GCS finalize notifications (fake-gcs-server -> Pub/Sub) become
  ``google.cloud.storage.object.v1.finalized`` CloudEvents, POSTed in binary mode with
  Eventarc's headers to every function whose trigger matches the bucket and prefix.
- Messages on a topic become ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvents
  for each function subscribed to it.
- A delivery answered with anything but 2xx is retried with exponential backoff (as
  Eventarc does with RETRY_POLICY_RETRY); after ``max_delivery_attempts`` the message goes
  to the dead-letter topic, with attributes saying where it came from.
- Schedules publish a tick to their topic at their interval.

Run by the stack: ``python -m local.bridge --state .local-cloud/state.json``. Intervals and
backoffs are multiplied by the stack's time scale.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import requests
from google.api_core import exceptions
from google.cloud import pubsub_v1

from local.clients import publisher, subscriber
from local.stack import Endpoints
from local.wiring import PUBSUB_PUBLISHED, STORAGE_FINALIZED, Function, Wiring
from shared.logs import configure

log = logging.getLogger("local.bridge")
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 10.0, 600.0


def storage_event(message: pubsub_v1.types.PubsubMessage) -> tuple[dict[str, str], bytes]:
    """Eventarc's CloudEvent for a GCS finalize notification: headers and body."""
    attributes = message.attributes
    resource = orjson.loads(message.data)
    bucket, name = attributes["bucketId"], attributes["objectId"]
    headers = {
        "ce-specversion": "1.0",
        "ce-id": message.message_id,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "ce-type": STORAGE_FINALIZED,
        "ce-subject": f"objects/{name}",
        "ce-time": resource.get("updated") or attributes.get("eventTime", ""),
        "ce-bucket": bucket,
        "content-type": "application/json",
    }
    return headers, message.data


def pubsub_event(
    project: str, topic: str, subscription: str, message: pubsub_v1.types.PubsubMessage
) -> tuple[dict[str, str], bytes]:
    """Eventarc's CloudEvent for a Pub/Sub message: headers and body."""
    published = message.publish_time.isoformat().replace("+00:00", "Z")
    body = {
        "message": {
            "attributes": dict(message.attributes),
            "data": base64.b64encode(message.data).decode(),
            "messageId": message.message_id,
            "message_id": message.message_id,
            "publishTime": published,
            "publish_time": published,
        },
        "subscription": f"projects/{project}/subscriptions/{subscription}",
    }
    headers = {
        "ce-specversion": "1.0",
        "ce-id": message.message_id,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-type": PUBSUB_PUBLISHED,
        "ce-time": published,
        "content-type": "application/json",
    }
    return headers, orjson.dumps(body)


class Bridge:
    """Pulls each function's subscription and delivers CloudEvents; runs the schedules."""

    def __init__(self, ends: Endpoints, wiring: Wiring) -> None:
        self.ends, self.wiring = ends, wiring
        self.scale = ends.time_scale
        self.publisher = publisher(ends)
        self.subscriber = subscriber(ends)
        self.attempts: dict[tuple[str, str], int] = {}
        self.attempts_lock = threading.Lock()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="deliver")
        self.http = requests.Session()

    def subscription(self, function: Function) -> tuple[str, str]:
        """Create (once) the push-like subscription of ``function``; return ``(topic, name)``."""
        topic = function.topic if function.event_type == PUBSUB_PUBLISHED else self.wiring.gcs_events_topic
        assert topic is not None
        name = f"eventarc-{function.name}"
        path = self.subscriber.subscription_path(self.ends.project, name)
        with contextlib.suppress(exceptions.AlreadyExists):
            self.subscriber.create_subscription(
                name=path, topic=self.publisher.topic_path(self.ends.project, topic), ack_deadline_seconds=600
            )
        return topic, name

    def run(self, ready: Path) -> None:
        """Start the pull and schedule threads, write ``ready``, and wait until stopped."""
        threads = []
        for function in self.wiring.functions:
            url = self.ends.functions.get(function.name)
            if url is None:
                log.warning("function not running: not wired", extra={"function": function.name})
                continue
            topic, name = self.subscription(function)
            threads.append(threading.Thread(target=self._pull, args=(function, url, topic, name), daemon=True))
        for schedule in self.wiring.schedules:
            threads.append(
                threading.Thread(target=self._tick, args=(schedule.topic, schedule.every_seconds), daemon=True)
            )
        for thread in threads:
            thread.start()
        ready.write_text("ready\n")
        log.info("bridge ready", extra={"functions": [f.name for f in self.wiring.functions]})
        self.stop.wait()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _tick(self, topic: str, every: float) -> None:
        path = self.publisher.topic_path(self.ends.project, topic)
        while not self.stop.wait(max(every * self.scale, 0.05)):
            data = orjson.dumps({"scheduled_time": datetime.now(UTC).isoformat()})
            self.publisher.publish(path, data, source="local-scheduler").result(timeout=30)

    def _pull(self, function: Function, url: str, topic: str, name: str) -> None:
        path = self.subscriber.subscription_path(self.ends.project, name)
        while not self.stop.is_set():
            try:
                reply = self.subscriber.pull(subscription=path, max_messages=20, timeout=30)
            except exceptions.DeadlineExceeded:
                continue
            except Exception:
                if self.stop.is_set():
                    return
                log.exception("pull failed", extra={"subscription": name})
                self.stop.wait(1)
                continue
            for received in reply.received_messages:
                self.pool.submit(self._deliver, function, url, topic, name, received)

    def _matches(self, function: Function, message: pubsub_v1.types.PubsubMessage) -> bool:
        if function.event_type != STORAGE_FINALIZED:
            return True
        attributes = message.attributes
        return (
            attributes.get("eventType") == "OBJECT_FINALIZE"
            and attributes.get("bucketId") == function.bucket
            and attributes.get("objectId", "").startswith(function.prefix)
        )

    def _deliver(self, function: Function, url: str, topic: str, name: str, received: Any) -> None:
        path = self.subscriber.subscription_path(self.ends.project, name)
        message = received.message
        if not self._matches(function, message):
            self.subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
            return
        if function.event_type == STORAGE_FINALIZED:
            headers, body = storage_event(message)
        else:
            headers, body = pubsub_event(self.ends.project, topic, name, message)
        try:
            status = self.http.post(url, data=body, headers=headers, timeout=540).status_code
        except requests.RequestException as exc:
            status, error = 0, str(exc)
        else:
            error = ""
        key = (name, message.message_id)
        fields = {"function": function.name, "event_id": message.message_id, "status": status}
        if 200 <= status < 300:
            with self.attempts_lock:
                self.attempts.pop(key, None)
            self.subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
            log.info("event delivered", extra=fields)
            return
        with self.attempts_lock:
            attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        if attempt >= self.wiring.max_delivery_attempts:
            dead = self.publisher.topic_path(self.ends.project, self.wiring.dead_letter_topic)
            attributes = {
                **message.attributes,
                "source_topic": topic,
                "source_subscription": name,
                "function": function.name,
                "delivery_attempts": str(attempt),
            }
            self.publisher.publish(dead, message.data, **attributes).result(timeout=30)
            self.subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
            with self.attempts_lock:
                self.attempts.pop(key, None)
            log.error("event dead-lettered", extra={**fields, "attempts": attempt, "error": error})
            return
        backoff = min(MAX_BACKOFF_SECONDS, MIN_BACKOFF_SECONDS * 2 ** (attempt - 1)) * self.scale
        self.subscriber.modify_ack_deadline(
            subscription=path, ack_ids=[received.ack_id], ack_deadline_seconds=int(backoff)
        )
        log.warning(
            "event delivery failed: will retry",
            extra={**fields, "attempt": attempt, "backoff_s": backoff, "error": error},
        )


def main() -> None:
    """Run the bridge until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m local.bridge")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--wiring", type=Path, required=True)
    args = parser.parse_args()
    configure("local", logging.INFO)
    state = orjson.loads(args.state.read_bytes())
    bridge = Bridge(Endpoints(**state["endpoints"]), Wiring.load(args.wiring))
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop.set())
    bridge.run(args.state.parent / "bridge.ready")


if __name__ == "__main__":
    main()
