"""Files larger than one invocation on the local cloud: continuations through Pub/Sub, many jobs, keys once."""

from __future__ import annotations

from collections import Counter

from local.stack import Endpoints
from tests.integration.helpers import jsonl, query_rows, request_line, until_complete, upload_requests, vertex_jobs


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
