"""The one "load once" rule: a staged NDJSON file into a table, exactly once, recorded in the ledger.

The load is a named entry of the claimed record's ``loads`` (``predictions``, ``batch_jobs``,
``invalid``): its table, its source file, its version and the job id of that version. The
entry is written before the job is created, so any later holder loads the same file under
the same id. The warehouse adapter does the rest of the rule (absent → create; 409 → that
job; PENDING/RUNNING → wait within the invocation's time, then retry later). A job that
ended with an error is tried again under the next version — recorded first, created by the
next delivery after the trigger's backoff — when the error was BigQuery's own (backend,
rate, quota: it counts against no retry cap); an error in the data is permanent.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from shared.core.errors import PermanentError, StillRunning, TransientError
from shared.core.ids import deployment_tag, job_key, load_job_id
from shared.core.records import JobRecord, Window
from shared.ports import LoadState, Ports
from shared.services.ledger import Claim

log = logging.getLogger("gbp.loads")
LOAD_NEEDS: Final = 30.0  # seconds of invocation (and lease) kept for what follows a load: not spent waiting
DONE: Final = "DONE"
FAILED: Final = "FAILED"


def owner_of(claim: Claim[Any]) -> str:
    """The part of a load job id that names the record: a run id or a job key."""
    record = claim.record
    if isinstance(record, JobRecord):
        return job_key(record.run_id, record.chunk, record.attempt)
    if isinstance(record, Window):  # job ids are project-wide: the deployment is in them
        return f"{record.table}_{deployment_tag(claim.ledger.root)}_s{record.seconds}_w{record.window}"
    return str(record.run_id)


def load_entry(claim: Claim[Any], name: str) -> dict[str, Any] | None:
    """The load ``name`` of the claimed record, if it was recorded."""
    entry: dict[str, Any] | None = claim.record.loads.get(name)
    return entry


def describe(source: str | list[str]) -> str:
    """A load's source(s), short enough for a log line or an error."""
    if isinstance(source, str):
        return source
    return source[0] if len(source) == 1 else f"{len(source)} files ({source[0]} ...)"


def load_once(claim: Claim[Any], name: str, table: str, source_uri: str | list[str], ports: Ports) -> None:
    """Load ``source_uri`` (one file, or a window's files) into ``table`` exactly once, as the load ``name``.

    ``source_uri`` is used only when the load is not recorded yet; a recorded load keeps its
    own file. Returns once the load is DONE. Waits for a running load within the lease and the
    invocation's time (then StillRunning: the next delivery waits on). A load BigQuery failed
    itself (backend, rate, quota) gets its next version recorded, then TransientError: it is
    created by the next delivery, after the trigger's backoff. PermanentError when the data
    cannot be loaded.
    """
    loads: dict[str, dict[str, Any]] = claim.record.loads
    entry = loads.get(name)
    if entry is None:
        entry = {"table": table, "source": source_uri, "version": 1, "job_id": load_job_id(name, owner_of(claim), 1)}
        loads[name] = entry
        claim.save()  # recorded before the job exists
    if entry.get("state") == FAILED:
        raise PermanentError(f"load {entry['job_id']} failed: {entry.get('errors', [])[-1:]}")
    while entry.get("state") != DONE:
        claim.confirm(f"loading {describe(entry['source'])}", LOAD_NEEDS)
        wait = min(claim.inv.time_left(), claim.lease_left()) - LOAD_NEEDS
        try:
            result = ports.warehouse.load_once(entry["job_id"], entry["source"], entry["table"], max(1.0, wait))
        except StillRunning:
            if claim.inv.time_left() < 2 * LOAD_NEEDS:
                raise
            continue  # confirm renews the lease, then it waits on
        if result.state is LoadState.DONE:
            entry["state"] = DONE
            claim.save()
            log.info(
                "rows loaded", extra={"load_job": result.job_id, "table": table, "gcs_uri": describe(entry["source"])}
            )
            return
        entry.setdefault("errors", []).append(f"{result.job_id}: {result.error}")
        if not result.retryable:
            entry["state"], entry["reason"] = FAILED, result.error.split(":", 1)[0]
            claim.save()
            raise PermanentError(
                f"load {result.job_id} of {describe(entry['source'])} into {table} failed: {result.error}"
            )
        entry["version"] += 1
        entry["job_id"] = load_job_id(name, owner_of(claim), entry["version"])
        claim.save()  # the next version is recorded before it is created
        raise TransientError(
            f"load {result.job_id} failed on BigQuery's side ({result.error}); next: {entry['job_id']}"
        )
