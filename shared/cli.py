"""``gemini-batch``: validate request files and normalize predictions files locally."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Final, Never

import orjson
import typer
from tqdm import tqdm

from shared.core.cost import Estimator, PriceTable, default_prices, estimate, parse_prices
from shared.core.errors import PermanentError
from shared.core.keys import JobLimits
from shared.core.normalize import Normalizer, RowContext
from shared.core.validate import ValidationOptions, ValidationSummary, scan, validate

app = typer.Typer(
    help="Validate Gemini batch request files and normalize Vertex AI batch outputs into BigQuery-ready rows.",
    no_args_is_help=True,
    add_completion=False,
)

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


def _progress(stream: BinaryIO, total: int, label: str) -> Iterator[bytes]:
    """Lines of ``stream``, with a byte progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        yield from stream
        return
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False) as bar:
        for line in stream:
            bar.update(len(line))
            yield line


def _human(summary: ValidationSummary, path: Path) -> str:
    lines = [
        f"{path}: {'valid' if summary.ok else 'INVALID'}",
        f"  lines {summary.lines} (blank {summary.blank}), valid {summary.valid}, invalid {summary.invalid}, "
        f"bytes {summary.bytes}",
        f"  keys: present {summary.keys_present}, assigned {summary.keys_missing}, "
        f"duplicated {summary.keys_duplicated}",
    ]
    if summary.exceeds_job_limits:
        lines.append(
            f"  exceeds one job's limits ({summary.max_requests} requests / {summary.max_bytes} bytes): "
            "it will be split into several jobs"
        )
    for reason, count in sorted(summary.invalid_by_reason.items()):
        lines.append(f"  {reason}: {count} line(s)")
        for issue in summary.examples.get(reason, []):
            lines.append(f"    line {issue.line}: {issue.detail}")
    if summary.valid == 0 and summary.invalid == 0:
        lines.append("  the file has no requests")
    return "\n".join(lines)


@app.command("validate")
def validate_command(
    file: ExistingFile,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    max_requests: Annotated[int, typer.Option(min=1, help="Requests per batch job.")] = JobLimits().max_requests,
    max_bytes: Annotated[int, typer.Option(min=1, help="Bytes per batch job input.")] = JobLimits().max_bytes,
    max_line_bytes: Annotated[
        int, typer.Option(min=1, help="Longest accepted line.")
    ] = ValidationOptions().max_line_bytes,
    examples: Annotated[int, typer.Option(min=0, help="Examples shown per reason.")] = ValidationOptions().max_examples,
) -> None:
    """Check a request JSONL file line by line. Exit 0 when valid, 1 when not."""
    options = ValidationOptions(JobLimits(max_requests, max_bytes), max_line_bytes, examples)
    with file.open("rb") as stream:
        summary = validate(stream, options)
    if as_json:
        typer.echo(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(_human(summary, file))
    raise typer.Exit(0 if summary.ok else 1)


def _prices(path: Path | None) -> PriceTable:
    if path is None:
        return default_prices()
    try:
        return parse_prices(path.read_bytes())
    except PermanentError as exc:
        raise typer.BadParameter(str(exc), param_hint="--prices") from exc


Prices = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, readable=True, help="A price table of your own (default: shipped)."),
]
DEFAULT_MODEL = "gemini-2.5-flash"


@app.command("estimate")
def estimate_command(
    file: ExistingFile,
    model: Annotated[str, typer.Option(help="The model the requests will run on.")] = DEFAULT_MODEL,
    output_tokens: Annotated[
        float | None,
        typer.Option(min=0, help="Expected output (and thinking) tokens per request (default: the table's)."),
    ] = None,
    prices: Prices = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Estimate what a request file will cost as a Vertex batch job, offline (exit 1: invalid lines, no price).

    The same counts the pipeline makes before it submits a run: input tokens from the text
    and a fixed count per non-text part, output bounded by maxOutputTokens (else the model's
    maximum), at the batch rate.
    """
    table = _prices(prices)
    price = table.price(model)
    estimator = Estimator.for_price(table.estimator, price)
    summary = ValidationSummary()
    with file.open("rb") as stream:
        for line in scan(_progress_stream(stream, os.path.getsize(file), file.name), ValidationOptions(), summary):
            if line.issue is None:
                estimator.add(line.keyed().data)
    if output_tokens is None:
        made = estimate(estimator.state(), price, table.estimator.default_output_tokens)
    else:
        made = estimate(estimator.state(), price, output_tokens, "given")
    data = {**made.as_dict(), "model": model, "file": str(file), "invalid_lines": summary.invalid}
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(_human_estimate(data, table))
    raise typer.Exit(0 if price is not None and not summary.invalid else 1)


def _human_estimate(data: dict[str, object], table: PriceTable) -> str:
    def usd(value: object) -> str:
        return "no price for this model" if value is None else f"{value:,.4f} USD"

    return "\n".join(
        [
            f"{data['file']}: {data['requests']} requests on {data['model']} at the batch rate "
            f"(prices {table.version}, taken {table.taken})",
            f"  input tokens (estimated)   {data['input_tokens']:,}",
            f"  output tokens expected     {data['output_tokens_expected']:,} ({data['output_basis']})",
            f"  output tokens at most      {data['output_tokens_bound']:,}",
            f"  expected cost              {usd(data['expected_usd'])}",
            f"  worst case                 {usd(data['worst_case_usd'])}",
            *([f"  invalid lines (not counted) {data['invalid_lines']}"] if data["invalid_lines"] else []),
        ]
    )


def _progress_stream(stream: BinaryIO, total: int, label: str) -> BinaryIO:
    """``stream`` read with a byte progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return stream
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False)
    return _Counted(stream, bar)  # type: ignore[return-value]


class _Counted:
    """A binary stream that moves a progress bar as it is read."""

    def __init__(self, stream: BinaryIO, bar: tqdm[Never]) -> None:
        self.stream, self.bar = stream, bar

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bar.update(len(data))
        if not data:
            self.bar.close()
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


@app.command("normalize")
def normalize_command(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="NDJSON output file (default: stdout).")] = None,
    run_id: Annotated[str | None, typer.Option(help="run_id column.")] = None,
    job_name: Annotated[str | None, typer.Option(help="job_name column.")] = None,
    attempt: Annotated[int, typer.Option(min=1, help="attempt column.")] = 1,
    loaded_at: Annotated[str | None, typer.Option(help="loaded_at column (ISO 8601; default: now, UTC).")] = None,
    table: Annotated[bool, typer.Option("--table", help="Print a compact table for people instead of NDJSON.")] = False,
    model: Annotated[str | None, typer.Option(help="The job's model: rows get cost_usd at its batch price.")] = None,
    prices: Prices = None,
) -> None:
    """Normalize Vertex batch predictions files into NDJSON rows for a BigQuery load job.

    Rows carry the output line's own `key` and `status` members as well: load them
    with ignore_unknown_values (bq load --ignore_unknown_values).
    """
    stamp = loaded_at or datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    price = None if model is None else _prices(prices).price(model)
    if model is not None and price is None:
        typer.echo(f"{model} has no price in the table: rows get no cost", err=True)
    if table:
        _print_table(files, RowContext(run_id, job_name, None, attempt, stamp, price))
        return
    rows = 0
    with ExitStack() as stack:
        out: BinaryIO = stack.enter_context(output.open("wb")) if output else sys.stdout.buffer
        for path in files:
            context = RowContext(run_id, job_name, str(path), attempt, stamp, price)
            with path.open("rb") as stream:
                rows += Normalizer(context).write_ndjson(_progress(stream, os.path.getsize(path), path.name), out)
        out.flush()
    if output is not None:
        typer.echo(f"{rows} rows written to {output}", err=True)


def _print_table(files: list[Path], context: RowContext) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table("key", "outcome", "finish", "prompt", "output", "thoughts", "total", "error / answer", box=None)
    for path in files:
        normalizer = Normalizer(RowContext(context.run_id, context.job_name, str(path), context.attempt))
        with path.open("rb") as stream:
            for line in stream:
                if not line.strip():
                    continue
                row = normalizer.row(line)
                detail = row["error_message"] or row["response_text"] or row["block_reason"] or ""
                view.add_row(
                    row["request_key"],
                    row["outcome"],
                    row["finish_reason"] or "",
                    *(
                        str(row[c]) if row[c] is not None else ""
                        for c in ("prompt_tokens", "candidates_tokens", "thoughts_tokens", "total_tokens")
                    ),
                    " ".join(str(detail).split())[:60],
                )
    # Cells hold data (keys, model text): "[/INST]" or ":smile:" must print as they are, not as markup.
    Console(width=160, markup=False, emoji=False, highlight=False).print(view)


# --- operations: a deployment (make outputs) or the local cloud ---------------------------------
Local = Annotated[bool, typer.Option("--local", help="Talk to the running local cloud (make local-up).")]
Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        dir_okay=False,
        help="`terraform output -json` of the deployment (default: $GEMINI_BATCH_CONFIG, else gemini-batch.json).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
NEXT: Final = {
    "SUBMITTING": "its file is being staged; the poller resumes it if its submitter died",
    "AWAITING_APPROVAL": "held by the budget guard: `gemini-batch approve` or `reject` it (else it expires)",
    "RUNNING": "its jobs run (or wait for a slot); each is collected when it ends",
    "COMPLETE": "complete: `gemini-batch results` gets its rows, `gemini-batch retry` sends chosen rows again",
    "CANCELLED": "cancelled: what was loaded is kept, the rest is MISSING (cancelled); `gemini-batch retry` goes on",
    "REJECTED": "rejected: nothing runs; the report says why",
}


def _connect(local: bool, config: Path | None) -> tuple[Any, Any]:
    """(settings, ports) of the deployment or local cloud the command talks to (exit 1 when unreachable)."""
    from shared.adapters import ports
    from shared.deployment import deployment_settings, local_settings

    try:
        settings = local_settings() if local else deployment_settings(config)
    except PermanentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    return settings, ports(settings)


def _ledger(settings: Any, the_ports: Any) -> Any:
    from shared.services.ledger import Ledger

    return Ledger(the_ports.store, settings.work_bucket, settings.lease_seconds)


def _echo_json(data: object) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@app.command("runs")
def runs_command(
    local: Local = False,
    config: Config = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this state (e.g. RUNNING, AWAITING_APPROVAL).")
    ] = None,
    since: Annotated[
        str, typer.Option(help="Only runs created this long ago or less: 30m, 12h, 7d.", show_default=True)
    ] = "7d",
    as_json: AsJson = False,
) -> None:
    """Runs, newest first: state, source, model, requests, rows per outcome, attempts, cost, started, finished.

    The same row as the BigQuery view `runs` (live, from the ledger).
    """
    from shared.core.records import Run
    from shared.services.run_states import run_row

    match = re.fullmatch(r"(\d+)([mhd])", since)
    if match is None:
        raise typer.BadParameter("a number and m, h or d: 30m, 12h, 7d", param_hint="--since")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    horizon = datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    settings, the_ports = _connect(local, config)
    ledger = _ledger(settings, the_ports)
    found = []
    # Only records written since the horizon (a run created since was written since), read in parallel.
    uris = the_ports.store.list(f"{ledger.root}/runs/", updated_since=horizon)
    with ThreadPoolExecutor(max_workers=8) as pool:  # within the storage client's connection pool
        reads = list(pool.map(the_ports.store.read, uris))
    for read in reads:
        if read is None:
            continue
        run = Run.from_json(orjson.loads(read[0]))
        created = run.created_at or run.updated_at
        if (status and run.status != status.upper()) or (created and datetime.fromisoformat(created) < horizon):
            continue
        found.append(run)
    found.sort(key=lambda r: r.created_at or r.updated_at, reverse=True)
    rows = [run_row(r) for r in found]
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    view = Table("run", "status", "source", "model", "requests", "rows", "tries", "USD", "started", "finished",
                 box=None)  # fmt: skip
    for row in rows:
        cost = row["cost_usd"] if row["cost_usd"] is not None else row["expected_cost_usd"]
        counts = ", ".join(f"{k} {v}" for k, v in sorted((row["rows_by_outcome"] or {}).items()))
        view.add_row(
            str(row["run_id"]), str(row["status"]), str(row["source"]), str(row["model"]), str(row["requests"]),
            counts, str(row["attempts"] or ""),
            "" if cost is None else f"{cost:.4f}" + ("" if row["cost_usd"] is not None else " (expected)"),
            str(row["created_at"] or "")[:19], str(row["finished_at"] or "")[:19],
        )  # fmt: skip
    Console(width=220, markup=False, emoji=False, highlight=False).print(view)


@app.command("status")
def status_command(run_id: str, local: Local = False, config: Config = None, as_json: AsJson = False) -> None:
    """One run in depth: every chunk and attempt, its Vertex job and state history, and what happens next."""
    settings, the_ports = _connect(local, config)
    ledger = _ledger(settings, the_ports)
    found = ledger.get_run(run_id)
    if found is None:
        typer.echo(f"error: no run {run_id} in gs://{settings.work_bucket}/ledger/runs/", err=True)
        raise typer.Exit(1)
    run = found[0]
    attempts = sorted(ledger.jobs_of(run_id), key=lambda r: (r.chunk, r.attempt))
    data = {
        "run": {k: v for k, v in run.to_json().items() if k not in ("staged", "options", "loads", "holder")},
        "next": NEXT.get(run.status, ""),
        "attempts": [
            {
                "chunk": r.chunk, "attempt": r.attempt, "status": r.status, "vertex_state": r.vertex_state,
                "job_name": r.job_name, "requests": r.requests, "counts": r.counts, "retried": r.retried,
                "stuck": r.stuck, "error": r.error or None, "cost_usd": r.cost.get("usd"), "history": r.history,
                "model": r.model or run.model, "cancelled": r.cancelled or None,
            }
            for r in attempts
        ],
    }  # fmt: skip
    if as_json:
        _echo_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200, markup=False, emoji=False, highlight=False)
    console.print(f"{run.run_id}  {run.status}  {run.source}  {run.model}")
    console.print(f"  requests {run.requests}, invalid {run.invalid}, chunks {run.chunks}; next: {data['next']}")
    if run.error:
        console.print(f"  error: {run.error}")
    if run.report_uri:
        console.print(f"  report: {run.report_uri}")
    if run.cancel:
        console.print(f"  cancelled {run.cancel.get('at', '')}: {run.cancel.get('why', '')}")
    if run.reopen:
        done = "queued" if run.reopen.get("done") else "being queued"
        console.print(f"  retry {run.reopen['id']} ({', '.join(run.reopen['outcomes'])}; {done}): "
                      f"{sum(run.reopen['chunks'].values())} rows")  # fmt: skip
    view = Table("chunk", "try", "status", "vertex", "job", "model", "rows", "stuck", box=None)
    for r in attempts:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()))
        view.add_row(str(r.chunk), str(r.attempt), r.status, r.vertex_state, r.job_name.rsplit("/", 1)[-1],
                     r.model or run.model, counts, "yes" if r.stuck else "")  # fmt: skip
    console.print(view)


def _publish_source(settings: Any, the_ports: Any, message: dict[str, Any]) -> str:
    """A batch-requests message naming a source; the run id the pipeline derives from it."""
    from shared.core.ids import run_id_for_message

    message_id = the_ports.bus.publish(settings.batch_requests_topic, message)
    return run_id_for_message(settings.work_bucket, message_id)


def _upload(settings: Any, the_ports: Any, file: Path, prefix: str) -> tuple[str, str]:
    """Upload a request file under ``prefix`` of the input bucket: (gs:// uri, generation)."""
    stamp_text = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    uri = f"gs://{settings.input_bucket}/{prefix}{file.stem}-{stamp_text}.jsonl"
    return uri, str(the_ports.store.upload(file, uri))  # create-only: its generation is the run's


def _follow(
    settings: Any, the_ports: Any, run_id: str, timeout: float, selection: str = "", held: bool = True, answer: str = ""
) -> Any:
    """Follow a run with a live display until it ends (announced, rejected or held); the run, or None on timeout.

    ``selection``: a retry's, which must have been acted on first (until then the run is the old one);
    ``held``: a run held for approval ends the wait (not when following a cancel); ``answer``: where
    the retry says why it was not made.
    """
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from shared.core.records import RUN_AWAITING_APPROVAL, RUN_REJECTED

    ledger = _ledger(settings, the_ports)
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} attempts"))
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(run_id, total=None)
        while True:
            found = ledger.get_run(run_id)
            run = found[0] if found else None
            if run is not None:
                attempts = ledger.jobs_of(run_id)
                done = sum(a.status in ("COLLECTED", "UNCOLLECTABLE") for a in attempts)
                live = sum(a.status == "SUBMITTED" for a in attempts)
                rows = sum(sum(a.counts.values()) - a.retried for a in attempts if a.status == "COLLECTED")
                states = ", ".join(f"{k} {v}" for k, v in sorted(Counter(a.vertex_state or a.status
                                                                        for a in attempts).items()))  # fmt: skip
                description = f"{run_id} {run.status}: chunks {run.chunks}, jobs live {live} ({states}), rows {rows}"
                progress.update(task, description=description, completed=done, total=len(attempts) or None)
                acted = not selection or selection in run.retries
                answered = answer and not acted and the_ports.store.read(answer)
                if answered:  # the retry was not made: why
                    said = orjson.loads(answered[0])
                    typer.echo(f"error: retry of {run_id} {said['outcome']}: {said['why']}", err=True)
                    return None
                waiting = held and run.status == RUN_AWAITING_APPROVAL
                if acted and (run.announced or run.status == RUN_REJECTED or waiting):
                    return run
            if time.monotonic() > deadline:
                typer.echo(f"error: {run_id} still {run.status if run else 'unknown'} after {timeout:.0f} s", err=True)
                return None
            time.sleep(2.0)


def _summary(settings: Any, the_ports: Any, run: Any, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print how a followed run ended."""
    from shared.services.run_states import run_row

    row = {**run_row(run), **(extra or {})}
    if as_json:
        _echo_json(row)
    elif run.status == "REJECTED":
        typer.echo(f"{run.run_id} REJECTED: {run.error or 'invalid lines'} (report: {run.report_uri})")
    elif run.status == "AWAITING_APPROVAL":  # not complete: a person decides
        typer.echo(f"{run.run_id} AWAITING_APPROVAL: {run.error} (report: {run.report_uri}); approve or reject it")
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()))
        rows = sum(run.counts.values())
        typer.echo(f"{run.run_id} {run.status}: {rows} rows ({counts}); results: gemini-batch results {run.run_id}")


def _wait(settings: Any, the_ports: Any, run_id: str, timeout: float, as_json: bool = False, ok: str = "COMPLETE",
          selection: str = "", extra: dict[str, Any] | None = None, answer: str = "") -> int:  # fmt: skip
    """Follow a run to its end and print its summary: exit 0 when it ends ``ok``, else 1."""
    run = _follow(settings, the_ports, run_id, timeout, selection, held=ok != "CANCELLED", answer=answer)
    if run is None:
        return 1
    _summary(settings, the_ports, run, as_json, extra)
    return 0 if run.status == ok else 1


@app.command("submit")
def submit_command(
    source: Annotated[
        str, typer.Argument(help="A local JSONL file, gs://bucket/object or bq://project.dataset.table.")
    ],
    model: Annotated[str, typer.Option(help="The model (default: the deployment's MODEL).")] = "",
    label: Annotated[list[str] | None, typer.Option(help="A label k=v for the run's jobs (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it completes; print its summary.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="--wait gives up after this many seconds.")] = 86_400,
    local: Local = False,
    config: Config = None,
    as_json: AsJson = False,
) -> None:
    """Submit requests: a local file is uploaded, a URI becomes a batch-requests message. Prints the run id at once.

    With --json: {"run_id", "source"} (with --wait, the run's row when it ends, as `runs` prints it).
    """
    from shared.core.ids import ObjectRef, run_id_for_object

    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not k=v", param_hint="--label")
        labels[key] = value
    path = Path(source)
    if not source.startswith(("gs://", "bq://")) and not path.is_file():
        raise typer.BadParameter(f"{source} is not a file, a gs:// or a bq:// source", param_hint="SOURCE")
    settings, the_ports = _connect(local, config)
    if source.startswith(("gs://", "bq://")) or model or labels:
        if not source.startswith(("gs://", "bq://")):  # a message names its model: the file goes outside the prefix
            if not settings.input_prefix:
                typer.echo("error: with --model or --label a file goes outside INPUT_PREFIX, which is empty", err=True)
                raise typer.Exit(1)
            source, _ = _upload(settings, the_ports, path, "cli/")
        message = {"source": source, **({"model": model} if model else {}), **({"labels": labels} if labels else {})}
        run_id = _publish_source(settings, the_ports, message)
    else:
        source, generation = _upload(settings, the_ports, path, settings.input_prefix)
        bucket, name = source.removeprefix("gs://").split("/", 1)
        run_id = run_id_for_object(ObjectRef(bucket, name, generation))
    if wait:
        if not as_json:
            typer.echo(run_id)
        raise typer.Exit(_wait(settings, the_ports, run_id, timeout, as_json))
    _echo_json({"run_id": run_id, "source": source}) if as_json else typer.echo(run_id)


@app.command("replay")
def replay_command(
    source: Annotated[str, typer.Argument(help="gs://bucket/object: run it again, as a new run.")],
    local: Local = False,
    config: Config = None,
    as_json: AsJson = False,
) -> None:
    """Submit a file again as a new run: an upload is copied beside itself (a new object), others are sent."""
    from shared.core.ids import ObjectRef, run_id_for_object

    if not source.startswith("gs://"):
        raise typer.BadParameter("a gs:// object", param_hint="SOURCE")
    settings, the_ports = _connect(local, config)
    if the_ports.store.generation(source) is None:
        typer.echo(f"error: {source} does not exist", err=True)
        raise typer.Exit(1)
    bucket, name = source.removeprefix("gs://").split("/", 1)
    if bucket == settings.input_bucket and name.startswith(settings.input_prefix) and name.endswith(".jsonl"):
        # A copy beside it (server-side, however large): its upload event starts the new run, and the
        # original generation stays for a run of it still being staged.
        stamp_text = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        copy = f"{name.removesuffix('.jsonl')}.replay-{stamp_text}.jsonl"
        generation = the_ports.store.copy(source, f"gs://{bucket}/{copy}", if_generation_match=0)
        run_id = run_id_for_object(ObjectRef(bucket, copy, str(generation)))
    else:
        run_id = _publish_source(settings, the_ports, {"source": source})
    _echo_json({"run_id": run_id, "source": source}) if as_json else typer.echo(run_id)


@app.command("results")
def results_command(
    run_id: str,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="FILE.parquet, .csv or .jsonl (default: JSONL on stdout).")
    ] = None,
    outcome: Annotated[list[str] | None, typer.Option(help="Only rows with this outcome (repeatable).")] = None,
    local: Local = False,
    config: Config = None,
) -> None:
    """The latest row of every request of a run, from BigQuery (latest_predictions), in Arrow underneath."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    suffix = output.suffix.lower() if output else ".jsonl"
    if suffix not in (".parquet", ".csv", ".jsonl", ".ndjson"):
        raise typer.BadParameter("the file must end .parquet, .csv or .jsonl", param_hint="-o")
    settings, the_ports = _connect(local, config)
    if _ledger(settings, the_ports).get_run(run_id) is None:
        typer.echo(f"error: no run {run_id}", err=True)
        raise typer.Exit(1)
    total, batches = the_ports.warehouse.results(run_id, [o.upper() for o in outcome or []])
    written = 0
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, unit="row", file=sys.stderr, disable=not sys.stderr.isatty()))
        writer: Any = None
        out: BinaryIO = stack.enter_context(output.open("wb")) if output else sys.stdout.buffer
        for batch in batches:
            # JSON columns as their text: every format takes strings.
            table = pa.Table.from_batches([batch])
            table = table.cast(pa.schema([pa.field(f.name, pa.string()) if isinstance(f.type, pa.ExtensionType)
                                          else f for f in table.schema]))  # fmt: skip
            if suffix == ".parquet":
                writer = writer or stack.enter_context(pq.ParquetWriter(out, table.schema))
                writer.write_table(table)
            elif suffix == ".csv":
                writer = writer or stack.enter_context(pa_csv.CSVWriter(out, table.schema))
                writer.write_table(table)
            else:
                out.write(b"".join(orjson.dumps(row, default=str) + b"\n" for row in table.to_pylist()))
            written += table.num_rows
            bar.update(table.num_rows)
    if output is not None:
        typer.echo(f"{written} rows of {run_id} written to {output}", err=True)


def _run_or_exit(settings: Any, the_ports: Any, run_id: str) -> Any:
    found = _ledger(settings, the_ports).get_run(run_id)
    if found is None:
        typer.echo(f"error: no run {run_id} in gs://{settings.work_bucket}/ledger/runs/", err=True)
        raise typer.Exit(1)
    return found[0]


def _sent(settings: Any, verb: str, run_id: str, message_id: str, as_json: bool, **extra: Any) -> None:
    if as_json:
        _echo_json({"run_id": run_id, "action": verb, "message_id": message_id, **extra})
    else:
        typer.echo(f"{verb} {run_id}: published on {settings.batch_requests_topic} ({message_id}); acted on once")


def _decide(verdict: str, run_id: str, reason: str, local: bool, config: Path | None, as_json: bool) -> None:
    settings, the_ports = _connect(local, config)
    run = _run_or_exit(settings, the_ports, run_id)
    if run.status != "AWAITING_APPROVAL":
        typer.echo(f"error: {run_id} is {run.status}, not AWAITING_APPROVAL: nothing to decide", err=True)
        raise typer.Exit(1)
    message = {verdict: run_id, **({"reason": reason} if reason else {})}
    message_id = the_ports.bus.publish(settings.batch_requests_topic, message, run_id=run_id)
    _sent(settings, verdict, run_id, message_id, as_json)


Reason = Annotated[str, typer.Option(help="Why (kept with the decision).")]


@app.command("approve")
def approve_command(
    run_id: str, reason: Reason = "", local: Local = False, config: Config = None, as_json: AsJson = False
) -> None:
    """Submit a run the budget guard holds (AWAITING_APPROVAL)."""
    _decide("approve", run_id, reason, local, config, as_json)


@app.command("reject")
def reject_command(
    run_id: str, reason: Reason = "", local: Local = False, config: Config = None, as_json: AsJson = False
) -> None:
    """Reject a run the budget guard holds: no job is ever created for it."""
    _decide("reject", run_id, reason, local, config, as_json)


Wait = Annotated[bool, typer.Option("--wait", help="Follow the run until it ends; print its summary.")]
Timeout = Annotated[float, typer.Option(min=1, help="--wait gives up after this many seconds.")]


@app.command("cancel")
def cancel_command(
    run_id: str,
    reason: Reason = "",
    wait: Wait = False,
    timeout: Timeout = 3600,
    local: Local = False,
    config: Config = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a run: its queued jobs are never created, its live ones are cancelled; it ends CANCELLED.

    What was already loaded is kept; every other request gets a MISSING row saying the run was
    cancelled (none is retried; `gemini-batch retry` can send them later).
    """
    settings, the_ports = _connect(local, config)
    run = _run_or_exit(settings, the_ports, run_id)
    if run.status == "REJECTED" or (run.status in ("COMPLETE", "CANCELLED") and run.announced):
        typer.echo(f"error: {run_id} is {run.status}: nothing to cancel", err=True)
        raise typer.Exit(1)
    # Fenced by the run's latest retry: delivered again after a later retry, it is not taken for one of it.
    message = {"cancel": run_id, "reopen": run.reopen.get("id", ""), **({"reason": reason} if reason else {})}
    message_id = the_ports.bus.publish(settings.batch_requests_topic, message, run_id=run_id)
    if not wait:
        _sent(settings, "cancel", run_id, message_id, as_json)
        return
    raise typer.Exit(_wait(settings, the_ports, run_id, timeout, as_json, ok="CANCELLED"))


@app.command("retry")
def retry_command(
    run_id: str,
    outcome: Annotated[
        list[str] | None, typer.Option(help="Rows with this outcome (repeatable; default FAILED and MISSING).")
    ] = None,
    error_status: Annotated[
        list[str] | None, typer.Option(help="Only rows with this error_status (repeatable), e.g. NOT_FOUND.")
    ] = None,
    model: Annotated[str, typer.Option(help="Run them on this model (default: the run's).")] = "",
    approve: Annotated[
        bool, typer.Option("--approve", help="Accept its cost over MAX_RUN_COST_USD / MAX_DAILY_COST_USD.")
    ] = False,
    wait: Wait = False,
    timeout: Timeout = 86_400,
    local: Local = False,
    config: Config = None,
    as_json: AsJson = False,
) -> None:
    """Send chosen latest rows of a finished run again, as a new attempt of their chunks.

    Also rows that were not retryable, once their cause is fixed (e.g. --model after a typo).
    Once per selection: the same call made again before the run changes is acted on once. The
    run is RUNNING again until the new attempts are collected, then announced again.
    """
    from shared.core.messages import check_model
    from shared.services.retry import DEFAULT_OUTCOMES, answer_uri, request_for

    if model:
        try:
            check_model(model)
        except PermanentError as exc:
            raise typer.BadParameter(str(exc), param_hint="--model") from exc
    outcomes = [o.upper() for o in outcome or DEFAULT_OUTCOMES]
    statuses = [s.upper() for s in error_status or []]
    settings, the_ports = _connect(local, config)
    run = _run_or_exit(settings, the_ports, run_id)
    if run.status not in ("COMPLETE", "CANCELLED") or not run.announced:
        typer.echo(f"error: {run_id} is {run.status}: retry it once it has finished", err=True)
        raise typer.Exit(1)
    request = dataclasses.replace(
        request_for(_ledger(settings, the_ports), run_id, outcomes, statuses, model),
        approved=approve,
        nonce=uuid.uuid4().hex[:16],  # this sending's own answer (not an earlier one's)
    )
    selection = {"selection": request.selection, "outcomes": outcomes, "error_statuses": statuses}
    if request.selection in run.retries:
        typer.echo(f"{run_id}: these rows were retried already (selection {request.selection})", err=True)
    elif next(iter(the_ports.warehouse.selected_keys(run_id, outcomes, statuses)), None) is None:  # (key, chunk)
        with_status = f" with error_status {' or '.join(statuses)}" if statuses else ""
        typer.echo(f"{run_id}: no latest row is {' or '.join(outcomes)}{with_status}: nothing to retry", err=True)
        raise typer.Exit(0)
    else:
        message_id = the_ports.bus.publish(settings.batch_requests_topic, request.message(), run_id=run_id)
        if not wait:
            _sent(settings, "retry", run_id, message_id, as_json, **selection)
            return
    if not wait:
        return
    extra = selection if as_json else None
    answer = answer_uri(_ledger(settings, the_ports), run_id, request.selection, request.nonce)
    code = _wait(settings, the_ports, run_id, timeout, as_json, selection=request.selection, extra=extra, answer=answer)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
