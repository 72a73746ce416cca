"""Load windows on the fakes: many files, few load jobs, each row once; a late file, a bad file."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson

from shared.core.records import Window
from shared.services.ledger import Ledger
from shared.services.submit import Submission
from shared.services.windows import is_closed, owner_of_file, window_of
from tests.unit.test_services import SETTINGS, World, _line

WINDOWED = dataclasses.replace(SETTINGS, load_window_seconds=60, max_concurrent_jobs=1000)


def _submit_runs(world: World, count: int) -> list[str]:
    runs = []
    for n in range(count):
        source = f"gs://gbp-in/incoming/f{n}.jsonl"
        world.store.write(source, _line(f"q{n}", f"k{n}") + b"\n")
        run_id = f"r{n:04d}"
        sub = Submission(run_id, source, world.store.generation(source))
        assert world.submit(sub) == "submitted"
        runs.append(run_id)
    return runs


def _announced(world: World) -> list[str]:
    return [m["run_id"] for m in world.results()]


def _until_announced(world: World, count: int, rounds: int = 30) -> None:
    for _ in range(rounds):
        world.drive(1)
        if len(set(_announced(world))) >= count:
            return
        world.clock.advance(30)
    raise AssertionError(f"{len(set(_announced(world)))} of {count} runs announced")


def _loads(world: World, table: str) -> int:
    return sum(1 for job in world.warehouse.jobs.values() if job["table"] == table)


def test_five_hundred_small_runs_use_a_few_loads_per_table_not_one_each() -> None:
    world = World([], WINDOWED)
    runs = _submit_runs(world, 500)
    world.finish()
    _until_announced(world, 500)
    rows = world.warehouse.rows()
    assert Counter(r["request_key"] for r in rows) == Counter(f"k{n}" for n in range(500))  # each once
    assert len(world.warehouse.rows("batch_jobs")) == 500
    assert sorted(set(_announced(world))) == runs
    assert _loads(world, "predictions") <= 3 and _loads(world, "batch_jobs") <= 3  # 500 runs, one window or two


def test_a_file_registered_after_its_window_was_made_moves_to_the_next_one() -> None:
    world = World([_line("q", "k")], WINDOWED)
    world.submit()
    world.finish()
    world.poll()
    assert world.deliver() == ["loading"]  # registered in its window, released
    entry = world.job()["loads"]["predictions"]
    ledger = Ledger(world.store, "work", 60)
    # The loader made the window before this file's marker came (a slow registration).
    marker = next(u for u in world.store.list("gs://work/ledger/loads/predictions/pending/") if "rows/" in u)
    world.store.delete(marker)
    world.clock.advance(200)
    late = Window("predictions", entry["window"], 60, sources=[], status="DONE")
    world.store.write(ledger.window_uri("predictions", 60, entry["window"]), orjson.dumps(late.to_json()))
    world.bus.publish("finished", {"run_id": "r1", "chunk": 0, "attempt": 1})
    assert world.deliver() == ["loading"]
    moved = world.job()["loads"]["predictions"]["window"]
    assert moved > entry["window"]
    _until_announced(world, 1)
    assert world.run()["announced"] and [r["request_key"] for r in world.warehouse.rows()] == ["k"]


def test_a_bad_file_fails_alone_and_the_other_files_of_its_window_load() -> None:
    world = World([], WINDOWED)
    runs = _submit_runs(world, 8)
    world.finish()
    world.poll()
    world.deliver()
    bad = next(u for u in world.store.objects if u.startswith("gs://work/rows/r0003/r0003-") and u.endswith(".ndjson"))
    world.warehouse.bad_files.add(bad)
    _until_announced(world, 8)
    keys = sorted(r["request_key"] for r in world.warehouse.rows())
    assert keys == sorted(f"k{n}" for n in range(8) if n != 3)  # the other seven loaded, once each
    job_rows = Counter((r["run_id"], r["status"]) for r in world.warehouse.rows("batch_jobs"))
    assert job_rows == Counter(
        {**{(run, "COLLECTED"): 1 for run in runs if run != "r0003"}, ("r0003", "UNCOLLECTABLE"): 1}
    )
    assert not any(k.startswith("gs://work/ledger/jobs/r0003/r0003-c0000-a2") for k in world.store.objects)  # no retry
    announcement = next(m for m in world.results() if m["run_id"] == "r0003")
    assert announcement["uncollectable"] and "invalid" in announcement["uncollectable"][0]["error"]
    assert _loads(world, "predictions") <= 1 + 2 * 3  # the window, then halves down to the bad file
    assert len(set(_announced(world))) == len(runs)


def test_a_window_closes_at_its_end_plus_a_grace_and_files_name_their_owners() -> None:
    now = datetime(2026, 11, 29, 12, 0, 10, tzinfo=UTC)
    window = window_of(now, 120)
    end = datetime.fromtimestamp((window + 1) * 120, UTC)
    assert end > now and not is_closed(window, 120, now)
    assert not is_closed(window, 120, end + timedelta(seconds=29)) and is_closed(
        window, 120, end + timedelta(seconds=30)
    )
    short = window_of(now, 1)
    assert is_closed(short, 1, now + timedelta(seconds=2)) and not is_closed(short, 1, now + timedelta(seconds=1))
    assert owner_of_file("gs://w/rows/r1/r1-c0003-a2.g17.ndjson") == ("r1", 3, 2)
    assert owner_of_file("gs://w/rows/r1/r1-c0003-a2.g17.job.ndjson") == ("r1", 3, 2)
    assert owner_of_file("gs://w/rows/r1/invalid.g4.ndjson") == ("r1", 0, 1)
    assert owner_of_file("gs://w/rows/r1/other.ndjson") is None


def test_files_registered_before_load_window_seconds_changed_are_still_loaded() -> None:
    world = World([_line("q", "k")], WINDOWED)
    world.submit()
    world.finish()
    world.poll()
    assert world.deliver() == ["loading"]  # registered in a 60 s window
    world.settings = dataclasses.replace(WINDOWED, load_window_seconds=0)  # then windows are switched off
    _until_announced(world, 1)
    assert [r["request_key"] for r in world.warehouse.rows()] == ["k"]
    assert len(world.warehouse.rows("batch_jobs")) == 1


def test_a_window_refused_for_a_reason_outside_its_files_is_tried_again_not_split() -> None:
    world = World([], WINDOWED)
    _submit_runs(world, 4)
    world.finish()
    world.warehouse.load_faults = [{"fail": "accessDenied"}]  # e.g. IAM on the table, fixed meanwhile
    _until_announced(world, 4)
    assert sorted(r["request_key"] for r in world.warehouse.rows()) == ["k0", "k1", "k2", "k3"]
    announcements = [m for m in world.results()]
    assert not any(m["uncollectable"] for m in announcements)  # no file was blamed
    failed = [j for j in world.warehouse.jobs.values() if j["error"]]
    assert len(failed) == 1 and _loads(world, "predictions") == 2  # the window, then its next version


def test_rejected_lines_rows_go_through_the_window_and_the_run_waits_for_them() -> None:
    world = World(
        [_line("q0", "k0"), b"{oops", _line("q2", "k2")], dataclasses.replace(WINDOWED, skip_invalid_lines=True)
    )
    assert world.submit() == "submitted"
    assert world.run()["loads"]["invalid"]["window"]  # registered, not loaded by a job of its own
    world.finish()
    _until_announced(world, 1)
    rows = sorted((r["request_key"], r["outcome"], r["attempt"]) for r in world.warehouse.rows())
    assert rows == [("k0", "SUCCEEDED", 1), ("k2", "SUCCEEDED", 1), ("line-0000002", "FAILED", 0)]
    assert _loads(world, "predictions") <= 2  # the rejected line's row rode in a window with the others


def test_a_fault_every_file_shares_stops_the_halving_and_blames_no_file() -> None:
    world = World([], WINDOWED)
    _submit_runs(world, 16)
    world.finish()
    world.warehouse.load_faults = [{"fail": "invalid"}] * 40  # e.g. a schema the table does not have yet
    for _ in range(12):
        world.drive(1)
        world.clock.advance(30)
    failed = [j for j in world.warehouse.jobs.values() if j["error"] and j["table"] == "predictions"]
    assert 9 <= len(failed) <= 12  # halving stopped at what isolates one file (2 x 4 + 1), then one a try
    assert not world.warehouse.rows() and not world.results()
    world.warehouse.load_faults = []  # the schema is fixed
    _until_announced(world, 16, rounds=200)
    assert sorted(r["request_key"] for r in world.warehouse.rows()) == sorted(f"k{n}" for n in range(16))
    assert not any(m["uncollectable"] for m in world.results())  # no file was blamed


def test_a_window_load_still_running_at_the_end_of_a_tick_is_waited_on_not_reported_as_failed() -> None:
    world = World([_line("q", "k")], WINDOWED)
    world.submit()
    world.finish()
    world.poll()
    world.deliver()  # registered
    world.warehouse.load_faults = [{"running": 600}]  # polled every second or so: past the tick
    world.clock.advance(200)
    counts = world.poll()
    assert counts["window_errors"] == 0 and counts["windows"] == 0  # still loading: waited on next tick
    _until_announced(world, 1)
    assert [r["request_key"] for r in world.warehouse.rows()] == ["k"] and _loads(world, "predictions") == 1
