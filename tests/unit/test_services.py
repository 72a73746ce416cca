"""The services on in-memory fakes that fail like the real services: the ledger's rules, in milliseconds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest

from shared.config import Settings
from shared.core.errors import PermanentError, StillRunning, TransientError
from shared.core.records import Run, state_table
from shared.ports import Ports
from shared.services.admission import admit
from shared.services.attempts import queue_attempt
from shared.services.cancel import cancel
from shared.services.collect import collect
from shared.services.ledger import Ledger
from shared.services.poll import poll
from shared.services.retry import RetryRequest, retry
from shared.services.submit import MESSAGE, Submission, decide, resume, submit
from tests.unit.fakes import FakeBus, FakeClock, FakeJobs, FakeWarehouse, MemoryStore, fake_ports

SETTINGS = Settings(
    project="p", location="us-central1", bq_location="us-central1", input_bucket="gbp-in", work_bucket="work",
    dataset="gbp", batch_requests_topic="requests", batch_finished_topic="finished", batch_results_topic="results",
    max_requests_per_job=2, lease_seconds=60, queue_timeout_seconds=3600, cancel_timeout_seconds=600,
    load_window_seconds=0,  # each file loaded at once; load windows have their own tests
)  # fmt: skip
SOURCE = "gs://gbp-in/incoming/f.jsonl"
BUSY = 'Too Many Requests: {"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}'


def _line(text: str, key: str | None = None) -> bytes:
    line: dict[str, Any] = {"request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}
    if key:
        line["key"] = key
    return orjson.dumps(line)


class World:
    """Fake ports, a clock, and the moves the scheduler and the triggers make."""

    def __init__(self, lines: list[bytes], settings: Settings = SETTINGS) -> None:
        self.ports: Ports = fake_ports()
        self.settings = settings
        self.clock = FakeClock()
        self.warehouse.clock = self.clock
        self.store.write(SOURCE, b"\n".join(lines) + b"\n")
        self.sub = Submission("r1", SOURCE, self.store.generation(SOURCE))

    @property
    def store(self) -> MemoryStore:
        return cast(MemoryStore, self.ports.store)

    @property
    def jobs(self) -> FakeJobs:
        return cast(FakeJobs, self.ports.jobs)

    @property
    def warehouse(self) -> FakeWarehouse:
        return cast(FakeWarehouse, self.ports.warehouse)

    @property
    def bus(self) -> FakeBus:
        return cast(FakeBus, self.ports.bus)

    def inv(self, timeout: float = 540) -> Any:
        return self.clock.invocation(timeout)

    def submit(self, sub: Submission | None = None) -> str:
        return submit(sub or self.sub, self.settings, self.ports, self.inv())

    def poll(self) -> dict[str, int]:
        return poll(self.settings, self.ports, self.inv())

    def finish(
        self,
        state: str = "JOB_STATE_SUCCEEDED",
        answers: dict[str, str] | None = None,
        usage: dict[str, int] | None = None,
        **error: Any,
    ) -> None:
        """Every open job ends in ``state``, answering every input key (``answers``: key -> status or "drop").

        ``usage``: the usageMetadata of every answer.
        """
        for job in self.jobs.jobs.values():
            if job["state"] not in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING"):
                continue
            job["state"] = state
            if error:
                job["error"] = (error["code"], error["message"])
            if state in ("JOB_STATE_FAILED", "JOB_STATE_EXPIRED", "JOB_STATE_CANCELLED") and not answers:
                continue  # nothing ran
            data, _ = self.store.objects[job["input"]]
            out = []
            for raw in data.splitlines():
                key = orjson.loads(raw)["key"]
                status = (answers or {}).get(key, "")
                if status == "drop":
                    continue
                line: dict[str, Any] = {"key": key, "status": status, "processed_time": "2026-11-25T12:00:00+00:00"}
                if not status:
                    line["response"] = {
                        "candidates": [{"content": {"parts": [{"text": f"answer {key}"}]}, "finishReason": "STOP"}],
                        **({"usageMetadata": usage} if usage else {}),
                    }
                out.append(orjson.dumps(line))
            self.store.write(job["dest"] + "/prediction-model-x/predictions.jsonl", b"\n".join(out) + b"\n")

    def deliver(self) -> list[str]:
        """Deliver every batch-finished and batch-requests message once; one that fails stays (as Eventarc's)."""
        results = []
        for topic, handle in (
            ("finished", lambda m: collect(m, self.settings, self.ports, self.inv())),
            ("requests", self._request),
        ):
            for message in self.bus.take(topic):
                try:
                    results.append(handle(message))
                except TransientError as exc:
                    results.append(f"retried: {type(exc).__name__}")
                    self.bus.messages.append((topic, message))
        return results

    def _request(self, payload: dict[str, Any]) -> str:
        """A batch-requests message, as submit_request dispatches it (the test's run ids are short: not parsed)."""
        if "resume" in payload:
            return resume(payload["resume"], self.settings, self.ports, self.inv())
        if "cancel" in payload:
            why = payload.get("reason", "")
            return cancel(payload["cancel"], why, self.settings, self.ports, self.inv(), payload.get("reopen"))
        if "retry" in payload:
            what = RetryRequest(payload["retry"], payload["selection"], tuple(payload["outcomes"]),
                                tuple(payload["error_statuses"]), payload.get("model", ""),
                                payload.get("approved", False), payload.get("nonce", ""))  # fmt: skip
            return retry(what, self.settings, self.ports, self.inv())
        verdict = "approve" if "approve" in payload else "reject"
        return decide(payload[verdict], verdict, payload.get("reason", ""), self.settings, self.ports, self.inv())

    def drive(self, rounds: int = 5) -> None:
        for _ in range(rounds):
            self.poll()
            self.deliver()

    def run(self) -> dict[str, Any]:
        return orjson.loads(self.store.objects["gs://work/ledger/runs/r1.json"][0])

    def job(self, chunk: int = 0, attempt: int = 1) -> dict[str, Any]:
        return orjson.loads(self.store.objects[f"gs://work/ledger/jobs/r1/r1-c{chunk:04d}-a{attempt}.json"][0])

    def results(self) -> list[dict[str, Any]]:
        return [m for t, m in self.bus.messages if t == "results"]

    def keyed_rows(self) -> list[tuple[str, int, str]]:
        return sorted((r["request_key"], r["attempt"], r["outcome"]) for r in self.warehouse.rows())


def test_submit_splits_into_chunks_and_creates_one_job_each() -> None:
    world = World([_line(f"q{i}") for i in range(5)])
    assert world.submit() == "submitted"
    assert len(world.jobs.jobs) == 3  # 2 + 2 + 1
    assert sorted(j["labels"]["gbp_chunk"] for j in world.jobs.jobs.values()) == ["0", "1", "2"]
    assert world.submit() == "duplicate"
    assert len(world.jobs.jobs) == 3
    assert world.store.small_reads() == 0  # the source is read in blocks, never byte by byte


def test_a_delivery_finding_the_run_held_leaves_it_to_its_holder_and_the_poller() -> None:
    world = World([_line("q")])
    held = Run("r1", SOURCE, "m", generation=world.sub.generation or "", claimed_at=world.clock().isoformat())
    world.store.write("gs://work/ledger/runs/r1.json", orjson.dumps(held.to_json()), if_generation_match=0)
    world.store.write("gs://work/ledger/active-runs/r1", b"{}")
    world.clock.advance(10)
    assert world.submit() == "busy"  # acked: no retry chain while the holder works
    assert world.poll()["resumed"] == 0  # its lease stands
    world.clock.advance(51)  # the holder died: its lease lapsed
    assert world.poll()["resumed"] == 1
    assert world.deliver() == ["submitted"]
    assert len(world.jobs.jobs) == 1


def test_a_429_on_create_queues_the_attempt_again_and_admission_backs_off() -> None:
    world = World([_line("q", "k")])
    world.jobs.create_faults = ["429", "429"]
    assert world.submit() == "submitted"  # the run goes on: its attempt waits in the ledger's queue
    assert world.run()["status"] == "RUNNING" and world.run()["claimed_at"] == ""
    job = world.job()
    assert (job["status"], job["throttled"], job["claimed_at"]) == ("QUEUED", 1, "")
    assert world.poll()["admitted"] == 0 and world.jobs.creates == 0  # within the backoff (60 s)
    world.clock.advance(61)
    assert world.poll()["throttled"] == 1  # the second 429: the backoff doubles
    world.clock.advance(61)
    assert world.poll()["admitted"] == 0
    world.clock.advance(60)
    assert world.poll()["admitted"] == 1
    assert world.job()["status"] == "SUBMITTED" and world.jobs.creates == 1
    states = [h["state"] for h in world.job()["history"]]
    assert states == ["QUEUED", "THROTTLED", "THROTTLED", "JOB_STATE_QUEUED"]


def test_a_claimed_attempt_whose_create_had_an_unknown_outcome_is_created_by_the_poller_after_its_lease() -> None:
    world = World([_line("q", "k")])
    world.jobs.create_faults = ["503"]  # a 5xx: the job may or may not exist
    assert world.submit() == "submitted"  # the run is submitted; its attempt's create is left to the poller
    assert world.job()["status"] == "CLAIMED" and world.job()["claimed_at"]  # kept: only the lease guards
    assert world.poll()["redriven"] == 0
    world.clock.advance(61)
    assert world.poll()["redriven"] == 1  # followed from the moment it was claimed
    assert world.job()["status"] == "SUBMITTED" and world.jobs.creates == 1


def test_a_create_whose_answer_was_lost_is_adopted_not_created_twice() -> None:
    world = World([_line("q", "k")])
    world.jobs.create_faults = ["lost"]
    assert world.submit() == "submitted"
    assert world.submit() == "duplicate"
    # The attempt's claim stands: nobody creates it within its lease.
    assert world.job()["status"] == "CLAIMED" and world.poll()["redriven"] == 0
    world.clock.advance(61)
    assert world.poll()["redriven"] == 1  # finds the job by its labels: adopted
    assert world.jobs.creates == 1 and world.job()["job_name"] == next(iter(world.jobs.jobs))


def test_a_403_while_looking_for_the_job_is_retried_not_taken_for_a_refusal() -> None:
    world = World([_line("q", "k")])
    world.jobs.list_faults = ["403"]  # IAM still propagating after a deploy
    assert world.submit() == "submitted"
    assert world.job()["status"] == "CLAIMED" and world.job()["claimed_at"] == ""  # released: not a refusal
    assert world.poll()["redriven"] == 1 and world.jobs.creates == 1


def test_a_stale_admitter_cannot_create_after_its_claim_was_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World([_line("q", "k")])
    original = FakeJobs.find

    def find_then_sleep(jobs: FakeJobs, labels: dict[str, str], location: str) -> Any:
        found = original(jobs, labels, location)  # no job yet ...
        if not jobs.creates:  # ... then the first holder is paused past its lease, and the poller redrives it
            monkeypatch.setattr(FakeJobs, "find", original)
            world.clock.advance(61)
            assert world.poll()["redriven"] == 1
        return found

    monkeypatch.setattr(FakeJobs, "find", find_then_sleep)
    assert world.submit() == "submitted"  # the first holder wakes up with its stale answer: it must not create
    assert world.jobs.creates == 1


def test_a_holder_near_its_invocation_deadline_stops_before_a_paid_side_effect() -> None:
    world = World([_line("q", "k")])
    inv = world.inv(timeout=60)  # 60 s of invocation: not enough to create a job (90 s margin)
    assert submit(world.sub, SETTINGS, world.ports, inv) == "continued"  # handed on, staged
    assert world.jobs.creates == 0 and world.run()["claimed_at"] == ""
    assert world.deliver() == ["submitted"]  # the continuation creates the job
    assert world.jobs.creates == 1
    # Admission checks too, for whoever admits (a collector's retry, the poller).
    ledger = Ledger(world.store, "work", 60)
    queue_attempt(ledger, SETTINGS, world.inv(), "r1", 0, 2, world.job()["input_uri"], 1)
    assert admit(ledger, SETTINGS, world.ports, world.inv(60))["admitted"] == 0
    assert world.job(0, 2)["status"] == "QUEUED" and world.jobs.creates == 1


def test_run_ends_with_one_row_per_key_retries_included_and_is_announced_once() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    world.submit()
    world.finish(answers={"k0": BUSY, "k2": "drop"})
    world.drive()
    world.finish()  # the retry answers everything
    world.drive()
    latest = world.warehouse.latest("r1")
    assert {k: (r["outcome"], r["attempt"]) for k, r in latest.items()} == {
        "k0": ("SUCCEEDED", 2), "k1": ("SUCCEEDED", 1), "k2": ("SUCCEEDED", 2),
    }  # fmt: skip
    assert world.keyed_rows() == [
        ("k0", 1, "FAILED"), ("k0", 2, "SUCCEEDED"), ("k1", 1, "SUCCEEDED"), ("k2", 1, "MISSING"),
        ("k2", 2, "SUCCEEDED"),
    ]  # fmt: skip
    assert len(world.results()) == 1 and world.results()[0]["counts"] == {"SUCCEEDED": 3}
    assert collect({"run_id": "r1", "chunk": 0, "attempt": 1}, SETTINGS, world.ports, world.inv()) == "duplicate"
    assert len(world.results()) == 1
    assert world.store.small_reads() == 0  # outputs, inputs and retries all read in blocks


def test_jobs_collected_while_the_run_was_still_submitting_complete_it(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(4)])  # two chunks
    original = Ledger.claim

    def slow_second_chunk(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        # Before attempt 1 of chunk 1 is claimed, chunk 0's job runs and is collected.
        if getattr(kwargs.get("create"), "chunk", None) == 1 and not world.warehouse.rows():
            world.finish()
            world.poll()
            assert world.deliver() == ["collected"]  # the run is still SUBMITTING: not complete yet
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "claim", slow_second_chunk)
    world.submit()
    monkeypatch.undo()
    world.finish()
    world.drive()
    assert world.run()["announced"] is True and len(world.results()) == 1


def test_a_job_refused_at_create_ends_its_rows_missing_with_the_reason_and_retries_nothing() -> None:
    world = World([_line("q0", "k0"), _line("q1", "k1")])
    world.jobs.create_faults = ["400"]
    assert world.submit() == "submitted"
    assert world.job()["status"] == "FINISHED" and world.job()["error"]["status"] == "INVALID_ARGUMENT"
    world.drive()
    rows = world.warehouse.latest("r1")
    assert {k: (r["outcome"], r["retryable"], r["error_status"]) for k, r in rows.items()} == {
        "k0": ("MISSING", False, "INVALID_ARGUMENT"), "k1": ("MISSING", False, "INVALID_ARGUMENT"),
    }  # fmt: skip
    assert "refused" in rows["k0"]["error_message"]
    assert world.jobs.creates == 0 and world.run()["announced"] is True


@pytest.mark.parametrize(
    ("code", "retried"),
    [(3, False), (8, True), (13, True), (14, True)],  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE
)
def test_rows_of_a_failed_job_are_retried_only_when_the_failure_is_retryable(code: int, retried: bool) -> None:
    world = World([_line("q0", "k0")])
    world.submit()
    world.finish("JOB_STATE_FAILED", code=code, message="job failed")
    world.drive()
    first = [r for r in world.warehouse.rows() if r["attempt"] == 1]
    assert [(r["outcome"], r["retryable"]) for r in first] == [("MISSING", retried)]
    assert first[0]["error_message"] == "the batch job failed: job failed"
    assert ("gs://work/ledger/jobs/r1/r1-c0000-a2.json" in world.store.objects) is retried


def test_rows_of_an_expired_job_are_retried_and_of_a_job_cancelled_by_someone_else_not() -> None:
    world = World([_line("q0", "k0")])
    world.submit()
    world.finish("JOB_STATE_EXPIRED")
    world.drive()
    assert world.job()["vertex_state"] == "JOB_STATE_EXPIRED" and world.job(attempt=2)["status"] == "SUBMITTED"
    world.finish("JOB_STATE_CANCELLED")  # an operator cancelled attempt 2
    world.drive()
    row = world.warehouse.latest("r1")["k0"]
    assert (row["attempt"], row["outcome"], row["retryable"], row["error_status"]) == (2, "MISSING", False,
                                                                                         "JOB_CANCELLED")  # fmt: skip
    assert world.run()["announced"] is True


def test_poll_survives_one_job_that_fails_every_time() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(4)])  # two jobs
    world.submit()
    broken = next(iter(world.jobs.jobs))
    world.jobs.get_faults[broken] = -1
    world.finish()
    counts = world.poll()
    assert counts["errors"] == 1 and counts["finished"] == 1  # the job after the broken one was followed


@pytest.mark.parametrize(
    ("state", "after", "setting"),
    [("JOB_STATE_QUEUED", 3601, "queue"), ("JOB_STATE_PAUSED", 3601, "queue"),
     ("JOB_STATE_RUNNING", 86401, "run"), ("JOB_STATE_UPDATING", 86401, "run")],
)  # fmt: skip
def test_poll_cancels_a_job_past_the_deadline_of_its_state(state: str, after: int, setting: str) -> None:
    world = World([_line("q", "k")])
    world.submit()
    name = next(iter(world.jobs.jobs))
    world.jobs.jobs[name]["state"] = state
    world.poll()
    world.clock.advance(after - 2)
    world.poll()
    assert world.jobs.jobs[name]["state"] == state  # not yet
    world.clock.advance(2)
    assert world.poll()["stuck"] == 1
    assert world.jobs.jobs[name]["state"] == "JOB_STATE_CANCELLING" and world.job()["stuck"] is True
    world.finish("JOB_STATE_CANCELLED")
    world.drive()
    [row] = world.warehouse.rows()
    assert (row["attempt"], row["outcome"], row["retryable"]) == (1, "MISSING", True)  # cancelled by us: retried
    assert "past its queue or run deadline" in row["error_message"]
    assert world.job(attempt=2)["status"] == "SUBMITTED"


def test_a_job_stuck_cancelling_is_abandoned_and_its_rows_retried() -> None:
    world = World([_line("q", "k")])
    world.submit()
    name = next(iter(world.jobs.jobs))
    world.jobs.jobs[name]["state"] = "JOB_STATE_CANCELLING"
    world.poll()
    world.clock.advance(601)
    assert world.poll()["finished"] == 1
    assert (world.job()["status"], world.job()["stuck"]) == ("FINISHED", True)
    world.deliver()
    assert world.job(attempt=2)["status"] == "SUBMITTED"


def test_a_load_still_running_is_waited_for_within_the_invocation_then_by_a_retry() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.warehouse.load_faults = [{"running": 2}]  # RUNNING at two looks
    world.finish()
    world.poll()
    message = world.bus.take("finished")[0]
    with pytest.raises(StillRunning):  # 40 s of invocation: 30 kept for what follows, too little to wait on
        collect(message, SETTINGS, world.ports, world.inv(timeout=40))
    assert world.job()["status"] == "COLLECTING" and world.job()["claimed_at"] == ""  # released: no lease to wait
    assert collect(message, SETTINGS, world.ports, world.inv()) == "collected"  # waits (a second look), loads
    assert len(world.warehouse.loaded("predictions")) == 1 and world.keyed_rows() == [("k", 1, "SUCCEEDED")]


@pytest.mark.parametrize("reason", ["backendError", "rateLimitExceeded", "quotaExceeded"])
def test_a_load_that_failed_on_bigquery_s_side_is_tried_again_under_the_next_job_id(reason: str) -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.warehouse.load_faults = [{"fail": reason} for _ in range(7)]  # more than any retry cap
    world.finish()
    world.poll()
    for _ in range(7):
        assert world.deliver() == ["retried: TransientError"]  # after the trigger's backoff, never at once
        assert world.job()["status"] == "COLLECTING" and world.job()["claimed_at"] == ""
    assert world.deliver() == ["collected"]
    ids = sorted(i for i in world.warehouse.jobs if "predictions" in i)
    assert ids == sorted(f"gbp_predictions_r1_c0000_a1_v{v}" for v in range(1, 9))
    assert world.keyed_rows() == [("k", 1, "SUCCEEDED")] and world.run()["announced"] is True


def test_a_load_that_failed_for_good_ends_the_attempt_uncollectable_and_says_so() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.warehouse.load_faults = [{"fail": "invalid"}]
    world.finish()
    world.drive()
    assert world.job()["status"] == "UNCOLLECTABLE" and "invalid" in world.job()["collect_error"]
    [row] = world.warehouse.rows("batch_jobs")
    assert row["status"] == "UNCOLLECTABLE" and "invalid" in row["error"]["collect"]
    [announcement] = world.results()
    assert announcement["uncollectable"][0]["error"] == world.job()["collect_error"]
    assert world.poll()["followed"] == 0  # terminal: nothing is left to follow


def test_a_quota_error_on_a_load_is_retried_not_dropped() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.warehouse.insert_faults = ["quotaExceeded"]
    world.finish()
    world.poll()
    message = world.bus.take("finished")[0]
    with pytest.raises(TransientError, match="quotaExceeded"):
        collect(message, SETTINGS, world.ports, world.inv())
    assert collect(message, SETTINGS, world.ports, world.inv()) == "collected"


def test_a_dead_collector_is_replaced_after_its_lease_and_the_run_completes() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(2)])
    world.submit()
    world.finish()
    world.poll()
    world.bus.take("finished")  # the message is lost with its collector
    ledger = Ledger(world.store, "work", SETTINGS.lease_seconds)
    from shared.core.records import JobRecord

    _, claim = ledger.claim(JobRecord, ledger.job_uri("r1", 0, 1), world.inv(), states=frozenset({"FINISHED"}))
    assert claim is not None
    claim.move("collect")  # ... and the collector dies here
    assert world.poll()["republished"] == 0  # its lease stands
    world.clock.advance(61)
    assert world.poll()["republished"] == 1
    world.deliver()
    assert world.run()["announced"] is True and world.keyed_rows() == [("k0", 1, "SUCCEEDED"), ("k1", 1, "SUCCEEDED")]


def test_a_submitter_that_died_is_resumed_by_the_poller() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    world.store.fail_writes["jobs/r1/r1-c0001-a1"] = 1  # chunk 0 is queued; the submitter never came back
    with pytest.raises(TransientError):
        world.submit()
    world.clock.advance(61)
    counts = world.poll()
    assert counts["resumed"] == 1 and counts["admitted"] == 1  # the queued attempt, then the run
    assert world.deliver() == ["submitted"]  # the resume message
    assert world.run()["status"] == "RUNNING" and world.jobs.creates == 2
    world.finish()
    world.drive()
    assert world.run()["announced"] is True


def test_a_run_whose_completion_was_interrupted_is_nudged_and_announced() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.finish()
    world.poll()
    world.bus.fail_next = 0
    message = world.bus.take("finished")[0]
    world.bus.fail_next = 1  # the announcement fails; the event is then lost
    with pytest.raises(TransientError):
        collect(message, SETTINGS, world.ports, world.inv())
    assert world.job()["status"] == "COLLECTED" and world.run()["status"] == "COMPLETE"
    assert not world.run()["announced"]
    world.clock.advance(61)
    assert world.poll()["nudged"] == 1
    world.deliver()
    assert world.run()["announced"] is True and len(world.results()) == 1


def test_work_files_get_their_custom_time_only_when_the_run_is_done() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.finish()
    world.poll()
    staged = [u for u in world.store.objects if "/staging/" in u or "/outputs/" in u]
    assert staged and not world.store.custom_times  # a running run's files are never released
    world.deliver()
    work = [
        u for u in world.store.objects if u.startswith(("gs://work/staging/", "gs://work/rows/", "gs://work/outputs/"))
    ]
    assert sorted(world.store.custom_times) == sorted(work)


def test_a_rejected_message_report_goes_to_the_work_bucket_and_the_source_is_pinned() -> None:
    world = World([b"not json"])
    sub = Submission("m1", SOURCE, None, origin=MESSAGE)
    pinned = world.store.generation(SOURCE)
    assert world.submit(sub) == "rejected"
    run = orjson.loads(world.store.objects["gs://work/ledger/runs/m1.json"][0])
    assert run["generation"] == pinned and run["report_uri"] == "gs://work/rejected/m1.errors.json"
    assert not [u for u in world.store.objects if u.startswith("gs://gbp-in/rejected/")]


def test_a_message_source_that_does_not_exist_is_rejected_with_a_report() -> None:
    world = World([_line("q")])
    sub = Submission("m1", "gs://gbp-in/incoming/missing.jsonl", None, origin=MESSAGE)
    assert world.submit(sub) == "rejected"
    report = orjson.loads(world.store.objects["gs://work/rejected/m1.errors.json"][0])
    assert "does not exist" in report["error"]


def test_a_bq_source_that_cannot_be_read_is_rejected_with_a_report() -> None:
    world = World([_line("q")])
    sub = Submission("m1", "bq://proj-1.ds.missing", None, origin=MESSAGE)
    assert world.submit(sub) == "rejected"
    assert "Not found" in orjson.loads(world.store.objects["gs://work/rejected/m1.errors.json"][0])["error"]


def test_bad_models_and_sources_are_refused_before_anything_is_claimed() -> None:
    world = World([_line("q")])
    with pytest.raises(PermanentError, match="bad model"):
        world.submit(Submission("m1", SOURCE, None, model="Gemini 2.5!"))
    with pytest.raises(PermanentError, match="bad source"):
        world.submit(Submission("m2", "gs://", None))
    assert not [u for u in world.store.objects if "/ledger/" in u]


def test_a_run_is_not_announced_while_an_earlier_attempt_is_still_being_collected() -> None:
    world = World([_line("q0", "k0"), _line("q1", "k1")])
    world.submit()
    world.finish(answers={"k0": BUSY})
    world.poll()
    parent = world.bus.take("finished")[0]
    world.warehouse.load_faults = [{}, {"running": 5}]  # its rows load; its batch_jobs row is slow
    with pytest.raises(StillRunning):
        collect(parent, SETTINGS, world.ports, world.inv(timeout=130))
    assert world.job()["status"] == "COLLECTING" and world.job(attempt=2)["status"] == "SUBMITTED"
    world.finish()  # the retry attempt ends, and is collected first
    world.poll()
    [child] = [m for m in world.bus.take("finished") if m["attempt"] == 2]
    assert collect(child, SETTINGS, world.ports, world.inv()) == "collected"
    assert world.run()["status"] == "RUNNING" and not world.results()  # attempt 1 is not done yet
    assert collect(parent, SETTINGS, world.ports, world.inv()) == "collected"
    assert world.run()["announced"] is True and len(world.results()) == 1
    assert len(world.warehouse.rows("batch_jobs")) == 2


def test_a_stuck_job_is_known_as_cancelled_by_us_before_it_is_cancelled() -> None:
    world = World([_line("q", "k")])
    world.submit()
    name = next(iter(world.jobs.jobs))
    world.poll()
    world.clock.advance(3601)
    world.store.fail_writes["ledger/jobs/r1/"] = 1  # the write that records it fails
    assert world.poll()["errors"] == 1
    assert world.jobs.jobs[name]["state"] == "JOB_STATE_QUEUED"  # so it was not cancelled
    assert world.poll()["stuck"] == 1 and world.job()["stuck"] is True
    world.finish("JOB_STATE_CANCELLED")
    world.drive()
    assert [(r["attempt"], r["retryable"]) for r in world.warehouse.rows()] == [(1, True)]


def test_a_stuck_job_that_ignores_the_cancel_is_asked_again() -> None:
    world = World([_line("q", "k")])
    world.submit()
    name = next(iter(world.jobs.jobs))
    world.poll()
    world.clock.advance(3601)
    assert world.poll()["stuck"] == 1
    world.jobs.jobs[name]["state"] = "JOB_STATE_QUEUED"  # Vertex dropped the request
    world.clock.advance(30)
    assert world.poll()["stuck"] == 0  # asked recently
    world.clock.advance(31)
    assert world.poll()["stuck"] == 1


def test_a_job_that_no_longer_exists_ends_its_rows_missing_not_retried() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.jobs.jobs.clear()  # deleted on Vertex
    world.drive()
    row = world.warehouse.latest("r1")["k"]
    assert (row["outcome"], row["retryable"], row["error_status"]) == ("MISSING", False, "NOT_FOUND")
    assert world.run()["announced"] is True


def test_a_collector_finding_the_attempt_held_leaves_it_to_its_holder() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.finish()
    world.poll()
    message = world.bus.take("finished")[0]
    ledger = Ledger(world.store, "work", SETTINGS.lease_seconds)
    from shared.core.records import JobRecord

    ledger.claim(JobRecord, ledger.job_uri("r1", 0, 1), world.inv(), states=frozenset({"FINISHED"}))
    assert collect(message, SETTINGS, world.ports, world.inv()) == "busy"


def test_a_ledger_write_whose_answer_was_lost_is_known_as_ours() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    world.store.ghost_conflicts = 3  # the claim, the staging record and an attempt's claim
    assert world.submit() == "submitted"
    assert world.run()["status"] == "RUNNING" and world.jobs.creates == 2


def test_readme_state_table_is_the_code_s() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert state_table() in readme


def test_a_run_whose_marker_was_never_written_is_still_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World([_line("q", "k")])
    original = Ledger.claim
    calls = {"n": 0}

    def die_after_claiming(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        found = original(self, *args, **kwargs)
        if calls["n"] == 1:
            raise SystemExit("the instance died right after claiming the run")
        return found

    monkeypatch.setattr(Ledger, "claim", die_after_claiming)
    with pytest.raises(SystemExit):
        world.submit()
    monkeypatch.undo()
    assert world.submit() == "busy"  # a redelivery within the lease leaves it to the holder (who died)
    world.clock.advance(61)
    assert world.poll()["resumed"] == 1  # followed all the same: its marker was written first
    world.deliver()
    assert world.run()["status"] == "RUNNING"


def test_markers_whose_records_never_came_are_dropped_after_a_lease() -> None:
    world = World([_line("q", "k")])
    ledger = Ledger(world.store, "work", SETTINGS.lease_seconds)
    ledger.activate_run("r9", world.clock())
    ledger.activate("r9", 0, 1, world.clock())
    world.poll()
    assert ledger.active_runs() == ["r9"] and ledger.active() == [("r9", 0, 1)]  # its holder may be creating it
    world.clock.advance(61)
    world.poll()
    assert ledger.active_runs() == [] and ledger.active() == []


def test_an_attempt_left_unfollowed_is_followed_again_by_its_run() -> None:
    world = World([_line("q", "k")])
    world.jobs.create_faults = ["lost"]
    assert world.submit() == "submitted"
    world.store.delete("gs://work/ledger/active/r1-c0000-a1")  # the marker is lost
    world.clock.advance(61)
    world.poll()  # the run, RUNNING with nothing followed, follows its open attempt again
    assert world.poll()["redriven"] == 1 and world.job()["status"] == "SUBMITTED"
    world.finish()
    world.drive()
    assert world.run()["announced"] is True


# --- admission: the concurrent-job limit, fair shares, 429 backoff ------------------------------


def test_never_more_jobs_live_than_max_concurrent_jobs_and_the_rest_wait_queued() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(20)], dataclasses.replace(SETTINGS, max_concurrent_jobs=3))
    assert world.submit() == "submitted" and world.run()["chunks"] == 10
    statuses = [world.job(c)["status"] for c in range(10)]
    assert statuses.count("SUBMITTED") == 3 and statuses.count("QUEUED") == 7
    assert world.poll()["admitted"] == 0  # no slot has freed
    created = []
    while len(world.jobs.jobs) < 10 or any(j["state"] == "JOB_STATE_QUEUED" for j in world.jobs.jobs.values()):
        live = [j for j in world.jobs.jobs.values() if j["state"] == "JOB_STATE_QUEUED"]
        assert len(live) <= 3
        created.append(len(world.jobs.jobs))
        world.finish()
        world.drive(1)
    assert world.jobs.creates == 10 and created[:4] == [3, 6, 9, 10]
    world.drive()
    assert world.run()["announced"] and len(world.warehouse.rows()) == 20


def test_fair_order_serves_the_run_given_least_first_and_no_one_waits_for_ever() -> None:
    from shared.services.admission import fair_order
    from shared.services.ledger import Queued

    now = datetime(2026, 11, 29, 12, tzinfo=UTC)

    def queued(run: str, chunk: int, minutes_ago: float) -> Queued:
        return Queued(now - timedelta(minutes=minutes_ago), run, chunk, 1, f"gs://w/ledger/queued/{run}-{chunk}")

    big = [queued("big", c, 60 - c) for c in range(3, 8)]  # queued first, given 3 jobs already
    small = [queued("s1", 0, 30), queued("s2", 0, 20), queued("s2", 1, 20)]
    waiting = sorted(big + small, key=lambda q: q.at)
    order = [(q.run_id, q.chunk) for q in fair_order(waiting, {"big": 3}, now)]
    assert order[:3] == [("s1", 0), ("s2", 0), ("s2", 1)]  # s2 has 1 after its first, still under big's 3
    assert order[3:] == [("big", c) for c in range(3, 8)]
    starving = [queued("old", 0, 7 * 60), *waiting]
    assert next(iter(fair_order(starving, {"old": 50}, now))).run_id == "old"  # 7 h in the queue


def test_a_slot_is_freed_when_its_job_finishes_and_the_next_run_gets_it() -> None:
    one = dataclasses.replace(SETTINGS, max_concurrent_jobs=1)
    world = World([_line("q", "k")], one)
    world.submit()
    admission = orjson.loads(world.store.objects["gs://work/ledger/admission.json"][0])
    assert list(admission["live"]) == ["r1-c0000-a1"] and admission["claimed_at"] == ""
    world.store.write("gs://gbp-in/incoming/g.jsonl", _line("q2", "k2") + b"\n")
    second = Submission("r2", "gs://gbp-in/incoming/g.jsonl", world.store.generation("gs://gbp-in/incoming/g.jsonl"))
    assert world.submit(second) == "submitted" and len(world.jobs.jobs) == 1  # r2 waits for the slot
    world.finish()
    world.drive(1)  # the poller sees r1's job final: its slot goes to r2
    assert len(world.jobs.jobs) == 2
    admission = orjson.loads(world.store.objects["gs://work/ledger/admission.json"][0])
    assert list(admission["live"]) == ["r2-c0000-a1"]


def test_an_attempt_claimed_before_admission_existed_and_throttled_is_queued_with_a_readable_marker() -> None:
    world = World([_line("q", "k")])
    world.jobs.create_faults = ["503"]  # left CLAIMED, as the previous release left attempts
    world.submit()
    record = world.job()
    record["queued_at"] = ""  # written by a release without queues
    world.store.write("gs://work/ledger/jobs/r1/r1-c0000-a1.json", orjson.dumps(record))
    world.store.write("gs://work/ledger/queued/not-a-marker", b"")  # and something unreadable in the queue
    world.jobs.create_faults = ["429"]
    world.clock.advance(61)
    assert world.poll()["redriven"] == 1
    job = world.job()
    assert job["status"] == "QUEUED" and job["queued_at"] and job["throttled"] == 1
    world.clock.advance(61)
    assert world.poll()["admitted"] == 1 and world.job()["status"] == "SUBMITTED" and world.jobs.creates == 1


def test_vertex_reads_and_writes_only_its_own_bucket_when_there_is_one() -> None:
    settings = dataclasses.replace(SETTINGS, vertex_bucket="vertex-io")
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)], settings)
    assert world.submit() == "submitted"
    jobs = list(world.jobs.jobs.values())
    assert jobs and all(j["input"].startswith("gs://vertex-io/staging/r1/") for j in jobs)
    assert all(j["dest"].startswith("gs://vertex-io/outputs/r1/") for j in jobs)
    world.finish(answers={"k0": "Internal error (500)"})
    world.drive()
    assert world.job(0, 2)["input_uri"].startswith("gs://vertex-io/staging/r1/")  # the retry's input too
    world.finish()
    world.drive()
    assert not [u for u in world.store.objects if u.startswith(("gs://work/staging/", "gs://work/outputs/"))]
    assert [u for u in world.store.objects if u.startswith("gs://work/rows/r1/")]  # rows stay in the work bucket
    released = [u for u in world.store.custom_times if u.startswith("gs://vertex-io/")]
    assert released and world.run()["announced"]


def test_attempts_queued_before_the_vertex_bucket_existed_move_there_before_their_jobs_are_created() -> None:
    before = dataclasses.replace(SETTINGS, max_concurrent_jobs=1)
    world = World([_line(f"q{i}", f"k{i}") for i in range(5)], before)
    world.submit()
    assert len(world.jobs.jobs) == 1  # two chunks wait, recorded with the work bucket's paths
    world.settings = dataclasses.replace(before, vertex_bucket="vertex-io")  # the upgrade
    for _ in range(6):
        world.finish()
        world.drive(2)
    inputs = sorted(j["input"] for j in world.jobs.jobs.values())
    assert inputs[0].startswith("gs://vertex-io/staging/r1/") and inputs[0].endswith(".moved.jsonl")
    assert sum(i.startswith("gs://vertex-io/") for i in inputs) == 2 and len(inputs) == 3
    assert all(
        j["dest"].startswith("gs://vertex-io/outputs/")
        for j in world.jobs.jobs.values()
        if j["input"].startswith("gs://vertex-io/")
    )
    assert sorted(k for k, _, _ in world.keyed_rows()) == [f"k{i}" for i in range(5)] and world.run()["announced"]
