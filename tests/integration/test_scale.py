"""Files larger than one invocation on the local cloud: continuations through Pub/Sub, many jobs, keys once."""

from __future__ import annotations

import io
import time
from collections import Counter
from typing import Any, cast

import orjson
from google.cloud import bigquery

from local.clients import bigquery_client
from local.stack import Endpoints
from shared.adapters import ports
from shared.adapters.bigquery import BigQueryWarehouse
from tests.integration.helpers import (
    jsonl,
    manual_settings,
    query_rows,
    request_line,
    until_complete,
    upload_requests,
    vertex_jobs,
)


def test_a_file_needing_many_continuations_and_jobs_completes_with_every_key_once(cloud: Endpoints) -> None:
    # big/: 2 requests a job, 400 bytes an invocation (~5 lines), invalid lines kept as FAILED rows.
    lines = [request_line(f"q{i}", f"k{i}") for i in range(64)]
    lines[50] = request_line("again", "k3")  # k3 is on line 4, many invocations and chunks before
    _, run_id = upload_requests(cloud, "big/", jsonl(lines))
    run = until_complete(cloud, run_id, timeout=420)
    staged = run["staged"]
    holders = {uri.rsplit("/", 2)[1] for uri in staged["files"]}  # each invocation stages under its own prefix
    assert len(holders) >= 11 and len(staged["files"]) >= 30 and run["chunks"] == len(staged["files"])
    assert len(vertex_jobs(cloud, run_id)) == run["chunks"]  # one job a chunk, none twice
    rows = query_rows(
        cloud, "SELECT request_key, outcome, error_message FROM gbp.predictions WHERE run_id = @run", run_id
    )
    assert len(rows) == 64  # one row a line
    assert Counter(r["request_key"] for r in rows) == Counter([f"k{i}" for i in range(64) if i != 50] + ["k3"])
    failed = [r for r in rows if r["outcome"] != "SUCCEEDED"]
    assert failed == [
        {
            "request_key": "k3",
            "outcome": "FAILED",
            "error_message": "line 51: duplicate_key: key 'k3' is used by line 4",
        }
    ]
    assert run["requests"] == 63 and run["invalid"] == 1


def test_a_bq_source_is_read_in_arrow_through_the_storage_read_api(cloud: Endpoints) -> None:
    bq = bigquery_client(cloud)
    table = f"{cloud.project}.gbp.requests_{time.time_ns()}"
    schema = [
        bigquery.SchemaField("key", "STRING"),
        bigquery.SchemaField("request", "STRING"),  # the JSON as text, as many tables keep it
        bigquery.SchemaField("note", "STRING"),  # other columns are not read
    ]
    bq.create_table(bigquery.Table(table, schema=schema))
    rows = [{"key": f"k{i}", "request": orjson.dumps(request_line(f"q{i}")["request"]).decode()} for i in range(5)]
    rows += [{"request": orjson.dumps(request_line("keyless")["request"]).decode(), "note": "x"}]
    rows += [{"key": "broken", "request": "{not json"}]
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema)
    bq.load_table_from_file(io.BytesIO(jsonl(rows)), table, job_config=config).result()
    warehouse = cast(BigQueryWarehouse, ports(manual_settings(cloud)).warehouse)
    sessions: list[Any] = []
    create = warehouse.read_client.create_read_session

    def counted(*args: Any, **kwargs: Any) -> Any:
        sessions.append(kwargs.get("read_session") or args)
        return create(*args, **kwargs)

    warehouse.read_client.create_read_session = counted
    try:
        lines = [orjson.loads(line) for line in warehouse.request_lines(f"bq://{table}")]
    finally:
        warehouse.read_client.create_read_session = create
    assert len(sessions) == 1  # Arrow batches from the Storage Read API, not tabledata.list pages
    by_key = {line.get("key"): line for line in lines}
    assert sorted(by_key, key=str) == sorted([f"k{i}" for i in range(5)] + [None, "broken"], key=str)
    assert by_key["k3"]["request"] == request_line("q3")["request"]  # parsed back into an object
    assert by_key["broken"]["request"] == "{not json"  # left for the validator to report with its line
    assert all("note" not in line for line in lines)


def test_a_bq_source_larger_than_a_default_grpc_message_is_read_whole(cloud: Endpoints) -> None:
    bq = bigquery_client(cloud)
    table = f"{cloud.project}.gbp.requests_{time.time_ns()}"
    schema = [bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("request", "JSON")]
    bq.create_table(bigquery.Table(table, schema=schema))
    text = "x" * 400
    rows = [{"key": f"k{i}", "request": request_line(f"{text} {i}")["request"]} for i in range(12_000)]
    body = jsonl(rows)
    assert len(body) > 5 << 20  # one Arrow record batch of it is more than gRPC's default 4 MiB
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema)
    bq.load_table_from_file(io.BytesIO(body), table, job_config=config).result()
    warehouse = cast(BigQueryWarehouse, ports(manual_settings(cloud)).warehouse)
    keys = [orjson.loads(line)["key"] for line in warehouse.request_lines(f"bq://{table}")]
    assert sorted(keys) == sorted(f"k{i}" for i in range(12_000))
