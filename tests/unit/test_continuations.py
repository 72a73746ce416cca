"""Files larger than one invocation: staged from checkpoints, handed on, every key once, duplicates caught late."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import orjson
import pytest

from shared.core import keys as keys_module
from shared.core import validate as validate_module
from shared.core.errors import TransientError
from shared.core.keys import JobLimits, KeyIndex
from shared.core.validate import (
    DUPLICATE_KEY,
    KEY_COLLISION,
    Marks,
    ValidationOptions,
    ValidationSummary,
    scan,
    validate,
)
from shared.services.submit import SEGMENT_RESERVE, resume, submit
from tests.unit.test_services import SETTINGS, World, _line

# Every chunk's job starts at once (admission is tested in test_services.py).
SMALL = dataclasses.replace(SETTINGS, max_requests_per_job=3, submit_bytes_per_invocation=250, max_concurrent_jobs=100)


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
    assert len(staged["files"]) >= 20 and staged["done"]
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


def test_sealed_keys_are_found_again_in_a_later_invocation_and_halves_of_a_digest_both_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = keys_module.key_digest
    monkeypatch.setattr(keys_module, "key_digest", lambda key: (7, real(key)[1]))  # every first half collides
    index = KeyIndex()
    index.add("a", 1, False)
    index.add("line-0000002", 2, True)
    index.add("c", 3, False)
    sealed = index.seal(keep="c")  # "c" belongs to the next chunk
    later = KeyIndex()
    later.add_sealed([sealed])
    assert later.earlier("a") == (1, False) and later.earlier("line-0000002") == (2, True)
    assert later.earlier("c") is None and later.earlier("b") is None
    assert index.current == {"c": 6} and index.earlier("c") == (3, False)


def test_a_scan_resumed_from_its_checkpoint_ends_with_the_summary_of_one_pass() -> None:
    lines = [_line(f"q{i}", f"k{i % 7}" if i % 5 else None) for i in range(30)] + [b"[1]", b"", b"{bad"]
    for terminator, bom in ((b"\n", b""), (b"\r\n", b"\xef\xbb\xbf")):
        data = bom + b"".join(line + terminator for line in lines)
        options = ValidationOptions(limits=JobLimits(3, 10**6))
        whole = validate(io.BytesIO(data), options)
        for cut_at in (2, 13, 31, 33):  # before a valid line, after an invalid one, near the end
            marks, head, keys = Marks(), ValidationSummary(max_requests=3, max_bytes=10**6), KeyIndex()
            scanned = scan(io.BytesIO(data), options, head, keys=keys, marks=marks)
            for line in scanned:
                if line.line_number == cut_at:
                    break
            checkpoint, (offset, number) = marks.checkpoint(head), marks.at
            if line.issue is None:  # a continuation starts with this line: its key is not sealed yet
                keys.current.pop(line.key)
            # The next line starts right there (or the file ends).
            assert data[offset:].startswith(lines[number] + terminator) if number < len(lines) else offset == len(data)
            rest = ValidationSummary.restore(checkpoint)
            for _ in scan(io.BytesIO(data[offset:]), options, rest, keys=keys, start=(offset, number)):
                pass
            assert rest.as_dict() == whole.as_dict(), (terminator, cut_at)


def test_a_run_goes_on_with_the_staging_settings_it_was_created_with() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(30)], SMALL)
    assert world.submit() == "continued"
    world.settings = dataclasses.replace(SETTINGS, max_requests_per_job=1)  # the function resuming it differs
    assert _hand_on(world).count("continued") >= 5  # still SMALL's share per invocation
    assert max(_staged(world)["counts"]) == 3  # and SMALL's chunks


@pytest.mark.parametrize("skip", [False, True])
def test_crlf_and_bom_files_go_on_from_the_right_byte(skip: bool) -> None:
    lines = [_line(f"question {i}", f"k{i}" if i % 2 else None) for i in range(30)]
    world = World([], dataclasses.replace(SMALL, skip_invalid_lines=skip))
    world.store.write(world.sub.source, b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    world.sub = dataclasses.replace(world.sub, generation=world.store.generation(world.sub.source))
    assert world.submit() == "continued"
    assert _hand_on(world)[-1] == "submitted"  # a valid file stays valid, whatever its line ends
    world.finish()
    world.drive()
    keys = sorted(k for k, _, outcome in world.keyed_rows() if outcome == "SUCCEEDED")
    expected = sorted(f"k{i}" if i % 2 else f"line-{i + 1:07d}" for i in range(30))
    assert keys == expected and len(world.warehouse.rows()) == 30


def test_a_chunk_whose_job_a_failed_holder_never_created_gets_one() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(30)], dataclasses.replace(SMALL, skip_invalid_lines=True))
    world.store.fail_writes["jobs/r1/r1-c0003-a1"] = 1  # chunk 3 is recorded, then its attempt cannot be queued
    results = []
    for _ in range(100):
        try:
            results.append(world.submit() if not results else (world.deliver() or [world.submit()])[-1])
        except TransientError:
            results.append("retried")  # the trigger retries the event
        if results[-1] in ("submitted", "duplicate"):
            break
    assert any(r.startswith("retried") for r in results) and world.run()["status"] == "RUNNING"
    assert world.jobs.creates == len(_staged(world)["files"])  # chunk 3 too
    world.finish()
    world.drive()
    assert world.run()["announced"] and len(world.warehouse.rows()) == 30


def test_a_rejection_that_failed_half_way_is_not_taken_for_a_valid_file_on_the_retry() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(12)]
    lines[7] = b"{oops"
    world = World(lines, dataclasses.replace(SMALL, submit_bytes_per_invocation=10**9))
    world.store.fail_writes["rejected/"] = 1  # the report cannot be written, once
    with pytest.raises(TransientError):
        world.submit()
    assert world.submit() == "rejected"
    assert world.jobs.creates == 0 and _report(world)["invalid_by_reason"] == {"invalid_json": 1}


def test_a_source_replaced_mid_file_ends_the_run_with_what_ran_and_says_why() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(30)], dataclasses.replace(SMALL, skip_invalid_lines=True))
    assert world.submit() == "continued"
    paid = world.jobs.creates
    assert paid >= 1
    world.store.write(world.sub.source, b"replaced\n")  # the pinned generation is gone (no versioning)
    assert world.deliver() == ["submitted"]  # not rejected: its first jobs run already
    world.finish()
    world.drive()
    run = world.run()
    assert run["announced"] and run["status"] == "COMPLETE" and "could not be read past line" in run["error"]
    assert len(world.warehouse.rows()) == run["requests"] < 30
    assert world.results()[0]["error"] == run["error"]


def test_a_long_stretch_of_invalid_lines_is_handed_on_and_no_chunk_is_written_after_the_first() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(4)] + [b'{"request": {}}'] * 120 + [_line("z", "kz")] * 4
    world = World(lines, SMALL)
    world.submit()
    results = _hand_on(world)
    assert results.count("continued") >= 5 and results[-1] == "rejected"
    report = _report(world)
    assert report["invalid"] == 120 + 3 and report["lines"] == 128  # kz repeats: 3 duplicates
    written = [u for u in world.store.objects if u.endswith("-a1.jsonl") and "/staging/" in u]
    assert len(written) <= 2 and world.jobs.creates == 0  # the first lines' chunks only, nothing paid


def test_a_run_staged_by_the_previous_release_goes_on() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    prefix = "gs://work/staging/r1/s1"
    world.store.write(f"{prefix}/r1-c0000-a1.jsonl", b"\n".join(_line(f"q{i}", f"k{i}") for i in range(2)) + b"\n")
    world.store.write(f"{prefix}/r1-c0001-a1.jsonl", _line("q2", "k2") + b"\n")
    old = {
        "run_id": "r1", "source": world.sub.source, "model": "gemini-2.5-flash", "status": "SUBMITTING",
        "generation": world.sub.generation, "chunks": 2, "requests": 3,
        "staged": {"prefix": prefix, "counts": [2, 1]},
    }  # fmt: skip
    world.store.write("gs://work/ledger/runs/r1.json", orjson.dumps(old))
    assert resume("r1", world.settings, world.ports, world.inv()) == "submitted"
    assert world.jobs.creates == 2


def test_a_checkpoint_whose_keys_could_not_be_written_records_nothing_so_no_line_gets_two_rows() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(30)]
    lines[4] = lines[11] = b"{broken"
    world = World(lines, dataclasses.replace(SMALL, skip_invalid_lines=True))
    world.store.fail_writes[".keys"] = 1  # the first chunk's keys, once
    with pytest.raises(TransientError):
        world.submit()
    assert world.submit() == "continued"
    _hand_on(world)
    world.finish()
    world.drive()
    rows = world.warehouse.rows()
    assert len(rows) == 30 and sorted(r["outcome"] for r in rows).count("FAILED") == 2


def test_a_late_duplicate_loaded_after_its_key_was_answered_does_not_hide_the_answer() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(40)]
    lines[35] = _line("again", "k2")
    world = World(lines, dataclasses.replace(SMALL, skip_invalid_lines=True))
    world.submit()
    for _ in range(200):  # jobs answer and are collected while the file is still being staged
        world.finish()
        world.drive(1)
        if world.run().get("announced"):
            break
    latest = world.warehouse.latest("r1")
    assert latest["k2"]["outcome"] == "SUCCEEDED" and len(latest) == 39  # 40 lines, 39 keys
    assert world.results()[0]["counts"] == {"SUCCEEDED": 39}


def test_with_skip_a_chunk_closed_at_an_invalid_line_starts_its_job_at_once() -> None:
    lines = [_line(f"q{i}", f"k{i}") for i in range(3)] + [b'{"request": {}}'] * 30 + [_line("z", "kz")]
    world = World(lines, dataclasses.replace(SMALL, skip_invalid_lines=True))
    assert world.submit() == "continued"  # handed on in the stretch of invalid lines
    assert world.jobs.creates == 1 and len(_staged(world)["files"]) == 1


def test_validate_seals_keys_as_it_goes_and_still_finds_every_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [_line(f"q{i}", f"k{i % 9}" if i % 4 else None) for i in range(40)]
    data = b"".join(line + b"\n" for line in lines)
    whole = validate(io.BytesIO(data))
    monkeypatch.setattr(validate_module, "SEAL_EVERY", 3)  # keys sealed every 3 (a 10M-line file: 1M)
    sealed = validate(io.BytesIO(data))
    assert sealed.as_dict() == whole.as_dict() and sealed.keys_duplicated == whole.keys_duplicated > 10
