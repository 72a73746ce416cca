"""Quotas as admission control on the local cloud: the deployment's functions run with MAX_CONCURRENT_JOBS=3."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

import orjson
import requests

from local.clients import storage_client
from local.stack import Endpoints
from tests.integration.helpers import (
    all_rows,
    jsonl,
    latest_rows,
    request_line,
    until_complete,
    upload_requests,
    vertex_jobs,
)

MAX_CONCURRENT_JOBS = 3  # tests/integration/wiring.json


def _peak(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one moment (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def test_twenty_files_at_once_share_three_slots_fairly_through_429s(cloud: Endpoints) -> None:
    faults = {"create": [429, 429, 429]}  # Vertex's request-rate quota, met by the first creates
    requests.post(f"{cloud.vertex}/_emulator/faults", json=faults, timeout=10).raise_for_status()
    big_lines = [request_line(f"big {i}", f"b{i}") for i in range(30)]  # tiny/: 3 a job -> 10 jobs
    uploads: dict[str, list[str]] = {}

    def upload(prefix: str, lines: list[dict[str, Any]]) -> None:
        _, run_id = upload_requests(cloud, prefix, jsonl(lines))
        uploads[run_id] = [line["key"] for line in lines]

    upload("tiny/", big_lines)
    big = next(iter(uploads))
    threads = [
        threading.Thread(target=upload, args=("runs/", [request_line(f"s{n} q{i}", f"s{n}k{i}") for i in range(2)]))
        for n in range(18)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    last_lines = [request_line("last q", "last")]
    _, last = upload_requests(cloud, "runs/", jsonl(last_lines))
    uploads[last] = ["last"]
    assert len(uploads) == 20

    for run_id, keys in uploads.items():
        run = until_complete(cloud, run_id, timeout=240)
        assert run["status"] == "COMPLETE"
        rows = latest_rows(cloud, run_id)
        assert sorted(rows) == sorted(keys)  # every request once: nothing dropped, nothing twice

    jobs = {run_id: vertex_jobs(cloud, run_id) for run_id in uploads}
    spans = [(job.create_time, job.end_time) for run_jobs in jobs.values() for job in run_jobs]
    assert len(spans) >= 29 and all(start and end for start, end in spans)
    assert _peak(spans) <= MAX_CONCURRENT_JOBS  # never more jobs live on Vertex than the setting
    # The 429s were met, and queued the attempts again instead of stranding them.
    work = storage_client(cloud).bucket("gbp-work")
    throttled = 0
    for run_id in uploads:
        for blob in work.list_blobs(prefix=f"ledger/jobs/{run_id}/"):
            throttled += orjson.loads(blob.download_as_bytes()).get("throttled", 0)
    assert throttled >= 1
    # Fair across runs: the small file uploaded last is not stuck behind the 10-job one.
    assert max(job.end_time for job in jobs[last]) < max(job.end_time for job in jobs[big])


LOAD_WINDOW_SECONDS = 1  # tests/integration/wiring.json


def _load_jobs(cloud: Endpoints, since: float) -> Counter[str]:
    jobs = requests.get(f"{cloud.bigquery}/_proxy/jobs", timeout=30).json()["jobs"]
    return Counter(
        str(job.get("destination")).rsplit(".", 1)[-1]
        for job in jobs
        if job.get("type") == "load" and datetime.fromisoformat(job["created"]).timestamp() >= since
    )


def test_small_runs_are_loaded_per_window_not_per_run(cloud: Endpoints) -> None:
    started = time.time()
    keys: dict[str, str] = {}

    def upload(n: int) -> None:
        _, run_id = upload_requests(cloud, "runs/", jsonl([request_line(f"small {n}", f"w{n}")]))
        keys[run_id] = f"w{n}"

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run_id in keys:
        assert until_complete(cloud, run_id, timeout=240)["status"] == "COMPLETE"
    elapsed = time.time() - started
    for run_id, key in keys.items():
        assert all_rows(cloud, run_id) == [(key, 1)]  # each row once
    loads = _load_jobs(cloud, started)
    # One load per table per closed window at most, however many runs: bounded by time, not by files.
    windows = elapsed / LOAD_WINDOW_SECONDS + 2
    for table in ("predictions", "batch_jobs"):
        assert 1 <= loads[table] <= windows
        assert loads[table] < len(keys), loads  # 20 runs; 3 jobs at a time, so they finish spread out
