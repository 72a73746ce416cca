"""Cost on the local cloud: rows and announcements carry it, the CLI agrees, the budget guard holds runs."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.api_core import exceptions
from typer.testing import CliRunner

from local.clients import ensure_buckets, publisher, storage_client, subscriber
from local.stack import Endpoints
from shared.adapters import ports
from shared.cli import app
from tests.integration.conftest import wait_for
from tests.integration.helpers import (
    drive_until_complete,
    jsonl,
    manual_settings,
    query_rows,
    request_line,
    run_record,
    until_complete,
    upload_requests,
    vertex_jobs,
)

ROOT = Path(__file__).parents[2]
LINES = [request_line(f"Describe item number {i} of the inventory in one line.", f"k{i}") for i in range(6)]


@pytest.fixture
def results(cloud: Endpoints) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """The batch-results messages about a run, from a subscription made before the test publishes."""
    subs = subscriber(cloud)
    name = subs.subscription_path(cloud.project, f"results-test-{time.time_ns()}")
    subs.create_subscription(name=name, topic=publisher(cloud).topic_path(cloud.project, "batch-results"))
    seen: list[dict[str, Any]] = []

    def about(run_id: str) -> list[dict[str, Any]]:
        try:
            reply = subs.pull(subscription=name, max_messages=100, timeout=5)
        except exceptions.DeadlineExceeded:
            reply = None
        if reply is not None and reply.received_messages:
            subs.acknowledge(subscription=name, ack_ids=[m.ack_id for m in reply.received_messages])
            for received in reply.received_messages:
                try:
                    seen.append(orjson.loads(received.message.data))
                except orjson.JSONDecodeError:
                    continue
        return [m for m in seen if isinstance(m, dict) and m.get("run_id") == run_id]

    yield about
    subs.delete_subscription(subscription=name)


def _cli_estimate(data: bytes, tmp_path: Path, *options: str) -> dict[str, Any]:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(data)
    result = CliRunner().invoke(app, ["estimate", "--json", *options, str(path)])
    assert result.exit_code == 0, result.output
    estimate: dict[str, Any] = orjson.loads(result.stdout)
    return estimate


def test_rows_carry_costs_that_sum_to_the_announced_total_and_the_cli_agrees_with_the_estimate(
    cloud: Endpoints, results: Callable[[str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    data = jsonl(LINES)
    _, run_id = upload_requests(cloud, "runs/", data)
    run = until_complete(cloud, run_id, timeout=120)
    rows = query_rows(
        cloud,
        "SELECT request_key, attempt, outcome, cost_usd, price_version, prompt_tokens, candidates_tokens,"
        " thoughts_tokens FROM gbp.predictions WHERE run_id = @run",
        run_id,
    )
    assert sorted(r["request_key"] for r in rows) == [f"k{i}" for i in range(6)]
    assert all(r["cost_usd"] > 0 and r["price_version"] for r in rows if r["outcome"] == "SUCCEEDED")
    (announced,) = wait_for(lambda: [m for m in results(run_id) if m.get("status") == "COMPLETE"])
    cost = announced["cost"]
    assert cost["usd"] == pytest.approx(sum(r["cost_usd"] for r in rows), rel=1e-9)
    by_outcome: dict[str, float] = {}
    for row in rows:
        by_outcome[row["outcome"]] = by_outcome.get(row["outcome"], 0.0) + row["cost_usd"]
    assert cost["by_outcome"] == pytest.approx(by_outcome)
    jobs = query_rows(cloud, "SELECT cost_usd, estimated_cost_usd FROM gbp.batch_jobs WHERE run_id = @run", run_id)
    assert sum(j["cost_usd"] for j in jobs) == pytest.approx(cost["usd"])
    assert sum(j["estimated_cost_usd"] for j in jobs) == pytest.approx(run["estimate"]["expected_usd"], rel=1e-6)
    # The CLI, offline, counts the same file the same way (given the pipeline's expected output per request).
    estimate = run["estimate"]
    per_request = estimate["output_tokens_expected"] / estimate["requests"]
    offline = _cli_estimate(data, tmp_path, "--output-tokens", str(per_request))
    for name in ("requests", "input_tokens", "output_tokens_bound", "price_version", "worst_case_usd"):
        assert offline[name] == estimate[name], name
    assert offline["expected_usd"] == pytest.approx(estimate["expected_usd"], rel=1e-6)
    # Vertex read and wrote the Vertex I/O bucket only (the wiring's VERTEX_BUCKET), never the work bucket.
    for job in vertex_jobs(cloud, run_id):
        assert job.src is not None and all(uri.startswith("gs://gbp-vertex/staging/") for uri in job.src.gcs_uri or [])
        assert job.dest is not None and str(job.dest.gcs_uri).startswith("gs://gbp-vertex/outputs/")
    work = storage_client(cloud).bucket("gbp-work")
    assert not [b.name for p in ("staging", "outputs") for b in work.list_blobs(prefix=f"{p}/{run_id}/")]
    # The estimator's error on the emulator's own counts (its tokens follow the text).
    counted = sum(r["prompt_tokens"] for r in rows if r["prompt_tokens"])
    assert abs(estimate["input_tokens"] - counted) <= 0.1 * counted


def _budget_app(bucket: str, monkeypatch: pytest.MonkeyPatch, cloud: Endpoints, **limits: str) -> Any:
    """submit_request served by functions-framework with a budget of its own (its own work bucket)."""
    from functions_framework import create_app

    env = {
        "GCP_PROJECT": cloud.project, "VERTEX_LOCATION": cloud.location, "BQ_LOCATION": cloud.location,
        "INPUT_BUCKET": "gbp-input", "WORK_BUCKET": bucket, "BQ_DATASET": "gbp",
        "BATCH_REQUESTS_TOPIC": "batch-results", "BATCH_FINISHED_TOPIC": "batch-results",
        "BATCH_RESULTS_TOPIC": "batch-results", "LEASE_SECONDS": "600", "LOAD_WINDOW_SECONDS": "0",
        "MAX_RUN_COST_USD": "", "MAX_DAILY_COST_USD": "", **limits,
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    source = ROOT / "functions" / "submit_request" / "main.py"
    return create_app("submit_request", str(source), "cloudevent").test_client()


def _message(client: Any, cloud: Endpoints, payload: dict[str, Any], message_id: str | None = None) -> int:
    """One delivery of a batch-requests message to the function (a real CloudEvent)."""
    message_id = message_id or str(time.time_ns())
    body = {
        "message": {"data": base64.b64encode(orjson.dumps(payload)).decode(), "messageId": message_id},
        "subscription": f"projects/{cloud.project}/subscriptions/eventarc-submit_request",
    }
    headers = {
        "ce-specversion": "1.0", "ce-id": message_id, "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{cloud.project}/topics/batch-requests",
        "ce-time": datetime.now(UTC).isoformat(), "content-type": "application/json",
    }  # fmt: skip
    status: int = client.post("/", data=orjson.dumps(body), headers=headers).status_code
    return status


def _submitted(client: Any, cloud: Endpoints, bucket: str) -> str:
    """A file submitted by a message; its run id (read from the work bucket's run records)."""
    name, _ = upload_requests(cloud, "manual/", jsonl(LINES))
    before = {b.name for b in storage_client(cloud).list_blobs(bucket, prefix="ledger/runs/")}
    assert _message(client, cloud, {"source": f"gs://gbp-input/{name}"}) == 200
    (new,) = {b.name for b in storage_client(cloud).list_blobs(bucket, prefix="ledger/runs/")} - before
    return new.rsplit("/", 1)[1].removesuffix(".json")


@pytest.fixture
def budget_bucket(cloud: Endpoints) -> str:
    """A work bucket of the test's own: its day's spend is only what the test submits."""
    bucket = f"gbp-budget-{time.time_ns()}"
    ensure_buckets(cloud, [bucket])
    return bucket


@pytest.fixture
def held(
    cloud: Endpoints,
    monkeypatch: pytest.MonkeyPatch,
    budget_bucket: str,
    results: Callable[[str], list[dict[str, Any]]],  # subscribed first: the hold is announced
) -> tuple[Any, str]:
    """submit_request with MAX_RUN_COST_USD=0 (every run waits for approval), and a run it holds."""
    client = _budget_app(budget_bucket, monkeypatch, cloud, MAX_RUN_COST_USD="0")
    return client, _submitted(client, cloud, budget_bucket)


def test_a_run_over_the_limit_waits_is_approved_by_a_message_delivered_three_times_and_runs_once(
    cloud: Endpoints, held: tuple[Any, str], budget_bucket: str, results: Callable[[str], list[dict[str, Any]]]
) -> None:
    client, run_id = held
    run = run_record(cloud, run_id, budget_bucket)
    assert run["status"] == "AWAITING_APPROVAL" and "MAX_RUN_COST_USD" in run["error"]
    assert vertex_jobs(cloud, run_id) == []
    report = orjson.loads(
        storage_client(cloud).bucket(budget_bucket).blob(f"approvals/{run_id}.json").download_as_bytes()
    )
    assert report["estimate"]["expected_usd"] > 0 and report["approve"]["message"] == {"approve": run_id}
    (held,) = wait_for(lambda: [m for m in results(run_id) if m.get("status") == "AWAITING_APPROVAL"])
    assert held["report"] == f"gs://{budget_bucket}/approvals/{run_id}.json"
    # The approval, delivered three times (the same message: Pub/Sub is at least once).
    assert [_message(client, cloud, {"approve": run_id}, "approval-1") for _ in range(3)] == [200, 200, 200]
    assert run_record(cloud, run_id, budget_bucket)["decision"]["verdict"] == "approved"
    settings = manual_settings(cloud, work_bucket=budget_bucket)
    drive_until_complete(settings, ports(settings), run_id, cloud)
    assert len(vertex_jobs(cloud, run_id)) == run_record(cloud, run_id, budget_bucket)["chunks"] == 1
    rows = query_rows(cloud, "SELECT request_key FROM gbp.predictions WHERE run_id = @run", run_id)
    assert sorted(r["request_key"] for r in rows) == [f"k{i}" for i in range(6)]  # each once


def test_a_rejected_run_creates_no_job(
    cloud: Endpoints, held: tuple[Any, str], budget_bucket: str, results: Callable[[str], list[dict[str, Any]]]
) -> None:
    client, run_id = held
    assert _message(client, cloud, {"reject": run_id, "reason": "too dear"}) == 200
    assert _message(client, cloud, {"approve": run_id}) == 200  # too late: acked, nothing done
    run = run_record(cloud, run_id, budget_bucket)
    assert run["status"] == "REJECTED" and run["decision"] == {
        **run["decision"],
        "verdict": "rejected",
        "why": "too dear",
    }
    (rejected,) = wait_for(lambda: [m for m in results(run_id) if m.get("status") == "REJECTED"])
    assert rejected["decision"]["verdict"] == "rejected"
    assert vertex_jobs(cloud, run_id) == []
    assert not list(storage_client(cloud).list_blobs(budget_bucket, prefix=f"ledger/jobs/{run_id}/"))


def test_the_daily_limit_holds_back_the_third_of_three_runs(
    cloud: Endpoints, monkeypatch: pytest.MonkeyPatch, budget_bucket: str
) -> None:
    unguarded = _budget_app(budget_bucket, monkeypatch, cloud)
    first = _submitted(unguarded, cloud, budget_bucket)
    expected = run_record(cloud, first, budget_bucket)["estimate"]["expected_usd"]
    guarded = _budget_app(budget_bucket, monkeypatch, cloud, MAX_DAILY_COST_USD=str(expected * 2.5))
    second = _submitted(guarded, cloud, budget_bucket)
    third = _submitted(guarded, cloud, budget_bucket)
    assert [run_record(cloud, r, budget_bucket)["status"] for r in (first, second, third)] == [
        "RUNNING",
        "RUNNING",
        "AWAITING_APPROVAL",
    ]
    assert "MAX_DAILY_COST_USD" in run_record(cloud, third, budget_bucket)["error"]
    assert vertex_jobs(cloud, third) == []
