"""Function contracts: real CloudEvents (binary and structured) through functions-framework's app.

Drops (wrong type, bad input, too old) answer 200 so the trigger does not retry; a transient
failure answers 500 so it does. No cloud is needed for these paths: they end before any call.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

ROOT = Path(__file__).parents[2]
ENV = {
    "GCP_PROJECT": "p",
    "VERTEX_LOCATION": "us-central1",
    "BQ_LOCATION": "us-central1",
    "INPUT_BUCKET": "in",
    "WORK_BUCKET": "work",
    "BQ_DATASET": "gbp",
    "BATCH_REQUESTS_TOPIC": "batch-requests",
    "BATCH_FINISHED_TOPIC": "batch-finished",
    "BATCH_RESULTS_TOPIC": "batch-results",
    "MAX_EVENT_AGE_SECONDS": "3600",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    yield


def _client(name: str) -> FlaskClient:
    return create_app(name, str(ROOT / "functions" / name / "main.py"), "cloudevent").test_client()


def _binary(event_type: str, data: dict[str, object], *, age: timedelta = timedelta(0)) -> dict[str, object]:
    return {
        "headers": {
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-type": event_type,
            "ce-source": "//test",
            "ce-time": (datetime.now(UTC) - age).isoformat(),
            "content-type": "application/json",
        },
        "data": orjson.dumps(data),
    }


STORAGE = "google.cloud.storage.object.v1.finalized"
PUBSUB = "google.cloud.pubsub.topic.v1.messagePublished"


def _message(payload: bytes) -> dict[str, object]:
    return {"message": {"data": base64.b64encode(payload).decode(), "messageId": "m1", "attributes": {}}}


def test_submit_batch_ignores_objects_outside_the_prefix(env: None) -> None:
    event = _binary(STORAGE, {"bucket": "in", "name": "elsewhere/x.jsonl", "generation": "1"})
    assert _client("submit_batch").post("/", **event).status_code == 200


def test_submit_batch_ignores_files_that_are_not_jsonl(env: None) -> None:
    event = _binary(STORAGE, {"bucket": "in", "name": "incoming/notes.txt", "generation": "1"})
    assert _client("submit_batch").post("/", **event).status_code == 200


def test_submit_batch_drops_events_of_the_wrong_type(env: None) -> None:
    event = _binary(PUBSUB, _message(b"{}"))
    assert _client("submit_batch").post("/", **event).status_code == 200


def test_submit_batch_drops_events_that_are_too_old(env: None) -> None:
    event = _binary(STORAGE, {"bucket": "in", "name": "incoming/x.jsonl", "generation": "1"}, age=timedelta(hours=2))
    assert _client("submit_batch").post("/", **event).status_code == 200


def test_submit_batch_drops_an_event_without_an_object(env: None) -> None:
    assert _client("submit_batch").post("/", **_binary(STORAGE, {"bucket": "in"})).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'["a"]',
        b'{"source": "ftp://x"}',
        b'{"source": "gs://bucket/o", "labels": [1]}',
        b'{"source": "gs://bucket/o", "labels": {"team": "a", "Team": "b"}}',
        b'{"source": "gs://bucket/o", "model": "Gemini Pro!"}',
        b'{"resume": "not-a-run"}',
    ],
)
def test_submit_request_acks_bad_messages(env: None, payload: bytes) -> None:
    assert _client("submit_request").post("/", **_binary(PUBSUB, _message(payload))).status_code == 200


def test_collect_results_acks_a_message_that_is_not_batch_finished(env: None) -> None:
    assert _client("collect_results").post("/", **_binary(PUBSUB, _message(b'{"hello": 1}'))).status_code == 200


def test_structured_cloudevents_are_accepted(env: None) -> None:
    event = {
        "specversion": "1.0",
        "id": "2",
        "type": STORAGE,
        "source": "//storage.googleapis.com/projects/_/buckets/in",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {"bucket": "in", "name": "elsewhere/y.jsonl", "generation": "7"},
    }
    reply = _client("submit_batch").post(
        "/", data=orjson.dumps(event), headers={"content-type": "application/cloudevents+json"}
    )
    assert reply.status_code == 200


def test_a_function_without_its_settings_fails_at_start_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(Exception, match=r"missing: GCP_PROJECT, VERTEX_LOCATION, BQ_LOCATION, INPUT_BUCKET"):
        _client("poll_batches")
