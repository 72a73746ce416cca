"""Files larger than one invocation: staged from checkpoints, handed on, every key once, duplicates caught late."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import orjson
import pytest

from shared.core import keys as keys_module
from shared.core.errors import TransientError
from shared.core.keys import JobLimits, KeyIndex
from shared.core.validate import DUPLICATE_KEY, KEY_COLLISION, ValidationOptions, ValidationSummary, scan, validate
from shared.services.submit import SEGMENT_RESERVE, submit
from tests.unit.test_services import SETTINGS, World, _line

SMALL = dataclasses.replace(SETTINGS, max_requests_per_job=3, submit_bytes_per_invocation=250)


def _staged(world: World) -> dict[str, Any]:
    staged: dict[str, Any] = world.run()["staged"]
    return staged


def _hand_on(world: World, limit: int = 200) -> list[str]:
    """Deliver the continuation messages until the run is staged; the results, in order."""
    results: list[str] = []
    for _ in range(limit):
        delivered = world.deliver()
        if not delivered:
            return results
        results += delivered
    raise AssertionError("the run never finished staging")


@pytest.mark.parametrize("skip", [False, True])
def test_a_file_larger_than_an_invocation_is_staged_in_continuations_with_every_key_once(skip: bool) -> None:
    lines = [_line(f"question {i}", f"k{i}" if i % 3 else None) for i in range(60)]
    world = World(lines, dataclasses.replace(SMALL, skip_invalid_lines=skip))
    assert world.submit() == "continued"
    results = _hand_on(world)
    assert results.count("continued") >= 10 and results[-1] == "submitted"
    staged = _staged(world)
    assert len(staged["files"]) >= 20 and staged["done"] and staged["line"] < 60
    # Every line is in exactly one chunk, once, within the per-job limit.
    staged_keys = []
    for uri, count in zip(staged["files"], staged["counts"], strict=True):
        chunk = [orjson.loads(raw)["key"] for raw in world.store.objects[uri][0].splitlines()]
        assert len(chunk) == count <= 3
        staged_keys += chunk
    assert len(staged_keys) == 60 and len(set(staged_keys)) == 60
    assert world.jobs.creates == len(staged["files"])
    world.finish()
    world.drive()
    assert world.run()["announced"] and world.run()["requests"] == 60
    assert [k for k, _, outcome in world.keyed_rows() if outcome == "SUCCEEDED"] == sorted(staged_keys)
    assert world.store.small_reads() == 0


def test_without_skip_no_job_is_created_before_the_whole_file_is_known_valid() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(30)], SMALL)
    assert world.submit() == "continued"
    assert world.jobs.creates == 0 and _staged(world)["files"]  # staged, not paid for
    _hand_on(world)
    assert world.jobs.creates == len(_staged(world)["files"]) >= 10


def test_with_skip_jobs_start_while_the_file_is_still_being_read() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(30)], dataclasses.replace(SMALL, skip_invalid_lines=True))
    assert world.submit() == "continued"
    assert world.jobs.creates == len(_staged(world)["files"]) >= 1  # the first job runs before the file is read


def _report(world: World) -> dict[str, Any]:
    run = world.run()
    assert run["status"] == "REJECTED"
    report: dict[str, Any] = orjson.loads(world.store.objects[run["report_uri"]][0])
    return report


def test_a_duplicate_key_across_a_continuation_rejects_the_run_naming_both_lines_and_nothing_is_paid() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(40)]
    lines[35] = _line("again", "k2")  # k2 is on line 3, sealed many chunks and invocations before
    world = World(lines, SMALL)
    world.submit()
    _hand_on(world)
    report = _report(world)
    assert report["invalid_by_reason"] == {DUPLICATE_KEY: 1}
    assert report["examples"][DUPLICATE_KEY] == [{"line": 36, "detail": "key 'k2' is used by line 3"}]
    assert report["valid"] == 39 and report["lines"] == 40 and report["keys"]["duplicated"] == 1
    assert world.jobs.creates == 0


def test_a_report_after_continuations_is_the_report_of_one_pass() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(40)]
    lines[5], lines[17], lines[33] = b"{not json", b"", _line("again", "k30")
    lines[34] = b'{"key": "line-0000002", "request": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}'
    lines[1] = _line("keyless")  # gets key line-0000002
    in_one = World(lines, dataclasses.replace(SMALL, submit_bytes_per_invocation=10**9))
    assert in_one.submit() == "rejected"
    continued = World(lines, SMALL)
    continued.submit()
    _hand_on(continued)
    one, many = _report(in_one), _report(continued)
    assert many == one
    assert many["invalid_by_reason"] == {"invalid_json": 1, DUPLICATE_KEY: 1, KEY_COLLISION: 1}
    assert many["blank"] == 1 and many["lines"] == 40


def test_with_skip_a_late_duplicate_becomes_a_failed_row_with_its_line_and_the_first_is_answered() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(40)]
    lines[35] = _line("again", "k2")
    world = World(lines, dataclasses.replace(SMALL, skip_invalid_lines=True))
    world.submit()
    _hand_on(world)
    world.finish()
    world.drive()
    rows = [r for r in world.warehouse.rows() if r["request_key"] == "k2"]
    assert sorted(r["outcome"] for r in rows) == ["FAILED", "SUCCEEDED"]
    failed = next(r for r in rows if r["outcome"] == "FAILED")
    assert failed["error_message"] == "line 36: duplicate_key: key 'k2' is used by line 3"
    assert len(world.warehouse.rows()) == 40 and world.run()["announced"]


def test_a_holder_that_fails_mid_file_is_followed_from_its_checkpoint_and_no_chunk_is_staged_twice() -> None:
    world = World(
        [_line(f"q{i}", f"k{i}") for i in range(30)], dataclasses.replace(SMALL, submit_bytes_per_invocation=10**9)
    )
    world.store.fail_writes["c0004-a1.jsonl"] = 1  # the fifth chunk cannot be written, once
    with pytest.raises(TransientError):
        world.submit()
    first = _staged(world)
    assert len(first["files"]) == 4 and world.run()["claimed_at"] == ""  # released, checkpoint kept
    assert world.submit() == "submitted"  # the trigger's retry goes on from the checkpoint
    staged = _staged(world)
    assert staged["files"][:4] == first["files"]  # not staged again
    keys = [orjson.loads(r)["key"] for u in staged["files"] for r in world.store.objects[u][0].splitlines()]
    assert sorted(keys) == sorted(f"k{i}" for i in range(30))


def test_an_invocation_short_of_time_hands_on_at_the_next_chunk() -> None:
    world = World(
        [_line(f"q{i}", f"k{i}") for i in range(12)], dataclasses.replace(SMALL, submit_bytes_per_invocation=10**9)
    )
    assert submit(world.sub, world.settings, world.ports, world.inv(SEGMENT_RESERVE - 1)) == "continued"
    assert len(_staged(world)["files"]) == 1
    assert [t for t, _ in world.bus.messages] == ["requests"] and world.run()["resume_sent_at"]
    assert _hand_on(world)[-1] == "submitted"


def test_a_digest_collision_is_not_taken_for_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "key_digest", lambda key: 7)  # every key collides
    sealed: dict[int, list[tuple[str, int, bool]]] = {}
    index = KeyIndex(lambda chunk: sealed[chunk])
    index.add("a", 1, False)
    sealed[0] = index.seal(0)[0]
    index.add("b", 2, True)
    sealed[1] = index.seal(1)[0]
    assert index.earlier("c") is None
    assert index.earlier("a") == (1, False) and index.earlier("b") == (2, True)


def test_a_scan_resumed_from_its_checkpoint_ends_with_the_summary_of_one_pass() -> None:
    data = b"".join(_line(f"q{i}", f"k{i % 7}" if i % 5 else None) + b"\n" for i in range(30)) + b"[1]\n\n"
    options = ValidationOptions(limits=JobLimits(3, 10**6))
    whole = validate(io.BytesIO(data), options)
    # Stop after line 12 (as a continuation does: the checkpoint is the start of line 13).
    cut = next(line.offset for line in scan(io.BytesIO(data), options, ValidationSummary()) if line.line_number == 13)
    head, keys = ValidationSummary(max_requests=3, max_bytes=10**6), KeyIndex()
    for _ in scan(io.BytesIO(data[:cut]), options, head, keys=keys):
        pass
    rest = ValidationSummary.restore(head.checkpoint())
    for _ in scan(io.BytesIO(data[cut:]), options, rest, keys=keys, start=(cut, 12)):
        pass
    assert rest.as_dict() == whole.as_dict()


def test_a_run_goes_on_with_the_staging_settings_it_was_created_with() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(30)], SMALL)
    assert world.submit() == "continued"
    world.settings = dataclasses.replace(SETTINGS, max_requests_per_job=1)  # the function resuming it differs
    assert _hand_on(world).count("continued") >= 5  # still SMALL's share per invocation
    assert max(_staged(world)["counts"]) == 3  # and SMALL's chunks
