"""What the local-cloud tests share: requests, uploads, the ledger and BigQuery as seen from outside."""

from __future__ import annotations

import base64
import contextlib
import itertools
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from google.cloud import bigquery

from local.clients import bigquery_client, genai_client, storage_client
from local.stack import Endpoints
from shared.config import Settings
from shared.core.errors import TransientError
from shared.core.ids import ObjectRef, run_id_for_object
from shared.ports import Ports
from shared.services.collect import collect
from shared.services.ledger import Invocation
from shared.services.poll import poll
from shared.services.submit import Submission
from tests.integration.conftest import wait_for

_COUNTER = itertools.count()


def request_line(text: str, key: str | None = None, **config: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}
    if config:
        line["request"]["generationConfig"] = config
    if key:
        line["key"] = key
    return line


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(x) + b"\n" for x in lines)


def upload_requests(cloud: Endpoints, prefix: str, data: bytes, bucket: str = "gbp-input") -> tuple[str, str]:
    """Upload; return (object name, run id)."""
    name = f"{prefix}{next(_COUNTER)}-{time.time_ns()}.jsonl"
    blob = storage_client(cloud).bucket(bucket).blob(name)
    blob.upload_from_string(data)
    return name, run_id_for_object(ObjectRef(bucket, name, str(blob.generation)))


def run_record(cloud: Endpoints, run_id: str, bucket: str = "gbp-work") -> dict[str, Any]:
    blob = storage_client(cloud).bucket(bucket).get_blob(f"ledger/runs/{run_id}.json")
    return orjson.loads(blob.download_as_bytes()) if blob else {}


def until_complete(cloud: Endpoints, run_id: str, bucket: str = "gbp-work", timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (r := run_record(cloud, run_id, bucket)).get("announced") and r, timeout=timeout)


def query_rows(cloud: Endpoints, sql: str, run_id: str) -> list[dict[str, Any]]:
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("run", "STRING", run_id)])
    return [dict(r) for r in bigquery_client(cloud).query(sql, job_config=config).result()]


def latest_rows(cloud: Endpoints, run_id: str) -> dict[str, dict[str, Any]]:
    rows = query_rows(cloud, "SELECT * FROM gbp.latest_predictions WHERE run_id = @run", run_id)
    return {r["request_key"]: r for r in rows}


def all_rows(cloud: Endpoints, run_id: str) -> list[tuple[str, int]]:
    rows = query_rows(cloud, "SELECT request_key, attempt FROM gbp.predictions WHERE run_id = @run", run_id)
    return sorted((r["request_key"], r["attempt"]) for r in rows)


def vertex_jobs(cloud: Endpoints, run_id: str) -> list[Any]:
    client = genai_client(cloud)
    from google.genai import types

    return list(client.batches.list(config=types.ListBatchJobsConfig(filter=f'labels.gbp_run="{run_id}"')))


def post_pubsub(url: str, topic: str, project: str, payload: bytes, message_id: str | None = None) -> requests.Response:
    message_id = message_id or str(time.time_ns())
    body = {
        "message": {"data": base64.b64encode(payload).decode(), "messageId": message_id, "attributes": {}},
        "subscription": "s",
    }
    headers = {
        "ce-specversion": "1.0", "ce-id": message_id, "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}", "content-type": "application/json",
        "ce-time": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    return requests.post(url, data=orjson.dumps(body), headers=headers, timeout=120)


def manual_settings(cloud: Endpoints, **overrides: Any) -> Settings:
    values = {
        "project": cloud.project, "location": cloud.location, "bq_location": cloud.location,
        "input_bucket": "gbp-input", "work_bucket": "gbp-manual", "dataset": "gbp",
        "batch_requests_topic": "batch-results", "batch_finished_topic": "batch-results",
        "batch_results_topic": "batch-results", "input_prefix": "", "lease_seconds": 1,
        "load_window_seconds": 0,  # each file loaded at once (load windows: test_quotas.py)
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


class Crash(RuntimeError):
    pass


class CrashOnce:
    """Wraps a real adapter; raises once, right after (or before) the chosen call."""

    def __init__(self, inner: Any, method: str, when: Any, after: bool = True) -> None:
        self.inner, self.method, self.when, self.after, self.fired = inner, method, when, after, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            armed = not self.fired and self.when(*args, **kwargs)
            if armed and not self.after:
                self.fired = True
                raise Crash(f"crash before {name}")
            result = attr(*args, **kwargs)
            if armed:
                self.fired = True
                raise Crash(f"crash after {name}")
            return result

        return call


def invocation(timeout: float = 540) -> Invocation:
    """An invocation of the real clock, as a function's handler starts one."""
    return Invocation.starting(lambda: datetime.now(UTC), timeout, uuid.uuid4().hex)


def drive_until_complete(settings: Settings, p: Ports, run_id: str, cloud: Endpoints, rounds: int = 200) -> None:
    """Do what the scheduler and the collect trigger do, in-process, until the run is complete."""
    for _ in range(rounds):
        run = run_record(cloud, run_id, settings.work_bucket)
        if run.get("announced"):
            return
        poll(settings, p, invocation())
        for blob in storage_client(cloud).list_blobs(settings.work_bucket, prefix=f"ledger/jobs/{run_id}/"):
            record = orjson.loads(blob.download_as_bytes())
            if record["status"] in ("FINISHED", "COLLECTING"):
                message = {"run_id": run_id, "chunk": record["chunk"], "attempt": record["attempt"]}
                with contextlib.suppress(TransientError):  # a held lease: retried on the next round
                    collect(message, settings, p, invocation())
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not complete")


def manual_run(cloud: Endpoints, lines: list[dict[str, Any]]) -> tuple[Submission, str]:
    name, _ = upload_requests(cloud, "manual/", jsonl(lines))
    blob = storage_client(cloud).bucket("gbp-input").get_blob(name)
    run_id = run_id_for_object(ObjectRef("gbp-input", name, str(blob.generation)))
    return Submission(run_id, f"gs://gbp-input/{name}", str(blob.generation)), run_id


def job_record(cloud: Endpoints, settings: Settings, run_id: str, chunk: int = 0, attempt: int = 1) -> dict[str, Any]:
    blob = (
        storage_client(cloud)
        .bucket(settings.work_bucket)
        .blob(f"ledger/jobs/{run_id}/{run_id}-c{chunk:04d}-a{attempt}.json")
    )
    return orjson.loads(blob.download_as_bytes())
