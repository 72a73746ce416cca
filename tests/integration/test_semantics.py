"""Production semantics on a local cloud as strict as GCP where the pipeline depends on it.

Regional BigQuery jobs and single-use job ids (the BigQuery proxy), loads that stay RUNNING or
fail, holders paused past their lease while another takes over, a submitter that died, a 429 on
create, invalid UTF-8, message checks, clients under concurrent cold starts, and work files
released only when their run is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from google.cloud import bigquery

from local.clients import bigquery_client, storage_client
from local.stack import Endpoints, Stack, _listening, free_port
from shared.adapters import ports
from shared.adapters.bigquery import BigQueryWarehouse
from shared.core.ids import ObjectRef, run_id_for_message, run_id_for_object
from shared.core.records import Run
from shared.ports import LoadState, Ports
from shared.services.collect import collect
from shared.services.ledger import LostClaim
from shared.services.poll import poll
from shared.services.submit import submit
from tests.integration.conftest import wait_for
from tests.integration.helpers import (
    all_rows,
    drive_until_complete,
    invocation,
    job_record,
    jsonl,
    latest_rows,
    manual_run,
    manual_settings,
    post_pubsub,
    request_line,
    run_record,
    until_complete,
    upload_requests,
    vertex_jobs,
)

ROOT = Path(__file__).parents[2]


def _proxy(cloud: Endpoints, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"{cloud.bigquery}/_proxy/{path}"
    reply = requests.post(url, json=body, timeout=10) if body is not None else requests.get(url, timeout=10)
    reply.raise_for_status()
    return reply.json()


def _load_jobs(cloud: Endpoints, owner: str, table: str = "predictions") -> list[dict[str, Any]]:
    """Load jobs the proxy saw for one ledger record (a job key or a run id) into ``table``."""
    wanted = f"gbp_{table}_{owner.replace('-', '_')}_v"
    return [j for j in _proxy(cloud, "jobs")["jobs"] if j["job_id"].startswith(wanted)]


def _key(run_id: str, chunk: int = 0, attempt: int = 1) -> str:
    return f"{run_id}-c{chunk:04d}-a{attempt}"


def _until_finished(cloud: Endpoints, settings: Any, p: Ports, run_id: str) -> None:
    wait_for(
        lambda: (
            poll(settings, p, invocation()) is not None and job_record(cloud, settings, run_id)["status"] == "FINISHED"
        )
    )


class Paused:
    """Wraps a real adapter; the first call of ``method`` (when ``when`` says so) waits until released.

    With ``after``, the real call is made first and its answer held back: the holder wakes up
    with what was true before it slept.
    """

    def __init__(self, inner: Any, method: str, when: Callable[..., bool] = lambda *a, **k: True, after: bool = False):
        self.inner, self.method, self.when, self.after = inner, method, when, after
        self.paused, self.release, self.armed = threading.Event(), threading.Event(), True

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if not (self.armed and self.when(*args, **kwargs)):
                return attr(*args, **kwargs)
            self.armed = False
            result = attr(*args, **kwargs) if self.after else None
            self.paused.set()
            assert self.release.wait(60), "never released"
            return result if self.after else attr(*args, **kwargs)

        return call


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except Exception as exc:  # what the paused holder ends with is the point of the test
            outcome["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# --- 1, 2: regional jobs, single-use ids, one "load once" rule ----------------------------------


def test_bigquery_load_is_found_again_only_in_its_location(cloud: Endpoints) -> None:
    client = bigquery_client(cloud)  # no default location: each call must name it
    source = f"gs://gbp-manual/rows/regional-{time.time_ns()}.ndjson"
    storage_client(cloud).bucket("gbp-manual").blob(source.split("/", 3)[3]).upload_from_string(
        orjson.dumps({"run_id": "regional", "request_key": "k", "outcome": "SUCCEEDED", "attempt": 1}) + b"\n"
    )
    job_id = f"gbp_test_regional_{time.time_ns()}"
    warehouse = BigQueryWarehouse(client, cloud.project, "gbp", cloud.location)
    assert warehouse.load_once(job_id, source, "predictions", 30).state is LoadState.DONE
    assert warehouse.load_once(job_id, source, "predictions", 30).state is LoadState.DONE  # found, not re-run
    assert len([j for j in _proxy(cloud, "jobs")["jobs"] if j["job_id"] == job_id]) == 1
    rows = bigquery_client(cloud, cloud.location).query(
        "SELECT COUNT(*) AS n FROM gbp.predictions WHERE run_id = 'regional'"
    )
    assert next(iter(rows.result()))["n"] == 1
    # Looked up without its location, BigQuery (and the proxy) say the job does not exist.
    from google.api_core.exceptions import NotFound

    with pytest.raises(NotFound):
        client.get_job(job_id)


def test_a_load_still_running_past_the_invocation_is_waited_for_by_the_next_delivery(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(3)])
    submit(submission, settings, real, invocation())
    _until_finished(cloud, settings, real, run_id)
    owner = _key(run_id)
    _proxy(cloud, "faults", {"loads": [{"match": f"predictions_{owner.replace('-', '_')}", "running_seconds": 6}]})
    message = {"run_id": run_id, "chunk": 0, "attempt": 1}
    from shared.core.errors import TransientError

    with pytest.raises(TransientError, match="still"):  # 34 s of invocation: 30 kept back, the rest to wait
        collect(message, settings, real, invocation(timeout=34))
    assert len(_load_jobs(cloud, owner)) == 1  # created, then waited for until the invocation had to stop
    assert job_record(cloud, settings, run_id)["status"] == "COLLECTING"
    assert all_rows(cloud, run_id) == []  # not visible while RUNNING
    assert collect(message, settings, real, invocation()) == "collected"
    assert len(_load_jobs(cloud, owner)) == 1  # waited for, never created twice
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1), ("k2", 1)]


@pytest.mark.parametrize("reason", ["backendError", "quotaExceeded"])
def test_a_load_failed_on_bigquery_s_side_is_tried_again_under_its_next_id(cloud: Endpoints, reason: str) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(2)])
    owner = _key(run_id).replace("-", "_")
    fail = {"reason": reason, "message": f"{reason} (emulated)."}
    _proxy(cloud, "faults", {"loads": [{"match": f"predictions_{owner}_v1", "fail": fail}]})
    submit(submission, settings, real, invocation())
    drive_until_complete(settings, real, run_id, cloud)
    jobs = sorted((j["job_id"], j["error_reason"]) for j in _load_jobs(cloud, _key(run_id)))
    assert jobs == [(f"gbp_predictions_{owner}_v1", reason), (f"gbp_predictions_{owner}_v2", None)]
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1)]
    assert job_record(cloud, settings, run_id)["loads"]["predictions"]["version"] == 2


def test_a_load_that_fails_for_good_ends_the_attempt_uncollectable_and_visible(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line("q", "k")])
    owner = _key(run_id).replace("-", "_")
    fail = {"reason": "invalid", "message": "JSON table encountered too many errors (emulated)."}
    _proxy(cloud, "faults", {"loads": [{"match": f"predictions_{owner}_v1", "fail": fail}]})
    submit(submission, settings, real, invocation())
    drive_until_complete(settings, real, run_id, cloud)
    record = job_record(cloud, settings, run_id)
    assert record["status"] == "UNCOLLECTABLE" and "too many errors" in record["collect_error"]
    [row] = [
        dict(r)
        for r in bigquery_client(cloud, cloud.location)
        .query(
            "SELECT status, error FROM gbp.batch_jobs WHERE run_id = @run",
            job_config=bigquery.QueryJobConfig(
                query_parameters=[bigquery.ScalarQueryParameter("run", "STRING", run_id)]
            ),
        )
        .result()
    ]
    assert row["status"] == "UNCOLLECTABLE" and "too many errors" in row["error"]["collect"]
    assert run_record(cloud, run_id, settings.work_bucket)["status"] == "COMPLETE"


def test_a_quota_refused_load_is_retried_not_dropped(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line("q", "k")])
    owner = _key(run_id).replace("-", "_")
    submit(submission, settings, real, invocation())
    _until_finished(cloud, settings, real, run_id)
    _proxy(cloud, "faults", {"inserts": [{"match": f"predictions_{owner}", "code": 403, "reason": "quotaExceeded"}]})
    from shared.core.errors import TransientError

    message = {"run_id": run_id, "chunk": 0, "attempt": 1}
    with pytest.raises(TransientError, match="Quota exceeded"):
        collect(message, settings, real, invocation())
    assert collect(message, settings, real, invocation()) == "collected"
    assert all_rows(cloud, run_id) == [("k", 1)]


# --- 5: fencing: a holder paused past its lease, another takes over -----------------------------


@pytest.mark.parametrize("where", ["staging", "load"])
def test_two_collectors_of_one_attempt_the_first_paused_past_its_lease(cloud: Endpoints, where: str) -> None:
    settings = manual_settings(cloud)  # 1 s leases
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(4)])
    submit(submission, settings, real, invocation())
    _until_finished(cloud, settings, real, run_id)
    if where == "staging":  # paused while reading the outputs
        paused = Paused(real.store, "open", lambda uri, *a, **k: "/outputs/" in uri)
        first = Ports(store=paused, jobs=real.jobs, warehouse=real.warehouse, bus=real.bus)
    else:  # paused right before its load job (after checking its claim)
        paused = Paused(real.warehouse, "load_once", lambda job_id, *a, **k: "predictions" in job_id)
        first = Ports(store=real.store, jobs=real.jobs, warehouse=paused, bus=real.bus)
    message = {"run_id": run_id, "chunk": 0, "attempt": 1}
    thread, outcome = _in_thread(lambda: collect(message, settings, first, invocation()))
    assert paused.paused.wait(30)
    time.sleep(settings.lease_seconds + 0.5)  # its lease lapses; a redelivery takes over
    assert collect(message, settings, real, invocation()) == "collected"
    paused.release.set()
    thread.join(60)
    assert isinstance(outcome["value"], LostClaim)  # it found out, and stopped
    assert len(_load_jobs(cloud, _key(run_id))) == 1  # one load
    assert all_rows(cloud, run_id) == [(f"k{i}", 1) for i in range(4)]  # every key once
    assert run_record(cloud, run_id, settings.work_bucket)["announced"] is True


def test_two_submitters_of_one_run_the_first_paused_past_its_lease(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(3)])
    # The first submitter looked for the job (none yet), then slept before creating it.
    paused = Paused(real.jobs, "find", after=True)
    first = Ports(store=real.store, jobs=paused, warehouse=real.warehouse, bus=real.bus)
    thread, outcome = _in_thread(lambda: submit(submission, settings, first, invocation()))
    assert paused.paused.wait(30)
    time.sleep(settings.lease_seconds + 0.5)
    assert poll(settings, real, invocation())["redriven"] == 1  # the poller takes the lapsed claim over
    paused.release.set()
    thread.join(60)
    assert outcome["value"] == "submitted"  # the run; its stale admitter stopped at LostClaim, before creating
    assert len(vertex_jobs(cloud, run_id)) == 1  # one Vertex job per attempt
    drive_until_complete(settings, real, run_id, cloud)
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1), ("k2", 1)]


# --- 4, 13: no dead ends; a failed attempt lets the next one in (through the deployed functions) --


def test_a_submitter_that_died_is_resumed_by_the_poller(cloud: Endpoints) -> None:
    name, _ = upload_requests(cloud, "dead/", jsonl([request_line(f"q{i}", f"k{i}") for i in range(3)]))
    blob = storage_client(cloud).bucket("gbp-input").get_blob(name)
    run_id = run_id_for_object(ObjectRef("gbp-input", name, str(blob.generation)))
    claimed = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    dead = Run(
        run_id, f"gs://gbp-input/{name}", "gemini-2.5-flash", generation=str(blob.generation), claimed_at=claimed
    )
    work = storage_client(cloud).bucket("gbp-work")
    work.blob(f"ledger/runs/{run_id}.json").upload_from_string(orjson.dumps(dead.to_json()))
    work.blob(f"ledger/active-runs/{run_id}").upload_from_string(b"{}")  # as its claim left it, then it died
    run = until_complete(cloud, run_id, timeout=90)  # the poller's resume message, then submit_request
    assert run["status"] == "COMPLETE" and run["resume_sent_at"]
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1), ("k2", 1)]


def test_a_429_on_create_does_not_strand_the_run(cloud: Endpoints) -> None:
    requests.post(f"{cloud.vertex}/_emulator/faults", json={"create": [429, 429]}, timeout=10).raise_for_status()
    _, run_id = upload_requests(cloud, "runs/", jsonl([request_line(f"q{i}", f"k{i}") for i in range(2)]))
    run = until_complete(cloud, run_id, timeout=120)
    assert run["status"] == "COMPLETE"
    assert len(vertex_jobs(cloud, run_id)) == 1 and all_rows(cloud, run_id) == [("k0", 1), ("k1", 1)]


# --- 8, 12: checks before anything is claimed; bad bytes -----------------------------------------


def test_bad_request_messages_claim_nothing(cloud: Endpoints, stack: Stack) -> None:
    url = stack.endpoints.functions["submit_request"]
    work = storage_client(cloud).bucket("gbp-work")
    for payload in (
        {"source": "gs://gbp-input/x.jsonl", "labels": {"Team": "a", "team": "b"}},
        {"source": "gs://gbp-input/x.jsonl", "labels": {f"k{i}": "v" for i in range(62)}},
        {"source": "gs://gbp-input/x.jsonl", "model": "Gemini Pro!"},
        {"source": "gs://no/x.jsonl"},
    ):
        message_id = str(time.time_ns())
        assert post_pubsub(url, "batch-requests", cloud.project, orjson.dumps(payload), message_id).status_code == 200
        assert work.get_blob(f"ledger/runs/{run_id_for_message('gbp-work', message_id)}.json") is None


def test_a_rejected_message_s_report_is_written_where_submit_request_may_write(cloud: Endpoints, stack: Stack) -> None:
    name, _ = upload_requests(cloud, "sources/", b"not json\n")
    message_id = str(time.time_ns())
    payload = orjson.dumps({"source": f"gs://gbp-input/{name}"})
    url = stack.endpoints.functions["submit_request"]
    assert post_pubsub(url, "batch-requests", cloud.project, payload, message_id).status_code == 200
    run_id = run_id_for_message("gbp-work", message_id)
    run = wait_for(lambda: (r := run_record(cloud, run_id)).get("status") == "REJECTED" and r)
    assert run["report_uri"] == f"gs://gbp-work/rejected/{run_id}.errors.json"
    assert storage_client(cloud).bucket("gbp-input").get_blob(f"rejected/{name}.errors.json") is None


def test_a_source_replaced_after_its_first_delivery_is_rejected_not_read_anew(cloud: Endpoints) -> None:
    from shared.services.submit import MESSAGE, Submission

    settings = manual_settings(cloud)
    name, _ = upload_requests(cloud, "sources/", jsonl([request_line("the first version", "k")]))
    bucket = storage_client(cloud).bucket("gbp-input")
    pinned = str(bucket.get_blob(name).generation)
    bucket.blob(name).upload_from_string(jsonl([request_line("a later version", "k")]))  # replaced meanwhile
    run_id = f"m{time.time_ns():020x}"[:21]
    sub = Submission(run_id, f"gs://gbp-input/{name}", pinned, origin=MESSAGE)
    assert submit(sub, settings, ports(settings), invocation()) == "rejected"
    report = orjson.loads(
        storage_client(cloud).bucket("gbp-manual").blob(f"rejected/{run_id}.errors.json").download_as_bytes()
    )
    assert "404" in report["error"] and report["generation"] == pinned


def test_a_latin_1_file_is_rejected_with_the_line_and_byte_not_a_crash(cloud: Endpoints) -> None:
    latin = b'{"key": "cafe", "request": {"contents": [{"role": "user", "parts": [{"text": "caf\xe9"}]}]}}\n'
    name, run_id = upload_requests(cloud, "runs/", jsonl([request_line("fine", "a")]) + latin)
    run = wait_for(lambda: (r := run_record(cloud, run_id)).get("status") == "REJECTED" and r)
    report = orjson.loads(
        storage_client(cloud).bucket("gbp-input").blob(f"rejected/{name}.errors.json").download_as_bytes()
    )
    assert report["invalid_by_reason"] == {"invalid_utf8": 1}
    assert (
        report["examples"]["invalid_utf8"][0]["line"] == 2 and "byte" in report["examples"]["invalid_utf8"][0]["detail"]
    )
    assert run["invalid"] == 1


def test_a_latin_1_line_is_kept_as_a_failed_row_when_invalid_lines_are_skipped(cloud: Endpoints) -> None:
    latin = b'{"key": "cafe", "request": {"contents": [{"role": "user", "parts": [{"text": "caf\xe9"}]}]}}\n'
    _, run_id = upload_requests(cloud, "skip/", jsonl([request_line("fine", "a")]) + latin)
    until_complete(cloud, run_id)
    rows = latest_rows(cloud, run_id)
    assert {k: r["outcome"] for k, r in rows.items()} == {"a": "SUCCEEDED", "cafe": "FAILED"}
    assert "invalid_utf8" in rows["cafe"]["error_message"]


# --- 10: work files are released only when their run is done -------------------------------------


def test_work_files_get_a_custom_time_only_once_their_run_is_complete(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(2)])
    submit(submission, settings, real, invocation())
    _until_finished(cloud, settings, real, run_id)
    gcs = storage_client(cloud)

    def work_files() -> list[Any]:
        return [
            b
            for prefix in ("staging", "rows", "outputs")
            for b in gcs.list_blobs("gbp-manual", prefix=f"{prefix}/{run_id}/")
        ]

    before = work_files()
    assert any("/outputs/" in f"/{b.name}" for b in before) and all(b.custom_time is None for b in before)
    drive_until_complete(settings, real, run_id, cloud)
    after = work_files()
    assert len(after) > len(before) and all(b.custom_time is not None for b in after)


# --- 14: clients under concurrent first requests -------------------------------------------------


@pytest.fixture
def cold_submit_request(cloud: Endpoints, stack: Stack) -> Iterator[tuple[str, Path]]:
    """A fresh submit_request process (8 request threads, like the local cloud's), stopped by PID."""
    spec = next(f for f in stack.wiring.functions if f.name == "submit_request")
    port = free_port()
    log_path = stack.state_dir / "logs" / f"cold-submit-request-{port}.log"
    env = {**os.environ, **cloud.env(), "PYTHONPATH": str(ROOT), **spec.env, "THREADS": "8"}
    exe = Path(sys.executable).parent / "functions-framework"
    argv = [str(exe), "--target", "submit_request", "--signature-type", "cloudevent", "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=spec.source, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port), timeout=30)
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_concurrent_first_requests_to_a_cold_function_share_its_clients(
    cloud: Endpoints, cold_submit_request: tuple[str, Path]
) -> None:
    url, log_path = cold_submit_request
    name, _ = upload_requests(cloud, "sources/", jsonl([request_line("q", "k")]))
    payload = orjson.dumps({"source": f"gs://gbp-input/{name}"})
    ids = [f"cold-{time.time_ns()}-{i}" for i in range(8)]
    barrier = threading.Barrier(len(ids))

    def deliver(message_id: str) -> int:
        barrier.wait()
        return post_pubsub(url, "batch-requests", cloud.project, payload, message_id).status_code

    replies: dict[str, int] = {}
    threads = [threading.Thread(target=lambda m=m: replies.__setitem__(m, deliver(m))) for m in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    log = log_path.read_text(errors="replace")
    assert "client has been closed" not in log and "Bad file descriptor" not in log
    assert sorted(replies.values()) == [200] * len(ids), log[-3000:]
    for message_id in ids:
        assert run_record(cloud, run_id_for_message("gbp-work", message_id)).get("status") in ("RUNNING", "COMPLETE")


# --- 7: network errors of every client are transient; one failing job never stops a tick ---------


def _vertex_faults(cloud: Endpoints, body: dict[str, Any] | None = None) -> None:
    url = f"{cloud.vertex}/_emulator/faults"
    reply = requests.post(url, json=body, timeout=10) if body else requests.delete(url, timeout=10)
    reply.raise_for_status()


def test_a_create_whose_connection_was_reset_after_creating_bills_once(cloud: Endpoints) -> None:
    settings = manual_settings(cloud, lease_seconds=2)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(2)])
    _vertex_faults(cloud, {"create": [{"fault": "reset-after", "labels": {"gbp_run": run_id}}]})
    assert submit(submission, settings, real, invocation()) == "submitted"  # the create's failure: the poller's
    assert len(vertex_jobs(cloud, run_id)) == 1  # created; the answer was lost
    # The attempt's claim stands for its lease: nobody creates it meanwhile.
    assert submit(submission, settings, real, invocation()) == "duplicate"
    assert poll(settings, real, invocation())["redriven"] == 0
    assert job_record(cloud, settings, run_id)["status"] == "CLAIMED"
    time.sleep(settings.lease_seconds + 0.3)
    assert poll(settings, real, invocation())["redriven"] == 1  # then the poller looks again
    assert job_record(cloud, settings, run_id)["status"] == "SUBMITTED"
    assert len(vertex_jobs(cloud, run_id)) == 1  # found by its labels and adopted
    drive_until_complete(settings, real, run_id, cloud)
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1)]


def test_poll_goes_on_past_a_job_whose_reads_keep_failing(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    broken, broken_id = manual_run(cloud, [request_line("q", "k")])
    fine, fine_id = manual_run(cloud, [request_line("q", "k")])
    submit(broken, settings, real, invocation())
    submit(fine, settings, real, invocation())
    _vertex_faults(cloud, {"get": [{"fault": "reset", "labels": {"gbp_run": broken_id}, "count": -1}]})
    try:
        errors = 0
        for _ in range(200):
            errors += poll(settings, real, invocation())["errors"]
            if job_record(cloud, settings, fine_id)["status"] == "FINISHED":
                break
            time.sleep(0.1)
        assert job_record(cloud, settings, fine_id)["status"] == "FINISHED"  # followed despite the broken one
        assert errors >= 1 and job_record(cloud, settings, broken_id)["status"] == "SUBMITTED"
    finally:
        _vertex_faults(cloud)
    drive_until_complete(settings, real, broken_id, cloud)  # and once reads work again, it completes
