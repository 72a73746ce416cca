"""``make bench-e2e [N=10000]``: the pipeline measured end to end on the local cloud.

Generates N seeded requests (``bench.generate``), starts a local cloud of its own (its own state
folder under ``bench/.data``, free ports; always stopped by PID), uploads the file to the input
bucket as a user would, waits until the run is COMPLETE and announced, and measures per stage:

- submit = every submit_batch + submit_request invocation of the run, collect = every
  collect_results invocation; a stage's seconds are the sum of the handlers' ``duration_s`` of
  their "event handled" log lines (failed invocations are counted and timed apart);
- MB/s and rows/s over the input file (submit) and over the run's Vertex output files (collect);
- beside each stage, the bare core on the same bytes, in this process, best of ``REPEATS``:
  what ``gemini-batch validate`` runs on the input file and what ``gemini-batch normalize`` runs
  on the downloaded output files; ratio = stage throughput / core throughput (target >= 0.5);
- the functions are warm: a small run goes first (``--warmup``, 100 requests) and its handlers'
  seconds are shown apart as the cold-start cost;
- each function's peak RSS (VmHWM, sampled over its process group: functions-framework forks a
  gunicorn worker), BigQuery load jobs per table (the proxy's ``/_proxy/jobs``), the bridge's
  deliveries, and a timeline from the upload to the announcement.

Prints one table and writes the same figures to ``bench/.data/e2e-<N>.json``. The core runs
after the cloud is stopped, so it does not compete with the emulators for the CPU (the stages did).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from bench.generate import write_requests
from bench.observe import (
    FunctionStats,
    PeakRss,
    bridge_stats,
    function_log,
    function_stats,
    load_jobs,
    proxy_jobs,
    read_log,
    run_entries,
    settled,
    stamp,
)
from local.stack import LocalCloudError, Stack
from local.wiring import DEFAULT as DEFAULT_WIRING
from local.wiring import STORAGE_FINALIZED, Wiring
from shared.logs import configure

DATA = Path(__file__).parent / ".data"
TIME_SCALE = 0.02  # as the integration tests: a 60 s poll tick every 1.2 s, Vertex's queue in a blink
REPEATS = 3  # the bare core: best of
TARGET_RATIO = 0.5
WARMUP = 100  # requests of the warm-up run (the functions' cold start is paid there, and shown)
SEED = 11  # bench.generate's default for requests: the same file as `make bench`
STAGES = {"submit": ("submit_batch", "submit_request"), "collect": ("collect_results",)}
FUNCTIONS = ("submit_batch", "submit_request", "poll_batches", "collect_results")
MB = 1_000_000

log = configure("bench", stream=sys.stderr)


class BenchError(RuntimeError):
    """The run could not be measured; the message says why."""


@dataclass(frozen=True)
class Places:
    """Where the pipeline reads and writes, from the wiring (as Terraform would set them)."""

    input_bucket: str
    input_prefix: str
    work_bucket: str
    dataset: str

    @classmethod
    def of(cls, wiring: Wiring) -> Places:
        """The submit_batch function's trigger and environment."""
        submit = next(f for f in wiring.functions if f.event_type == STORAGE_FINALIZED)
        return cls(submit.bucket or "", submit.prefix, submit.env["WORK_BUCKET"], wiring.dataset)


# --- the input ------------------------------------------------------------------------------
def load_window_seconds() -> int:
    """The local deployment's LOAD_WINDOW_SECONDS (the collector's, as the wiring sets it)."""
    wiring = Wiring.load(DEFAULT_WIRING)
    env = next(f.env for f in wiring.functions if f.name == "collect_results")
    return int(env.get("LOAD_WINDOW_SECONDS", "120"))


def requests_file(count: int, seed: int) -> Path:
    """The seeded request file (written once; the same file ``make bench`` uses for the default seed)."""
    DATA.mkdir(exist_ok=True)
    path = DATA / (f"requests_{count}.jsonl" if seed == SEED else f"requests_{count}_s{seed}.jsonl")
    if not path.exists():
        log.info("generating requests", extra={"path": str(path), "requests": count, "seed": seed})
        partial = path.with_suffix(".partial")
        write_requests(partial, count, seed)
        partial.replace(path)
    return path


# --- the run --------------------------------------------------------------------------------
@contextmanager
def local_cloud(state_dir: Path, time_scale: float, functions: bool = True) -> Iterator[Stack]:
    """A local cloud of its own, stopped by PID whatever happens (SIGTERM included)."""
    for name in list(os.environ):  # no real credentials, no fixed ports shared with another cloud
        if name.startswith(("GOOGLE_", "GEMINI_")) or (name.startswith("LOCAL_CLOUD_") and name.endswith("_PORT")):
            del os.environ[name]
    os.environ["NO_GCE_CHECK"] = "true"
    stack = Stack(state_dir, Wiring.load(DEFAULT_WIRING))

    def _terminated(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    log.info("starting the local cloud", extra={"state_dir": str(state_dir), "time_scale": time_scale})
    try:
        stack.up(time_scale=time_scale, functions=functions)
        log.info("local cloud up", extra={"seconds": round(time.monotonic() - started, 1)})
        yield stack
    finally:
        stopped = stack.stop()
        signal.signal(signal.SIGTERM, previous)
        log.info("local cloud stopped", extra={"processes": len(stopped)})


def upload(stack: Stack, places: Places, path: Path) -> tuple[str, str]:
    """Upload ``path`` under the input prefix with the real GCS client; return (object name, run id)."""
    from local.clients import storage_client
    from shared.core.ids import ObjectRef, run_id_for_object

    name = f"{places.input_prefix}bench-e2e-{path.stem}-{time.time_ns()}.jsonl"
    blob = storage_client(stack.endpoints).bucket(places.input_bucket).blob(name)
    blob.upload_from_filename(str(path))
    return name, run_id_for_object(ObjectRef(places.input_bucket, name, str(blob.generation)))


def measure_bq_source(stack: Stack, places: Places, path: Path, name: str, timeout: float) -> dict[str, Any]:
    """The same requests as a ``bq://`` table: load them, publish the message, time submit_request.

    The table gets the file's ``key`` and ``request`` (as JSON); the run is followed until it is
    RUNNING (its submission is what differs from a file's: the Storage Read API read). A table of
    the first 100 requests goes first, so that submit_request has loaded its Arrow and gRPC
    libraries (a cold start, as the warm-up run is for the rest).
    """
    with path.open("rb") as head:
        warm = b"".join(line for _, line in zip(range(100), head, strict=False))
    _bq_run(stack, places, warm, timeout)
    return _bq_run(stack, places, f"gs://{places.input_bucket}/{name}", timeout)


def _bq_run(stack: Stack, places: Places, source: str | bytes, timeout: float) -> dict[str, Any]:
    import io

    from google.cloud import bigquery

    from local.clients import bigquery_client, publisher
    from shared.core.ids import run_id_for_message

    ends = stack.endpoints
    table = f"{stack.wiring.project}.{places.dataset}.bench_requests_{time.time_ns()}"
    schema = [bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("request", "JSON")]
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema, ignore_unknown_values=True)
    started = time.monotonic()
    bq = bigquery_client(ends)
    if isinstance(source, bytes):
        bq.load_table_from_file(io.BytesIO(source), table, job_config=config).result()
    else:
        bq.load_table_from_uri(source, table, job_config=config).result()
    log.info("bq source loaded", extra={"table": table, "seconds": round(time.monotonic() - started, 1)})
    since = time.time()
    client = publisher(ends)
    topic = client.topic_path(stack.wiring.project, "batch-requests")
    message_id = client.publish(topic, orjson.dumps({"source": f"bq://{table}"})).result()
    run_id = run_id_for_message(places.work_bucket, message_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run, _ = _ledger(stack, places, run_id)
        if run.get("status") == "REJECTED":
            raise BenchError(f"the bq:// run {run_id} was REJECTED: {run.get('error') or run.get('report_uri')}")
        if run.get("status") in ("RUNNING", "COMPLETE"):
            time.sleep(1.0)  # its handler logs "event handled" right after
            stats = function_stats(stack, "submit_request", since, time.time())
            return {"run_id": run_id, "table": table, "requests": int(run.get("requests") or 0), "stats": stats}
        time.sleep(0.5)
    raise BenchError(f"the bq:// run {run_id} was not submitted after {timeout:.0f}s")


def _ledger(stack: Stack, places: Places, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from local.clients import storage_client

    gcs = storage_client(stack.endpoints)
    blob = gcs.bucket(places.work_bucket).get_blob(f"ledger/runs/{run_id}.json")
    run = orjson.loads(blob.download_as_bytes()) if blob else {}
    jobs = [
        orjson.loads(b.download_as_bytes()) for b in gcs.list_blobs(places.work_bucket, prefix=f"ledger/jobs/{run_id}/")
    ]
    return run, jobs


def _progress(run: dict[str, Any], jobs: list[dict[str, Any]]) -> str:
    states = sorted(
        f"c{j['chunk']}a{j['attempt']}:{j['status'].lower()}"
        + (f"/{j['vertex_state'].removeprefix('JOB_STATE_').lower()}" if j.get("vertex_state") else "")
        for j in jobs
    )
    return f"{run.get('status', 'waiting for the upload event')} {' '.join(states)}".strip()


def wait_announced(
    stack: Stack, places: Places, run_id: str, timeout: float, rss: PeakRss
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait until the run is COMPLETE and announced; a clear error when it is rejected or never is."""
    started = time.monotonic()
    deadline = started + timeout
    last, last_logged = "", 0.0
    while time.monotonic() < deadline:
        rss.sample()
        run, jobs = _ledger(stack, places, run_id)
        line = _progress(run, jobs)
        now = time.monotonic()
        if line != last or now - last_logged >= 10:
            log.info("run progress", extra={"run_id": run_id, "seconds": round(now - started, 1), "state": line})
            last, last_logged = line, now
        if run.get("status") == "REJECTED":
            raise BenchError(f"run {run_id} was REJECTED: {run.get('error') or run.get('report_uri')}")
        if run.get("status") == "COMPLETE" and run.get("announced"):
            return run, jobs
        time.sleep(0.5)
    errors = [
        f"  {name}: {e.get('message')}: {e.get('error') or str(e.get('stack_trace', ''))[-400:]}"
        for name in FUNCTIONS
        for e in read_log(function_log(stack, name))[-200:]
        if e.get("severity") in ("ERROR", "CRITICAL")
    ][-10:]
    raise BenchError(
        f"run {run_id} was not complete and announced after {timeout:.0f}s; last state: {last}; "
        f"logs: {stack.state_dir / 'logs'}" + ("\nlast errors:\n" + "\n".join(errors) if errors else "")
    )


def wait_settled(stack: Stack, run_id: str, timeout: float = 60.0) -> float:
    """The time the run's completion was logged, once the invocation that announced it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        when = settled(stack, list(FUNCTIONS), run_id)
        if when is not None:
            return when
        time.sleep(0.2)
    raise BenchError(f"run {run_id} is announced but its 'run complete' log line never came with its handler's end")


def download_outputs(stack: Stack, places: Places, run_id: str, into: Path) -> list[Path]:
    """Every Vertex output file of the run (``outputs/<run_id>/``), downloaded to ``into``."""
    from local.clients import storage_client

    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    paths = []
    for blob in storage_client(stack.endpoints).list_blobs(places.work_bucket, prefix=f"outputs/{run_id}/"):
        if not blob.name.endswith(".jsonl"):
            continue
        path = into / blob.name.removeprefix(f"outputs/{run_id}/").replace("/", "__")
        blob.download_to_filename(str(path))
        paths.append(path)
    if not paths:
        raise BenchError(f"no output files under gs://{places.work_bucket}/outputs/{run_id}/")
    return sorted(paths)


def work_bytes(stack: Stack, places: Places, run_id: str) -> dict[str, int]:
    """Bytes the run left in the work bucket, per top folder (staged inputs, Vertex outputs, staged rows)."""
    from local.clients import storage_client

    client = storage_client(stack.endpoints)
    return {
        folder: sum(int(b.size or 0) for b in client.list_blobs(places.work_bucket, prefix=f"{folder}/{run_id}/"))
        for folder in ("staging", "outputs", "rows")
    }


def rows_in_bigquery(stack: Stack, places: Places, run_id: str) -> int:
    """Rows of the run in the predictions table (every attempt)."""
    from google.cloud import bigquery

    from local.clients import bigquery_client

    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("run", "STRING", run_id)])
    sql = f"SELECT COUNT(*) AS n FROM {places.dataset}.predictions WHERE run_id = @run"
    rows = list(bigquery_client(stack.endpoints, stack.endpoints.location).query(sql, job_config=config).result())
    return int(rows[0]["n"])


def warm_up(stack: Stack, places: Places, count: int, rss: PeakRss) -> dict[str, Any]:
    """A small run first, so the measured one finds the functions warm (imports done, clients built).

    Its handlers' seconds are the cold-start cost, reported apart.
    """
    path = requests_file(count, SEED + 1)
    t0 = time.time()
    _, run_id = upload(stack, places, path)
    log.info("warm-up uploaded", extra={"run_id": run_id, "requests": count})
    wait_announced(stack, places, run_id, 300, rss)
    completed = wait_settled(stack, run_id)
    time.sleep(1.0)
    until = time.time()
    stats = {fn: function_stats(stack, fn, t0, until) for fn in FUNCTIONS}
    return {
        "requests": count,
        "run_id": run_id,
        "total_seconds": round(completed - t0, 2),
        "stages": {
            stage: {
                "seconds": round(sum(stats[f].seconds for f in fns), 3),
                "invocations": sum(stats[f].invocations for f in fns),
            }
            for stage, fns in STAGES.items()
        },
        "functions": {name: s.as_dict() for name, s in stats.items()},
    }


# --- the bare core --------------------------------------------------------------------------
def core_validate(path: Path) -> tuple[float, int]:
    """What ``gemini-batch validate FILE`` runs, timed without interpreter start-up: (best seconds, valid)."""
    from shared.core.validate import ValidationOptions, validate

    best, valid = float("inf"), 0
    for _ in range(REPEATS):
        with path.open("rb") as stream:
            started = time.perf_counter()
            summary = validate(stream, ValidationOptions())
            best = min(best, time.perf_counter() - started)
        if not summary.ok:
            raise BenchError(f"the generated requests are not valid: {summary.as_dict()}")
        valid = summary.valid
    return best, valid


def core_normalize(paths: list[Path], run_id: str, out: Path) -> tuple[float, int]:
    """What ``gemini-batch normalize FILES -o OUT --run-id RUN`` runs: (best seconds, rows)."""
    from shared.core.cost import default_prices
    from shared.core.normalize import Normalizer, RowContext

    price = default_prices().price("gemini-2.5-flash")  # rows are priced, as in the pipeline
    stamp_text = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    best, rows = float("inf"), 0
    for _ in range(REPEATS):
        rows = 0
        started = time.perf_counter()
        with out.open("wb") as sink:
            for path in paths:
                context = RowContext(run_id, None, str(path), 1, stamp_text, price)
                with path.open("rb") as stream:
                    rows += Normalizer(context).write_ndjson(stream, sink)
        best = min(best, time.perf_counter() - started)
    out.unlink(missing_ok=True)
    return best, rows


# --- figures --------------------------------------------------------------------------------
def stage_figures(stats: list[FunctionStats], size: int, rows: int, core_seconds: float) -> dict[str, Any]:
    """A stage's seconds, throughputs, per-row cost and ratio to the bare core."""
    seconds = sum(s.seconds for s in stats)
    cpu = sum(s.cpu_seconds for s in stats)
    return {
        "functions": {s.name: s.as_dict() for s in stats},
        "invocations": sum(s.invocations for s in stats),
        "retried": sum(s.failed for s in stats),
        "seconds": round(seconds, 3),
        "failed_seconds": round(sum(s.failed_seconds for s in stats), 3),
        "bytes": size,
        "rows": rows,
        "mb_per_s": round(size / MB / seconds, 3) if seconds else None,
        "rows_per_s": round(rows / seconds, 1) if seconds else None,
        "per_row_ms": round(seconds / rows * 1000, 4) if rows else None,
        "core_seconds": round(core_seconds, 4),
        "core_mb_per_s": round(size / MB / core_seconds, 3),
        "core_rows_per_s": round(rows / core_seconds, 1),
        "ratio": round(core_seconds / seconds, 3) if seconds else None,
        # The functions' own CPU against the core's: what the pipeline's code costs beyond the core,
        # whatever the services (here the emulators) make it wait.
        "cpu_seconds": round(cpu, 3),
        "cpu_ratio": round(core_seconds / cpu, 3) if cpu else None,
        "waiting_seconds": round(seconds - cpu, 3),
    }


def timeline(stack: Stack, run_id: str, t0: float, uploaded: float, completed: float) -> dict[str, float]:
    """Seconds after the upload started at which the run passed its milestones (from the logs)."""
    names = list(FUNCTIONS)

    def starts(name: str) -> list[float]:
        return [
            stamp(e) - float(e.get("duration_s") or 0)
            for e in read_log(function_log(stack, name))
            if e.get("function") == name and e.get("duration_s") is not None and stamp(e) >= t0
        ]

    points: dict[str, float] = {"upload done": uploaded}
    submit = starts("submit_batch") + starts("submit_request")
    if submit:
        points["submit started"] = min(submit)
    for label, message, pick in (
        ("batch jobs created", "batch job submitted", max),
        ("run submitted (RUNNING)", "run submitted", min),
        ("batch jobs final (poller)", "batch job finished", max),
    ):
        found = run_entries(stack, names, run_id, message)
        if found:
            points[label] = pick(stamp(e) for e in found)
    collect = starts("collect_results")
    if collect:
        points["collect started"] = min(collect)
    loaded = run_entries(stack, names, run_id, "results loaded")
    if loaded:
        points["results loaded"] = max(stamp(e) for e in loaded)
    points["announced"] = completed
    return {label: round(when - t0, 2) for label, when in sorted(points.items(), key=lambda kv: kv[1])}


def versions() -> dict[str, str]:
    """Python and the libraries that shape the timings."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("google-genai", "functions-framework", "google-cloud-storage", "google-cloud-bigquery", "orjson"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "?"
    return found


# --- the report -----------------------------------------------------------------------------
def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_report(result: dict[str, Any], json_path: Path) -> None:
    """One table (rich) on stdout."""
    from rich.console import Console, Group
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    stages = Table(
        "stage", "invocations", "retried", "seconds", "MB", "MB/s", "rows", "rows/s", "ms/row",
        "core s", "core MB/s", "ratio", "cpu s", "cpu ratio", "waiting s", box=None, title_justify="left",
        title=(
            f"bench-e2e: {result['n']:,} requests | input {result['input_bytes'] / MB:.1f} MB | Vertex outputs "
            f"{result['output_bytes'] / MB:.1f} MB | upload -> announced {result['total_seconds']:.1f} s"
        ),
    )  # fmt: skip
    for name, s in result["stages"].items():
        ratio = s["ratio"]
        mark = "" if ratio is None else (" ok" if ratio >= TARGET_RATIO else " MISS")
        stages.add_row(
            name,
            " + ".join(f"{f}:{v['invocations']}" for f, v in s["functions"].items()),
            str(s["retried"]),
            _fmt(s["seconds"], ".3f"),
            f"{s['bytes'] / MB:.2f}",
            _fmt(s["mb_per_s"], ".2f"),
            f"{s['rows']:,}",
            _fmt(s["rows_per_s"], ",.0f"),
            _fmt(s["per_row_ms"], ".3f"),
            f"{s['core_seconds']:.3f}",
            f"{s['core_mb_per_s']:.2f}",
            _fmt(ratio, ".2f") + mark,
            _fmt(s["cpu_seconds"], ".3f"),
            _fmt(s["cpu_ratio"], ".2f"),
            _fmt(s["waiting_seconds"], ".3f"),
        )
    functions = Table(
        "function", "invocations", "handled", "retried", "dropped", "handled s", "failed s", "peak RSS MiB",
        "processes", "deliveries ok/failed", box=None, title="functions", title_justify="left",
    )  # fmt: skip
    for name, f in result["functions"].items():
        bridge = result["bridge"].get(name, {})
        functions.add_row(
            name,
            str(f["invocations"]),
            str(f["handled"]),
            str(f["retried"]),
            str(f["dropped"]),
            f"{f['seconds']:.3f}",
            f"{f['failed_seconds']:.3f}",
            f"{result['peak_rss_mib'].get(name, 0):.1f}",
            str(result["processes"].get(name, 0)),
            f"{bridge.get('delivered', 0)}/{bridge.get('failed', 0)}"
            + (f" ({bridge['timeouts']} timeouts)" if bridge.get("timeouts") else ""),
        )
    window = result.get("load_window_seconds") or 0
    ceiling = f"{86400 // window:,}" if window else "one per file"
    loads = Table(
        "BigQuery table", "load jobs", "states", "this day", f"at most a day ({window} s windows)",
        box=None, title="load jobs of the run (BigQuery: 1,500 a table a day)", title_justify="left",
    )  # fmt: skip
    per_day = {(d["table"], d["day"]): d["load_jobs"] for d in result["load_jobs"]["per_table_per_day"]}
    today = datetime.now(UTC).date().isoformat()
    for table, count in result["load_jobs"]["per_table"].items():
        states = ", ".join(f"{k} {v}" for k, v in result["load_jobs"]["states"][table].items())
        loads.add_row(table, str(count), states, str(per_day.get((table, today), 0)), ceiling)
    steps = Table("milestone", "s after upload start", box=None, title="timeline", title_justify="left")
    for label, seconds in result["timeline"].items():
        steps.add_row(label, f"{seconds:.2f}")
    warm = result.get("warm_up")
    notes = [
        (
            f"measured after a warm-up run of {warm['requests']} requests on cold functions (its handlers: "
            + ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in warm["stages"].items())
            + f"; upload -> announced {warm['total_seconds']:.1f} s)"
        )
        if warm
        else "no warm-up run: the stages include the functions' cold start",
        f"rows loaded {result['rows_loaded']:,} (in BigQuery: {result['rows_in_bigquery']:,}); "
        f"core normalize rows {result['core_rows_normalized']:,}; work bucket MB: "
        + ", ".join(f"{k} {v / MB:.1f}" for k, v in result["work_bucket_bytes"].items())
        + "; stage s = sum of handlers' duration_s; "
        f"core = best of {REPEATS}, in-process, cloud stopped; ratio = stage MB/s / core MB/s "
        f"(target >= {TARGET_RATIO}); cpu ratio = core s / the handlers' own CPU s (cpu_s); waiting = "
        "handler s - cpu s (GCS, BigQuery, Vertex: here the emulators)",
        " ".join(f"{k} {v}" for k, v in result["versions"].items())
        + f" | time scale {result['time_scale']} | {result['cpus']} CPUs",
        f"json: {json_path}",
    ]
    console.print(Group(stages, "", functions, "", loads, "", steps, "", *notes))


# --- main -----------------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the pipeline once on N requests and gather every figure."""
    n: int = args.requests
    path = requests_file(n, args.seed)
    input_bytes = path.stat().st_size
    state_dir = DATA / f"cloud-{os.getpid()}"
    outputs_dir = DATA / f"e2e-{n}-outputs"
    places = Places.of(Wiring.load(DEFAULT_WIRING))
    timeout = args.timeout or 300 + n * 0.01
    with local_cloud(state_dir, args.time_scale) as stack:
        rss = PeakRss(stack)
        rss.sample()
        warm = warm_up(stack, places, args.warmup, rss) if args.warmup else None
        t0 = time.time()
        name, run_id = upload(stack, places, path)
        uploaded = time.time()
        log.info(
            "uploaded",
            extra={"gcs_uri": f"gs://{places.input_bucket}/{name}", "run_id": run_id, "bytes": input_bytes,
                   "seconds": round(uploaded - t0, 2), "timeout_s": timeout},
        )  # fmt: skip
        run, jobs = wait_announced(stack, places, run_id, timeout, rss)
        completed = wait_settled(stack, run_id)
        log.info("run announced", extra={"run_id": run_id, "seconds": round(completed - t0, 1), "chunks": len(jobs)})
        time.sleep(1.0)  # let any concurrent duplicate delivery end and log
        rss.sample()
        until = time.time()
        stats = {fn: function_stats(stack, fn, t0, until) for fn in FUNCTIONS}
        bridge = bridge_stats(stack, t0, until)
        loads = load_jobs(proxy_jobs(stack), t0)
        loaded = run_entries(stack, list(FUNCTIONS), run_id, "results loaded")
        rows_loaded = sum(int(e.get("rows") or 0) for e in loaded)
        in_bigquery = rows_in_bigquery(stack, places, run_id)
        outputs = download_outputs(stack, places, run_id, outputs_dir)
        written = work_bytes(stack, places, run_id)
        steps = timeline(stack, run_id, t0, uploaded, completed)
        bq = measure_bq_source(stack, places, path, name, timeout) if args.bq else None
    output_bytes = sum(p.stat().st_size for p in outputs)
    log.info("measuring the bare core", extra={"repeats": REPEATS, "output_files": len(outputs)})
    validate_s, valid = core_validate(path)
    normalize_s, normalized = core_normalize(outputs, run_id, DATA / f"e2e-{n}-normalized.ndjson")
    if not args.keep_state:
        shutil.rmtree(outputs_dir, ignore_errors=True)
        for data in ("gcs", "pubsub", "duckdb-home"):  # the logs stay, for a look afterwards
            shutil.rmtree(state_dir / data, ignore_errors=True)
    submitted = int(run.get("requests") or valid)
    return {
        "n": n,
        "seed": args.seed,
        "run_id": run_id,
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "output_files": len(outputs),
        "work_bucket_bytes": written,
        "chunks": int(run.get("chunks") or 0),
        "job_attempts": len(jobs),
        "rows_loaded": rows_loaded,
        "rows_in_bigquery": in_bigquery,
        "core_rows_normalized": normalized,
        "total_seconds": round(completed - t0, 2),
        "upload_seconds": round(uploaded - t0, 2),
        "stages": {
            "submit": stage_figures([stats[f] for f in STAGES["submit"]], input_bytes, submitted, validate_s),
            "collect": stage_figures([stats[f] for f in STAGES["collect"]], output_bytes, rows_loaded, normalize_s),
            **({"submit bq://": stage_figures([bq["stats"]], input_bytes, bq["requests"], validate_s)} if bq else {}),
        },
        "functions": {name: s.as_dict() for name, s in stats.items()},
        "peak_rss_mib": {name: round(v, 1) for name, v in rss.peak_mib.items()},
        "processes": rss.processes,
        "bridge": bridge,
        "load_jobs": loads,
        "load_window_seconds": load_window_seconds(),
        "timeline": steps,
        "warm_up": warm,
        "time_scale": args.time_scale,
        "function_timeout_s": {f.name: f.timeout_seconds for f in Wiring.load(DEFAULT_WIRING).functions},
        "state_dir": str(state_dir),
        "cpus": os.cpu_count(),
        "versions": versions(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when the run cannot be measured."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=10_000, help="requests in the file (default 10000)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--timeout", type=float, default=0, help="seconds to wait for the run (default 300 + N/100)")
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE)
    parser.add_argument(
        "--warmup", type=int, default=WARMUP, help=f"requests of a warm-up run first (default {WARMUP}; 0: none)"
    )
    parser.add_argument("--keep-state", action="store_true", help="keep the cloud's data and the downloaded outputs")
    parser.add_argument(
        "--no-bq", dest="bq", action="store_false", help="skip the bq:// source (the same requests from a table)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be positive")
    try:
        result = measure(args)
    except (BenchError, LocalCloudError) as exc:
        log.error("bench failed", extra={"error": str(exc)})
        return 1
    except KeyboardInterrupt:
        log.warning("bench interrupted: the local cloud was stopped")
        return 130
    json_path = DATA / f"e2e-{args.requests}.json"
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print_report(result, json_path)
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
