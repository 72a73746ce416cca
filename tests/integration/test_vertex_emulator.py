"""google-genai (1.56.0 and the latest) against our Vertex batch emulator: every call, state and fault."""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import orjson
import pytest
import requests
from google import genai
from google.genai import errors, types

from local.clients import bigquery_client, genai_client, storage_client
from local.stack import Endpoints, free_port
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
# The HTTP library under google-genai, whose errors reach the caller untranslated: 1.56 uses httpx;
# 3.6 uses httpx2, a fork of httpx whose exceptions are NOT httpx's (except httpx.X misses them).
HTTP = importlib.import_module("httpx2" if int(genai.__version__.split(".")[0]) >= 3 else "httpx")


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


def _create(
    cloud: Endpoints,
    src: str,
    labels: dict[str, str] | None = None,
    client: genai.Client | None = None,
    model: str = "gemini-2.5-flash",
) -> tuple[Any, str]:
    client = client or genai_client(cloud)
    dest = f"gs://gbp-output/vertex-tests/{next(_counter)}-{time.time_ns()}"
    config = types.CreateBatchJobConfig(
        dest=dest,
        display_name="test",
        http_options=types.HttpOptions(extra_body={"labels": labels or {}}),
    )
    job = client.batches.create(model=model, src=types.BatchJobSource(gcs_uri=[src]), config=config)
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


def test_vertex_runs_a_limited_number_of_jobs_at_once_and_the_rest_wait_queued_in_order(cloud: Endpoints) -> None:
    requests.post(f"{cloud.vertex}/_emulator/limits", json={"running": 2}, timeout=10).raise_for_status()
    client = genai_client(cloud)
    try:
        names = [_create(cloud, _upload(cloud, [_request(f"q{i}", "a")]), client=client)[0].name for i in range(5)]
        most, started = 0, {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = {name: _raw_job(cloud, name) for name in names}
            most = max(most, sum(1 for j in jobs.values() if j["state"] in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")))
            started.update({n: j["startTime"] for n, j in jobs.items() if j.get("startTime")})
            if all(j["state"] in FINAL for j in jobs.values()):
                break
            time.sleep(0.01)
        assert all(_raw_job(cloud, n)["state"] == "JOB_STATE_SUCCEEDED" for n in names)
        assert most == 2  # never more than the limit, and the limit used
        assert sorted(names, key=lambda n: started[n]) == names  # first come, first served
    finally:
        requests.post(f"{cloud.vertex}/_emulator/limits", json={"running": 8}, timeout=10).raise_for_status()
    bad = requests.post(f"{cloud.vertex}/_emulator/limits", json={"running": 0}, timeout=10)
    assert bad.status_code == 400


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


def test_vertex_refuses_a_model_it_does_not_publish_with_404(cloud: Endpoints) -> None:
    src = _upload(cloud, [_request("hi", "a")])
    with pytest.raises(errors.ClientError) as refused:
        _create(cloud, src, model="gemini-2.5-flsh")
    assert refused.value.code == 404 and "gemini-2.5-flsh" in str(refused.value)


@pytest.fixture
def faults(cloud: Endpoints) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Queue call faults (``POST /_emulator/faults``); whatever is left is cleared afterwards."""

    def queue(body: dict[str, Any]) -> None:
        requests.post(f"{cloud.vertex}/_emulator/faults", json=body, timeout=10).raise_for_status()

    yield queue
    requests.delete(f"{cloud.vertex}/_emulator/faults", timeout=10).raise_for_status()


def _client(cloud: Endpoints, base_url: str = "", **options: Any) -> genai.Client:
    """Like ``genai_client``, with more HttpOptions (``timeout`` in ms, ``retry_options``)."""
    return genai.Client(
        vertexai=True,
        project=cloud.project,
        location=cloud.location,
        credentials=google.oauth2.credentials.Credentials(token="local"),
        http_options=types.HttpOptions(base_url=base_url or cloud.vertex, api_version="v1", **options),
    )


def _run_id() -> str:
    return f"net-{next(_counter)}-{time.time_ns()}"


def _jobs(cloud: Endpoints, run: str) -> list[Any]:
    client = genai_client(cloud)  # referenced until the pages are read (NOTES §5: closed when collected)
    return list(client.batches.list(config=types.ListBatchJobsConfig(filter=f'labels.run_id="{run}"')))


@pytest.mark.parametrize(
    ("fault", "error", "created"),
    [
        ("reset", "ReadError", 0),
        ("disconnect", "RemoteProtocolError", 0),
        ("reset-after", "ReadError", 1),  # the lost answer: Vertex created (and bills) the job
        ("disconnect-after", "RemoteProtocolError", 1),
    ],
)
def test_vertex_dropped_create_raises_a_transport_error_and_creates_only_what_vertex_did(
    cloud: Endpoints, faults: Callable[[dict[str, Any]], None], fault: str, error: str, created: int
) -> None:
    run = _run_id()
    faults({"create": [{"fault": fault, "labels": {"run_id": run}}]})  # only this test's create
    with pytest.raises(HTTP.TransportError) as raised:
        _create(cloud, _upload(cloud, [_request("hi", "a")]), {"run_id": run})
    assert type(raised.value) is getattr(HTTP, error)
    # Exactly what Vertex did, no more: the SDK retried nothing (a retry would have created one more).
    assert len(_jobs(cloud, run)) == created


def test_vertex_get_fault_fails_one_job_on_every_poll_while_the_others_answer(
    cloud: Endpoints, faults: Callable[[dict[str, Any]], None]
) -> None:
    src = _upload(cloud, [_request("hi", "a")])
    (sick, _), (healthy, _) = _create(cloud, src), _create(cloud, src)
    faults({"get": [{"fault": "reset", "job": sick.name, "count": -1}]})
    client = genai_client(cloud)
    for _ in range(3):
        with pytest.raises(HTTP.ReadError):
            client.batches.get(name=sick.name)
        assert client.batches.get(name=healthy.name).name == healthy.name
    sick_id = sick.name.rsplit("/", 1)[1]
    queued = requests.get(f"{cloud.vertex}/_emulator/faults", timeout=10).json()["get"]
    assert queued == [{"fault": "reset", "job": sick_id, "count": -1}]
    requests.delete(f"{cloud.vertex}/_emulator/faults", timeout=10).raise_for_status()
    faults({"get": [{"fault": 503, "job": sick_id, "count": 2}]})
    for _ in range(2):
        with pytest.raises(errors.ServerError) as raised:
            client.batches.get(name=sick.name)
        assert raised.value.code == 503
    assert client.batches.get(name=sick.name).name == sick.name


def test_vertex_list_faults_reach_the_sdk(cloud: Endpoints, faults: Callable[[dict[str, Any]], None]) -> None:
    run = _run_id()
    _create(cloud, _upload(cloud, [_request("hi", "a")]), {"run_id": run})
    mine = {"labels": {"run_id": run}}  # list calls whose filter names this label
    faults({"list": [{"fault": 429, **mine}, {"fault": "disconnect", **mine}]})
    with pytest.raises(errors.ClientError) as raised:
        _jobs(cloud, run)
    assert raised.value.code == 429
    with pytest.raises(HTTP.RemoteProtocolError):
        _jobs(cloud, run)
    assert len(_jobs(cloud, run)) == 1


def test_vertex_late_answer_times_the_client_out_after_the_job_was_created(
    cloud: Endpoints, faults: Callable[[dict[str, Any]], None]
) -> None:
    run = _run_id()
    faults({"create": [{"fault": "delay", "seconds": 2, "labels": {"run_id": run}}]})
    impatient = _client(cloud, timeout=300)  # milliseconds
    with pytest.raises(HTTP.ReadTimeout):
        _create(cloud, _upload(cloud, [_request("hi", "a")]), {"run_id": run}, client=impatient)
    [job] = _jobs(cloud, run)  # Vertex created it all the same: a timed-out create may have billed
    faults({"get": [{"fault": "delay", "seconds": 2, "job": job.name}]})
    with pytest.raises(HTTP.ReadTimeout):
        impatient.batches.get(name=job.name)


def test_vertex_unreachable_is_a_connect_error(cloud: Endpoints) -> None:
    nobody = _client(cloud, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HTTP.ConnectError):
        nobody.batches.get(name=f"projects/{cloud.project}/locations/{cloud.location}/batchPredictionJobs/1")


def test_vertex_sdk_retries_only_when_asked_and_a_retried_timeout_creates_twice(
    cloud: Endpoints, faults: Callable[[dict[str, Any]], None]
) -> None:
    retry = types.HttpRetryOptions(attempts=2, initial_delay=0.01, max_delay=0.01, jitter=0)
    retrying = _client(cloud, timeout=300, retry_options=retry)
    src = _upload(cloud, [_request("hi", "a")])
    unavailable, lost, late = _run_id(), _run_id(), _run_id()
    faults(
        {
            "create": [
                {"fault": 503, "labels": {"run_id": unavailable}},
                {"fault": "reset-after", "labels": {"run_id": lost}},
                {"fault": "delay", "seconds": 2, "labels": {"run_id": late}},
            ]
        }
    )
    _create(cloud, src, {"run_id": unavailable}, client=retrying)  # 503 is retried: it succeeds
    assert len(_jobs(cloud, unavailable)) == 1
    with pytest.raises(HTTP.ReadError):  # a dropped connection is never retried
        _create(cloud, src, {"run_id": lost}, client=retrying)
    assert len(_jobs(cloud, lost)) == 1
    if HTTP.__name__ == "httpx2":  # 3.x retries timeouts (and connect errors): the job is created twice
        _create(cloud, src, {"run_id": late}, client=retrying)
        assert len(_jobs(cloud, late)) == 2
    else:  # 1.56 retries API errors only
        with pytest.raises(HTTP.ReadTimeout):
            _create(cloud, src, {"run_id": late}, client=retrying)
        assert len(_jobs(cloud, late)) == 1


def test_vertex_fault_api_rejects_faults_it_cannot_act_out(cloud: Endpoints) -> None:
    url = f"{cloud.vertex}/_emulator/faults"
    for bad in (
        {"get": ["bogus"]},
        {"get": [200]},
        {"create": [{"fault": "reset", "job": "1"}]},  # a create names no job yet
        {"list": [{"fault": "delay"}]},  # how long?
        {"create": ["reset"], "get": [{"fault": "reset", "count": 0}]},  # nothing is queued when one is bad
    ):
        reply = requests.post(url, json=bad, timeout=10)
        assert reply.status_code == 400 and reply.json()["error"]["status"] == "INVALID_ARGUMENT", bad
    queued = requests.get(url, timeout=10).json()
    assert (queued["create"], queued["get"], queued["list"]) == ([], [], [])


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
