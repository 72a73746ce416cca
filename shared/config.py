"""Settings: one frozen dataclass, read once from the environment, listing everything missing.

Terraform is the single writer of these variables in GCP; the local cloud's wiring sets them locally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final

from shared.core.errors import PermanentError

# Variable name of every setting (field name -> variable); the first ones are required.
VARIABLES: Final = {
    "project": "GCP_PROJECT",
    "location": "VERTEX_LOCATION",
    "bq_location": "BQ_LOCATION",
    "input_bucket": "INPUT_BUCKET",
    "work_bucket": "WORK_BUCKET",
    "dataset": "BQ_DATASET",
    "batch_requests_topic": "BATCH_REQUESTS_TOPIC",
    "batch_finished_topic": "BATCH_FINISHED_TOPIC",
    "batch_results_topic": "BATCH_RESULTS_TOPIC",
    "model": "MODEL",
    "input_prefix": "INPUT_PREFIX",
    "max_attempts": "MAX_ATTEMPTS",
    "max_requests_per_job": "MAX_REQUESTS_PER_JOB",
    "max_bytes_per_job": "MAX_BYTES_PER_JOB",
    "max_line_bytes": "MAX_LINE_BYTES",
    "skip_invalid_lines": "SKIP_INVALID_LINES",
    "submit_bytes_per_invocation": "SUBMIT_BYTES_PER_INVOCATION",
    "max_concurrent_jobs": "MAX_CONCURRENT_JOBS",
    "create_backoff_seconds": "CREATE_BACKOFF_SECONDS",
    "load_window_seconds": "LOAD_WINDOW_SECONDS",
    "vertex_bucket": "VERTEX_BUCKET",
    "prices_uri": "PRICES_URI",
    "max_run_cost_usd": "MAX_RUN_COST_USD",
    "max_daily_cost_usd": "MAX_DAILY_COST_USD",
    "approval_timeout_seconds": "APPROVAL_TIMEOUT_SECONDS",
    "run_sla_seconds": "RUN_SLA_SECONDS",
    "queue_timeout_seconds": "QUEUE_TIMEOUT_SECONDS",
    "run_timeout_seconds": "RUN_TIMEOUT_SECONDS",
    "cancel_timeout_seconds": "CANCEL_TIMEOUT_SECONDS",
    "lease_seconds": "LEASE_SECONDS",
    "function_timeout_seconds": "FUNCTION_TIMEOUT_SECONDS",
    "max_event_age_seconds": "MAX_EVENT_AGE_SECONDS",
}
REQUIRED: Final = tuple(VARIABLES.values())[:9]
# A handler needs this long to do one paid step and hand the rest on (a batch job's create takes
# up to 90 s with its margin: services/attempts.py CREATE_NEEDS).
MIN_FUNCTION_TIMEOUT_SECONDS: Final = 180
# The smallest value each numeric setting may take (LOAD_WINDOW_SECONDS=0: each file loaded at once).
MINIMUMS: Final = {
    "max_attempts": 1,
    "submit_bytes_per_invocation": 1,
    "max_concurrent_jobs": 1,
    "create_backoff_seconds": 1,
    "load_window_seconds": 0,
    "max_run_cost_usd": 0,
    "max_daily_cost_usd": 0,
    "approval_timeout_seconds": 1,
    "run_sla_seconds": 1,
    "lease_seconds": 1,
    "function_timeout_seconds": MIN_FUNCTION_TIMEOUT_SECONDS,
}


class SettingsError(PermanentError):
    """The function's environment is incomplete or wrong."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the functions read from the environment."""

    project: str
    location: str
    bq_location: str  # the dataset's location: BigQuery jobs are regional
    input_bucket: str
    work_bucket: str
    dataset: str
    batch_requests_topic: str
    batch_finished_topic: str
    batch_results_topic: str
    model: str = "gemini-2.5-flash"
    input_prefix: str = "incoming/"
    max_attempts: int = 3
    max_requests_per_job: int = 200_000
    max_bytes_per_job: int = 1_000_000_000
    max_line_bytes: int = 10 * 1024 * 1024
    skip_invalid_lines: bool = False
    # Bytes of a request file one submit invocation reads before it hands on to a fresh one
    # (a continuation message); the invocation's deadline stops it sooner when reads are slow.
    submit_bytes_per_invocation: int = 5_000_000_000
    # Batch jobs this deployment keeps live on Vertex at once (Vertex runs 8 per project and region
    # unless Google raised it); the rest wait QUEUED in the ledger, where nothing expires.
    max_concurrent_jobs: int = 8
    create_backoff_seconds: int = 60  # after a 429 on create, no create for this long (doubling, at most 32x)
    # Rows files of a table are loaded together, one load job per window this long (BigQuery takes
    # 1,500 loads per table per day: 120 s is at most 720); 0 loads each file at once.
    load_window_seconds: int = 120
    # Where Vertex reads staged inputs and writes predictions (``staging/``, ``outputs/``): a bucket of
    # its own, so that the Vertex AI service agent (shared by every Vertex workload of the project)
    # reaches nothing else; "" = the work bucket (the local cloud, deployments of earlier releases).
    vertex_bucket: str = ""
    prices_uri: str = ""  # a gs:// price table replacing the one shipped (negotiated prices); "" = shipped
    # Budget guard (None = no limit): a run whose expected cost, or the UTC day's spend with it, is
    # over waits AWAITING_APPROVAL (an approve or reject message moves it on) for at most this long.
    max_run_cost_usd: float | None = None
    max_daily_cost_usd: float | None = None
    approval_timeout_seconds: int = 3 * 24 * 3600
    # A run not complete this long after it was created is logged "run overdue" once (the alert).
    run_sla_seconds: int = 48 * 3600
    queue_timeout_seconds: int = 72 * 3600
    run_timeout_seconds: int = 24 * 3600
    cancel_timeout_seconds: int = 3600
    lease_seconds: int = 600
    function_timeout_seconds: int = 540  # the function's own timeout (Cloud Run does not stop a handler at it)
    max_event_age_seconds: int = 24 * 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and check every variable; the error names all that are missing or malformed."""
        names = VARIABLES
        missing = [var for var in REQUIRED if not env.get(var)]
        problems: list[str] = []
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(names[f.name])
            if raw is None or raw == "":
                continue
            if f.type == "int":
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    problems.append(f"{names[f.name]} must be an integer, not {raw!r}")
            elif f.type == "float | None":
                try:
                    number = float(raw)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    problems.append(f"{names[f.name]} must be a number, not {raw!r}")
                values[f.name] = number
            elif f.type == "bool":
                if raw.lower() not in ("true", "false", "1", "0"):
                    problems.append(f"{names[f.name]} must be true or false, not {raw!r}")
                values[f.name] = raw.lower() in ("true", "1")
            else:
                values[f.name] = raw
        if missing or problems:
            detail = "; ".join(([f"missing: {', '.join(missing)}"] if missing else []) + problems)
            raise SettingsError(f"bad settings: {detail}")
        settings = cls(**values)  # type: ignore[arg-type]
        low = [
            f"{VARIABLES[name]} must be at least {minimum}"
            for name, minimum in MINIMUMS.items()
            if (value := getattr(settings, name)) is not None and value < minimum
        ]
        if low:
            raise SettingsError(f"bad settings: {'; '.join(low)}")
        return settings

    @staticmethod
    def variables() -> tuple[str, ...]:
        """Every variable read (for the Terraform cross-reference tests)."""
        return tuple(VARIABLES.values())

    @property
    def io_bucket(self) -> str:
        """The bucket of Vertex's inputs and outputs."""
        return self.vertex_bucket or self.work_bucket

    @property
    def budget_guard(self) -> bool:
        """A cost limit is set: runs are estimated and held before their first job."""
        return self.max_run_cost_usd is not None or self.max_daily_cost_usd is not None
