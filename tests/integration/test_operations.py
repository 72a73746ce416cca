"""``gemini-batch runs / status / approve / reject --local`` against the running local cloud."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.api_core import exceptions
from typer.testing import CliRunner

from local.clients import publisher, subscriber
from local.stack import Endpoints, Stack
from shared.cli import app
from tests.integration.helpers import (
    invocation,
    jsonl,
    latest_rows,
    manual_run,
    request_line,
    run_record,
    until_complete,
    upload_requests,
    vertex_jobs,
)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def local(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_CLOUD_STATE_DIR", str(stack.state_dir))


def test_runs_and_status_show_a_run_from_the_ledger(cloud: Endpoints, local: None) -> None:
    _, run_id = upload_requests(cloud, "runs/", jsonl([request_line(f"q{i}", f"k{i}") for i in range(3)]))
    until_complete(cloud, run_id, timeout=120)
    listed = _cli("runs", "--local", "--json", "--status", "complete", "--since", "1h")
    assert listed.exit_code == 0, listed.output
    mine = [r for r in orjson.loads(listed.stdout) if r["run_id"] == run_id]
    assert mine and mine[0]["requests"] == 3 and mine[0]["expected_usd"] > 0
    shown = _cli("status", run_id, "--local", "--json")
    assert shown.exit_code == 0, shown.output
    status = orjson.loads(shown.stdout)
    assert status["run"]["status"] == "COMPLETE" and status["next"] == "complete"
    assert [(a["chunk"], a["attempt"], a["status"]) for a in status["attempts"]] == [(0, 1, "COLLECTED")]
    assert status["attempts"][0]["counts"] == {"SUCCEEDED": 3} and status["attempts"][0]["job_name"]
    human = _cli("status", run_id, "--local")
    assert human.exit_code == 0 and "COLLECTED" in human.stdout and run_id in human.stdout
    missing = _cli("status", "r00000000000000000000", "--local")
    assert missing.exit_code == 1 and "no run" in missing.output


def test_approve_publishes_the_decision_only_for_a_held_run(cloud: Endpoints, local: None) -> None:
    subs = subscriber(cloud)
    name = subs.subscription_path(cloud.project, f"requests-test-{time.time_ns()}")
    subs.create_subscription(name=name, topic=publisher(cloud).topic_path(cloud.project, "batch-requests"))
    try:
        _, run_id = upload_requests(cloud, "runs/", jsonl([request_line("q", "k")]))
        until_complete(cloud, run_id, timeout=120)
        refused = _cli("approve", run_id, "--local")
        assert refused.exit_code == 1 and "not AWAITING_APPROVAL" in refused.output  # nothing published
        try:
            reply = subs.pull(subscription=name, max_messages=10, timeout=3)
            published = [orjson.loads(m.message.data) for m in reply.received_messages]
        except exceptions.DeadlineExceeded:
            published = []
        assert not [m for m in published if m.get("approve") == run_id]
    finally:
        subs.delete_subscription(subscription=name)
    no_target = CliRunner().invoke(app, ["runs", "--config", "/nonexistent/gemini-batch.json"])
    assert no_target.exit_code == 1 and "make outputs" in no_target.output


def test_approve_on_the_command_line_submits_a_held_run_through_the_deployed_function(
    cloud: Endpoints, local: None
) -> None:
    from shared.adapters import ports
    from shared.deployment import local_settings
    from shared.services.submit import submit

    deployed = local_settings()
    guarded = dataclasses.replace(deployed, max_run_cost_usd=0.0)  # a submitter with a limit: it holds the run
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(2)])  # not watched
    assert submit(submission, guarded, ports(guarded), invocation()) == "held"
    assert vertex_jobs(cloud, run_id) == []
    listed = orjson.loads(_cli("runs", "--local", "--json", "--status", "AWAITING_APPROVAL").stdout)
    assert run_id in [r["run_id"] for r in listed]
    approved = _cli("approve", run_id, "--local", "--reason", "checked the estimate")
    assert approved.exit_code == 0, approved.output
    run = until_complete(cloud, run_id, timeout=120)  # the deployed submit_request acted on it, once
    assert (run["decision"]["verdict"], run["decision"]["why"]) == ("approved", "checked the estimate")
    assert len(vertex_jobs(cloud, run_id)) == 1


def test_results_round_trip_through_pandas_with_the_rows_of_latest_predictions(
    cloud: Endpoints, local: None, tmp_path: Path
) -> None:
    import pandas as pd

    lines = [request_line(f"q{i}", f"k{i}") for i in range(5)] + [request_line("[[emulator:400]] no", "bad")]
    _, run_id = upload_requests(cloud, "runs/", jsonl(lines))
    until_complete(cloud, run_id, timeout=120)
    latest = latest_rows(cloud, run_id)
    parquet = tmp_path / "rows.parquet"
    written = _cli("results", run_id, "--local", "-o", str(parquet))
    assert written.exit_code == 0, written.output
    frame = pd.read_parquet(parquet)
    assert len(frame) == len(latest) == 6 and set(frame["request_key"]) == set(latest)
    assert frame.set_index("request_key").loc["bad", "outcome"] == "FAILED"
    assert frame["cost_usd"].notna().all()
    failed = _cli("results", run_id, "--local", "--outcome", "failed")
    assert failed.exit_code == 0 and [orjson.loads(x)["request_key"] for x in failed.stdout.splitlines()] == ["bad"]
    unknown = _cli("results", "r00000000000000000000", "--local", "--outcome", "failed")
    assert unknown.exit_code == 1 and "no run" in unknown.output
    csv = tmp_path / "rows.csv"
    assert _cli("results", run_id, "--local", "-o", str(csv)).exit_code == 0
    assert len(pd.read_csv(csv)) == 6


def test_submit_wait_follows_a_run_to_its_summary_and_replay_makes_a_new_run(
    cloud: Endpoints, local: None, tmp_path: Path, stack: Stack
) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_bytes(jsonl([request_line(f"q{i}", f"k{i}") for i in range(4)]))
    done = _cli("submit", str(path), "--local", "--wait", "--timeout", "120")
    assert done.exit_code == 0, done.output
    run_id = done.stdout.splitlines()[0]
    assert f"{run_id} COMPLETE: 4 rows (SUCCEEDED 4)" in done.stdout
    assert sorted(latest_rows(cloud, run_id)) == [f"k{i}" for i in range(4)]
    # With a model, the file goes as a message (outside the upload prefix): a run of its own.
    messaged = _cli("submit", str(path), "--local", "--model", "gemini-2.0-flash-001", "--label", "team=ml", "--wait")
    assert messaged.exit_code == 0, messaged.output
    other = messaged.stdout.splitlines()[0]
    assert other != run_id and run_record(cloud, other)["model"] == "gemini-2.0-flash-001"
    assert run_record(cloud, other)["labels"] == {"team": "ml"}
    # Replay the upload: a new generation, a new run, the same rows again.
    source = run_record(cloud, run_id)["source"]
    replayed = _cli("replay", source, "--local")
    assert replayed.exit_code == 0, replayed.output
    again = replayed.stdout.strip()
    assert again != run_id
    until_complete(cloud, again, timeout=120)
    assert run_record(cloud, again)["source"].startswith(source.removesuffix(".jsonl") + ".replay-")
    assert sorted(latest_rows(cloud, again)) == [f"k{i}" for i in range(4)]
