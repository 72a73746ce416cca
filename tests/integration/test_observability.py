"""Every log-based metric of terraform/monitoring.tf matches lines the code really writes, where the README says.

A pipeline runs on the local cloud; the functions' own log lines are read from their logs (the
stack keeps each function's stdout), and the lines of events the deployed wiring cannot make
happen in a test's time (a stuck job, an overdue run, a held run, a failed event) are written by
the same code run in-process, through functions-framework where it is a handler, and captured
with the functions' own JSON formatter. Each metric's filter and extractors are then evaluated
on those entries (tests/logfilter.py: Cloud Logging's rules): a metric on a message or a field
nobody logs fails here.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hcl2
import orjson
import pytest
import requests

from local.clients import ensure_buckets, publisher, storage_client
from local.stack import Endpoints, Stack
from shared.adapters import ports
from shared.config import Settings
from shared.core.errors import TransientError
from shared.logs import JsonFormatter
from shared.services.collect import collect
from shared.services.poll import poll
from shared.services.submit import submit
from tests.integration.conftest import wait_for
from tests.integration.helpers import (
    invocation,
    jsonl,
    manual_run,
    manual_settings,
    request_line,
    run_record,
    until_complete,
    upload_requests,
)
from tests.logfilter import Entry, compile_filter, entry_of, extract

ROOT = Path(__file__).parents[2]
FUNCTIONS = ("submit_batch", "submit_request", "poll_batches", "collect_results")
# Metrics whose lines the deployed functions write in this test (the rest: the same code in-process).
DEPLOYED = {"rows_loaded", "runs_completed", "run_failed_share", "runs_rejected", "function_events", "poll_ticks"}


def _metrics() -> dict[str, dict[str, Any]]:
    """The log-based metrics as Terraform declares them (filters and extractors decoded)."""
    with (ROOT / "terraform" / "monitoring.tf").open() as handle:
        declared = hcl2.load(handle)["locals"][0]["log_metrics"]
    decoded = {}
    for name, metric in declared.items():
        decoded[name] = {
            "filter": json.loads(metric["filter"]),
            "value": None if metric["value"] is None else json.loads(metric["value"]),
            "labels": {k: json.loads(v) for k, v in metric["labels"].items()},
        }
    return decoded


def _readme_writers() -> dict[str, set[str]]:
    """The README's Observability table: metric -> the functions that write its log line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Observability", 1)[1].split("\n## ", 1)[0]
    writers = {}
    for row in re.findall(r"^\| `(\w+)` \|.*\| ([\w, ]+) \|$", section, re.MULTILINE):
        writers[row[0]] = {name.strip() for name in row[1].split(",")}
    return writers


def _function_entries(stack: Stack) -> list[Entry]:
    """Every JSON line the deployed functions wrote, as Cloud Logging would keep it."""
    entries = []
    for path in sorted((stack.state_dir / "logs").glob("function-*.log")):
        service = path.stem.removeprefix("function-")
        function = next((f for f in FUNCTIONS if service == f or service.startswith(f + "_")), None)
        if function is None:
            continue  # the bridge's echo functions
        for raw in path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    entries.append(entry_of(orjson.loads(raw), function))
    return entries


@contextlib.contextmanager
def _as_function(function: str, into: list[Entry]) -> Iterator[None]:
    """Capture what the pipeline's code logs in-process, as ``function``'s stdout would carry it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gbp")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines() if line]
        into.extend({**entry_of(line, function), "in_process": True} for line in lines)


def _drive(settings: Settings, run_id: str, cloud: Endpoints, captured: list[Entry]) -> None:
    """What the scheduler and the collect trigger do, in-process, each function's lines kept as its own."""
    real = ports(settings)
    for _ in range(200):
        if run_record(cloud, run_id, settings.work_bucket).get("announced"):
            return
        with _as_function("poll_batches", captured):
            poll(settings, real, invocation())
        for blob in storage_client(cloud).list_blobs(settings.work_bucket, prefix=f"ledger/jobs/{run_id}/"):
            record = orjson.loads(blob.download_as_bytes())
            if record["status"] in ("FINISHED", "COLLECTING"):
                message = {"run_id": run_id, "chunk": record["chunk"], "attempt": record["attempt"]}
                with _as_function("collect_results", captured), contextlib.suppress(TransientError):
                    collect(message, settings, real, invocation())
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not complete")


def _event(message: dict[str, Any], cloud: Endpoints) -> dict[str, Any]:
    message_id = str(time.time_ns())
    body = {"message": {"data": base64.b64encode(orjson.dumps(message)).decode(), "messageId": message_id}}
    headers = {
        "ce-specversion": "1.0", "ce-id": message_id, "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{cloud.project}/topics/batch-requests",
        "ce-time": datetime.now(UTC).isoformat(), "content-type": "application/json",
    }  # fmt: skip
    return {"data": orjson.dumps(body), "headers": headers}


def _app(function: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from functions_framework import create_app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return create_app(function, str(ROOT / "functions" / function / "main.py"), "cloudevent").test_client()


def _env(cloud: Endpoints, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "GCP_PROJECT": cloud.project, "VERTEX_LOCATION": cloud.location, "BQ_LOCATION": cloud.location,
        "INPUT_BUCKET": "gbp-input", "WORK_BUCKET": bucket, "BQ_DATASET": "gbp", "INPUT_PREFIX": "manual/",
        "BATCH_REQUESTS_TOPIC": "batch-results", "BATCH_FINISHED_TOPIC": "batch-results",
        "BATCH_RESULTS_TOPIC": "batch-results", "LEASE_SECONDS": "600", "LOAD_WINDOW_SECONDS": "0",
        "MAX_RUN_COST_USD": "", "MAX_DAILY_COST_USD": "", "SKIP_INVALID_LINES": "false", **extra,
    }  # fmt: skip


def test_every_metric_matches_lines_the_code_writes_where_the_readme_says(
    stack: Stack, cloud: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[Entry] = []
    # Through the deployed functions: a run with a row that fails, a rejected file, a refused message.
    lines = [request_line(f"q{i}", f"k{i}") for i in range(3)] + [request_line("[[emulator:400]] bad", "bad")]
    _, done = upload_requests(cloud, "runs/", jsonl(lines))
    _, rejected = upload_requests(cloud, "runs/", b"{oops\n")
    publisher(cloud).publish(publisher(cloud).topic_path(cloud.project, "batch-requests"), b'{"source": "ftp://x"}')
    until_complete(cloud, done, timeout=120)
    wait_for(lambda: run_record(cloud, rejected).get("status") == "REJECTED", timeout=60)

    # In-process, through functions-framework: a run held by the budget guard, one rejected by a message.
    budget = f"gbp-observe-{time.time_ns()}"
    ensure_buckets(cloud, [budget])
    guarded = _app("submit_request", _env(cloud, budget, MAX_RUN_COST_USD="0"), monkeypatch)
    held = []
    with _as_function("submit_request", captured):
        for _ in range(2):
            name, _ = upload_requests(cloud, "manual/", jsonl(lines[:2]))
            assert guarded.post("/", **_event({"source": f"gs://gbp-input/{name}"}, cloud)).status_code == 200
        held = [
            b.name.rsplit("/", 1)[1].removesuffix(".json")
            for b in storage_client(cloud).list_blobs(budget, prefix="ledger/runs/")
        ]
        assert guarded.post("/", **_event({"reject": held[0]}, cloud)).status_code == 200
    # The poller, in-process: the other held run is past a 1 s SLA.
    time.sleep(1.2)
    with _as_function("poll_batches", captured):
        poll(manual_settings(cloud, work_bucket=budget, run_sla_seconds=1), ports(manual_settings(cloud)), invocation())
    # The poller, in-process: a job stuck running past a 1 s run timeout is cancelled.
    settings = manual_settings(cloud, run_timeout_seconds=1)
    submission, run_id = manual_run(cloud, [request_line("stuck", "s")])
    rule = {
        "jobs": [{"labels": {"gbp_run": run_id, "gbp_attempt": "1"}, "faults": {"stuck-running": "true"}, "count": 1}]
    }
    requests.post(f"{cloud.vertex}/_emulator/faults", json=rule, timeout=10).raise_for_status()
    submit(submission, settings, ports(settings), invocation())
    _drive(settings, run_id, cloud, captured)
    # submit_batch through functions-framework: BigQuery refuses a load for quota -> the event fails, retried.
    failing = _app("submit_batch", _env(cloud, "gbp-manual", SKIP_INVALID_LINES="true"), monkeypatch)
    name, failed_run = upload_requests(cloud, "manual/", jsonl(lines[:1]) + b"{oops\n")
    blob = storage_client(cloud).bucket("gbp-input").get_blob(name)
    event = {
        "headers": {
            "ce-specversion": "1.0", "ce-id": f"e{time.time_ns()}",
            "ce-type": "google.cloud.storage.object.v1.finalized",
            "ce-source": "//storage.googleapis.com/projects/_/buckets/gbp-input", "content-type": "application/json",
            "ce-time": datetime.now(UTC).isoformat(),
        },
        "data": orjson.dumps({"bucket": "gbp-input", "name": name, "generation": str(blob.generation)}),
    }  # fmt: skip
    fault = {"inserts": [{"match": f"invalid_{failed_run}", "code": 403, "reason": "quotaExceeded"}]}
    requests.post(f"{cloud.bigquery}/_proxy/faults", json=fault, timeout=10).raise_for_status()
    with _as_function("submit_batch", captured):
        assert failing.post("/", **event).status_code == 500
        assert failing.post("/", **event).status_code == 200

    metrics = _metrics()
    writers = _readme_writers()
    assert set(writers) == set(metrics), "the README's Observability table lists every metric"

    def matched() -> dict[str, list[Entry]]:
        entries = _function_entries(stack) + captured
        return {name: [e for e in entries if compile_filter(m["filter"])(e)] for name, m in metrics.items()}

    def all_matched() -> dict[str, list[Entry]] | None:
        by_metric = matched()  # the poller's and collector's lines may still be on their way
        return by_metric if all(by_metric.values()) else None

    try:
        found = wait_for(all_matched, timeout=60)
    except AssertionError:
        nothing = sorted(name for name, entries in matched().items() if not entries)
        raise AssertionError(f"no log line the code wrote matches the filter of {nothing}") from None
    for name, metric in metrics.items():
        entries = found[name]
        services = {e["resource"]["labels"]["service_name"] for e in entries}
        if name in DEPLOYED:
            assert any(not e.get("in_process") for e in entries), f"{name}: no deployed function wrote its line"
        assert services <= writers[name], f"{name}: written by {services}, the README says {writers[name]}"
        for label, extractor in metric["labels"].items():
            assert all(extract(extractor, e) for e in entries), f"{name}: label {label} is empty on a line"
        if metric["value"] is not None:
            assert all(float(extract(metric["value"], e) or "nan") >= 0 for e in entries), f"{name}: no value"
    outcomes = {extract(metrics["rows_loaded"]["labels"]["outcome"], e) for e in found["rows_loaded"]}
    assert {"SUCCEEDED", "FAILED"} <= outcomes  # the bad line's row, and the others
    events = {extract(metrics["function_events"]["labels"]["outcome"], e) for e in found["function_events"]}
    assert events == {"handled", "failed", "dropped"}
