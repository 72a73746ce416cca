"""The one decorator that owns the retry/drop policy of every function.

- wrong event type, bad input (PermanentError), too old: log and return (acked, not retried);
- TransientError or anything unexpected: raise (HTTP 500; the trigger's retry policy retries);
- duplicates are the services' business: they log "duplicate: skipped" and return.
"""

from __future__ import annotations

import base64
import functools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cloudevents.http import CloudEvent

from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.ids import ObjectRef
from shared.logs import configure
from shared.services.ledger import Invocation

log = configure("gbp")


def now() -> datetime:
    """The clock, read here (services get time passed in)."""
    return datetime.now(UTC)


def invocation(settings: Settings) -> Invocation:
    """This invocation: the real clock, the deadline its function's timeout sets, a fresh id."""
    return Invocation.starting(now, settings.function_timeout_seconds, uuid.uuid4().hex)


def event_handler(
    event_type: str, max_age_seconds: int
) -> Callable[[Callable[[CloudEvent], Any]], Callable[[CloudEvent], None]]:
    """Wrap a function's body with the retry/drop policy and log context."""

    def decorate(fn: Callable[[CloudEvent], Any]) -> Callable[[CloudEvent], None]:
        @functools.wraps(fn)  # functions-framework finds functions by __name__
        def handler(event: CloudEvent) -> None:
            fields = {"function": fn.__name__, "event_id": event["id"], "event_type": event["type"]}
            if event["type"] != event_type:
                log.warning("event dropped: wrong type", extra={**fields, "expected": event_type})
                return
            sent = event.get("time")
            if sent and now() - datetime.fromisoformat(str(sent).replace("Z", "+00:00")) > timedelta(
                seconds=max_age_seconds
            ):
                log.warning("event dropped: too old", extra={**fields, "event_time": sent})
                return
            started, cpu = time.perf_counter(), time.process_time()
            try:
                result = fn(event)
            except PermanentError as exc:
                _timed(fields, started, cpu)
                log.error("event dropped: permanent error", extra={**fields, "error": str(exc)}, exc_info=True)
                return
            except Exception:
                _timed(fields, started, cpu)
                log.error("event failed: will be retried", extra=fields, exc_info=True)
                raise
            _timed(fields, started, cpu)
            log.info("event handled", extra={**fields, "result": result})

        return handler

    return decorate


def _timed(fields: dict[str, Any], started: float, cpu: float) -> None:
    """Add the invocation's wall and CPU seconds (the process's: one request per instance)."""
    fields["duration_s"] = round(time.perf_counter() - started, 3)
    fields["cpu_s"] = round(time.process_time() - cpu, 3)


def storage_object(event: CloudEvent) -> ObjectRef:
    """The object a ``storage.object.v1.finalized`` event names."""
    data = event.get_data()
    if not isinstance(data, dict) or not all(data.get(k) for k in ("bucket", "name", "generation")):
        raise PermanentError("the storage event has no bucket/name/generation")
    return ObjectRef(str(data["bucket"]), str(data["name"]), str(data["generation"]))


def pubsub_message(event: CloudEvent) -> tuple[dict[str, Any], str]:
    """The JSON payload and id of a ``pubsub.topic.v1.messagePublished`` event."""
    data = event.get_data()
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise PermanentError("the Pub/Sub event has no message")
    try:
        payload = orjson.loads(base64.b64decode(message.get("data") or b""))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise PermanentError(f"the message is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PermanentError("the message must be a JSON object")
    return payload, str(message.get("messageId") or message.get("message_id") or event["id"])
