"""The log lines the metrics read: written once, with the fields the metrics extract."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.test_budget import _guarded
from tests.unit.test_services import SETTINGS, World, _line


def test_a_run_past_its_sla_is_logged_overdue_once(caplog: pytest.LogCaptureFixture) -> None:
    world = World([_line("q")], _guarded(max_run_cost_usd=0.0, run_sla_seconds=3600))
    assert world.submit() == "held"
    world.clock.advance(3599)
    assert world.poll()["overdue"] == 0
    world.clock.advance(2)
    with caplog.at_level("WARNING", logger="gbp"):
        assert world.poll()["overdue"] == 1
    (line,) = [r for r in caplog.records if r.getMessage() == "run overdue"]
    assert line.__dict__["status"] == "AWAITING_APPROVAL" and line.__dict__["age_hours"] >= 1.0
    assert world.poll()["overdue"] == 0  # once


def test_a_completed_run_is_not_overdue_and_logs_rows_per_outcome_and_its_failed_share(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(4)], dataclasses.replace(SETTINGS, run_sla_seconds=3600))
    world.submit()
    world.finish(answers={"k0": "Bad request: nope (400)"})
    with caplog.at_level("INFO", logger="gbp"):
        world.drive()
    rows: dict[str, int] = {}
    for record in caplog.records:
        if record.getMessage() == "rows collected":  # one line per outcome of each attempt
            rows[record.__dict__["outcome"]] = rows.get(record.__dict__["outcome"], 0) + record.__dict__["rows"]
    assert rows == {"SUCCEEDED": 3, "FAILED": 1}
    assert all(r.__dict__["model"] == "gemini-2.5-flash" for r in caplog.records if r.getMessage() == "rows collected")
    (done,) = [r for r in caplog.records if r.getMessage() == "run complete"]
    assert done.__dict__["failed_share"] == 0.25 and done.__dict__["rows"] == 4
    world.clock.advance(7200)
    assert world.poll()["overdue"] == 0
