"""The services on in-memory fakes: the ledger's exactly-once rules, in milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest

from shared.config import Settings
from shared.core.errors import TransientError
from shared.ports import Ports
from shared.services.collect import collect
from shared.services.poll import poll
from shared.services.submit import Submission, submit
from tests.unit.fakes import FakeBus, FakeJobs, FakeWarehouse, MemoryStore, fake_ports

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    project="p", location="us-central1", input_bucket="in", work_bucket="work", dataset="gbp",
    batch_finished_topic="finished", batch_results_topic="results", max_requests_per_job=2, lease_seconds=60,
    queue_timeout_seconds=3600,
)  # fmt: skip
SOURCE = "gs://in/incoming/f.jsonl"


def _line(text: str, key: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}
    if key:
        line["key"] = key
    return line


def _setup(lines: list[bytes]) -> tuple[Ports, Submission]:
    ports = fake_ports()
    cast(MemoryStore, ports.store).write(SOURCE, b"\n".join(lines) + b"\n")
    return ports, Submission("r1", SOURCE, str(cast(MemoryStore, ports.store).objects[SOURCE][1]))


def _jobs(ports: Ports) -> FakeJobs:
    return cast(FakeJobs, ports.jobs)


def _finish(ports: Ports, state: str = "JOB_STATE_SUCCEEDED", answers: dict[str, str] | None = None) -> None:
    """Every open job ends in ``state``; it answers every input key (``answers``: key -> status)."""
    store = cast(MemoryStore, ports.store)
    for job in _jobs(ports).jobs.values():
        if job["state"] != "JOB_STATE_QUEUED":
            continue
        job["state"] = state
        data, _ = store.objects[job["input"]]
        out = []
        for raw in data.splitlines():
            key = orjson.loads(raw)["key"]
            status = (answers or {}).get(key, "")
            if status == "drop":
                continue
            line: dict[str, Any] = {"key": key, "status": status, "processed_time": "2026-11-25T12:00:00+00:00"}
            if not status:
                line["response"] = {
                    "candidates": [{"content": {"parts": [{"text": f"answer {key}"}]}, "finishReason": "STOP"}]
                }
            out.append(orjson.dumps(line))
        store.write(job["dest"] + "/prediction-model-x/predictions.jsonl", b"\n".join(out) + b"\n")


def _drive(ports: Ports, now: datetime) -> None:
    poll(SETTINGS, ports, now)
    for topic, message in list(cast(FakeBus, ports.bus).messages):
        if topic == "finished":
            collect(message, SETTINGS, ports, now)
    cast(FakeBus, ports.bus).messages[:] = [m for m in cast(FakeBus, ports.bus).messages if m[0] != "finished"]


def test_submit_splits_into_chunks_and_creates_one_job_each() -> None:
    ports, sub = _setup([orjson.dumps(_line(f"q{i}")) for i in range(5)])
    assert submit(sub, SETTINGS, ports, T0) == "submitted"
    assert len(_jobs(ports).jobs) == 3  # 2 + 2 + 1
    labels = sorted(j["labels"]["gbp_chunk"] for j in _jobs(ports).jobs.values())
    assert labels == ["0", "1", "2"]
    assert submit(sub, SETTINGS, ports, T0) == "duplicate"
    assert len(_jobs(ports).jobs) == 3


def test_submit_while_another_delivery_holds_the_claim_is_retried_later() -> None:
    ports, sub = _setup([orjson.dumps(_line("q"))])
    store = cast(MemoryStore, ports.store)
    held = {"run_id": "r1", "source": SOURCE, "model": "m", "claimed_at": T0.isoformat()}  # another delivery's claim
    store.write("gs://work/ledger/runs/r1.json", orjson.dumps(held), if_generation_match=0)
    with pytest.raises(TransientError, match="another delivery"):
        submit(sub, SETTINGS, ports, T0 + timedelta(seconds=10))
    assert submit(sub, SETTINGS, ports, T0 + timedelta(seconds=61)) == "submitted"  # the lease passed
    assert len(_jobs(ports).jobs) == 1


def test_submit_after_a_failed_create_creates_exactly_once() -> None:
    ports, sub = _setup([orjson.dumps(_line("q"))])
    _jobs(ports).fail_next_create = True
    with pytest.raises(TransientError):
        submit(sub, SETTINGS, ports, T0)
    assert submit(sub, SETTINGS, ports, T0 + timedelta(seconds=61)) == "submitted"
    assert len(_jobs(ports).jobs) == 1


def test_submit_rejects_an_invalid_file_and_submits_nothing() -> None:
    ports, sub = _setup([orjson.dumps(_line("q")), b"{broken"])
    assert submit(sub, SETTINGS, ports, T0) == "rejected"
    report = orjson.loads(cast(MemoryStore, ports.store).objects["gs://in/rejected/incoming/f.jsonl.errors.json"][0])
    assert report["examples"]["invalid_json"][0]["line"] == 2
    assert _jobs(ports).jobs == {}


def test_run_ends_with_one_row_per_key_retries_included_and_is_announced_once() -> None:
    ports, sub = _setup([orjson.dumps(_line(f"q{i}", f"k{i}")) for i in range(3)])
    submit(sub, SETTINGS, ports, T0)
    busy = 'Too Many Requests: {"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}'
    _finish(ports, answers={"k0": busy, "k2": "drop"})
    _drive(ports, T0)
    _finish(ports)  # the retry answers everything
    _drive(ports, T0)
    warehouse = cast(FakeWarehouse, ports.warehouse)
    latest = warehouse.latest("r1")
    assert {k: (r["outcome"], r["attempt"]) for k, r in latest.items()} == {
        "k0": ("SUCCEEDED", 2), "k1": ("SUCCEEDED", 1), "k2": ("SUCCEEDED", 2),
    }  # fmt: skip
    assert sorted((r["request_key"], r["attempt"], r["outcome"]) for r in warehouse.rows()) == [
        ("k0", 1, "FAILED"),
        ("k0", 2, "SUCCEEDED"),
        ("k1", 1, "SUCCEEDED"),
        ("k2", 1, "MISSING"),
        ("k2", 2, "SUCCEEDED"),
    ]
    results = [m for t, m in cast(FakeBus, ports.bus).messages if t == "results"]
    assert len(results) == 1 and results[0]["counts"] == {"SUCCEEDED": 3}
    # A redelivered batch-finished loads nothing again and announces nothing again.
    assert collect({"run_id": "r1", "chunk": 0, "attempt": 1}, SETTINGS, ports, T0) == "duplicate"
    assert len([m for t, m in cast(FakeBus, ports.bus).messages if t == "results"]) == 1


def test_poll_cancels_a_job_queued_past_its_deadline() -> None:
    ports, sub = _setup([orjson.dumps(_line("q", "k"))])
    submit(sub, SETTINGS, ports, T0)
    poll(SETTINGS, ports, T0 + timedelta(minutes=30))
    assert next(iter(_jobs(ports).jobs.values()))["state"] == "JOB_STATE_QUEUED"
    poll(SETTINGS, ports, T0 + timedelta(hours=2))
    assert next(iter(_jobs(ports).jobs.values()))["state"] == "JOB_STATE_CANCELLED"
    record = orjson.loads(cast(MemoryStore, ports.store).objects["gs://work/ledger/jobs/r1/r1-c0000-a1.json"][0])
    assert record["stuck"] is True
