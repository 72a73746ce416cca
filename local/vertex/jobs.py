"""Batch jobs: the store, the state machine and the runner thread.

A job goes QUEUED -> PENDING -> RUNNING -> a final state on a clock that can be
accelerated (``time_scale``: 0.01 makes one emulated second last 10 ms). Inputs are read
from the GCS emulator (``gs://``) or the BigQuery emulator (``bq://``); outputs go where
Vertex puts them: ``<dest>/prediction-model-<timestamp>/predictions*.jsonl``, or a
BigQuery table.

Job faults come from labels named ``emulator-<fault>`` or from rules set through the
admin endpoint (see server.py): ``fail``, ``expire``, ``cancel``, ``partial``,
``stuck-queued``, ``stuck-running``, ``error-details``, ``slow``, ``incremental``
(an output file appears while RUNNING) and ``files`` (value: how many output files).

Call faults (``CallFault``) make the REST calls themselves fail: an HTTP error, a connection
dropped before or after the operation ran, or a late answer. The store keeps and matches them;
server.py acts them out on the wire.
"""

from __future__ import annotations

import io
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from local.vertex.responder import Answer, echo, respond

log = logging.getLogger("local.vertex")

FINAL = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
    }
)
FAULTS = frozenset(
    {
        "fail",
        "expire",
        "cancel",
        "partial",
        "stuck-queued",
        "stuck-running",
        "error-details",
        "slow",
        "incremental",
        "files",
    }
)
# What a REST call can be made to do instead of answering (see CallFault); "-after": once the operation ran.
DROPS = frozenset({"reset", "reset-after", "disconnect", "disconnect-after"})
CALLS = ("create", "get", "list")
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Emulated seconds spent in each state (before time_scale).
QUEUED_SECONDS, PENDING_SECONDS, RUNNING_SECONDS, PER_REQUEST_SECONDS, EXPIRE_SECONDS = 2.0, 1.0, 1.0, 0.002, 5.0
# Vertex runs a limited number of Gemini batch jobs at once per project and region; the rest wait
# QUEUED, in the order they were created (POST /_emulator/limits {"running": N} changes it).
MAX_RUNNING = 8
LIVE = frozenset({"JOB_STATE_PENDING", "JOB_STATE_RUNNING"})


class ApiError(Exception):
    """An error the REST surface returns as ``{"error": {code, message, status}}``."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


@dataclass
class CallFault:
    """What the next matching REST call does instead of answering normally.

    ``fault``: an HTTP code (answered as Vertex's JSON error), ``"reset"`` / ``"disconnect"``
    (the connection is reset / closed before the operation runs), ``"reset-after"`` /
    ``"disconnect-after"`` (the operation runs, then the connection goes without an answer) or
    ``"delay"`` (the operation runs, the answer comes ``seconds`` later). ``job`` (an id or a
    full name) and ``labels`` narrow which calls match; ``count`` is how many of them (-1: every
    one, until the faults are cleared).
    """

    fault: int | str
    job: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    count: int = 1
    seconds: float = 0.0

    @classmethod
    def parse(cls, call: str, entry: Any) -> CallFault:
        """One entry of ``{"create" | "get" | "list": [...]}``: a code, a name, or an object."""
        spec = entry if isinstance(entry, dict) else {"fault": entry}
        unknown = set(spec) - {"fault", "job", "labels", "count", "seconds"}
        raw = spec.get("fault")
        fault: int | str = int(raw) if isinstance(raw, int) or str(raw).isdigit() else str(raw)
        job = str(spec.get("job") or "").rsplit("/", 1)[-1]
        problems = [f"unknown keys {sorted(unknown)}"] if unknown else []
        try:
            count, seconds = int(spec.get("count", 1)), float(spec.get("seconds", 0))
        except (TypeError, ValueError):
            count, seconds = 1, 0.0
            problems.append("count and seconds are numbers")
        if isinstance(fault, int) and not 400 <= fault <= 599:
            problems.append(f"HTTP code {fault} is not an error")
        if isinstance(fault, str) and fault not in DROPS | {"delay"}:
            problems.append(f"unknown fault {fault!r}")
        if (fault == "delay") != (seconds > 0):
            problems.append('"delay" needs "seconds" > 0 (and only "delay" takes seconds)')
        if job and call != "get":
            problems.append('"job" applies to get only')
        if count == 0 or count < -1:
            problems.append("count is a positive number or -1 (always)")
        if problems:
            raise ApiError(400, "INVALID_ARGUMENT", f"emulator: bad {call} fault {entry!r}: {'; '.join(problems)}")
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        return cls(fault, job=job, labels=labels, count=count, seconds=seconds)

    def matches(self, job_id: str, labels: dict[str, str]) -> bool:
        """Whether a call about ``job_id`` / jobs with ``labels`` is one this fault targets."""
        return (not self.job or self.job == job_id) and all(labels.get(k) == v for k, v in self.labels.items())

    def error(self, call: str) -> ApiError:
        """The error answered for an HTTP-code fault."""
        assert isinstance(self.fault, int)
        return ApiError(self.fault, STATUS.get(self.fault, "UNKNOWN"), f"emulator: injected {self.fault} on {call}")

    def view(self) -> dict[str, Any]:
        """The fault as the admin API shows it."""
        shown: dict[str, Any] = {"fault": self.fault, "count": self.count}
        if self.job:
            shown["job"] = self.job
        if self.labels:
            shown["labels"] = self.labels
        if self.seconds:
            shown["seconds"] = self.seconds
        return shown


def rfc3339(moment: float) -> str:
    """A UNIX time as RFC 3339 in UTC with microseconds and Z."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class OutputRow:
    """One output line, whether it succeeded, and (BigQuery sources) the columns passed through."""

    line: bytes
    ok: bool
    passthrough: dict[str, Any]


@dataclass
class Job:
    """One batch prediction job and where it stands."""

    name: str
    resource: dict[str, Any]
    faults: dict[str, str]
    created: float
    state: str = "JOB_STATE_QUEUED"
    due: float = 0.0  # when the next transition happens (monotonic)
    outputs: list[OutputRow] = field(default_factory=list)
    written: int = 0  # output lines already written (incremental)
    output_dir: str | None = None
    files_written: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def _region(job: Job) -> str:
    """``projects/P/locations/L`` of a job."""
    return job.name.split("/batchPredictionJobs/")[0]


def _split(uri: str, scheme: str) -> tuple[str, str]:
    rest = uri.removeprefix(scheme)
    bucket, _, path = rest.partition("/")
    return bucket, path


class Clients:
    """Real clients for the GCS and BigQuery emulators (built once, lazily)."""

    def __init__(self, project: str, gcs_url: str, bigquery_url: str) -> None:
        self.project, self.gcs_url, self.bigquery_url = project, gcs_url, bigquery_url
        self._storage: storage.Client | None = None
        self._bigquery: bigquery.Client | None = None

    @property
    def storage(self) -> storage.Client:
        """The GCS client."""
        if self._storage is None:
            self._storage = storage.Client(
                project=self.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.gcs_url}
            )
        return self._storage

    @property
    def bigquery(self) -> bigquery.Client:
        """The BigQuery client."""
        if self._bigquery is None:
            self._bigquery = bigquery.Client(
                project=self.project,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=self.bigquery_url),
            )
        return self._bigquery


class JobStore:
    """All jobs, the clock, the fault rules, and the runner that advances them."""

    def __init__(self, clients: Clients, time_scale: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.clients = clients
        self.time_scale = time_scale
        self.clock = clock
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.next_id = 7_000_000_000_000_000_000
        self.call_faults: dict[str, list[CallFault]] = {call: [] for call in CALLS}
        self.job_rules: list[dict[str, Any]] = []
        self.once_seen: set[bytes] = set()
        self.max_running = MAX_RUNNING
        self._live: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vertex-runner", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runner thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the runner thread."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with self.lock:
                jobs = [j for j in self.jobs.values() if j.state not in FINAL]  # in creation order
                # Slots held per project and region at the start of the pass (a slot freed during
                # it is given on the next one, so that the oldest waiting job gets it).
                self._live = Counter(_region(j) for j in jobs if j.state in LIVE)
            for job in jobs:
                try:
                    self.advance(job)
                except Exception as exc:  # a broken job must not stop the others
                    log.exception("job failed in the emulator")
                    with self.lock:
                        self._finish(job, "JOB_STATE_FAILED", {"code": 13, "message": f"emulator error: {exc}"})

    def _seconds(self, job: Job, seconds: float) -> float:
        return seconds * self.time_scale * (10 if "slow" in job.faults else 1)

    # --- call faults -----------------------------------------------------------------------
    def add_faults(self, body: dict[str, Any]) -> None:
        """Queue ``{"create" | "get" | "list": [entries], "jobs": [job rules]}`` (all checked first)."""
        parsed = {call: [CallFault.parse(call, entry) for entry in body.get(call) or []] for call in CALLS}
        with self.lock:
            for call, faults in parsed.items():
                self.call_faults[call].extend(faults)
            self.job_rules.extend(body.get("jobs") or [])

    def clear_faults(self) -> None:
        """Forget every queued call fault and job rule (jobs stay)."""
        with self.lock:
            for faults in self.call_faults.values():
                faults.clear()
            self.job_rules.clear()

    def faults_view(self) -> dict[str, Any]:
        """The queued faults, as the admin API shows them."""
        with self.lock:
            return {**{c: [f.view() for f in fs] for c, fs in self.call_faults.items()}, "jobs": self.job_rules}

    def take_fault(self, call: str, job_id: str = "", labels: dict[str, str] | None = None) -> CallFault | None:
        """The first queued fault this call matches, used once (unless its count is -1)."""
        with self.lock:
            queue = self.call_faults[call]
            for fault in queue:
                if fault.matches(job_id, labels or {}):
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            queue.remove(fault)
                    return fault
            return None

    def labels_of(self, job_id: str) -> dict[str, str]:
        """A job's labels ({} for an unknown job)."""
        with self.lock:
            job = self.jobs.get(job_id)
            return dict(job.resource.get("labels") or {}) if job else {}

    # --- the REST operations ---------------------------------------------------------------
    def create(self, project: str, location: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a job (QUEUED)."""
        with self.lock:
            _check_create(body)
            if not GEMINI_MODEL.fullmatch(str(body["model"]).rsplit("/", 1)[-1]):  # as Vertex does: not published
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"Publisher Model `projects/{project}/locations/{location}/{body['model']}` not found.",
                )
            job_id = str(self.next_id)
            self.next_id += 1
            name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
            labels = dict(body.get("labels") or {})
            faults = {k.removeprefix("emulator-"): v for k, v in labels.items() if k.startswith("emulator-")}
            faults.update(self._rule_faults(body))
            unknown = set(faults) - FAULTS
            if unknown:
                raise ApiError(400, "INVALID_ARGUMENT", f"emulator: unknown faults {sorted(unknown)}")
            now = self.clock()
            resource = {
                "name": name,
                "displayName": body.get("displayName") or job_id,
                "model": body["model"],
                "inputConfig": body["inputConfig"],
                "outputConfig": body["outputConfig"],
                "labels": labels,
                "state": "JOB_STATE_QUEUED",
                "createTime": rfc3339(now),
                "updateTime": rfc3339(now),
            }
            job = Job(name=name, resource=resource, faults=faults, created=now)
            job.due = time.monotonic() + self._seconds(job, QUEUED_SECONDS)
            if "expire" in faults:
                job.due = time.monotonic() + self._seconds(job, EXPIRE_SECONDS)
            self.jobs[job_id] = job
            log.info("job created", extra={"job_name": name, "faults": faults})
            return self.view(job)

    def _rule_faults(self, body: dict[str, Any]) -> dict[str, str]:
        """Faults from admin rules: ``{"labels": {...}, "faults": {...}, "count": n}``."""
        labels = body.get("labels") or {}
        for rule in self.job_rules:
            wanted = rule.get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()) and rule.get("count", 1) > 0:
                rule["count"] = rule.get("count", 1) - 1
                return {k: str(v) for k, v in rule.get("faults", {}).items()}
        return {}

    def get(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """One job's resource."""
        return self.view(self._find(project, location, job_id))

    def list(self, project: str, location: str, page_size: int, page_token: str, filter_text: str) -> dict[str, Any]:
        """A page of jobs matching ``filter_text``, newest first."""
        terms = parse_filter(filter_text)
        prefix = f"projects/{project}/locations/{location}/"
        with self.lock:
            views = [self.view(j) for j in self.jobs.values() if j.name.startswith(prefix)]
        matching = [v for v in reversed(views) if all(t(v) for t in terms)]  # newest first
        start = int(page_token or 0)
        size = page_size if page_size > 0 else 100
        page = matching[start : start + size]
        result: dict[str, Any] = {"batchPredictionJobs": page} if page else {}
        if start + size < len(matching):
            result["nextPageToken"] = str(start + size)
        return result

    def cancel(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """CANCELLING now, CANCELLED shortly; a final job cannot be cancelled."""
        with self.lock:
            job = self._find(project, location, job_id)
            if job.state in FINAL:
                raise ApiError(400, "FAILED_PRECONDITION", f"job {job.name} is already in state {job.state}")
            job.state = "JOB_STATE_CANCELLING"
            job.due = time.monotonic() + self._seconds(job, 0.5)
            self._touch(job)
        return {}

    def delete(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """Forget a final job; returns a done long-running operation."""
        with self.lock:
            job = self._find(project, location, job_id)
            if job.state not in FINAL:
                raise ApiError(400, "FAILED_PRECONDITION", f"job {job.name} is still running; cancel it first")
            del self.jobs[job_id]
        operation = f"{job.name}/operations/{job_id}"
        return {
            "name": operation,
            "metadata": {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata"},
            "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        }

    def _find(self, project: str, location: str, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or not job.name.startswith(f"projects/{project}/locations/{location}/"):
            raise ApiError(404, "NOT_FOUND", f"batch prediction job {job_id} not found in {project}/{location}")
        return job

    def view(self, job: Job) -> dict[str, Any]:
        """The REST resource: counters as strings, zero counters left out."""
        with self.lock:
            resource = dict(job.resource)
            resource["state"] = job.state
            stats = {f"{k}Count": str(v) for k, v in job.stats.items() if v}
            if stats:
                resource["completionStats"] = stats
            return resource

    # --- the state machine -----------------------------------------------------------------
    def _touch(self, job: Job) -> None:
        job.resource["updateTime"] = rfc3339(self.clock())

    def advance(self, job: Job) -> None:
        """Move ``job`` to its next state when it is due."""
        if time.monotonic() < job.due:
            return
        with self.lock:
            state, faults = job.state, job.faults
        if state == "JOB_STATE_CANCELLING":
            with self.lock:
                self._finish(job, "JOB_STATE_CANCELLED", None)
        elif state == "JOB_STATE_QUEUED":
            with self.lock:
                if "expire" in faults:
                    self._finish(job, "JOB_STATE_EXPIRED", {"code": 4, "message": "The job expired in the queue."})
                elif "stuck-queued" in faults:
                    job.due = float("inf")
                elif self._live[_region(job)] >= self.max_running:
                    pass  # waits for a slot, looked at again on every pass (in creation order: first come first)
                else:
                    self._live[_region(job)] += 1
                    job.state, job.due = "JOB_STATE_PENDING", time.monotonic() + self._seconds(job, PENDING_SECONDS)
                    self._touch(job)
        elif state == "JOB_STATE_PENDING":
            self._start_running(job)
        elif state == "JOB_STATE_RUNNING":
            self._complete(job)

    def _start_running(self, job: Job) -> None:
        requests = self._read_inputs(job)
        now = rfc3339(self.clock())
        rows: list[OutputRow] = []
        for key, request, extra in requests:
            answer = respond(key, request, _model_id(job), now, self.once_seen)
            if not answer.missing:
                rows.append(OutputRow(_output_line(key, request, answer), not answer.status, extra))
        random.Random(job.name).shuffle(rows)  # output order is neither input nor processing order
        with self.lock:
            if job.state != "JOB_STATE_PENDING":  # cancelled meanwhile: the CANCELLING path ends it
                return
            job.outputs = rows
            job.state = "JOB_STATE_RUNNING"
            job.resource["startTime"] = now
            self._touch(job)
            running = RUNNING_SECONDS + PER_REQUEST_SECONDS * len(rows)
            job.due = float("inf") if "stuck-running" in job.faults else time.monotonic() + self._seconds(job, running)
        if "incremental" in job.faults:
            half = len(rows) // 2
            self._write_outputs(job, half, final=False)
            with self.lock:
                job.stats = {"successful": sum(r.ok for r in rows[:half]), "failed": sum(not r.ok for r in rows[:half])}

    def _complete(self, job: Job) -> None:
        faults = job.faults
        rows = job.outputs
        processed = rows
        if "fail" in faults or "error-details" in faults or "cancel" in faults:
            processed = rows[: max(job.written, len(rows) // 2)]
        self._write_outputs(job, len(processed), final=True)
        successful = sum(r.ok for r in processed)
        failed = len(processed) - successful
        incomplete = len(rows) - len(processed)
        with self.lock:
            job.stats = {"successful": successful, "failed": failed, "incomplete": incomplete}
            if job.state == "JOB_STATE_CANCELLING" or "cancel" in faults:  # a cancel raced the end
                self._finish(job, "JOB_STATE_CANCELLED", None)
            elif "error-details" in faults:
                self._finish(job, "JOB_STATE_FAILED", _structured_error())
            elif "fail" in faults:
                self._finish(job, "JOB_STATE_FAILED", {"code": 13, "message": "Internal error occurred (emulated)."})
            elif "partial" in faults:
                self._finish(job, "JOB_STATE_PARTIALLY_SUCCEEDED", None)
            else:  # as on Vertex, SUCCEEDED does not mean that every row succeeded
                self._finish(job, "JOB_STATE_SUCCEEDED", None)

    def _finish(self, job: Job, state: str, error: dict[str, Any] | None) -> None:
        job.state = state
        job.due = float("inf")
        now = rfc3339(self.clock())
        job.resource["endTime"] = now
        if error is not None:
            job.resource["error"] = error
        self._touch(job)
        log.info("job finished", extra={"job_name": job.name, "state": state})

    # --- inputs and outputs ----------------------------------------------------------------
    def _read_inputs(self, job: Job) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """``(key, request, passthrough columns)`` per input row."""
        config = job.resource["inputConfig"]
        rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        if "gcsSource" in config:
            for uri in config["gcsSource"]["uris"]:
                bucket, name = _split(uri, "gs://")
                data = self.clients.storage.bucket(bucket).blob(name).download_as_bytes()
                for number, raw in enumerate(data.splitlines(), 1):
                    if not raw.strip():
                        continue
                    line = orjson.loads(raw)
                    rows.append((str(line.get("key", number)), line.get("request") or {}, {}))
        else:
            table = config["bigquerySource"]["inputUri"].removeprefix("bq://")
            for record in self.clients.bigquery.list_rows(table):
                values = dict(record.items())
                request = values.pop("request")
                if isinstance(request, str):
                    request = orjson.loads(request)
                key = values.get("key") or str(len(rows) + 1)
                rows.append((str(key), request or {}, values))
        return rows

    def _write_outputs(self, job: Job, upto: int, *, final: bool) -> None:
        config = job.resource["outputConfig"]
        if "gcsDestination" in config:
            self._write_gcs(job, config["gcsDestination"]["outputUriPrefix"], upto, final=final)
        elif final:
            self._write_bigquery(job, config["bigqueryDestination"]["outputUri"], upto)

    def _write_gcs(self, job: Job, prefix: str, upto: int, *, final: bool) -> None:
        bucket_name, path = _split(prefix.rstrip("/"), "gs://")
        if job.output_dir is None:
            stamp = rfc3339(self.clock())
            job.output_dir = f"{path}/prediction-model-{stamp}".lstrip("/")
            job.resource["outputInfo"] = {"gcsOutputDirectory": f"gs://{bucket_name}/{job.output_dir}"}
        bucket = self.clients.storage.bucket(bucket_name)
        files = max(1, int(job.faults.get("files", "1") or 1))
        pending = [row.line for row in job.outputs[job.written : upto]]
        if not final:  # an incremental part while RUNNING
            name = f"{job.output_dir}/predictions_{job.files_written + 1:05d}.jsonl"
            bucket.blob(name).upload_from_string(b"".join(line + b"\n" for line in pending))
            job.files_written += 1
            job.written = upto
            return
        if files == 1 and job.files_written == 0:
            chunks = [pending]
            names = [f"{job.output_dir}/predictions.jsonl"]
        else:
            size = max(1, -(-len(pending) // files))
            chunks = [pending[i : i + size] for i in range(0, len(pending), size)] or [[]]
            names = [f"{job.output_dir}/predictions_{job.files_written + i + 1:05d}.jsonl" for i in range(len(chunks))]
        for name, chunk in zip(names, chunks, strict=True):
            bucket.blob(name).upload_from_string(b"".join(line + b"\n" for line in chunk))
        job.files_written += len(chunks)
        job.written = upto

    def _write_bigquery(self, job: Job, uri: str, upto: int) -> None:
        target = uri.removeprefix("bq://")
        if target.count(".") == 1:
            target = f"{target}.predictions_{datetime.fromtimestamp(self.clock(), UTC):%Y_%m_%dT%H_%M_%S_%f}"
        client = self.clients.bigquery
        rows = job.outputs[:upto]
        passthrough: dict[str, bigquery.SchemaField] = {}
        source = job.resource["inputConfig"].get("bigquerySource")
        if source:
            for column in client.get_table(source["inputUri"].removeprefix("bq://")).schema:
                if column.name not in ("request", "response", "status", "processed_time"):
                    passthrough[column.name] = column
        schema = [
            *passthrough.values(),
            bigquery.SchemaField("request", "JSON"),
            bigquery.SchemaField("response", "JSON"),
            bigquery.SchemaField("status", "STRING"),
            bigquery.SchemaField("processed_time", "TIMESTAMP"),
        ]
        table = client.create_table(bigquery.Table(target, schema=schema), exists_ok=True)
        columns = ("request", "response", "status", "processed_time")
        body = b"".join(
            orjson.dumps({**row.passthrough, **{k: line.get(k) for k in columns}}, default=str) + b"\n"
            for row in rows
            for line in (orjson.loads(row.line),)
        )
        config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=schema)
        client.load_table_from_file(io.BytesIO(body), table, job_config=config).result()
        project, dataset, name = target.split(".")
        job.resource["outputInfo"] = {"bigqueryOutputDataset": f"bq://{project}.{dataset}", "bigqueryOutputTable": name}


def _model_id(job: Job) -> str:
    return str(job.resource["model"]).rsplit("/", 1)[-1]


def _output_line(key: str, request: dict[str, Any], answer: Answer) -> bytes:
    line: dict[str, Any] = {"key": key, "request": echo(request), "status": answer.status}
    if answer.response is not None:
        line["response"] = orjson.loads(orjson.dumps(answer.response, option=orjson.OPT_SORT_KEYS))
    line["processed_time"] = datetime.now(UTC).isoformat(timespec="microseconds")
    return orjson.dumps(line)


def _structured_error() -> dict[str, Any]:
    return {
        "code": 8,
        "message": "Quota exceeded for aiplatform.googleapis.com/gemini_batch_requests (emulated).",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "aiplatform.googleapis.com",
                "metadata": {"quota_limit": "gemini_batch_requests", "consumer": "projects/local"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Quotas", "url": "https://cloud.google.com/vertex-ai/docs/quotas"}],
            },
        ],
    }


# The Gemini model ids the emulator answers for (a typo such as gemini-2.5-flsh is refused, 404).
GEMINI_MODEL = re.compile(r"gemini-\d+(?:\.\d+)?-(?:pro|flash|flash-lite)(?:-[a-z0-9.-]+)?(?:@\d+)?")
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


def _check_create(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.startswith("publishers/google/models/"):
        raise ApiError(400, "INVALID_ARGUMENT", f"model must be publishers/google/models/<id>, got {model!r}")
    source = body.get("inputConfig") or {}
    if not (source.get("gcsSource", {}).get("uris") or source.get("bigquerySource", {}).get("inputUri")):
        raise ApiError(400, "INVALID_ARGUMENT", "inputConfig needs gcsSource.uris or bigquerySource.inputUri")
    dest = body.get("outputConfig") or {}
    if not (
        dest.get("gcsDestination", {}).get("outputUriPrefix") or dest.get("bigqueryDestination", {}).get("outputUri")
    ):
        raise ApiError(400, "INVALID_ARGUMENT", "outputConfig needs gcsDestination or bigqueryDestination")
    for key, value in (body.get("labels") or {}).items():
        if not _LABEL.fullmatch(key) or not _LABEL_VALUE.fullmatch(str(value)):
            raise ApiError(400, "INVALID_ARGUMENT", f"invalid label {key}={value}")


def filter_labels(text: str) -> dict[str, str]:
    """The ``labels.k="v"`` terms of a list filter, as a dict (what a list fault can target)."""
    found = re.findall(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?', text or "")
    return dict(found)


def parse_filter(text: str) -> list[Callable[[dict[str, Any]], bool]]:
    """``labels.k="v"``, ``state="JOB_STATE_…"`` and ``display_name="…"``, joined by AND."""
    terms: list[Callable[[dict[str, Any]], bool]] = []
    for raw in filter(None, (t.strip() for t in re.split(r"\s+AND\s+", text or "", flags=re.IGNORECASE))):
        field_name, sep, value = raw.partition("=")
        if not sep:
            raise ApiError(400, "INVALID_ARGUMENT", f"unsupported filter term {raw!r}")
        field_name, value = field_name.strip(), value.strip().strip('"')
        if field_name.startswith("labels."):
            label = field_name.removeprefix("labels.")
            terms.append(lambda v, label=label, value=value: (v.get("labels") or {}).get(label) == value)
        elif field_name == "state":
            terms.append(lambda v, value=value: v.get("state") == value)
        elif field_name in ("display_name", "displayName"):
            terms.append(lambda v, value=value: v.get("displayName") == value)
        else:
            raise ApiError(400, "INVALID_ARGUMENT", f"unsupported filter field {field_name!r}")
    return terms
