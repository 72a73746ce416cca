"""The event bridge: what Eventarc and Cloud Scheduler do in GCP, for the local cloud.

- GCS finalize notifications (fake-gcs-server -> Pub/Sub) become
  ``google.cloud.storage.object.v1.finalized`` CloudEvents, POSTed in binary mode with
  Eventarc's headers to every function whose trigger matches the bucket and prefix.
- Messages on a topic become ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvents
  for each function subscribed to it.
- A delivery gets at most its function's ``timeout_seconds`` (as on Cloud Run): then the
  bridge stops waiting and counts a failed attempt, but the handler is not stopped; it keeps
  running while the redelivery runs beside it.
- A delivery answered with anything but 2xx (or not answered in time) is retried with
  exponential backoff, 10 s doubling up to 600 s (as Eventarc's subscriptions do with
  RETRY_POLICY_RETRY); after ``max_delivery_attempts`` the message goes to the dead-letter
  topic, with attributes saying where it came from. Between attempts the bridge keeps the
  message leased (extending its ack deadline) and a single timer thread schedules the
  redelivery: nothing sleeps per message.
- Schedules publish a tick to their topic at their interval.

Run by the stack: ``python -m local.bridge --state .local-cloud/state.json``. Intervals and
backoffs are multiplied by the stack's time scale; delivery timeouts and leases are real seconds.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import sched
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import requests
from google.api_core import exceptions
from google.cloud import pubsub_v1
from requests.adapters import HTTPAdapter

from local.clients import publisher, subscriber
from local.stack import Endpoints
from local.wiring import PUBSUB_PUBLISHED, STORAGE_FINALIZED, Function, Wiring
from shared.logs import configure

log = logging.getLogger("local.bridge")
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 10.0, 600.0
LEASE_SECONDS, RENEW_BEFORE_SECONDS = 600, 60  # Pub/Sub's longest ack deadline; renewed a minute early
CONNECT_SECONDS = 10.0


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


@dataclass
class Held:
    """A pulled message the bridge holds (leased) until it is delivered or dead-lettered."""

    function: Function
    url: str
    topic: str
    subscription: str  # the short name
    path: str  # the full subscription path
    received: Any  # pubsub_v1.types.ReceivedMessage
    attempts: int = 0  # failed deliveries so far
    done: bool = False


class Timers:
    """One thread running short callables at their time (``sched`` woken when an earlier one comes)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.queue = sched.scheduler(time.monotonic)
        self.wake = threading.Event()

    def after(self, seconds: float, action: Callable[..., object], *args: object) -> None:
        """Run ``action(*args)`` on the timer thread in ``seconds``."""
        self.queue.enter(max(seconds, 0.0), 0, self._safely, (action, *args))
        self.wake.set()

    def run(self) -> None:
        """Run due actions until stopped."""
        while not self.stop.is_set():
            delay = self.queue.run(blocking=False)  # None: nothing scheduled
            self.wake.wait(delay)
            self.wake.clear()

    @staticmethod
    def _safely(action: Callable[..., object], *args: object) -> None:
        try:
            action(*args)
        except Exception:
            log.exception("timer action failed")


class Bridge:
    """Pulls each function's subscription and delivers CloudEvents; runs the schedules."""

    def __init__(self, ends: Endpoints, wiring: Wiring) -> None:
        self.ends, self.wiring = ends, wiring
        self.scale = ends.time_scale
        self.publisher = publisher(ends)
        self.subscriber = subscriber(ends)
        self.stop = threading.Event()
        self.timers = Timers(self.stop)
        # Each delivery holds a worker for up to its function's timeout: room for many slow ones.
        workers = 64
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver")
        self.http = requests.Session()
        self.http.mount("http://", HTTPAdapter(pool_maxsize=workers))

    def subscription(self, function: Function) -> tuple[str, str]:
        """Create (once) the push-like subscription of ``function``; return ``(topic, name)``."""
        topic = function.topic if function.event_type == PUBSUB_PUBLISHED else self.wiring.gcs_events_topic
        assert topic is not None
        name = f"eventarc-{function.name}"
        path = self.subscriber.subscription_path(self.ends.project, name)
        with contextlib.suppress(exceptions.AlreadyExists):
            self.subscriber.create_subscription(
                name=path, topic=self.publisher.topic_path(self.ends.project, topic), ack_deadline_seconds=LEASE_SECONDS
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
        threads.append(threading.Thread(target=self.timers.run, name="timers", daemon=True))
        for thread in threads:
            thread.start()
        ready.write_text("ready\n")
        log.info("bridge ready", extra={"functions": [f.name for f in self.wiring.functions]})
        self.stop.wait()
        self.timers.wake.set()
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
                held = Held(function, url, topic, name, path, received)
                self.timers.after(LEASE_SECONDS - RENEW_BEFORE_SECONDS, self._renew, held)
                self.pool.submit(self._attempt, held)

    def _matches(self, function: Function, message: pubsub_v1.types.PubsubMessage) -> bool:
        if function.event_type != STORAGE_FINALIZED:
            return True
        attributes = message.attributes
        return (
            attributes.get("eventType") == "OBJECT_FINALIZE"
            and attributes.get("bucketId") == function.bucket
            and attributes.get("objectId", "").startswith(function.prefix)
        )

    def _renew(self, held: Held) -> None:
        """Keep a held message leased (Pub/Sub would redeliver it otherwise) until it is settled."""
        if held.done or self.stop.is_set():
            return
        self.subscriber.modify_ack_deadline(
            subscription=held.path, ack_ids=[held.received.ack_id], ack_deadline_seconds=LEASE_SECONDS, timeout=30
        )
        self.timers.after(LEASE_SECONDS - RENEW_BEFORE_SECONDS, self._renew, held)

    def _settle(self, held: Held) -> None:
        held.done = True
        self.subscriber.acknowledge(subscription=held.path, ack_ids=[held.received.ack_id], timeout=30)

    def _redeliver(self, held: Held) -> None:
        if not self.stop.is_set():  # stopping: Pub/Sub redelivers it once the lease runs out
            self.pool.submit(self._attempt, held)

    def _attempt(self, held: Held) -> None:
        """One delivery attempt; a failure of the bridge itself hands the message back to Pub/Sub."""
        try:
            self._deliver(held)
        except Exception:
            log.exception("delivery failed in the bridge", extra={"function": held.function.name})
            held.done = True
            with contextlib.suppress(Exception):
                self.subscriber.modify_ack_deadline(
                    subscription=held.path, ack_ids=[held.received.ack_id], ack_deadline_seconds=0, timeout=30
                )

    def _deliver(self, held: Held) -> None:
        function, message = held.function, held.received.message
        if not self._matches(function, message):
            self._settle(held)
            return
        if function.event_type == STORAGE_FINALIZED:
            headers, body = storage_event(message)
        else:
            headers, body = pubsub_event(self.ends.project, held.topic, held.subscription, message)
        timeout = function.timeout_seconds  # as a read timeout: a function sends nothing before its answer
        try:
            reply = self.http.post(held.url, data=body, headers=headers, timeout=(CONNECT_SECONDS, timeout))
            status = reply.status_code
        except requests.ReadTimeout:
            # Cloud Run answers 504 at the timeout and leaves the handler running.
            status, error = 504, f"no answer within {timeout:g}s (the handler keeps running)"
        except requests.RequestException as exc:
            status, error = 0, str(exc)
        else:
            error = ""
        fields = {"function": function.name, "event_id": message.message_id, "status": status}
        if 200 <= status < 300:
            self._settle(held)
            log.info("event delivered", extra={**fields, "attempt": held.attempts + 1})
            return
        held.attempts += 1
        if held.attempts >= self.wiring.max_delivery_attempts:
            dead = self.publisher.topic_path(self.ends.project, self.wiring.dead_letter_topic)
            attributes = {
                **message.attributes,
                "source_topic": held.topic,
                "source_subscription": held.subscription,
                "function": function.name,
                "delivery_attempts": str(held.attempts),
            }
            self.publisher.publish(dead, message.data, **attributes).result(timeout=30)
            self._settle(held)
            log.error("event dead-lettered", extra={**fields, "attempts": held.attempts, "error": error})
            return
        backoff = min(MAX_BACKOFF_SECONDS, MIN_BACKOFF_SECONDS * 2 ** (held.attempts - 1)) * self.scale
        self.timers.after(backoff, self._redeliver, held)
        log.warning(
            "event delivery failed: will retry",
            extra={**fields, "attempt": held.attempts, "backoff_s": backoff, "error": error},
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
