"""A run's rows in ``run_states``: one a status change worth seeing; the ``runs`` view shows each run's newest.

``gemini-batch runs`` prints the same :func:`run_row` from the ledger, live.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.config import Settings
from shared.core.records import Run, move
from shared.ports import Ports
from shared.services.ledger import Claim, stamp
from shared.services.windows import register


def run_row(run: Run, status: str = "") -> dict[str, Any]:
    """A run as one row: what ``gemini-batch runs`` prints and the ``runs`` view shows (``status``: as it becomes)."""
    return {
        "run_id": run.run_id,
        "status": status or run.status,
        "source": run.source,
        "model": run.model,
        "origin": run.origin,
        "display_name": run.display_name or None,
        "labels": run.labels or None,
        "requests": run.requests,
        "invalid": run.invalid,
        "chunks": run.chunks,
        "attempts": run.attempts or None,  # known once it is announced
        "rows_by_outcome": run.counts or None,  # its latest rows per outcome, once announced
        "cost_usd": run.cost.get("usd"),
        "expected_cost_usd": run.estimate.get("expected_usd"),
        "error": run.error or None,
        "cancel_reason": run.cancel.get("why") or None,
        "created_at": run.created_at or run.updated_at or None,
        "finished_at": run.finished_at or None,
        "updated_at": run.updated_at or None,
        "seq": run.state_rows,
    }


def record_state(claim: Claim[Run], settings: Settings, ports: Ports, status: str = "") -> None:
    """A ``run_states`` row of the claimed run as it stands (``status``: the one it is moving to).

    Its own file, registered in the table's load window (one load a window, whatever the
    number of runs); the ``runs`` view shows each run's newest row.
    """
    run = claim.record
    run.state_rows += 1
    run.updated_at = stamp(claim.inv.now())
    uri = f"gs://{settings.work_bucket}/rows/{run.run_id}/run.s{run.state_rows}.g{claim.generation}.ndjson"
    ports.store.write(uri, orjson.dumps(run_row(run, status)) + b"\n")
    register(claim, f"state{run.state_rows}", "run_states", uri, settings, ports)


def move_target(run: Run, transition: str) -> str:
    """The status ``transition`` moves ``run`` to (ValueError when it is not allowed from its status)."""
    probe = Run(run.run_id, run.source, run.model, status=run.status)
    move(probe, transition)
    return probe.status
