"""Cost in the services: estimates before any job, costs on rows and runs, the budget guard and the day's spend."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from shared.config import Settings
from shared.core.cost import default_prices
from shared.core.errors import TransientError
from shared.services.budget import spent
from shared.services.ledger import Ledger
from shared.services.submit import Submission, decide
from tests.unit.test_services import SETTINGS, World, _line

USAGE = {"promptTokenCount": 1000, "candidatesTokenCount": 100, "thoughtsTokenCount": 50, "totalTokenCount": 1150}
FLASH = default_prices().price("gemini-2.5-flash")
ROW_USD = (1000 * 0.30 + 150 * 2.50) / 2 / 1e6  # one answered row at the batch rate (gemini-2.5-flash)


def _guarded(**limits: Any) -> Settings:
    return dataclasses.replace(SETTINGS, **limits)


def _jobs_of(world: World, run_id: str = "r1") -> list[str]:
    return [u for u in world.store.objects if u.startswith(f"gs://work/ledger/jobs/{run_id}/")]


def _results(world: World, status: str) -> list[dict[str, Any]]:
    return [m for m in world.results() if m.get("status") == status]


def _decide(world: World, verdict: str, run_id: str = "r1") -> str:
    return decide(run_id, verdict, "", world.settings, world.ports, world.inv())


def test_a_run_is_estimated_before_its_first_job_and_its_rows_cost_what_is_announced() -> None:
    world = World([_line(f"question number {i}") for i in range(5)])  # 3 chunks (2 + 2 + 1)
    assert world.submit() == "submitted"
    estimate = world.run()["estimate"]
    assert estimate["requests"] == 5 and estimate["input_tokens"] > 0 and estimate["expected_usd"] > 0
    assert estimate["worst_case_usd"] >= estimate["expected_usd"] and estimate["output_basis"] == "default"
    world.finish(usage=USAGE)
    world.drive()
    rows = world.warehouse.rows()
    assert [r["cost_usd"] for r in rows] == pytest.approx([ROW_USD] * 5)
    assert {r["price_version"] for r in rows} == {default_prices().version}
    (done,) = _results(world, "COMPLETE")
    assert done["cost"]["usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert done["cost"]["by_outcome"] == {"SUCCEEDED": pytest.approx(5 * ROW_USD)}
    assert done["cost"]["estimate"]["expected_usd"] == estimate["expected_usd"]
    jobs = world.warehouse.rows("batch_jobs")
    assert sum(j["cost_usd"] for j in jobs) == pytest.approx(5 * ROW_USD)
    assert sum(j["estimated_cost_usd"] for j in jobs) == pytest.approx(estimate["expected_usd"], rel=1e-6)
    assert sorted(j["estimate"]["requests"] for j in jobs) == [1, 2, 2]
    # The day's spend: what the run cost, no longer what it was expected to.
    assert spent(Ledger(world.store, "work", 60), "2026-11-25") == pytest.approx(5 * ROW_USD, abs=1e-6)


def test_the_expected_output_comes_from_the_models_history_when_there_is_enough() -> None:
    world = World([_line(f"q{i}") for i in range(40)], dataclasses.replace(SETTINGS, max_requests_per_job=100))
    world.warehouse.jobs["old"] = {
        "table": "predictions",
        "error": None,
        "running": 0,
        "rows": [
            {"run_id": "old", "request_key": str(i), "attempt": 1, "outcome": "SUCCEEDED",
             "model_version": "gemini-2.5-flash-001", "candidates_tokens": 30, "thoughts_tokens": 10}
            for i in range(25)
        ],
    }  # fmt: skip
    world.submit()
    estimate = world.run()["estimate"]
    assert estimate["output_basis"] == "history" and estimate["output_per_request"] == 40.0
    assert estimate["output_tokens_expected"] == 40 * 40


def test_a_run_over_its_limit_waits_and_an_approval_delivered_three_times_submits_it_once() -> None:
    world = World([_line(f"q{i}") for i in range(5)], _guarded(max_run_cost_usd=0.000001))
    assert world.submit() == "held"
    run = world.run()
    assert run["status"] == "AWAITING_APPROVAL" and not _jobs_of(world) and not world.jobs.jobs
    report = orjson.loads(world.store.objects["gs://work/approvals/r1.json"][0])
    assert "MAX_RUN_COST_USD" in report["reasons"][0] and report["approve"]["message"] == {"approve": "r1"}
    (held,) = _results(world, "AWAITING_APPROVAL")
    assert held["report"] == "gs://work/approvals/r1.json" and held["estimate"]["expected_usd"] > 0
    assert world.submit() == "duplicate"  # the upload's redelivery does not decide
    assert [_decide(world, "approve") for _ in range(3)] == ["submitted", "duplicate", "duplicate"]
    world.drive(1)
    assert len(world.jobs.jobs) == 3 and len(_jobs_of(world)) == 3
    assert world.run()["decision"]["verdict"] == "approved"
    assert _decide(world, "reject") == "duplicate"  # decided already
    world.finish()
    world.drive()
    assert len(world.keyed_rows()) == 5 and _results(world, "COMPLETE")


def test_a_rejected_run_creates_no_job_and_is_announced() -> None:
    world = World([_line(f"q{i}") for i in range(5)], _guarded(max_run_cost_usd=0.0))
    assert world.submit() == "held"
    assert _decide(world, "reject") == "rejected"
    assert _decide(world, "approve") == "duplicate"
    world.drive()
    run = world.run()
    assert run["status"] == "REJECTED" and run["decision"]["verdict"] == "rejected" and "not approved" in run["error"]
    assert not world.jobs.jobs and not _jobs_of(world) and not world.warehouse.rows()
    assert _results(world, "REJECTED")[0]["run_id"] == "r1"
    assert "gs://work/ledger/active-runs/r1" not in world.store.objects


def test_a_held_run_nobody_decides_on_expires_into_rejected() -> None:
    world = World([_line("q")], _guarded(max_run_cost_usd=0.0, approval_timeout_seconds=3600))
    assert world.submit() == "held"
    world.clock.advance(3599)
    assert world.poll()["expired"] == 0
    world.clock.advance(2)
    assert world.poll()["expired"] == 1
    assert world.run()["decision"]["verdict"] == "expired" and not world.jobs.jobs
    assert world.poll()["expired"] == 0


def test_the_daily_limit_holds_the_third_of_three_runs_and_counts_actual_cost_once_known() -> None:
    world = World([_line(f"q{i}") for i in range(4)])
    assert world.submit() == "submitted"
    expected = world.run()["estimate"]["expected_usd"]
    world.settings = _guarded(max_daily_cost_usd=expected * 2.5)
    ledger = Ledger(world.store, "work", 60)

    def another(run_id: str) -> str:
        source = f"gs://gbp-in/incoming/{run_id}.jsonl"
        world.store.write(source, b"\n".join(_line(f"q{i}") for i in range(4)) + b"\n")
        return world.submit(Submission(run_id, source, world.store.generation(source)))

    assert another("r2") == "submitted"
    assert spent(ledger, "2026-11-25") == pytest.approx(2 * expected, abs=1e-6)
    assert another("r3") == "held"
    reasons = orjson.loads(world.store.objects["gs://work/approvals/r3.json"][0])["reasons"]
    assert "MAX_DAILY_COST_USD" in reasons[0]
    # Runs 1 and 2 finish for less than expected (no usage: 0): the day's spend is what they cost.
    world.finish()
    world.drive()
    assert spent(ledger, "2026-11-25") == pytest.approx(0.0)
    assert _decide(world, "approve", "r3") == "submitted"
    assert spent(ledger, "2026-11-25") == pytest.approx(expected, abs=1e-6)


def test_retries_count_against_the_day_they_are_queued() -> None:
    world = World([_line(f"q{i}", key=f"k{i}") for i in range(2)])
    world.submit()
    world.finish(answers={"k0": "Internal error (500)"}, usage=USAGE)
    world.drive(2)
    markers = [u.rsplit("/", 1)[1] for u in world.store.list("gs://work/ledger/spend/2026-11-25/")]
    assert any(m.startswith("r1.c0a2.e~") for m in markers), markers
    assert world.job(0, 2)["estimate"]["requests"] == 1


def test_a_guarded_run_with_skip_invalid_lines_starts_no_job_before_it_passes() -> None:
    lines = [_line(f"q{i}") for i in range(6)] + [b"not json"]
    settings = _guarded(skip_invalid_lines=True, max_run_cost_usd=0.0, submit_bytes_per_invocation=60)
    world = World(lines, settings)
    while world.submit() == "continued":
        assert not _jobs_of(world) and not world.jobs.jobs  # staged, not started
        world.bus.take("requests")
    assert world.run()["status"] == "AWAITING_APPROVAL"
    assert world.run()["estimate"]["requests"] == 6
    assert _decide(world, "approve") == "submitted"
    assert len(_jobs_of(world)) == world.run()["chunks"] > 1


def test_a_model_without_a_price_is_held_while_a_limit_is_set_and_its_rows_get_no_cost() -> None:
    world = World([_line("q")], _guarded(max_daily_cost_usd=1000.0))
    world.sub = dataclasses.replace(world.sub, model="my-tuned-model")
    assert world.submit() == "held"
    assert "has no price" in world.run()["error"]
    assert _decide(world, "approve") == "submitted"
    world.drive(1)
    world.finish(usage=USAGE)
    world.drive()
    assert [r.get("cost_usd") for r in world.warehouse.rows()] == [None]
    assert _results(world, "COMPLETE")[0]["cost"]["usd"] is None


def test_prices_uri_replaces_the_shipped_table_and_a_guarded_run_waits_while_it_is_unreadable() -> None:
    mine = "gs://work/prices/mine.json"
    unguarded = World([_line("q")], dataclasses.replace(SETTINGS, prices_uri=mine))
    assert unguarded.submit() == "submitted"  # no limit applies: it runs, unpriced (logged)
    assert unguarded.run()["estimate"]["expected_usd"] is None
    world = World([_line("q")], dataclasses.replace(SETTINGS, prices_uri=mine, max_daily_cost_usd=100.0))
    with pytest.raises(TransientError, match="PRICES_URI"):
        world.submit()
    table = {
        "version": "negotiated-1",
        "models": {"gemini-2.5-flash": {"input": 0.1, "output": 1.0, "cached_input": 0.01, "max_output_tokens": 100}},
    }
    world.store.write("gs://work/prices/mine.json", orjson.dumps(table))
    world.clock.advance(61)  # the failed holder's lease (released anyway)
    assert world.submit() == "submitted"
    world.finish(usage=USAGE)
    world.drive()
    (row,) = world.warehouse.rows()
    assert row["price_version"] == "negotiated-1"
    assert row["cost_usd"] == pytest.approx((1000 * 0.1 + 150 * 1.0) / 2 / 1e6)
    assert world.run()["estimate"]["output_tokens_bound"] == 100  # the table's max_output_tokens


def test_a_guarded_run_with_skip_invalid_lines_keeps_every_line_after_an_invalid_one() -> None:
    lines = [_line("a", "ka"), b"{oops", _line("b", "kb"), _line("c", "kc"), _line("d", "kd")]
    world = World(lines, _guarded(skip_invalid_lines=True, max_run_cost_usd=1000.0))
    assert world.submit() == "submitted"
    world.finish()
    world.drive()
    outcomes = {key: outcome for key, _, outcome in world.keyed_rows()}
    assert outcomes == {
        "ka": "SUCCEEDED",
        "kb": "SUCCEEDED",
        "kc": "SUCCEEDED",
        "kd": "SUCCEEDED",
        "line-0000002": "FAILED",
    }


def test_a_decision_that_comes_before_the_hold_is_saved_is_retried_not_lost() -> None:
    world = World([_line("q")], _guarded(max_run_cost_usd=0.0))
    early: list[str] = []
    publish = world.bus.publish

    def approve_on_announcement(topic: str, message: dict[str, Any], **attributes: str) -> str:
        if message.get("status") == "AWAITING_APPROVAL" and not early:
            with pytest.raises(TransientError, match="not waiting for approval yet"):
                _decide(world, "approve")
            early.append("retried")
        return publish(topic, message, **attributes)

    world.bus.publish = approve_on_announcement  # type: ignore[method-assign]
    assert world.submit() == "held" and early == ["retried"]
    assert _decide(world, "approve") == "submitted"  # the redelivery


def test_an_attempt_without_a_cost_counts_its_expected_cost_in_the_day() -> None:
    world = World([_line(f"q{i}") for i in range(4)], dataclasses.replace(SETTINGS, max_requests_per_job=10))
    world.submit()
    expected = world.run()["estimate"]["expected_usd"]
    world.settings = dataclasses.replace(SETTINGS, max_requests_per_job=10, prices_uri="gs://work/nowhere.json")
    world.finish(usage=USAGE)
    world.drive()  # collected while the price table is unusable: rows without cost
    assert [r.get("cost_usd") for r in world.warehouse.rows()] == [None] * 4
    assert spent(Ledger(world.store, "work", 60), "2026-11-25") == pytest.approx(expected, abs=1e-6)
    (done,) = _results(world, "COMPLETE")
    assert done["cost"]["usd"] is None and done["cost"]["partial"] is False
