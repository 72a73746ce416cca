"""``make demo``: the whole pipeline on the local cloud, from a dropped file to BigQuery rows.

Starts the local cloud with the four functions, uploads ``examples/requests.jsonl`` to the input
bucket, shows the run advancing (the ledger, as the functions write it), then prints
``latest_predictions`` and the run summary, and stops everything (``--keep`` leaves it running).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from local.clients import bigquery_client, storage_client
from local.stack import ROOT, LocalCloudError, Stack

TIME_SCALE = 0.05  # a 60 s poll tick every 3 s; Vertex's queue in a blink
console = Console(width=None if sys.stdout.isatty() else 150)


def _ledger(stack: Stack, run_id: str) -> tuple[dict, list[dict]]:
    gcs = storage_client(stack.endpoints)
    run_blob = gcs.bucket("gbp-work").get_blob(f"ledger/runs/{run_id}.json")
    run = orjson.loads(run_blob.download_as_bytes()) if run_blob else {}
    jobs = [orjson.loads(b.download_as_bytes()) for b in gcs.list_blobs("gbp-work", prefix=f"ledger/jobs/{run_id}/")]
    return run, jobs


def main() -> int:
    """Run the demo; exit 1 if the run does not complete."""
    parser = argparse.ArgumentParser(prog="python -m local.demo")
    parser.add_argument("--keep", action="store_true", help="leave the local cloud running")
    parser.add_argument("--file", type=Path, default=ROOT / "examples" / "requests.jsonl")
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()
    stack = Stack()
    started = time.monotonic()
    try:
        with console.status("starting the local cloud (Pub/Sub, GCS, BigQuery, Vertex emulators, 4 functions)"):
            ends = stack.up(time_scale=TIME_SCALE)
    except LocalCloudError as exc:
        console.print(f"[red]local cloud: {exc}")
        return 1
    try:
        return _run(stack, args.file, args.timeout, started)
    finally:
        if args.keep:
            console.print("\nThe local cloud keeps running (make local-down stops it). Query it with the bq client:")
            console.print(
                '  .venv/bin/python -c "from local.clients import endpoints, bigquery_client; '
                "print(list(bigquery_client(endpoints()).query('SELECT * FROM gbp.latest_predictions').result()))\""
            )
            for key, value in ends.env().items():
                console.print(f"  export {key}={value}")
        else:
            stack.stop()


def _run(stack: Stack, path: Path, timeout: float, started: float) -> int:
    from shared.core.ids import ObjectRef, run_id_for_object

    gcs = storage_client(stack.endpoints)
    name = f"incoming/demo-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    blob = gcs.bucket("gbp-input").blob(name)
    blob.upload_from_filename(str(path))
    run_id = run_id_for_object(ObjectRef("gbp-input", name, str(blob.generation)))
    console.print(f"uploaded [bold]{path.name}[/] to gs://gbp-input/{name} -> run {run_id}")
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run, jobs = _ledger(stack, run_id)
        jobs_text = ", ".join(
            f"chunk {j['chunk']} attempt {j['attempt']}: {j['vertex_state'].removeprefix('JOB_STATE_') or j['status']}"
            f" ({j['status'].lower()})"
            for j in sorted(jobs, key=lambda j: (j["chunk"], j["attempt"]))
        )
        line = f"run {run.get('status', 'waiting for the upload event')}" + (f" | {jobs_text}" if jobs_text else "")
        if line != last:
            console.print(f"[dim]{time.monotonic() - started:5.1f}s[/] {line}")
            last = line
        if run.get("status") in ("COMPLETE", "REJECTED") and (run.get("announced") or run.get("status") == "REJECTED"):
            break
        time.sleep(0.5)
    else:
        console.print("[red]the run did not complete in time; logs are in .local-cloud/logs/")
        return 1
    if run["status"] == "REJECTED":
        console.print(f"[red]rejected: see {run['report_uri']}")
        return 1
    _show(stack, run_id)
    console.print(f"\n[green]done in {time.monotonic() - started:.1f}s")
    return 0


def _show(stack: Stack, run_id: str) -> None:
    from google.cloud import bigquery

    bq = bigquery_client(stack.endpoints)
    params = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("run", "STRING", run_id)])
    query = (
        "SELECT request_key, attempt, outcome, finish_reason, error_status, total_tokens, response_text, "
        "TO_JSON_STRING(response_json) AS response_json, block_reason, error_message "
        "FROM gbp.latest_predictions WHERE run_id = @run ORDER BY request_key"
    )
    rows = list(bq.query(query, job_config=params).result())
    table = Table("key", "try", "outcome", "finish", "tokens", "answer / error", title="latest_predictions", box=None)
    for r in rows:
        detail = (
            r["response_json"]
            if r["response_json"] not in (None, "null")
            else (r["response_text"] or r["error_message"] or r["block_reason"] or "")
        )
        table.add_row(
            r["request_key"],
            str(r["attempt"]),
            r["outcome"],
            r["finish_reason"] or r["error_status"] or "",
            str(r["total_tokens"] or ""),
            " ".join(str(detail).split())[:70],
        )
    console.print(table)
    query = (
        "SELECT outcome, COUNT(*) n, MAX(attempt) max_attempt, SUM(COALESCE(total_tokens, 0)) tokens, "
        "SUM(cost_usd) cost FROM gbp.latest_predictions WHERE run_id = @run GROUP BY outcome ORDER BY outcome"
    )
    summary = list(bq.query(query, job_config=params).result())
    total = Table("outcome", "rows", "max attempt", "tokens", "cost USD", title=f"run {run_id}", box=None)
    for r in summary:
        cost = "" if r["cost"] is None else f"{r['cost']:.6f}"
        total.add_row(r["outcome"], str(r["n"]), str(r["max_attempt"]), str(r["tokens"]), cost)
    console.print(total)
    record = storage_client(stack.endpoints).bucket("gbp-work").get_blob(f"ledger/runs/{run_id}.json")
    estimate = orjson.loads(record.download_as_bytes()).get("estimate", {}) if record else {}
    if estimate.get("expected_usd") is not None:
        console.print(
            f"estimated before it ran: {estimate['expected_usd']:.6f} USD expected, "
            f"{estimate['worst_case_usd']:.6f} USD at worst ({estimate['price_version']}, batch rate)"
        )


if __name__ == "__main__":
    sys.exit(main())
