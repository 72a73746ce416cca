"""Cost: the price table in use, every run's estimate, the budget guard, and the day's spend.

Every run is estimated once its file is staged, before its first job (cost.py): expected and
worst-case cost, kept on the run record. With ``MAX_RUN_COST_USD`` or ``MAX_DAILY_COST_USD`` set
(the run's ``budget_guard`` option, frozen when it was created), a run over either limit is not
submitted: it is held AWAITING_APPROVAL with a cost report in the work bucket and an
announcement on ``batch-results``; ``{"approve": run}`` / ``{"reject": run}`` on
``batch-requests`` move it on (once, under the run's claim), and the poller rejects it after
``APPROVAL_TIMEOUT_SECONDS``.

The day's spend is kept as markers under ``ledger/spend/<UTC day>/``, named so that one listing
is the day's total with no read and no shared record to contend on: ``<run>.e~<µUSD>`` (the
run's expected cost, written before the guard reads the day, taken back when it holds the run),
``<run>.c<chunk>a<attempt>.e~<µUSD>`` (a retry attempt's, written when it is queued) and
``<run>.a~<µUSD>`` (what the run's attempts counted in that day really cost, written when it
completes: it replaces the run's expected markers of that day). Every decider writes its own
marker before it lists: of two runs deciding at once, at least one sees the other.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from shared.config import Settings
from shared.core.cost import ModelPrice, PriceTable, default_prices, estimate, parse_prices
from shared.core.errors import PermanentError, PipelineError, TransientError
from shared.core.records import RUN_AWAITING_APPROVAL, JobRecord, Run
from shared.ports import Ports
from shared.services.ledger import Claim, Ledger, lease_left, stamp
from shared.services.run_states import record_state

log = logging.getLogger("gbp.budget")
MICRO: Final = 1_000_000
HISTORY_DAYS: Final = 30  # the expected output per request: the model's rows of the last 30 days
HISTORY_MIN_ROWS: Final = 20  # fewer rows than this: the default is used
HISTORY_TTL_SECONDS: Final = 3600  # the history is read again at most this often


class BadPriceTable(TransientError):
    """``PRICES_URI`` names no file, or a malformed one: retried until the user fixes it."""


def price_table(settings: Settings, ports: Ports) -> PriceTable:
    """The table in use: ``PRICES_URI`` when set (BadPriceTable until it can be read and is valid), else shipped."""
    if not settings.prices_uri:
        return default_prices()
    found = ports.store.read(settings.prices_uri)
    if found is None:
        raise BadPriceTable(f"PRICES_URI {settings.prices_uri} does not exist; retried until it does")
    try:
        return parse_prices(found[0])
    except PermanentError as exc:  # the user fixes the file; nothing is paid for meanwhile
        raise BadPriceTable(f"PRICES_URI {settings.prices_uri}: {exc}; retried until it is fixed") from exc


def price_of(settings: Settings, ports: Ports, model: str, run_id: str) -> ModelPrice | None:
    """The price of ``model`` for a collection, or None (logged: its rows get no cost).

    A bad PRICES_URI does not hold finished work back: the rows are loaded without cost (and
    the error logged), never priced by a guess.
    """
    try:
        price = price_table(settings, ports).price(model)
    except BadPriceTable:
        log.error("price table unusable: rows loaded without cost", extra={"run_id": run_id}, exc_info=True)
        return None
    if price is None:
        log.warning("model has no price: rows get no cost", extra={"run_id": run_id, "model": model})
    return price


def output_per_request(
    settings: Settings, ports: Ports, price: ModelPrice, table: PriceTable, now: datetime
) -> tuple[float, str]:
    """Expected output tokens a request of ``price``'s model, and its basis ("history" or "default").

    The average output (candidates + thinking) of the family's answered rows of the last
    HISTORY_DAYS days (its versions count, a longer family's do not: ``-lite`` is not ``flash``),
    read at most once an hour (cached in the ledger: one query an hour a model, not one a run).
    BigQuery unreadable: the default, said so in the log.
    """
    ledger = Ledger(ports.store, settings.work_bucket, settings.lease_seconds)
    uri = f"{ledger.root}/history/{price.model}.json"
    found = ports.store.read(uri)
    try:
        cached = orjson.loads(found[0]) if found is not None else {}
    except orjson.JSONDecodeError:
        cached = {}  # unreadable: read the history again (and write it over)
    if isinstance(cached, dict) and cached and lease_left(cached.get("at", ""), now, HISTORY_TTL_SECONDS) > 0:
        average = cached.get("average")
    else:
        try:
            versions = ports.warehouse.output_history(price.model, HISTORY_DAYS)
        except PipelineError:  # no history to read (a new dataset, a permission, an outage)
            log.warning("output history unreadable: the default used", extra={"model": price.model}, exc_info=True)
            return float(table.estimator.default_output_tokens), "default"
        mine = [(total, rows) for version, (total, rows) in versions.items() if table.price(version) is price]
        rows = sum(n for _, n in mine)
        average = sum(t for t, _ in mine) / rows if rows >= HISTORY_MIN_ROWS else None
        try:  # best effort: cold starts at the same moment write the same figure (GCS: ~1 write/s an object)
            ports.store.write(uri, orjson.dumps({"at": stamp(now), "average": average, "rows": rows}))
        except PipelineError:
            log.info("output history not cached", extra={"model": price.model})
    if average is None:
        return float(table.estimator.default_output_tokens), "default"
    return float(average), "history"


def run_table(run: Run, settings: Settings, ports: Ports) -> tuple[PriceTable, ModelPrice | None]:
    """The table and the model's price for a run.

    A bad PRICES_URI holds a guarded run back (BadPriceTable, retried), but not a run no limit
    applies to: that one is estimated without a price (logged).
    """
    try:
        table = price_table(settings, ports)
    except BadPriceTable:
        if run.options.get("budget_guard"):
            raise
        log.error("price table unusable: the run is not priced", extra={"run_id": run.run_id}, exc_info=True)
        return default_prices(), None
    return table, table.price(run.model)


def run_estimate(claim: Claim[Run], settings: Settings, ports: Ports) -> dict[str, Any]:
    """The run's estimate, made once (from what staging counted) and kept on the run record."""
    run = claim.record
    if run.estimate:
        return run.estimate
    table, price = run_table(run, settings, ports)
    if price is None:
        log.warning(
            "model has no price: the run has no cost estimate", extra={"run_id": run.run_id, "model": run.model}
        )
        per_request, basis = float(table.estimator.default_output_tokens), "default"
    else:
        per_request, basis = output_per_request(settings, ports, price, table, claim.inv.now())
    state = run.staged.get("estimator") or [run.requests]
    run.estimate = {**estimate(state, price, per_request, basis).as_dict(), "model": run.model}
    claim.save()
    log.info("run estimated", extra={"run_id": run.run_id, **run.estimate})
    return run.estimate


def chunk_estimate(run: Run, price: ModelPrice | None, state: list[int], share: float = 1.0) -> dict[str, Any]:
    """The estimate of some of a run's requests: a chunk's counts (``share`` of them for a retry).

    At the run's own expected output per request: the chunks' estimates add up to the run's. A run
    of a release that did not estimate: the table's default output a request, bound by the model's
    maximum when its requests were not counted either (their input then uncounted).
    """
    per_request = float(run.estimate.get("output_per_request") or default_prices().estimator.default_output_tokens)
    if len(state) < 3 and price is not None:
        state = [state[0], 0, state[0] * price.max_output_tokens]
    made = estimate([v * share for v in state], price, per_request, run.estimate.get("output_basis", "default"))
    return made.as_dict()


def job_estimate(run: Run, price: ModelPrice | None, chunk: int) -> dict[str, Any]:
    """A first attempt's estimate (its chunk's counts)."""
    states = run.staged.get("estimates") or []
    return chunk_estimate(run, price, states[chunk]) if chunk < len(states) else {}


def retry_estimate(run: Run, price: ModelPrice | None, parent: JobRecord, rows: int) -> dict[str, Any]:
    """A retry attempt's estimate: the parent chunk's, in proportion to the rows sent again."""
    states = run.staged.get("estimates") or []
    if parent.chunk < len(states) and states[parent.chunk] and states[parent.chunk][0]:
        state = states[parent.chunk]
    else:  # a run of a release that did not count its chunks
        state = [parent.requests]
    return chunk_estimate(run, price, state, rows / max(1, state[0]))


# --- the day's spend --------------------------------------------------------------------------
def day_of(now: datetime) -> str:
    """The UTC day ``now`` counts against."""
    return now.strftime("%Y-%m-%d")


def _spend_prefix(ledger: Ledger, day: str) -> str:
    return f"{ledger.root}/spend/{day}/"


def _spend_uri(ledger: Ledger, day: str, name: str, usd: float) -> str:
    return f"{_spend_prefix(ledger, day)}{name}~{round(usd * MICRO)}"


def count_spend(ledger: Ledger, day: str, name: str, usd: float | None) -> None:
    """Count ``usd`` against ``day`` under ``name`` (idempotent: the same name and value is one marker)."""
    if usd is None or usd <= 0:
        return
    ledger.store.write(_spend_uri(ledger, day, name, usd), b"")


def spent(ledger: Ledger, day: str) -> float:
    """The day's spend: each run's actual cost in that day when it has one, else its expected markers."""
    expected: dict[str, dict[str, int]] = defaultdict(dict)
    actual: dict[str, int] = {}
    for uri in ledger.store.list(_spend_prefix(ledger, day)):
        name = uri.rsplit("/", 1)[1]
        try:
            label, micro = name.rsplit("~", 1)
            value = int(micro)
            run_id, kind = label.split(".", 1)
        except ValueError:
            log.error("unreadable spend marker: ignored", extra={"gcs_uri": uri})
            continue
        if kind == "a":
            actual[run_id] = max(actual.get(run_id, 0), value)
        else:  # a label written twice with two values (it never should) counts once, at its most
            expected[run_id][kind] = max(expected[run_id].get(kind, 0), value)
    total = sum(actual.values()) + sum(sum(v.values()) for r, v in expected.items() if r not in actual)
    return total / MICRO


def settle_spend(ledger: Ledger, run: Run, records: list[JobRecord]) -> None:
    """At a run's completion: what its attempts cost, counted in the days they were counted in."""
    if not run.budget_day:
        return
    by_day: dict[str, float] = defaultdict(float)
    for record in records:  # every day the run counted in (0 when nothing was billed: it replaces the expected)
        day = run.budget_day if record.attempt == 1 or not record.queued_at else record.queued_at[:10]
        by_day[day] += attempt_cost(run, record)
    for day, usd in by_day.items():
        ledger.store.write(f"{_spend_prefix(ledger, day)}{run.run_id}.a~{round(usd * MICRO)}", b"")
        for selection in run.retries:  # a retry's expecteds counted apart (below): its cost is in the run's now
            ledger.store.write(f"{_spend_prefix(ledger, day)}{retry_label(run.run_id, selection)}.a~0", b"")


def attempt_cost(run: Run, record: JobRecord) -> float:
    """What an attempt counts in the day's spend: its rows' cost, else what it was expected to cost.

    (No price when it was collected, or given up before its rows were read: never nothing for a
    job Vertex may have billed.)
    """
    usd = record.cost.get("usd")
    if usd is not None:
        return float(usd)
    expected = record.estimate.get("expected_usd")
    if expected is None and run.estimate.get("expected_usd") and run.estimate.get("requests"):
        expected = run.estimate["expected_usd"] * record.requests / run.estimate["requests"]
    return float(expected or 0.0)


def retry_label(run_id: str, selection: str) -> str:
    """Whom a ``gemini-batch retry``'s expected spend is counted under until its run completes again.

    Not the run's own: the run's actual cost (from its first completion) would hide it.
    """
    return f"{run_id}-{selection}"


def count_retry(ledger: Ledger, record: JobRecord, label: str = "") -> None:
    """A retry attempt's expected cost counts against the day it is queued (``label``: not its run's)."""
    name = f"{label or record.run_id}.c{record.chunk}a{record.attempt}.e"
    count_spend(ledger, record.queued_at[:10], name, record.estimate.get("expected_usd"))


# --- the guard --------------------------------------------------------------------------------
def over_limits(run: Run, settings: Settings, ledger: Ledger, day: str) -> list[str]:
    """Why the run may not be submitted without approval (empty: it may); its own spend is counted already."""
    if not run.options.get("budget_guard") or run.decision.get("verdict") == "approved":
        return []
    if settings.max_run_cost_usd is None and settings.max_daily_cost_usd is None:
        return []  # the limits were taken away since the run was created
    expected = run.estimate.get("expected_usd")
    if expected is None:
        return [f"the model {run.model} has no price: its cost cannot be estimated"]
    reasons = []
    if settings.max_run_cost_usd is not None and expected > settings.max_run_cost_usd:
        reasons.append(f"expected cost {expected:.2f} USD is over MAX_RUN_COST_USD {settings.max_run_cost_usd:.2f}")
    if settings.max_daily_cost_usd is not None:
        today = spent(ledger, day)  # this run's expected marker included
        if today > settings.max_daily_cost_usd:
            reasons.append(
                f"{day}: {today - expected:.2f} USD spent or expected, with this run {today:.2f}, "
                f"is over MAX_DAILY_COST_USD {settings.max_daily_cost_usd:.2f}"
            )
    return reasons


def guard(claim: Claim[Run], settings: Settings, ports: Ports) -> bool:
    """Before a run's first job: estimate it, and pass it (its spend counted) or hold it for approval.

    Its expected cost is counted in the day before the day is read: of two runs deciding at once,
    at least one sees the other (both may be held; never both passed over the limit). A held run's
    marker is taken back.
    """
    run, ledger = claim.record, claim.ledger
    if run.budget_day:
        return True
    run_estimate(claim, settings, ports)
    day = day_of(claim.inv.now())
    expected = run.estimate.get("expected_usd")
    name = f"{run.run_id}.e"
    count_spend(ledger, day, name, expected)
    reasons = over_limits(run, settings, ledger, day)
    if reasons:
        if expected is not None and expected > 0:
            ledger.store.delete(_spend_uri(ledger, day, name, expected))
        hold(claim, settings, ports, reasons, day)
        return False
    run.budget_day = day
    claim.save()
    return True


def hold(claim: Claim[Run], settings: Settings, ports: Ports, reasons: list[str], day: str) -> None:
    """Hold the run AWAITING_APPROVAL: its cost report written, announced on batch-results."""
    run, now = claim.record, claim.inv.now()
    run.held_at = stamp(now)
    expires = now + timedelta(seconds=settings.approval_timeout_seconds)
    report = {
        "run_id": run.run_id,
        "status": RUN_AWAITING_APPROVAL,
        "source": run.source,
        "model": run.model,
        "requests": run.requests,
        "estimate": run.estimate,
        "reasons": reasons,
        "limits": {
            "max_run_cost_usd": settings.max_run_cost_usd,
            "max_daily_cost_usd": settings.max_daily_cost_usd,
            "day": day,
            "spent_or_expected_that_day_usd": round(spent(claim.ledger, day), 6),
        },
        "held_at": run.held_at,
        "expires_at": stamp(expires),
        "approve": {"topic": settings.batch_requests_topic, "message": {"approve": run.run_id}},
        "reject": {"topic": settings.batch_requests_topic, "message": {"reject": run.run_id}},
    }
    run.report_uri = f"gs://{settings.work_bucket}/approvals/{run.run_id}.json"
    ports.store.write(run.report_uri, orjson.dumps(report, option=orjson.OPT_INDENT_2))
    claim.confirm("announcing the held run", 30.0)
    # Announced before the move: a holder that dies in between is redelivered and announces again
    # (at least once, consumers key on run_id); never a held run nobody heard of.
    ports.bus.publish(settings.batch_results_topic, {**report, "report": run.report_uri}, run_id=run.run_id)
    run.error = "; ".join(reasons)  # only with the move: a hold that fails half-way leaves no reasons behind
    record_state(claim, settings, ports, status=RUN_AWAITING_APPROVAL)
    claim.move("hold")
    log.warning("run held for approval", extra={"run_id": run.run_id, "reasons": reasons, "report": run.report_uri})
