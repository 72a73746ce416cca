"""The real google-cloud-bigquery client through our proxy: BigQuery's strict behaviours the pipeline relies on.

bqemulator alone accepts reused job ids, ignores locations and finishes loads at once; real
BigQuery does none of that (NOTES §5). Every test uses its own table and job ids, so the fault
rules it sets cannot touch anything else, and the rules are cleared after each test.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from google.api_core import exceptions
from google.cloud import bigquery

from local.clients import bigquery_client, storage_client
from local.stack import Endpoints

ROWS = b'{"n": 1}\n{"n": 2}\n'
NDJSON = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON")
_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}_{next(_names)}_{time.time_ns()}"


def _admin(cloud: Endpoints, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = requests.request(
        "POST" if body is not None else "GET", f"{cloud.bigquery}/_proxy/{path}", json=body, timeout=10
    )
    reply.raise_for_status()
    return dict(reply.json())


@pytest.fixture(autouse=True)
def _no_faults_left(cloud: Endpoints) -> Iterator[None]:
    yield
    _admin(cloud, "reset", {})


@pytest.fixture(scope="module")
def dataset(cloud: Endpoints) -> str:
    """A dataset in the wiring's region (us-central1), like the pipeline's."""
    name = _name("proxy")
    regional = bigquery.Dataset(f"{cloud.project}.{name}")
    regional.location = cloud.location
    bigquery_client(cloud).create_dataset(regional)
    return name


@pytest.fixture
def bq(cloud: Endpoints) -> bigquery.Client:
    """A client built WITHOUT a location, as the product's adapter builds it today."""
    return bigquery_client(cloud)


@pytest.fixture
def table(cloud: Endpoints, bq: bigquery.Client, dataset: str) -> str:
    table_id = f"{cloud.project}.{dataset}.{_name('t')}"
    bq.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField("n", "INT64")]))
    return table_id


@pytest.fixture
def uri(cloud: Endpoints) -> str:
    name = f"proxy-tests/{_name('rows')}.jsonl"
    storage_client(cloud).bucket("gbp-work").blob(name).upload_from_string(ROWS)
    return f"gs://gbp-work/{name}"


def _count(cloud: Endpoints, table: str) -> int:
    rows = bigquery_client(cloud, location=cloud.location).query(f"SELECT COUNT(*) AS n FROM `{table}`").result()
    return int(next(iter(rows))["n"])


def test_bigquery_proxy_reused_load_job_id_is_a_conflict(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    job_id = _name("load")
    bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON).result()
    with pytest.raises(exceptions.Conflict) as refused:
        bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON)
    assert refused.value.errors[0]["reason"] == "duplicate"
    assert f"Already Exists: Job {cloud.project}:{cloud.location}.{job_id}" in refused.value.message
    assert _count(cloud, table) == 2  # loaded once


def test_bigquery_proxy_get_job_needs_the_jobs_location(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    job_id = _name("load")
    job = bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON)
    assert job.location == cloud.location  # BigQuery put the job where the dataset is
    job.result()  # the job object follows its own location
    with pytest.raises(exceptions.NotFound, match=f"Not found: Job {cloud.project}:{job_id}"):
        bq.get_job(job_id)
    with pytest.raises(exceptions.NotFound):
        bq.get_job(job_id, location="US")
    with pytest.raises(exceptions.NotFound):
        bq.cancel_job(job_id)
    assert bq.get_job(job_id, location=cloud.location).state == "DONE"
    assert bigquery_client(cloud, location=cloud.location).get_job(job_id).state == "DONE"


def test_bigquery_proxy_insert_naming_another_location_creates_nothing(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    job_id = _name("load")
    dataset = table.split(".")[1]
    with pytest.raises(exceptions.NotFound, match=f"Dataset {cloud.project}:{dataset} was not found in location US"):
        bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON, location="US")
    bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON, location=cloud.location).result()
    assert _count(cloud, table) == 2


def test_bigquery_proxy_jobs_in_the_us_multi_region_need_no_location(
    cloud: Endpoints, bq: bigquery.Client, uri: str
) -> None:
    dataset = bq.create_dataset(_name("proxy_us"))  # no location: the US multi-region, as on GCP
    assert dataset.location == "US"
    table = bq.create_table(
        bigquery.Table(f"{cloud.project}.{dataset.dataset_id}.t", schema=[bigquery.SchemaField("n", "INT64")])
    )
    job_id = _name("load")
    bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON).result()
    assert bq.get_job(job_id).location == "US"


def test_bigquery_proxy_delayed_load_is_running_then_done_and_rows_appear_only_then(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    _admin(cloud, "faults", {"loads": [{"match": table, "running_seconds": 1.5}]})
    started = time.monotonic()
    job = bq.load_table_from_uri(uri, table, job_id=_name("load"), job_config=NDJSON)
    assert job.state == "RUNNING"
    assert _count(cloud, table) == 0
    job.reload()
    assert job.state == "RUNNING"
    job.result(timeout=30)
    assert job.state == "DONE" and job.error_result is None
    assert time.monotonic() - started >= 1.4
    assert _count(cloud, table) == 2
    seen = [j for j in _admin(cloud, "jobs")["jobs"] if j["job_id"] == job.job_id]
    assert seen == [
        {
            "project": cloud.project,
            "job_id": job.job_id,
            "type": "load",
            "destination": table,
            "state": "DONE",
            "error_reason": None,
            "location": cloud.location,
            "created": seen[0]["created"],
        }
    ]
    assert abs(datetime.fromisoformat(seen[0]["created"]) - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("reason", "raised"), [("invalid", exceptions.BadRequest), ("backendError", exceptions.InternalServerError)]
)
def test_bigquery_proxy_failed_load_loads_nothing_and_keeps_its_id(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str, reason: str, raised: type[Exception]
) -> None:
    job_id = _name("load")
    fail = {"reason": reason, "message": "Error while reading data (injected)"}
    _admin(cloud, "faults", {"loads": [{"match": job_id, "running_seconds": 0.3, "fail": fail}]})
    job = bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON)
    with pytest.raises(raised):
        job.result(timeout=30)
    assert job.state == "DONE"
    assert job.error_result == fail
    assert bq.get_job(job_id, location=cloud.location).error_result == fail
    assert _count(cloud, table) == 0
    with pytest.raises(exceptions.Conflict):
        bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON)


def test_bigquery_proxy_cancelled_held_load_loads_nothing(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    _admin(cloud, "faults", {"loads": [{"match": table, "running_seconds": 0.5}]})
    job = bq.load_table_from_uri(uri, table, job_id=_name("load"), job_config=NDJSON)
    assert job.cancel()
    with pytest.raises(exceptions.GoogleAPICallError, match="cancelled") as stopped:
        job.result(timeout=30)
    assert stopped.value.code == 200  # the client maps reason "stopped" to HTTP 200, not to an error class
    time.sleep(0.7)  # past the time it would have been loaded
    assert job.error_result is not None and job.error_result["reason"] == "stopped"
    assert _count(cloud, table) == 0


def test_bigquery_proxy_quota_fault_is_forbidden_and_creates_nothing(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    _admin(cloud, "faults", {"inserts": [{"match": table, "code": 403, "reason": "quotaExceeded"}]})
    job_id = _name("load")
    with pytest.raises(exceptions.Forbidden, match="Quota exceeded") as refused:
        bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON)
    assert refused.value.errors[0]["reason"] == "quotaExceeded"  # the client does not retry this one
    bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON).result()  # the id was not used
    assert _count(cloud, table) == 2


def test_bigquery_proxy_rate_limit_is_retried_by_the_client_with_the_same_job_id(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    _admin(cloud, "faults", {"inserts": [{"match": table, "code": 403, "reason": "rateLimitExceeded"}]})
    job = bq.load_table_from_uri(uri, table, job_id=_name("load"), job_config=NDJSON)
    job.result()
    assert _admin(cloud, "faults") == {"loads": [], "inserts": []}  # the fault was used up
    assert [j["job_id"] for j in _admin(cloud, "jobs")["jobs"] if j["destination"] == table] == [job.job_id]
    assert _count(cloud, table) == 2


def test_bigquery_proxy_parameterized_queries_work(cloud: Endpoints, bq: bigquery.Client, table: str, uri: str) -> None:
    bq.load_table_from_uri(uri, table, job_config=NDJSON).result()
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("least", "INT64", 2)])
    sql = f"SELECT n FROM `{table}` WHERE n >= @least"
    assert [row["n"] for row in bq.query(sql, job_config=config).result()] == [2]
    assert [row["n"] for row in bq.query_and_wait(sql, job_config=config)] == [2]


def test_bigquery_proxy_resumable_file_load_keeps_its_job_id(cloud: Endpoints, bq: bigquery.Client, table: str) -> None:
    job_id = _name("file")
    job = bq.load_table_from_file(io.BytesIO(ROWS), table, job_id=job_id, job_config=NDJSON)
    job.result()
    assert job.job_id == job_id and job.location == cloud.location  # bqemulator names it its own way
    assert bq.get_job(job_id, location=cloud.location).output_rows == 2
    with pytest.raises(exceptions.Conflict):
        bq.load_table_from_file(io.BytesIO(ROWS), table, job_id=job_id, job_config=NDJSON)
    assert _count(cloud, table) == 2


def test_bigquery_proxy_strictness_switches_off_and_reset_restores_it(
    cloud: Endpoints, bq: bigquery.Client, table: str, uri: str
) -> None:
    job_id = _name("load")
    bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON).result()
    assert _admin(cloud, "strict", {"job_ids": False, "locations": False}) == {"job_ids": False, "locations": False}
    bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON).result()  # bqemulator's own leniency
    assert bq.get_job(job_id).state == "DONE"
    _admin(cloud, "reset", {})
    with pytest.raises(exceptions.Conflict):
        bq.load_table_from_uri(uri, table, job_id=job_id, job_config=NDJSON)
    with pytest.raises(exceptions.NotFound):
        bq.get_job(job_id)
