"""google-genai (1.56.0 and the latest) against our Vertex batch emulator: every call, state and fault."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from google.genai import errors, types

from local.clients import bigquery_client, genai_client, storage_client
from local.stack import Endpoints
from shared.core.normalize import Normalizer, RowContext
from tests.integration.conftest import wait_for

FIXTURES = Path(__file__).parent.parent / "fixtures"
REAL_OUTPUT = FIXTURES / "outputs" / "vertex_real.jsonl"
REAL_REQUESTS = FIXTURES / "requests_real.jsonl"
FINAL = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
}
_counter = itertools.count()


def _request(text: str, key: str | None = None, **config: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}
    if config:
        line["request"]["generationConfig"] = config
    if key is not None:
        line["key"] = key
    return line


def _upload(cloud: Endpoints, lines: list[dict[str, Any]] | bytes) -> str:
    name = f"vertex-tests/{next(_counter)}-{time.time_ns()}.jsonl"
    data = lines if isinstance(lines, bytes) else b"".join(orjson.dumps(x) + b"\n" for x in lines)
    storage_client(cloud).bucket("gbp-input").blob(name).upload_from_string(data)
    return f"gs://gbp-input/{name}"


def _create(cloud: Endpoints, src: str, labels: dict[str, str] | None = None) -> tuple[Any, str]:
    client = genai_client(cloud)
    dest = f"gs://gbp-output/vertex-tests/{next(_counter)}-{time.time_ns()}"
    config = types.CreateBatchJobConfig(
        dest=dest,
        display_name="test",
        http_options=types.HttpOptions(extra_body={"labels": labels or {}}),
    )
    job = client.batches.create(model="gemini-2.5-flash", src=types.BatchJobSource(gcs_uri=[src]), config=config)
    return job, dest


def _state(job: Any) -> str:
    return str(job.state.value if hasattr(job.state, "value") else job.state)


def _finish(cloud: Endpoints, name: str, timeout: float = 30) -> Any:
    client = genai_client(cloud)
    return wait_for(lambda: (j := client.batches.get(name=name)) and _state(j) in FINAL and j, timeout)


def _outputs(cloud: Endpoints, dest: str) -> dict[str, bytes]:
    bucket, prefix = dest.removeprefix("gs://").split("/", 1)
    return {b.name: b.download_as_bytes() for b in storage_client(cloud).list_blobs(bucket, prefix=prefix + "/")}


def _lines(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for data in files.values() for line in data.splitlines() if line]


def _raw_job(cloud: Endpoints, name: str) -> dict[str, Any]:
    reply = requests.get(f"{cloud.vertex}/v1/{name}", timeout=10)
    reply.raise_for_status()
    return dict(reply.json())


def _shape(value: Any) -> Any:
    """Keys and nesting of a JSON value (types of leaves; lists by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def test_vertex_job_goes_through_every_state_and_writes_where_vertex_does(cloud: Endpoints) -> None:
    job, dest = _create(
        cloud, _upload(cloud, REAL_REQUESTS.read_bytes()), {"run_id": "states", "emulator-slow": "true"}
    )
    assert _state(job) == "JOB_STATE_QUEUED"
    assert job.name.startswith(f"projects/{cloud.project}/locations/{cloud.location}/batchPredictionJobs/")
    client = genai_client(cloud)
    seen = [_state(job)]
    deadline = time.monotonic() + 30
    while seen[-1] not in FINAL and time.monotonic() < deadline:
        state = _state(client.batches.get(name=job.name))
        if state != seen[-1]:
            seen.append(state)
    assert seen == ["JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    done = client.batches.get(name=job.name)
    assert done.done is True and done.create_time and done.start_time and done.end_time
    files = _outputs(cloud, dest)
    [name] = files
    assert name.startswith(dest.split("/", 3)[3] + "/prediction-model-") and name.endswith("/predictions.jsonl")
    raw = _raw_job(cloud, job.name)
    assert raw["outputInfo"]["gcsOutputDirectory"] == f"gs://gbp-output/{name.rsplit('/', 1)[0]}"
    assert raw["completionStats"] == {"successfulCount": "2"}  # strings; zero counters left out


def test_vertex_output_lines_have_the_shape_of_real_vertex_output(cloud: Endpoints) -> None:
    job, dest = _create(cloud, _upload(cloud, REAL_REQUESTS.read_bytes()))
    _finish(cloud, job.name)
    emulated = {line["key"]: line for line in _lines(_outputs(cloud, dest))}
    real = {line["key"]: line for line in map(orjson.loads, REAL_OUTPUT.read_bytes().splitlines())}
    assert emulated.keys() == real.keys()
    for key, line in real.items():
        assert list(emulated[key]) == list(line)  # same members, same order
        assert emulated[key]["request"] == line["request"]  # the echo, with the nulls Vertex adds
        assert _shape(emulated[key]["response"]) == _shape(line["response"])
    assert all("offline-emulator" in line["response"]["modelVersion"] for line in emulated.values())


def test_vertex_emulator_answers_are_read_by_our_normalizer(cloud: Endpoints) -> None:
    lines = [
        _request("plain question", "plain"),
        _request("json please", "json", responseMimeType="application/json"),
        _request(
            "with schema",
            "schema",
            responseMimeType="application/json",
            responseSchema={"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "n": {"type": "INTEGER"}}},
        ),
        _request("a long answer please", "short", maxOutputTokens=3),
        _request("two of them", "two", candidateCount=2),
        _request("think first", "thoughts", thinkingConfig={"includeThoughts": True}),
        _request("[[emulator:400]] bad", "e400"),
        _request("[[emulator:429]] slow down", "e429"),
        _request("[[emulator:500]] boom", "e500"),
        _request("[[emulator:block]] nope", "blocked"),
        _request("[[emulator:safety]] unsafe", "safety"),
        _request("[[emulator:missing]] gone", "missing"),
    ]
    job, dest = _create(cloud, _upload(cloud, lines))
    _finish(cloud, job.name)
    normalizer = Normalizer(RowContext(job_name=job.name))
    rows = {
        r["request_key"]: r
        for data in _outputs(cloud, dest).values()
        for r in map(normalizer.row, filter(None, data.splitlines()))
    }
    assert "missing" not in rows and len(rows) == len(lines) - 1
    assert rows["plain"]["outcome"] == "SUCCEEDED" and "plain question" in rows["plain"]["response_text"]
    assert rows["json"]["response_json"] == {"answer": "json please"}
    assert set(rows["schema"]["response_json"]) == {"name", "n"} and isinstance(
        rows["schema"]["response_json"]["n"], int
    )
    assert (rows["short"]["outcome"], rows["short"]["candidates_tokens"]) == ("TRUNCATED", 3)
    assert rows["two"]["candidate_count"] == 2
    assert rows["thoughts"]["thought_text"] and rows["thoughts"]["response_text"]
    assert [
        (rows[k]["error_code"], rows[k]["error_status"], rows[k]["retryable"]) for k in ("e400", "e429", "e500")
    ] == [
        (400, "INVALID_ARGUMENT", False),
        (429, "RESOURCE_EXHAUSTED", True),
        (500, "INTERNAL", True),
    ]
    assert (rows["blocked"]["outcome"], rows["blocked"]["block_reason"]) == ("BLOCKED", "PROHIBITED_CONTENT")
    assert (rows["safety"]["outcome"], rows["safety"]["finish_reason"]) == ("BLOCKED", "SAFETY")
    for row in rows.values():
        if row["outcome"] != "FAILED":
            assert row["total_tokens"] == sum(
                row[c] or 0 for c in ("prompt_tokens", "candidates_tokens", "thoughts_tokens")
            ), row["request_key"]
    raw = _raw_job(cloud, job.name)
    assert raw["completionStats"] == {"successfulCount": "8", "failedCount": "3"}
    assert raw["state"] == "JOB_STATE_SUCCEEDED"  # as on Vertex: SUCCEEDED with failed rows


def test_vertex_output_order_is_not_input_order(cloud: Endpoints) -> None:
    lines = [_request(f"question {i}", f"k{i:03d}") for i in range(40)]
    job, dest = _create(cloud, _upload(cloud, lines))
    _finish(cloud, job.name)
    keys = [line["key"] for line in _lines(_outputs(cloud, dest))]
    assert sorted(keys) == [f"k{i:03d}" for i in range(40)] and keys != sorted(keys)


def test_vertex_once_faults_fail_only_the_first_time(cloud: Endpoints) -> None:
    src = _upload(cloud, [_request("[[emulator:429-once]] retry me", "r1")])
    first, dest1 = _create(cloud, src)
    _finish(cloud, first.name)
    second, dest2 = _create(cloud, src)
    _finish(cloud, second.name)
    assert _lines(_outputs(cloud, dest1))[0]["status"].startswith("Too Many Requests: ")
    assert _lines(_outputs(cloud, dest2))[0]["status"] == ""


def test_vertex_list_filters_by_label_and_state_and_pages(cloud: Endpoints) -> None:
    src = _upload(cloud, [_request("hi", "a")])
    run = f"list-{time.time_ns()}"
    names = {_create(cloud, src, {"run_id": run, "chunk": str(i)})[0].name for i in range(3)}
    client = genai_client(cloud)
    found = {
        j.name
        for j in client.batches.list(config=types.ListBatchJobsConfig(filter=f'labels.run_id="{run}"', page_size=1))
    }
    assert found == names
    one = list(
        client.batches.list(config=types.ListBatchJobsConfig(filter=f'labels.run_id="{run}" AND labels.chunk="1"'))
    )
    assert len(one) == 1
    for name in names:
        _finish(cloud, name)
    succeeded = {
        j.name
        for j in client.batches.list(
            config=types.ListBatchJobsConfig(filter=f'labels.run_id="{run}" AND state="JOB_STATE_SUCCEEDED"')
        )
    }
    assert succeeded == names
    page = requests.get(
        f"{cloud.vertex}/v1/projects/{cloud.project}/locations/{cloud.location}/batchPredictionJobs",
        params={"pageSize": 2, "filter": f'labels.run_id="{run}"'},
        timeout=10,
    ).json()
    assert len(page["batchPredictionJobs"]) == 2 and page["nextPageToken"]


def test_vertex_cancel_stuck_job_then_delete(cloud: Endpoints) -> None:
    job, _ = _create(cloud, _upload(cloud, [_request("hi", "a")]), {"emulator-stuck-running": "true"})
    client = genai_client(cloud)
    wait_for(lambda: _state(client.batches.get(name=job.name)) == "JOB_STATE_RUNNING")
    time.sleep(0.5)
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_RUNNING"  # stuck
    client.batches.cancel(name=job.name)
    assert _state(_finish(cloud, job.name)) == "JOB_STATE_CANCELLED"
    deleted = client.batches.delete(name=job.name)
    assert deleted.done is True
    with pytest.raises(errors.ClientError) as missing:
        client.batches.get(name=job.name)
    assert missing.value.code == 404


def test_vertex_stuck_queued_stays_queued(cloud: Endpoints) -> None:
    job, _ = _create(cloud, _upload(cloud, [_request("hi", "a")]), {"emulator-stuck-queued": "true"})
    client = genai_client(cloud)  # keep it: google-genai 3.x closes its HTTP client when collected
    time.sleep(0.5)
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_QUEUED"
    client.batches.cancel(name=job.name)
    assert _state(_finish(cloud, job.name)) == "JOB_STATE_CANCELLED"


@pytest.mark.parametrize(
    ("fault", "state", "has_error"),
    [
        ("fail", "JOB_STATE_FAILED", True),
        ("expire", "JOB_STATE_EXPIRED", True),
        ("cancel", "JOB_STATE_CANCELLED", False),
        ("partial", "JOB_STATE_PARTIALLY_SUCCEEDED", False),
    ],
)
def test_vertex_job_faults_end_in_their_state(cloud: Endpoints, fault: str, state: str, has_error: bool) -> None:
    lines = [_request(f"q{i}", f"k{i}") for i in range(10)]
    job, dest = _create(cloud, _upload(cloud, lines), {f"emulator-{fault}": "true"})
    done = _finish(cloud, job.name)
    assert _state(done) == state
    assert done.done is (state != "JOB_STATE_PARTIALLY_SUCCEEDED")  # the SDK trap, reproduced
    assert (done.error is not None) is has_error
    written = _lines(_outputs(cloud, dest))
    stats = _raw_job(cloud, job.name).get("completionStats", {})
    if fault in ("fail", "cancel"):
        assert 0 < len(written) < 10 and stats["incompleteCount"] == str(10 - len(written))
    if fault == "expire":
        assert written == [] and stats == {}
    if fault == "partial":
        assert len(written) == 10


def test_vertex_multi_file_and_incremental_output(cloud: Endpoints) -> None:
    lines = [_request(f"q{i}", f"k{i}") for i in range(30)]
    job, dest = _create(
        cloud, _upload(cloud, lines), {"emulator-files": "3", "emulator-incremental": "true", "emulator-slow": "true"}
    )
    client = genai_client(cloud)
    early = wait_for(lambda: _state(client.batches.get(name=job.name)) == "JOB_STATE_RUNNING" and _outputs(cloud, dest))
    assert _state(client.batches.get(name=job.name)) == "JOB_STATE_RUNNING"  # output exists before the end
    assert 0 < len(_lines(early)) < 30
    _finish(cloud, job.name)
    files = _outputs(cloud, dest)
    assert len(files) == 4 and all(name.endswith(".jsonl") for name in files)
    assert sorted(line["key"] for line in _lines(files)) == sorted(f"k{i}" for i in range(30))


def test_vertex_create_errors_surface_as_sdk_errors(cloud: Endpoints) -> None:
    requests.post(f"{cloud.vertex}/_emulator/faults", json={"create": [429, 503]}, timeout=10).raise_for_status()
    src = _upload(cloud, [_request("hi", "a")])
    with pytest.raises(errors.ClientError) as first:
        _create(cloud, src)
    with pytest.raises(errors.ServerError) as second:
        _create(cloud, src)
    assert (first.value.code, second.value.code) == (429, 503)
    job, _ = _create(cloud, src)  # the queue is drained
    _finish(cloud, job.name)


def test_vertex_error_details_with_structured_objects(cloud: Endpoints) -> None:
    job, _ = _create(cloud, _upload(cloud, [_request("hi", "a")]), {"emulator-error-details": "true"})
    client = genai_client(cloud)
    raw = wait_for(lambda: (r := _raw_job(cloud, job.name))["state"] in FINAL and r)
    assert raw["state"] == "JOB_STATE_FAILED"
    assert raw["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    # The SDK cannot read such a job (1.56: AttributeError; 3.x: ValidationError): the pipeline must cope.
    with pytest.raises(Exception):  # noqa: B017
        client.batches.get(name=job.name)


def test_vertex_rejects_bad_requests_like_vertex(cloud: Endpoints) -> None:
    base = f"{cloud.vertex}/v1/projects/{cloud.project}/locations/{cloud.location}/batchPredictionJobs"
    bad_label = {
        "model": "publishers/google/models/gemini-2.5-flash",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://gbp-input/x.jsonl"]}},
        "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://gbp-output/x"}},
        "labels": {"Run": "UPPER"},
    }
    reply = requests.post(base, json=bad_label, timeout=10)
    assert reply.status_code == 400 and reply.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert requests.get(f"{base}/999", timeout=10).status_code == 404
    assert requests.get(base, params={"filter": "bogus"}, timeout=10).status_code == 400


def test_vertex_bigquery_source_and_destination(cloud: Endpoints) -> None:
    from google.cloud import bigquery

    bq = bigquery_client(cloud)
    dataset = f"vertex_bq_{time.time_ns()}"
    bq.create_dataset(dataset)
    table = f"{cloud.project}.{dataset}.requests"
    schema = [bigquery.SchemaField("request", "JSON"), bigquery.SchemaField("customer_id", "STRING")]
    bq.create_table(bigquery.Table(table, schema=schema))
    rows = [{"request": _request(f"question {i}")["request"], "customer_id": f"c{i}"} for i in range(3)]
    import io

    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema)
    bq.load_table_from_file(io.BytesIO(body), table, job_config=config).result()
    client = genai_client(cloud)
    job = client.batches.create(
        model="gemini-2.5-flash",
        src=types.BatchJobSource(bigquery_uri=f"bq://{table}"),
        config=types.CreateBatchJobConfig(dest=f"bq://{cloud.project}.{dataset}.predictions"),
    )
    assert _state(_finish(cloud, job.name)) == "JOB_STATE_SUCCEEDED"
    out = list(
        bq.query(f"SELECT customer_id, status, response FROM `{dataset}.predictions` ORDER BY customer_id").result()
    )
    assert [r["customer_id"] for r in out] == ["c0", "c1", "c2"]
    assert all(r["status"] == "" and "offline emulator" in str(r["response"]) for r in out)
    info = _raw_job(cloud, job.name)["outputInfo"]
    assert info == {"bigqueryOutputDataset": f"bq://{cloud.project}.{dataset}", "bigqueryOutputTable": "predictions"}
