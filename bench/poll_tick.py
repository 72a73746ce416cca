"""One poll tick over many followed jobs, on a local cloud of its own: does it fit one invocation?

``make bench-poll JOBS=1000``: JOBS Vertex jobs created through the real client (held queued on
the emulator, as jobs waiting on Vertex are), their attempts SUBMITTED in the ledger of JOBS/20
runs, and as many attempts QUEUED behind them with every slot taken (MAX_CONCURRENT_JOBS=JOBS:
the admission reads every live record); then ticks of ``poll()`` in-process, timed. The local
services answer in a few ms; GCP's take tens (GCS) to a hundred or more (Vertex): the report also
gives the calls a tick makes, and the tick they would take at GCP's latencies (stated).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.e2e import local_cloud
from local.clients import storage_client
from shared.adapters import ports as build_ports
from shared.config import Settings
from shared.core.ids import job_labels
from shared.core.records import JOB_SUBMITTED, RUN_RUNNING, JobRecord, Run
from shared.logs import configure
from shared.ports import Ports
from shared.services.attempts import output_prefix, queue_attempt
from shared.services.ledger import Invocation, Ledger, stamp
from shared.services.poll import POLL_WORKERS, poll

log = logging.getLogger("gbp.bench.poll")
HERE = Path(__file__).parent
BUCKET = "gbp-bench-poll"
CHUNKS_PER_RUN = 20
# What one call takes on GCP, for the estimate (p50 orders of magnitude, not measurements here).
GCP_SECONDS = {"gcs": 0.03, "vertex": 0.15}


class Counted:
    """Counts the calls made through a port."""

    def __init__(self, inner: Any, counter: Counter[str], kind: str) -> None:
        self.inner, self.counter, self.kind = inner, counter, kind

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            where = "main" if threading.current_thread() is threading.main_thread() else "workers"
            self.counter[f"{where}.{self.kind}.{name}"] += 1
            return attr(*args, **kwargs)

        return call


def settings_for(stack: Any, jobs: int) -> Settings:
    ends = stack.endpoints
    return Settings(
        project=ends.project, location=ends.location, bq_location=ends.location, input_bucket=BUCKET,
        work_bucket=BUCKET, dataset="gbp", batch_requests_topic="batch-results",
        batch_finished_topic="batch-results", batch_results_topic="batch-results",
        max_concurrent_jobs=jobs, load_window_seconds=120,
    )  # fmt: skip


def seed(settings: Settings, p: Ports, jobs: int) -> None:
    """``jobs`` SUBMITTED attempts with real (queued) Vertex jobs, and ``jobs`` QUEUED ones behind them."""
    ledger = Ledger(p.store, settings.work_bucket, settings.lease_seconds)
    now = datetime.now(UTC)
    inv = Invocation.starting(lambda: datetime.now(UTC), 3600, uuid.uuid4().hex)
    runs = max(1, jobs // CHUNKS_PER_RUN)
    for r in range(runs):
        run = Run(f"rbench{r:04d}", f"gs://{BUCKET}/in/{r}.jsonl", "gemini-2.5-flash", status=RUN_RUNNING)
        run.chunks = 2 * CHUNKS_PER_RUN
        p.store.write(ledger.run_uri(run.run_id), orjson.dumps(run.to_json()))
        ledger.activate_run(run.run_id, now)
    input_uri = f"gs://{BUCKET}/in/chunk.jsonl"
    p.store.write(input_uri, b'{"key": "k", "request": {"contents": [{"parts": [{"text": "q"}]}]}}\n')
    for n in track(range(jobs), description=f"seeding {jobs} submitted jobs"):
        run_id, chunk = f"rbench{n % runs:04d}", n // runs
        labels = {**job_labels(run_id, chunk, 1), "emulator-stuck-queued": "1"}
        job = p.jobs.create(
            model="gemini-2.5-flash", input_uri=input_uri, dest_prefix=output_prefix(settings, run_id, chunk, 1),
            display_name=f"{run_id}-{chunk}", labels=labels, location=settings.location,
        )  # fmt: skip
        record = JobRecord(run_id, chunk, 1, input_uri, output_prefix(settings, run_id, chunk, 1), 1)
        record.status, record.job_name, record.vertex_state = JOB_SUBMITTED, job.name, job.state
        record.location, record.submitted_at = settings.location, stamp(now)
        record.history.append({"state": job.state, "at": record.submitted_at})
        p.store.write(ledger.uri_of(record), orjson.dumps(record.to_json()))
        ledger.activate(run_id, chunk, 1, now)
    for n in track(range(jobs), description=f"seeding {jobs} queued attempts"):
        run_id, chunk = f"rbench{n % runs:04d}", CHUNKS_PER_RUN + n // runs
        queue_attempt(ledger, settings, inv, run_id, chunk, 1, input_uri, 1)


def tick(settings: Settings, p: Ports) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    counted = Ports(
        store=Counted(p.store, calls, "gcs"), jobs=Counted(p.jobs, calls, "vertex"),
        warehouse=p.warehouse, bus=Counted(p.bus, calls, "pubsub"),
    )  # fmt: skip
    started = time.perf_counter()
    counts = poll(settings, counted, Invocation.starting(lambda: datetime.now(UTC), 540, uuid.uuid4().hex))
    seconds = time.perf_counter() - started

    def total(where: str, kind: str) -> int:
        return sum(n for name, n in calls.items() if name.startswith(f"{where}.{kind}."))

    # At GCP's latencies: the workers' calls POLL_WORKERS at a time, the others one after another.
    estimate = sum(
        total(where, kind) * GCP_SECONDS[kind] / (POLL_WORKERS if where == "workers" else 1)
        for where in ("main", "workers")
        for kind in ("gcs", "vertex")
    )
    return {
        "seconds": seconds, "counts": counts, "calls": dict(calls),
        "gcs_calls": total("main", "gcs") + total("workers", "gcs"),
        "vertex_calls": total("main", "vertex") + total("workers", "vertex"),
        "serial_calls": total("main", "gcs") + total("main", "vertex"), "gcp_estimate_seconds": estimate,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="followed (submitted) job attempts, and as many queued")
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args(argv)
    configure("gbp", logging.WARNING, sys.stderr)
    state = HERE / ".data" / f"cloud-poll-{os.getpid()}"
    results: list[dict[str, Any]] = []
    with local_cloud(state, time_scale=1.0, functions=False) as stack:
        os.environ.update({k: v for k, v in stack.endpoints.env().items() if k != "GOOGLE_CLOUD_PROJECT"})
        storage_client(stack.endpoints).create_bucket(BUCKET)
        settings = settings_for(stack, args.jobs)
        p = build_ports(settings)
        seed(settings, p, args.jobs)
        for _ in range(args.ticks):
            results.append(tick(settings, p))
    console = Console()
    table = Table(title=f"poll tick over {args.jobs} followed jobs and {args.jobs} queued attempts")
    columns = ("tick", "local s", "followed", "GCS calls", "Vertex calls", "of them serial", "GCP estimate s")
    for column in columns:
        table.add_column(column, justify="right")
    for n, result in enumerate(results, 1):
        table.add_row(
            str(n), f"{result['seconds']:.1f}", str(result["counts"]["followed"]), str(result["gcs_calls"]),
            str(result["vertex_calls"]), str(result["serial_calls"]), f"{result['gcp_estimate_seconds']:.0f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"GCP estimate: {GCP_SECONDS['gcs']} s a GCS call, {GCP_SECONDS['vertex']} s a Vertex call; the"
        f" followed attempts {POLL_WORKERS} at a time, the rest one after another (invocation: 540 s)"
    )
    out = HERE / ".data" / f"poll-{args.jobs}.json"
    out.write_bytes(orjson.dumps({"jobs": args.jobs, "ticks": results}, option=orjson.OPT_INDENT_2))
    console.print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
