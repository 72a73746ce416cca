"""``gemini-batch runs / status / approve / reject --local`` against the running local cloud."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from google.api_core import exceptions
from typer.testing import CliRunner

from local.clients import publisher, subscriber
from local.stack import Endpoints, Stack
from shared.cli import app
from tests.integration.conftest import wait_for
from tests.integration.helpers import (
    invocation,
    jsonl,
    latest_rows,
    manual_run,
    query_rows,
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
    assert mine and mine[0]["requests"] == 3 and mine[0]["expected_cost_usd"] > 0
    assert mine[0]["rows_by_outcome"] == {"SUCCEEDED": 3} and mine[0]["attempts"] == 1 and mine[0]["finished_at"]
    shown = _cli("status", run_id, "--local", "--json")
    assert shown.exit_code == 0, shown.output
    status = orjson.loads(shown.stdout)
    assert status["run"]["status"] == "COMPLETE" and status["next"].startswith("complete")
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


def _runs_view(cloud: Endpoints, run_id: str) -> dict[str, Any] | None:
    rows = query_rows(cloud, "SELECT * FROM gbp.runs WHERE run_id = @run", run_id)
    return rows[0] if rows else None


def test_retry_runs_rows_a_wrong_model_left_missing_on_the_fixed_model_once_and_the_runs_view_follows(
    cloud: Endpoints, local: None, tmp_path: Path
) -> None:
    path = tmp_path / "typo.jsonl"
    path.write_bytes(jsonl([request_line(f"q{i}", f"k{i}") for i in range(3)]))
    typo = _cli("submit", str(path), "--local", "--model", "gemini-2.5-flsh", "--wait", "--json", "--timeout", "120")
    assert typo.exit_code == 0, typo.output  # the run ended COMPLETE: every row MISSING, each with why
    run_id = orjson.loads(typo.stdout)["run_id"]
    refused = {(r["outcome"], r["error_status"]) for r in latest_rows(cloud, run_id).values()}
    assert refused == {("MISSING", "NOT_FOUND")}
    args = ("retry", run_id, "--local", "--json", "--outcome", "missing", "--error-status", "NOT_FOUND",
            "--model", "gemini-2.5-flash")  # fmt: skip
    first, second = _cli(*args), _cli(*args)  # the same selection, asked twice
    assert first.exit_code == 0, first.output
    selection = orjson.loads(first.stdout)["selection"]
    assert second.exit_code == 1 or orjson.loads(second.stdout)["selection"] == selection, second.output
    followed = _cli(*args[:4], "--wait", "--timeout", "120")  # now RUNNING (or done): nothing new is sent
    assert followed.exit_code in (0, 1), followed.output
    wait_for(
        lambda: selection in run_record(cloud, run_id)["retries"] and run_record(cloud, run_id)["announced"],
        timeout=120,
        interval=0.5,
    )
    rows = latest_rows(cloud, run_id)
    assert {(k, r["outcome"], r["attempt"]) for k, r in rows.items()} == {(f"k{i}", "SUCCEEDED", 2) for i in range(3)}
    jobs = vertex_jobs(cloud, run_id)
    assert [j.display_name.rsplit("-", 1)[1] for j in jobs] == ["a2"]  # attempt 1 was refused; one retry job, once
    assert jobs[0].model.endswith("gemini-2.5-flash")
    assert run_record(cloud, run_id)["retries"] == [selection]
    # The runs view shows what `gemini-batch runs` prints (once its window is loaded).
    listed = orjson.loads(_cli("runs", "--local", "--json", "--since", "1h").stdout)
    mine = next(r for r in listed if r["run_id"] == run_id)
    assert mine["status"] == "COMPLETE" and mine["rows_by_outcome"] == {"SUCCEEDED": 3} and mine["attempts"] == 2
    view = wait_for(lambda: (v := _runs_view(cloud, run_id)) and v["seq"] == mine["seq"] and v, 120, 0.5)
    counts = view["rows_by_outcome"]
    rows_json = counts if isinstance(counts, dict) else orjson.loads(counts)
    assert (view["status"], rows_json, view["attempts"], view["requests"]) == ("COMPLETE", {"SUCCEEDED": 3}, 2, 3)
    assert view["model"] == mine["model"] == "gemini-2.5-flsh" and view["cost_usd"] == pytest.approx(mine["cost_usd"])


def test_cancel_leaves_no_job_running_and_a_cancelled_run_with_every_row(
    cloud: Endpoints, local: None, tmp_path: Path
) -> None:
    stall = f"s{time.time_ns()}"
    rule = {"jobs": [{"labels": {"stall": stall}, "faults": {"stuck-running": "true"}, "count": 5}]}
    requests.post(f"{cloud.vertex}/_emulator/faults", json=rule, timeout=10).raise_for_status()
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl([request_line(f"q{i}", f"k{i}") for i in range(4)]))
    sent = _cli("submit", str(path), "--local", "--label", f"stall={stall}", "--json")
    assert sent.exit_code == 0, sent.output
    run_id = orjson.loads(sent.stdout)["run_id"]
    wait_for(lambda: any(j.state.name == "JOB_STATE_RUNNING" for j in vertex_jobs(cloud, run_id)), 120, 0.5)
    cancelled = _cli("cancel", run_id, "--local", "--reason", "wrong prompts", "--wait", "--json", "--timeout", "120")
    assert cancelled.exit_code == 0, cancelled.output
    row = orjson.loads(cancelled.stdout)
    assert (
        row["status"] == "CANCELLED"
        and row["cancel_reason"] == "wrong prompts"
        and row["rows_by_outcome"] == {"MISSING": 4}
    )
    assert all(j.state.name == "JOB_STATE_CANCELLED" for j in vertex_jobs(cloud, run_id))  # none left running
    rows = latest_rows(cloud, run_id)
    assert {(r["outcome"], r["error_status"], r["retryable"]) for r in rows.values()} == {
        ("MISSING", "CANCELLED", False)
    }
    assert sorted(rows) == [f"k{i}" for i in range(4)]
    assert [j.display_name.rsplit("-", 1)[1] for j in vertex_jobs(cloud, run_id)] == ["a1"]  # nothing retried
    again = _cli("cancel", run_id, "--local")
    assert again.exit_code == 1 and "nothing to cancel" in again.output
