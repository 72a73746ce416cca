"""What ``bench.e2e`` reads from a running local cloud: function logs, the bridge, /proc, the BigQuery proxy.

Nothing here changes the cloud: it reads the JSON lines the functions and the bridge write to
``<state_dir>/logs/<name>.log``, the processes' ``/proc/<pid>/status`` and the proxy's
``GET /_proxy/jobs``.
"""

from __future__ import annotations

import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from local.stack import Stack

HANDLED = "event handled"
FAILED = "event failed: will be retried"
DROPPED = "event dropped: permanent error"
OUTCOMES = frozenset({HANDLED, FAILED, DROPPED})


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log file (other lines, e.g. gunicorn's, are skipped)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    entries = []
    for line in raw.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line being written right now
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def stamp(entry: dict[str, Any]) -> float:
    """A log entry's time as a POSIX timestamp (0 when it has none)."""
    text = entry.get("time")
    return datetime.fromisoformat(str(text)).timestamp() if text else 0.0


def function_log(stack: Stack, name: str) -> Path:
    """Where the stack writes function ``name``'s output."""
    return stack.state_dir / "logs" / f"function-{name}.log"


@dataclass
class FunctionStats:
    """One function's invocations in a time window, from its "event ..." log lines."""

    name: str
    handled: int = 0
    failed: int = 0  # "event failed: will be retried" (a 500: the trigger redelivers)
    dropped: int = 0  # "event dropped: permanent error"
    seconds: float = 0.0  # sum of duration_s of the handled events
    cpu_seconds: float = 0.0  # sum of their cpu_s (the rest of duration_s is waiting on the services)
    failed_seconds: float = 0.0  # sum of duration_s of the failed and dropped ones
    results: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first error lines, for the report

    @property
    def invocations(self) -> int:
        """Every invocation that ended, whatever its outcome."""
        return self.handled + self.failed + self.dropped

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "invocations": self.invocations,
            "handled": self.handled,
            "retried": self.failed,
            "dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "failed_seconds": round(self.failed_seconds, 3),
            "results": dict(self.results),
            "errors": self.errors,
        }


def function_stats(stack: Stack, name: str, since: float, until: float) -> FunctionStats:
    """Invocations of ``name`` that ended between ``since`` and ``until`` (POSIX seconds)."""
    stats = FunctionStats(name)
    for entry in read_log(function_log(stack, name)):
        if not since <= stamp(entry) <= until:
            continue
        message = entry.get("message")
        if entry.get("severity") in ("ERROR", "CRITICAL") and len(stats.errors) < 5:
            stats.errors.append(f"{message}: {entry.get('error') or entry.get('stack_trace', '')[-300:]}".strip())
        if message not in OUTCOMES or entry.get("function") != name:
            continue
        duration = float(entry.get("duration_s") or 0.0)
        if message == HANDLED:
            stats.handled += 1
            stats.seconds += duration
            stats.cpu_seconds += float(entry.get("cpu_s") or 0.0)
            stats.results[str(entry.get("result"))] += 1
        else:
            stats.failed += message == FAILED
            stats.dropped += message == DROPPED
            stats.failed_seconds += duration
    return stats


def run_entries(stack: Stack, names: list[str], run_id: str, message: str) -> list[dict[str, Any]]:
    """The entries of the functions' logs with this ``message`` about ``run_id``, oldest first."""
    found = [
        e
        for name in names
        for e in read_log(function_log(stack, name))
        if e.get("message") == message and e.get("run_id") == run_id
    ]
    return sorted(found, key=stamp)


def settled(stack: Stack, names: list[str], run_id: str) -> float | None:
    """When the run's completion was logged, once the invocation that logged it has ended; else None."""
    for name in names:
        entries = read_log(function_log(stack, name))
        done = [i for i, e in enumerate(entries) if e.get("message") == "run complete" and e.get("run_id") == run_id]
        if done and any(e.get("message") in OUTCOMES for e in entries[done[-1] + 1 :]):
            return stamp(entries[done[-1]])
    return None


def bridge_stats(stack: Stack, since: float, until: float) -> dict[str, dict[str, int]]:
    """Per function: deliveries answered 2xx, answered otherwise (504 = the function's timeout), dead-lettered."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in read_log(stack.state_dir / "logs" / "bridge.log"):
        function = entry.get("function")
        if not function or not since <= stamp(entry) <= until:
            continue
        message = entry.get("message")
        if message == "event delivered":
            counts[function]["delivered"] += 1
        elif message == "event delivery failed: will retry":
            counts[function]["failed"] += 1
            counts[function]["timeouts"] += entry.get("status") == 504
        elif message == "event dead-lettered":
            counts[function]["dead_lettered"] += 1
    return {name: dict(c) for name, c in counts.items()}


def _process_groups() -> dict[int, list[int]]:
    """Process group id -> the live processes in it."""
    groups: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            groups[int(fields[2])].append(int(stat.parent.name))
    return groups


def _hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRss:
    """The highest VmHWM seen in each function's process group (functions-framework forks a gunicorn
    worker, which runs the handlers: the group's maximum is the worker's peak). Sampled while the run
    goes on, so a worker that is replaced keeps its peak."""

    def __init__(self, stack: Stack) -> None:
        self.groups = {
            p.pid: p.name.removeprefix("function-") for p in stack.processes if p.name.startswith("function-")
        }
        self.peak_mib: dict[str, float] = dict.fromkeys(self.groups.values(), 0.0)
        self.processes: dict[str, int] = dict.fromkeys(self.groups.values(), 0)

    def sample(self) -> None:
        """Read every function process's VmHWM now."""
        groups = _process_groups()
        for pgid, name in self.groups.items():
            pids = groups.get(pgid, [])
            self.processes[name] = max(self.processes[name], len(pids))
            for pid in pids:
                self.peak_mib[name] = max(self.peak_mib[name], _hwm_mib(pid))


def proxy_jobs(stack: Stack) -> list[dict[str, Any]]:
    """Every job the BigQuery proxy has seen (``GET /_proxy/jobs``)."""
    with urllib.request.urlopen(f"{stack.endpoints.bigquery}/_proxy/jobs", timeout=30) as response:
        jobs: list[dict[str, Any]] = orjson.loads(response.read())["jobs"]
    return jobs


def load_jobs(jobs: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """Load jobs created since ``since``: per table, per table and day, and their states."""
    per_table: Counter[str] = Counter()
    per_day: Counter[tuple[str, str]] = Counter()
    states: dict[str, Counter[str]] = defaultdict(Counter)
    for job in jobs:
        created = datetime.fromisoformat(job["created"])
        if job.get("type") != "load" or created.timestamp() < since:
            continue
        table = job.get("destination") or "?"
        per_table[table] += 1
        per_day[(table, created.date().isoformat())] += 1
        states[table][f"{job.get('state')}{'/' + job['error_reason'] if job.get('error_reason') else ''}"] += 1
    return {
        "per_table": dict(sorted(per_table.items())),
        "per_table_per_day": [{"table": t, "day": d, "load_jobs": n} for (t, d), n in sorted(per_day.items())],
        "states": {t: dict(c) for t, c in sorted(states.items())},
    }
