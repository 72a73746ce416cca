"""The pipeline on the local cloud: upload -> jobs -> rows in BigQuery, exactly once, retries included."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import requests
from google.cloud import bigquery

from local.clients import bigquery_client, publisher, storage_client
from local.stack import Endpoints
from shared.adapters import ports
from shared.core.ids import run_id_for_message
from shared.ports import Ports
from shared.services.collect import collect
from shared.services.poll import poll
from shared.services.submit import submit
from tests.integration.conftest import wait_for
from tests.integration.helpers import (
    Crash,
    CrashOnce,
    all_rows,
    drive_until_complete,
    invocation,
    job_record,
    jsonl,
    latest_rows,
    manual_run,
    manual_settings,
    post_pubsub,
    query_rows,
    request_line,
    run_record,
    until_complete,
    upload_requests,
    vertex_jobs,
)


def test_pipeline_a_dropped_file_yields_one_row_per_request(cloud: Endpoints) -> None:
    lines = [
        request_line("What is BigQuery?", "plain"),
        request_line("JSON please", "json", responseMimeType="application/json"),
        request_line("Long answer", "short", maxOutputTokens=4),
        request_line("[[emulator:400]] bad", "bad"),
        request_line("[[emulator:block]] no", "blocked"),
    ]
    _, run_id = upload_requests(cloud, "runs/", jsonl(lines))
    run = until_complete(cloud, run_id)
    assert (run["status"], run["chunks"], run["requests"]) == ("COMPLETE", 1, 5)
    rows = latest_rows(cloud, run_id)
    assert set(rows) == {"plain", "json", "short", "bad", "blocked"}
    assert {k: r["outcome"] for k, r in rows.items()} == {
        "plain": "SUCCEEDED", "json": "SUCCEEDED", "short": "TRUNCATED", "bad": "FAILED", "blocked": "BLOCKED",
    }  # fmt: skip
    assert "What is BigQuery?" in rows["plain"]["response_text"]
    assert rows["json"]["response_json"] == {"answer": "JSON please"}
    assert (
        rows["plain"]["total_tokens"]
        == rows["plain"]["prompt_tokens"] + rows["plain"]["candidates_tokens"] + rows["plain"]["thoughts_tokens"]
    )
    assert (rows["bad"]["error_code"], rows["bad"]["retryable"], rows["bad"]["attempt"]) == (400, False, 1)
    assert all_rows(cloud, run_id) == sorted((k, 1) for k in rows)  # exactly once
    jobs = query_rows(cloud, "SELECT state, requests FROM gbp.batch_jobs WHERE run_id = @run", run_id)
    assert jobs == [{"state": "JOB_STATE_SUCCEEDED", "requests": 5}]


def test_pipeline_splits_past_the_job_limits_and_assigns_missing_keys(cloud: Endpoints) -> None:
    lines = [request_line(f"question {i}") for i in range(8)]  # no keys at all
    _, run_id = upload_requests(cloud, "tiny/", jsonl(lines))  # this deployment allows 3 requests per job
    run = until_complete(cloud, run_id)
    assert (run["chunks"], run["requests"]) == (3, 8)
    rows = latest_rows(cloud, run_id)
    assert sorted(rows) == [f"line-{i:07d}" for i in range(1, 9)]
    assert all(r["outcome"] == "SUCCEEDED" for r in rows.values())
    assert rows["line-0000005"]["response_text"].endswith("question 4")
    assert len(vertex_jobs(cloud, run_id)) == 3


def test_pipeline_rejects_an_invalid_file_with_a_report_and_submits_nothing(cloud: Endpoints) -> None:
    data = jsonl([request_line("fine", "a")]) + b"not json\n" + jsonl([{"request": {"contents": []}}])
    name, run_id = upload_requests(cloud, "runs/", data)
    run = wait_for(lambda: (r := run_record(cloud, run_id)).get("status") == "REJECTED" and r)
    report_blob = storage_client(cloud).bucket("gbp-input").blob(f"rejected/{name}.errors.json")
    report = orjson.loads(report_blob.download_as_bytes())
    assert run["report_uri"] == f"gs://gbp-input/rejected/{name}.errors.json"
    assert report["invalid_by_reason"] == {"contents_empty": 1, "invalid_json": 1}
    assert [e["line"] for e in report["examples"]["invalid_json"]] == [2]
    assert storage_client(cloud).bucket("gbp-input").blob(name).exists()  # the original is kept
    assert vertex_jobs(cloud, run_id) == []
    assert all_rows(cloud, run_id) == []


def test_pipeline_skip_invalid_lines_submits_the_rest_and_keeps_failed_rows(cloud: Endpoints) -> None:
    data = jsonl([request_line("fine", "a")]) + b"not json\n" + jsonl([request_line("also fine", "b")])
    _, run_id = upload_requests(cloud, "skip/", data)
    until_complete(cloud, run_id)
    rows = latest_rows(cloud, run_id)
    assert {k: r["outcome"] for k, r in rows.items()} == {"a": "SUCCEEDED", "b": "SUCCEEDED", "line-0000002": "FAILED"}
    assert rows["line-0000002"]["error_status"] == "INVALID_REQUEST"
    assert "line 2: invalid_json" in rows["line-0000002"]["error_message"]


def test_pipeline_retries_retryable_rows_and_marks_missing_ones(cloud: Endpoints) -> None:
    lines = [
        request_line(f"[[emulator:429-once]] busy {time.time_ns()}", "busy"),
        request_line(f"[[emulator:500-once]] flaky {time.time_ns()}", "flaky"),
        request_line("[[emulator:missing]] gone", "gone"),
        request_line("fine", "fine"),
    ]
    _, run_id = upload_requests(cloud, "runs/", jsonl(lines))
    until_complete(cloud, run_id, timeout=90)
    rows = latest_rows(cloud, run_id)
    assert (rows["busy"]["outcome"], rows["busy"]["attempt"]) == ("SUCCEEDED", 2)
    assert (rows["flaky"]["outcome"], rows["flaky"]["attempt"]) == ("SUCCEEDED", 2)
    assert (rows["gone"]["outcome"], rows["gone"]["attempt"]) == ("MISSING", 3)  # retried up to MAX_ATTEMPTS
    assert (rows["fine"]["outcome"], rows["fine"]["attempt"]) == ("SUCCEEDED", 1)
    assert all_rows(cloud, run_id) == sorted(
        [("busy", 1), ("busy", 2), ("flaky", 1), ("flaky", 2), ("gone", 1), ("gone", 2), ("gone", 3), ("fine", 1)]
    )


def test_pipeline_bq_source_through_submit_request(cloud: Endpoints) -> None:
    import io

    bq = bigquery_client(cloud)
    table = f"{cloud.project}.gbp.requests_{time.time_ns()}"
    schema = [bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("request", "JSON")]
    bq.create_table(bigquery.Table(table, schema=schema))
    body = jsonl([{"key": f"bq-{i}", "request": request_line(f"from bigquery {i}")["request"]} for i in range(3)])
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema)
    bq.load_table_from_file(io.BytesIO(body), table, job_config=config).result()
    client = publisher(cloud)
    message_id = client.publish(
        client.topic_path(cloud.project, "batch-requests"), orjson.dumps({"source": f"bq://{table}"})
    ).result()
    run_id = run_id_for_message("gbp-work", message_id)
    until_complete(cloud, run_id)
    rows = latest_rows(cloud, run_id)
    assert sorted(rows) == ["bq-0", "bq-1", "bq-2"] and all(r["outcome"] == "SUCCEEDED" for r in rows.values())


def test_pipeline_bad_request_messages_are_acked_not_retried(cloud: Endpoints, stack: Any) -> None:
    url = stack.endpoints.functions["submit_request"]
    for payload in (b"not json", orjson.dumps({"source": "ftp://nope"}), orjson.dumps(["a"])):
        reply = post_pubsub(url, "batch-requests", cloud.project, payload)
        assert reply.status_code == 200


def test_pipeline_same_finalize_event_five_times_concurrently_creates_one_job_per_chunk(
    cloud: Endpoints, stack: Any
) -> None:
    lines = [request_line(f"q{i}", f"k{i}") for i in range(7)]
    name, run_id = upload_requests(cloud, "tiny/", jsonl(lines))  # 3 chunks; the bridge delivers it once too
    blob = storage_client(cloud).bucket("gbp-input").get_blob(name)
    url = stack.endpoints.functions["submit_batch_tiny"]
    body = orjson.dumps(
        {"bucket": "gbp-input", "name": name, "generation": str(blob.generation), "size": str(blob.size)}
    )
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"finalize-{blob.generation}",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-source": "//storage.googleapis.com/projects/_/buckets/gbp-input",
        "ce-subject": f"objects/{name}",
        "ce-time": datetime.now(UTC).isoformat(),
        "content-type": "application/json",
    }

    def deliver() -> int:
        return requests.post(url, data=body, headers=headers, timeout=120).status_code

    replies: list[int] = []
    threads = [threading.Thread(target=lambda: replies.append(deliver())) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(replies) <= {200, 500}  # 500: another delivery holds the claim; Eventarc retries those
    wait_for(
        lambda: deliver() == 200 and run_record(cloud, run_id).get("status") in ("RUNNING", "COMPLETE"), interval=0.5
    )
    until_complete(cloud, run_id)  # its jobs are created as admission allows (MAX_CONCURRENT_JOBS)
    assert len(vertex_jobs(cloud, run_id)) == 3  # one per chunk, however often the event came
    assert all_rows(cloud, run_id) == sorted((f"k{i}", 1) for i in range(7))


def test_pipeline_batch_finished_five_times_loads_each_row_once(cloud: Endpoints, stack: Any) -> None:
    lines = [request_line(f"q{i}", f"k{i}") for i in range(4)]
    _, run_id = upload_requests(cloud, "runs/", jsonl(lines))
    until_complete(cloud, run_id)
    job = orjson.loads(
        storage_client(cloud)
        .bucket("gbp-work")
        .blob(f"ledger/jobs/{run_id}/{run_id}-c0000-a1.json")
        .download_as_bytes()
    )
    message = orjson.dumps(
        {"run_id": run_id, "chunk": 0, "attempt": 1, "job_name": job["job_name"], "location": job["location"]}
    )
    url = stack.endpoints.functions["collect_results"]
    replies: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: replies.append(post_pubsub(url, "batch-finished", cloud.project, message).status_code)
        )
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == [200] * 5
    assert all_rows(cloud, run_id) == sorted((f"k{i}", 1) for i in range(4))


# --- in-process: crashes and job faults, with real adapters and their own ledger bucket -------------


def test_pipeline_crash_after_create_before_ledger_write_bills_once(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(3)])

    def recording_submission(uri: str, data: bytes, **_: Any) -> bool:
        return "/ledger/jobs/" in uri and b'"SUBMITTED"' in data

    store = CrashOnce(real.store, "write", recording_submission, after=False)
    crashing = Ports(store=store, jobs=real.jobs, warehouse=real.warehouse, bus=real.bus)
    with pytest.raises(Crash):
        submit(submission, settings, crashing, invocation())
    assert len(vertex_jobs(cloud, run_id)) == 1  # created, but the ledger does not know
    time.sleep(settings.lease_seconds + 0.2)
    assert submit(submission, settings, real, invocation()) == "duplicate"  # the redelivery: the run is started
    poll(settings, real, invocation())  # an attempt left CLAIMED is looked for again (found by its labels)
    jobs = vertex_jobs(cloud, run_id)
    assert len(jobs) == 1 and job_record(cloud, settings, run_id)["job_name"] == jobs[0].name  # billed once
    drive_until_complete(settings, real, run_id, cloud)
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1), ("k2", 1)]


def test_pipeline_crash_during_the_load_loses_and_duplicates_nothing(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(3)])
    submit(submission, settings, real, invocation())
    crashing = Ports(
        store=real.store, jobs=real.jobs, bus=real.bus,
        warehouse=CrashOnce(real.warehouse, "load_once", lambda job_id, uri, table, *_: table == "predictions"),
    )  # fmt: skip
    record = wait_for(
        lambda: poll(settings, real, invocation()) and job_record(cloud, settings, run_id)["status"] == "FINISHED"
    )
    del record
    with pytest.raises(Crash):  # the rows are in BigQuery, the ledger does not know
        collect({"run_id": run_id, "chunk": 0, "attempt": 1}, settings, crashing, invocation())
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1), ("k2", 1)]
    time.sleep(settings.lease_seconds + 0.2)
    assert collect({"run_id": run_id, "chunk": 0, "attempt": 1}, settings, real, invocation()) == "collected"
    assert collect({"run_id": run_id, "chunk": 0, "attempt": 1}, settings, real, invocation()) == "duplicate"
    assert all_rows(cloud, run_id) == [("k0", 1), ("k1", 1), ("k2", 1)]
    assert run_record(cloud, run_id, settings.work_bucket)["announced"] is True


@pytest.mark.parametrize("fault", ["partial", "fail", "expire"])
def test_pipeline_job_that_ends_badly_keeps_its_rows_and_retries_the_rest(cloud: Endpoints, fault: str) -> None:
    settings = manual_settings(cloud)
    real = ports(settings)
    once = f"[[emulator:429-once]] busy {fault} {time.time_ns()}"  # -once faults remember key+request
    lines = [request_line(f"q{i}", f"k{i}") for i in range(6)] + [request_line(once, "busy")]
    submission, run_id = manual_run(cloud, lines)
    rule = {"jobs": [{"labels": {"gbp_run": run_id, "gbp_attempt": "1"}, "faults": {fault: "true"}, "count": 1}]}
    requests.post(f"{cloud.vertex}/_emulator/faults", json=rule, timeout=10).raise_for_status()
    submit(submission, settings, real, invocation())
    drive_until_complete(settings, real, run_id, cloud)
    first = job_record(cloud, settings, run_id)
    assert (
        first["vertex_state"]
        == {"partial": "JOB_STATE_PARTIALLY_SUCCEEDED", "fail": "JOB_STATE_FAILED", "expire": "JOB_STATE_EXPIRED"}[
            fault
        ]
    )
    attempt_one = query_rows(
        cloud, "SELECT request_key, outcome FROM gbp.predictions WHERE run_id = @run AND attempt = 1", run_id
    )
    assert len(attempt_one) == 7  # every key has its attempt-1 row: kept output, or MISSING
    if fault == "expire":
        assert {r["outcome"] for r in attempt_one} == {"MISSING"}
    if fault == "fail":
        assert {"MISSING", "SUCCEEDED"} <= {r["outcome"] for r in attempt_one}
    rows = latest_rows(cloud, run_id)
    assert len(rows) == 7 and all(r["outcome"] == "SUCCEEDED" for r in rows.values()), {
        k: (r["outcome"], r["attempt"]) for k, r in rows.items()
    }
    # PARTIALLY_SUCCEEDED ran it (429) -> 2; EXPIRED ran nothing -> it fails on 2, succeeds on 3.
    expected = {"partial": {2}, "expire": {3}, "fail": {2, 3}}[fault]
    assert rows["busy"]["attempt"] in expected


def test_pipeline_stuck_job_is_cancelled_and_resubmitted(cloud: Endpoints) -> None:
    settings = manual_settings(cloud, run_timeout_seconds=1)
    real = ports(settings)
    submission, run_id = manual_run(cloud, [request_line(f"q{i}", f"k{i}") for i in range(3)])
    rule = {
        "jobs": [{"labels": {"gbp_run": run_id, "gbp_attempt": "1"}, "faults": {"stuck-running": "true"}, "count": 1}]
    }
    requests.post(f"{cloud.vertex}/_emulator/faults", json=rule, timeout=10).raise_for_status()
    submit(submission, settings, real, invocation())
    drive_until_complete(settings, real, run_id, cloud)
    first = job_record(cloud, settings, run_id)
    assert first["stuck"] is True and first["vertex_state"] == "JOB_STATE_CANCELLED"
    rows = latest_rows(cloud, run_id)
    assert {(k, r["outcome"], r["attempt"]) for k, r in rows.items()} == {(f"k{i}", "SUCCEEDED", 2) for i in range(3)}


def test_function_answers_500_on_a_transient_failure_and_succeeds_when_retried(
    cloud: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions_framework import create_app

    env = {
        "GCP_PROJECT": cloud.project, "VERTEX_LOCATION": cloud.location, "BQ_LOCATION": cloud.location,
        "INPUT_BUCKET": "gbp-input", "WORK_BUCKET": "gbp-manual", "BQ_DATASET": "gbp",
        "BATCH_REQUESTS_TOPIC": "batch-results", "BATCH_FINISHED_TOPIC": "batch-results",
        "BATCH_RESULTS_TOPIC": "batch-results", "INPUT_PREFIX": "manual/", "LEASE_SECONDS": "600",
        "SKIP_INVALID_LINES": "true", "LOAD_WINDOW_SECONDS": "0",  # the rejected line's row loaded at once
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = __import__("pathlib").Path(__file__).parents[2]
    client = create_app(
        "submit_batch", str(root / "functions" / "submit_batch" / "main.py"), "cloudevent"
    ).test_client()
    name, run_id = upload_requests(cloud, "manual/", jsonl([request_line("hello", "a")]) + b"{oops\n")
    blob = storage_client(cloud).bucket("gbp-input").get_blob(name)
    event = {
        "headers": {
            "ce-specversion": "1.0",
            "ce-id": "e1",
            "ce-type": "google.cloud.storage.object.v1.finalized",
            "ce-source": "//storage.googleapis.com/projects/_/buckets/gbp-input",
            "ce-time": datetime.now(UTC).isoformat(),
            "content-type": "application/json",
        },
        "data": orjson.dumps({"bucket": "gbp-input", "name": name, "generation": str(blob.generation)}),
    }  # fmt: skip
    # BigQuery refuses the load of the invalid line's row for quota: a transient failure.
    match = {"inserts": [{"match": f"invalid_{run_id}", "code": 403, "reason": "quotaExceeded"}]}
    requests.post(f"{cloud.bigquery}/_proxy/faults", json=match, timeout=10).raise_for_status()
    assert client.post("/", **event).status_code == 500  # retried by the trigger
    assert vertex_jobs(cloud, run_id) == []  # its chunk waits queued: nothing is created before the run starts
    # The failed delivery released its claims: the retry goes on at once, not after a 600 s lease.
    assert client.post("/", **event).status_code == 200  # the retry submits
    assert client.post("/", **event).status_code == 200  # and a duplicate is acked
    assert len(vertex_jobs(cloud, run_id)) == 1


def test_adapter_reads_a_job_the_sdk_cannot_parse(cloud: Endpoints) -> None:
    settings = manual_settings(cloud)
    source = f"gs://gbp-input/{upload_requests(cloud, 'manual/', jsonl([request_line('hi', 'a')]))[0]}"
    labels = {"gbp_run": f"details-{time.time_ns()}", "emulator-error-details": "true"}
    jobs = ports(settings).jobs
    job = jobs.create(model="gemini-2.5-flash", input_uri=source, dest_prefix="gs://gbp-manual/outputs/details",
                      display_name="details", labels=labels, location=cloud.location)  # fmt: skip
    # batches.get raises on structured error.details (1.56: AttributeError, 3.x: ValidationError);
    # the adapter reads the job over REST instead.
    done = wait_for(lambda: (j := jobs.get(job.name, cloud.location)).state == "JOB_STATE_FAILED" and j)
    assert done.error is not None and "Quota exceeded" in done.error.message and done.error.code == 8


def test_store_copies_an_object_to_another_bucket_server_side(cloud: Endpoints) -> None:
    """How an attempt recorded before the Vertex bucket existed moves there (attempts.py)."""
    store = ports(manual_settings(cloud)).store
    data = jsonl([request_line(f"q{i}", f"k{i}") for i in range(2000)])  # ~150 KB
    name, _ = upload_requests(cloud, "manual/", data)
    target = f"gs://gbp-manual/staging/copied-{time.time_ns()}.jsonl"
    store.copy(f"gs://gbp-input/{name}", target)
    found = store.read(target)
    assert found is not None and found[0] == data
