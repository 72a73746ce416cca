"""Cancel, retry and the run_states rows, on the services' fakes (the local cloud runs them end to end)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import orjson
import pytest

from shared.config import Settings
from shared.core.errors import PermanentError
from shared.core.messages import parse_request_message
from shared.services.budget import spent
from shared.services.ledger import Ledger
from shared.services.retry import answer_uri, request_for, selection_id
from shared.services.run_states import run_row
from tests.unit.test_services import SETTINGS, World, _line


def _until_announced(world: World, announcements: int, rounds: int = 12) -> None:
    for _ in range(rounds):
        if len(world.results()) >= announcements:
            return
        world.clock.advance(61)
        world.drive(1)
    raise AssertionError(f"{len(world.results())} announcements, {announcements} expected")


def _retry_message(world: World, outcomes: tuple[str, ...], statuses: tuple[str, ...] = (), model: str = "") -> dict:
    request = request_for(Ledger(world.store, "work", 60), "r1", outcomes, statuses, model)
    return request.message()


BAD = '{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}'  # a row error, not retryable
USAGE = {"promptTokenCount": 1000, "candidatesTokenCount": 100, "totalTokenCount": 1100}


def _one_row_failed(settings: Settings) -> World:
    """A finished, priced run of k0 (SUCCEEDED) and k1 (FAILED, not retryable)."""
    world = World([_line(f"q{i}", f"k{i}") for i in range(2)], settings)
    world.submit()
    world.finish(answers={"k1": BAD}, usage=USAGE)
    _until_announced(world, 1)
    return world


def _latest(world: World) -> dict[str, tuple[int, str, str | None]]:
    return {k: (r["attempt"], r["outcome"], r.get("error_status")) for k, r in world.warehouse.latest("r1").items()}


def test_cancel_drops_queued_attempts_cancels_live_jobs_keeps_loaded_rows_and_ends_cancelled() -> None:
    settings = dataclasses.replace(SETTINGS, max_concurrent_jobs=1)  # one job at a time: the others wait queued
    world = World([_line(f"q{i}", f"k{i}") for i in range(6)], settings)
    assert world.submit() == "submitted"
    assert len(world.jobs.jobs) == 1 and world.job(2)["status"] == "QUEUED"
    world.finish()  # chunk 0 ends SUCCEEDED
    world.poll()
    world.deliver()  # chunk 0 collected before the cancel; chunk 1 admitted in its place
    second = next(n for n, j in world.jobs.jobs.items() if j["labels"]["gbp_chunk"] == "1")
    world.jobs.jobs[second]["state"] = "JOB_STATE_RUNNING"
    assert world.job(2)["status"] == "QUEUED"
    world.bus.publish("requests", {"cancel": "r1", "reason": "wrong prompts"})
    assert world.deliver() == ["cancelling"]
    assert world.jobs.jobs[second]["state"] == "JOB_STATE_CANCELLING"
    assert world.job(2)["status"] == "FINISHED" and world.job(2)["cancelled"] == "wrong prompts"
    assert world.jobs.creates == 2  # the queued chunk never got a job
    world.poll()
    world.deliver()
    world.jobs.jobs[second]["state"] = "JOB_STATE_CANCELLED"
    _until_announced(world, 1)
    run = world.run()
    assert run["status"] == "CANCELLED" and run["cancel"]["why"] == "wrong prompts"
    assert world.results()[-1]["status"] == "CANCELLED"
    latest = _latest(world)
    assert sorted(latest) == [f"k{i}" for i in range(6)]  # every request: one row
    assert {k: v[1] for k, v in latest.items() if k in ("k0", "k1")} == {"k0": "SUCCEEDED", "k1": "SUCCEEDED"}
    for key in ("k2", "k3", "k4", "k5"):  # chunk 1's job cancelled while running, chunk 2 never created
        assert latest[key] == (1, "MISSING", "CANCELLED")
    rows = {r["request_key"]: r for r in world.warehouse.rows()}
    assert rows["k4"]["retryable"] is False and "wrong prompts" in rows["k4"]["error_message"]
    assert not any(world.store.list("gs://work/ledger/jobs/r1/r1-c0001-a2"))  # nothing retried
    world.bus.publish("requests", {"cancel": "r1"})
    assert world.deliver() == ["finished"]  # a second cancel finds nothing left to do


def test_a_cancel_made_while_a_job_is_being_admitted_drops_it_before_create() -> None:
    world = World([_line("q", "k")], dataclasses.replace(SETTINGS, max_concurrent_jobs=0))
    world.submit()  # queued: no slot
    world.bus.publish("requests", {"cancel": "r1"})
    assert world.deliver() == ["cancelling"]
    _until_announced(world, 1)
    assert world.run()["status"] == "CANCELLED" and world.jobs.creates == 0
    assert _latest(world) == {"k": (1, "MISSING", "CANCELLED")}


def test_retry_of_rows_refused_for_their_model_runs_them_on_the_fixed_model_once() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    world.jobs.create_faults = ["400", "400"]  # "model not found": both chunks refused, their rows MISSING
    world.submit()
    _until_announced(world, 1)
    assert {v[1:] for v in _latest(world).values()} == {("MISSING", "INVALID_ARGUMENT")}
    message = _retry_message(world, ("MISSING",), ("INVALID_ARGUMENT",), "gemini-2.5-pro")
    parsed = parse_request_message({**message, "retry": "r0123456789abcdef0123"})
    assert (parsed.selection, parsed.model, parsed.outcomes) == (message["selection"], "gemini-2.5-pro", ("MISSING",))
    for _ in range(3):  # the command run three times (or its message delivered three times)
        world.bus.publish("requests", message)
    assert world.deliver() == ["retried", "duplicate", "duplicate"]
    assert world.run()["status"] == "RUNNING" and not world.run()["announced"]
    retried = [j for j in world.jobs.jobs.values() if j["labels"]["gbp_attempt"] == "2"]
    assert len(retried) == 2 and {j["model"] for j in retried} == {"gemini-2.5-pro"}
    world.finish()
    _until_announced(world, 2)
    assert _latest(world) == {f"k{i}": (2, "SUCCEEDED", None) for i in range(3)}
    assert world.run()["status"] == "COMPLETE" and world.results()[-1]["counts"] == {"SUCCEEDED": 3}
    world.bus.publish("requests", message)
    assert world.deliver() == ["duplicate"]
    again = _retry_message(world, ("MISSING",), ("INVALID_ARGUMENT",), "gemini-2.5-pro")
    world.bus.publish("requests", again)
    assert world.deliver() == ["nothing"]  # no row is MISSING any more


def test_retry_takes_only_the_selected_rows_and_a_selection_made_before_the_run_changed_is_stale() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(4)])
    world.submit()
    world.finish(answers={"k1": BAD, "k3": BAD.replace("INVALID_ARGUMENT", "FAILED_PRECONDITION")})
    _until_announced(world, 1)
    assert _latest(world)["k1"][1] == "FAILED"
    stale = _retry_message(world, ("FAILED",))
    failed_only = _retry_message(world, ("FAILED",), ("INVALID_ARGUMENT",))
    opened: list[str] = []
    real_open = world.store.open

    def recording(uri: str, *args: object, **kwargs: object) -> object:
        opened.append(uri)
        return real_open(uri, *args, **kwargs)  # type: ignore[arg-type]

    world.store.open = recording  # type: ignore[method-assign]
    world.bus.publish("requests", failed_only)
    assert world.deliver() == ["retried"]
    world.store.open = real_open  # type: ignore[method-assign]
    assert opened == [world.job(0)["input_uri"]]  # k1 is in chunk 0: chunk 1's input is not read
    assert world.job(0, 2)["requests"] == 1 and world.job(0, 2)["base"] == 2  # k1 alone, a series of its own
    world.finish()
    _until_announced(world, 2)
    world.bus.publish("requests", stale)  # chosen before the retry: its rows are not the latest any more
    assert world.deliver() == ["stale"]
    answer = world.store.read(answer_uri(Ledger(world.store, "work", 60), "r1", stale["selection"]))
    assert answer is not None and orjson.loads(answer[0])["outcome"] == "stale"  # what retry --wait prints
    assert _latest(world)["k1"] == (2, "SUCCEEDED", None)
    assert _latest(world)["k3"] == (1, "FAILED", "FAILED_PRECONDITION")  # not selected: left as it was
    assert Counter(v[1] for v in _latest(world).values()) == Counter({"SUCCEEDED": 3, "FAILED": 1})


def test_retry_of_a_cancelled_run_goes_on_with_it() -> None:
    world = World([_line("q", "k")], dataclasses.replace(SETTINGS, max_concurrent_jobs=0))
    world.submit()
    world.bus.publish("requests", {"cancel": "r1"})
    world.deliver()
    _until_announced(world, 1)
    world.settings = dataclasses.replace(SETTINGS, max_concurrent_jobs=2)
    world.bus.publish("requests", _retry_message(world, ("MISSING",), ("CANCELLED",)))
    assert world.deliver() == ["retried"]
    assert not world.store.list("gs://work/ledger/cancel/")  # the cancel is undone
    world.finish()
    _until_announced(world, 2)
    assert world.run()["status"] == "COMPLETE" and _latest(world) == {"k": (2, "SUCCEEDED", None)}


def test_retry_refuses_a_running_run_and_a_bad_message_is_refused_before_anything() -> None:
    world = World([_line("q", "k")])
    world.submit()
    world.bus.publish("requests", _retry_message(world, ("FAILED",)))
    assert world.deliver() == ["refused"]
    for bad in (
        {"retry": "r0123456789abcdef0123", "selection": "x", "outcomes": ["FAILED"]},
        {"retry": "r0123456789abcdef0123", "selection": "s0123456789abcdef", "outcomes": []},
        {"retry": "r0123456789abcdef0123", "selection": "s0123456789abcdef", "outcomes": ["FAILED"], "model": "a b"},
        {"retry": "r0123456789abcdef0123", "cancel": "r0123456789abcdef0123"},
        {"cancel": "r0123456789abcdef0123", "reopen": "not-a-selection"},
    ):
        with pytest.raises(PermanentError):
            parse_request_message(bad)
    sent = {"retry": "r0123456789abcdef0123", "selection": "s0123456789abcdef", "outcomes": ["FAILED"]}
    assert parse_request_message({**sent, "nonce": "0a1b2c3d"}).nonce == "0a1b2c3d"
    with pytest.raises(PermanentError):
        parse_request_message({**sent, "nonce": "../../x"})  # it names a file
    fenced = parse_request_message({"cancel": "r0123456789abcdef0123", "reopen": "", "reason": "why"})
    assert (fenced.cancel, fenced.reopen, fenced.reason) == ("r0123456789abcdef0123", "", "why")
    assert parse_request_message({"cancel": "r0123456789abcdef0123"}).reopen is None  # a message of the user's


def test_the_selection_id_names_the_filter_the_model_and_the_latest_attempts() -> None:
    base = selection_id("r1", {0: 1, 1: 2}, ["FAILED", "MISSING"], [], "")
    assert base == selection_id("r1", {1: 2, 0: 1}, ["MISSING", "FAILED", "FAILED"], [], "")
    others = {
        selection_id("r1", {0: 1, 1: 3}, ["FAILED", "MISSING"], [], ""),
        selection_id("r1", {0: 1, 1: 2}, ["FAILED"], [], ""),
        selection_id("r1", {0: 1, 1: 2}, ["FAILED", "MISSING"], ["INTERNAL"], ""),
        selection_id("r1", {0: 1, 1: 2}, ["FAILED", "MISSING"], [], "gemini-2.5-pro"),
        selection_id("r2", {0: 1, 1: 2}, ["FAILED", "MISSING"], [], ""),
    }
    assert base not in others and len(others) == 5


def test_each_state_of_a_run_is_a_run_states_row_and_the_newest_is_what_runs_prints() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    world.submit()
    world.finish()
    _until_announced(world, 1)
    rows = sorted(world.warehouse.rows("run_states"), key=lambda r: r["seq"])
    assert [r["status"] for r in rows] == ["SUBMITTING", "RUNNING", "COMPLETE"]
    newest = orjson.loads(orjson.dumps(run_row(Ledger(world.store, "work", 60).get_run("r1")[0])))  # type: ignore[index]
    assert rows[-1] == {k: v for k, v in newest.items() if k != "updated_at"} | {"updated_at": rows[-1]["updated_at"]}
    assert rows[-1]["rows_by_outcome"] == {"SUCCEEDED": 3} and rows[-1]["attempts"] == 2 and rows[-1]["finished_at"]


def test_cancelling_a_held_run_ends_it_cancelled_with_no_job_and_the_poller_lets_it_go() -> None:
    world = World([_line("q", "k")], dataclasses.replace(SETTINGS, max_run_cost_usd=0.0))
    assert world.submit() == "held"
    world.bus.publish("requests", {"cancel": "r1", "reason": "not needed"})
    assert world.deliver() == ["cancelled"]
    run = world.run()
    assert (run["status"], run["announced"], run["cancel"]["why"]) == ("CANCELLED", True, "not needed")
    assert world.results()[-1]["status"] == "CANCELLED" and not world.jobs.jobs
    world.poll()
    assert "gs://work/ledger/active-runs/r1" not in world.store.objects  # nothing left to follow
    assert [r["status"] for r in world.warehouse.rows("run_states")][-1] == "CANCELLED"


def test_a_cancel_sent_while_the_run_is_being_staged_stops_it_once_its_attempts_are_queued() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(3)])
    ledger = Ledger(world.store, "work", 60)
    world.store.write(ledger.cancel_uri("r1"), orjson.dumps({"at": "", "why": "early"}))  # asked while SUBMITTING
    assert world.submit() == "submitted"
    assert world.jobs.creates == 0  # every create read the request first
    _until_announced(world, 1)
    assert world.run()["status"] == "CANCELLED"
    assert _latest(world) == {f"k{i}": (1, "MISSING", "CANCELLED") for i in range(3)}


def test_a_cancel_asked_before_a_retry_and_delivered_after_it_leaves_the_retry_alone() -> None:
    world = World([_line("q", "k")], dataclasses.replace(SETTINGS, max_concurrent_jobs=0))
    world.submit()
    world.bus.publish("requests", {"cancel": "r1", "reopen": ""})  # as gemini-batch cancel sends it
    world.deliver()
    _until_announced(world, 1)
    world.settings = dataclasses.replace(SETTINGS, max_concurrent_jobs=2)
    world.bus.publish("requests", _retry_message(world, ("MISSING",)))
    assert world.deliver() == ["retried"]
    world.bus.publish("requests", {"cancel": "r1", "reopen": ""})  # the first cancel, delivered again
    assert world.deliver() == ["stale"]
    world.finish()
    _until_announced(world, 2)
    assert world.run()["status"] == "COMPLETE" and _latest(world) == {"k": (2, "SUCCEEDED", None)}
    assert [m["revision"] for m in world.results()] == [0, 1]


def test_a_retry_whose_chunk_input_is_gone_ends_with_that_chunk_s_rows_as_they_were() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(4)])  # two chunks
    world.submit()
    world.finish(answers={"k0": BAD, "k3": BAD})
    _until_announced(world, 1)
    message = _retry_message(world, ("FAILED",))
    chunk1 = world.job(1)["input_uri"]
    real_open = world.store.open

    def vanished(uri: str, *args: object, **kwargs: object) -> object:  # deleted between the check and the read
        if uri == chunk1:
            raise PermanentError(f"reading {uri}: 404 No such object")
        return real_open(uri, *args, **kwargs)  # type: ignore[arg-type]

    world.store.open = vanished  # type: ignore[method-assign]
    world.bus.publish("requests", message)
    assert world.deliver() == ["retried"]
    world.store.open = real_open  # type: ignore[method-assign]
    reopen = world.run()["reopen"]
    assert reopen["done"] and reopen["chunks"] == {"0": 1, "1": 0} and "404" in reopen["errors"]["1"]
    world.finish()
    _until_announced(world, 2)
    assert _latest(world)["k0"] == (2, "SUCCEEDED", None) and _latest(world)["k3"] == (1, "FAILED", "INVALID_ARGUMENT")


def test_a_retry_counts_in_the_day_s_spend_while_it_runs_and_its_cost_once_the_run_completes_again() -> None:
    world = _one_row_failed(dataclasses.replace(SETTINGS, max_daily_cost_usd=100.0))
    ledger, day = Ledger(world.store, "work", 60), world.run()["budget_day"]
    first = spent(ledger, day)
    assert first == pytest.approx(world.run()["cost"]["usd"])
    world.bus.publish("requests", _retry_message(world, ("FAILED",)))
    assert world.deliver() == ["retried"]
    assert spent(ledger, day) > first  # the retry's expected cost shows while it runs
    world.finish(usage=USAGE)
    _until_announced(world, 2)
    assert spent(ledger, day) == pytest.approx(world.run()["cost"]["usd"]) and world.run()["cost"]["usd"] > first


def test_a_retry_over_the_budget_limits_waits_for_a_person_s_approval() -> None:
    world = _one_row_failed(dataclasses.replace(SETTINGS, max_run_cost_usd=100.0))
    world.settings = dataclasses.replace(SETTINGS, max_run_cost_usd=0.0)  # the limit was lowered since
    message = {**_retry_message(world, ("FAILED",)), "nonce": "a1a1a1a1"}
    world.bus.publish("requests", message)
    assert world.deliver() == ["over budget"]
    ledger = Ledger(world.store, "work", 60)
    answer = orjson.loads(world.store.objects[answer_uri(ledger, "r1", message["selection"], "a1a1a1a1")][0])
    assert "MAX_RUN_COST_USD" in answer["why"] and world.run()["status"] == "COMPLETE"
    world.bus.publish("requests", {**message, "approved": True, "nonce": "b2b2b2b2"})  # retry --approve
    assert world.deliver() == ["retried"]
    assert world.store.read(answer_uri(ledger, "r1", message["selection"], "b2b2b2b2")) is None  # made: no answer
    world.finish(usage=USAGE)
    _until_announced(world, 2)
    assert _latest(world)["k1"] == (2, "SUCCEEDED", None)


def test_a_retry_of_a_run_made_without_limits_is_counted_in_the_day() -> None:
    world = World([_line(f"q{i}", f"k{i}") for i in range(2)])
    world.submit()
    world.finish(answers={"k0": BAD, "k1": BAD})
    _until_announced(world, 1)
    ledger = Ledger(world.store, "work", 60)
    run, generation = ledger.get_run("r1")  # type: ignore[misc]
    run.estimate, run.budget_day = {}, ""  # a run of a release before estimates and day budgets
    run.staged.pop("estimates", None)
    run.staged.pop("estimator", None)
    ledger.put(run, generation)
    world.settings = dataclasses.replace(SETTINGS, max_daily_cost_usd=1000.0)  # a limit set since
    world.bus.publish("requests", _retry_message(world, ("FAILED",)))
    assert world.deliver() == ["retried"]
    today = world.clock().strftime("%Y-%m-%d")
    assert world.job(0, 2)["estimate"]["expected_usd"] > 0
    assert spent(ledger, today) == pytest.approx(world.job(0, 2)["estimate"]["expected_usd"])
