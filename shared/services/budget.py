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
from shared.core.errors import PermanentError, TransientError
from shared.core.records import RUN_AWAITING_APPROVAL, JobRecord, Run
from shared.ports import Ports
from shared.services.ledger import Claim, Ledger, stamp

log = logging.getLogger("gbp.budget")
MICRO: Final = 1_000_000
HISTORY_DAYS: Final = 30  # the expected output per request: the model's rows of the last 30 days
HISTORY_MIN_ROWS: Final = 20  # fewer rows than this: the default is used


def price_table(settings: Settings, ports: Ports) -> PriceTable:
    """The table in use: ``PRICES_URI`` when set (TransientError until it can be read and is valid), else shipped."""
    if not settings.prices_uri:
        return default_prices()
    found = ports.store.read(settings.prices_uri)
    if found is None:
        raise TransientError(f"PRICES_URI {settings.prices_uri} does not exist; retried until it does")
    try:
        return parse_prices(found[0])
    except PermanentError as exc:  # the user fixes the file; nothing is lost meanwhile
        raise TransientError(f"PRICES_URI {settings.prices_uri}: {exc}; retried until it is fixed") from exc


def price_of(settings: Settings, ports: Ports, model: str, run_id: str) -> ModelPrice | None:
    """The price of ``model``, or None (logged: its rows get no cost)."""
    price = price_table(settings, ports).price(model)
    if price is None:
        log.warning("model has no price: rows get no cost", extra={"run_id": run_id, "model": model})
    return price


def run_estimate(claim: Claim[Run], settings: Settings, ports: Ports) -> dict[str, Any]:
    """The run's estimate, made once (from what staging counted) and kept on the run record."""
    run = claim.record
    if run.estimate:
        return run.estimate
    table = price_table(settings, ports)
    price = table.price(run.model)
    if price is None:
        log.warning(
            "model has no price: the run has no cost estimate", extra={"run_id": run.run_id, "model": run.model}
        )
    average = None
    if price is not None:
        try:
            average = ports.warehouse.average_output(price.model, HISTORY_DAYS, HISTORY_MIN_ROWS)
        except PermanentError:  # no history to read (a new dataset, a permission): the default
            log.warning("output history unreadable: default used", extra={"run_id": run.run_id}, exc_info=True)
    state = run.staged.get("estimator") or [run.requests, 0, 0]
    made = estimate(state, price, average, table.estimator.default_output_tokens)
    run.estimate = {**made.as_dict(), "model": run.model, "average_output": average}
    claim.save()
    log.info("run estimated", extra={"run_id": run.run_id, **run.estimate})
    return run.estimate


def chunk_estimate(run: Run, state: list[int], share: float = 1.0) -> dict[str, Any]:
    """The estimate of some of a run's requests (a chunk's counts, ``share`` of them for a retry).

    Made from the run's own estimate (its price, its expected output per request), so that the
    chunks' estimates add up to the run's.
    """
    whole = run.estimate
    requests, input_tokens, bound = (round(v * share) for v in state)
    if not whole or not whole.get("requests"):
        return {}
    per_output = whole["output_tokens_expected"] / whole["requests"]
    part = {
        "requests": requests,
        "input_tokens": input_tokens,
        "output_tokens_bound": bound,
        "output_tokens_expected": min(bound, round(per_output * requests)),
    }
    for name in ("expected_usd", "worst_case_usd"):
        total = whole.get(name)
        if total is None:
            part[name] = None
            continue
        # The run's cost is linear in its tokens: a part's share of input and of output.
        weight_in = input_tokens / whole["input_tokens"] if whole["input_tokens"] else 0.0
        out_key = "output_tokens_expected" if name == "expected_usd" else "output_tokens_bound"
        weight_out = part[out_key] / whole[out_key] if whole[out_key] else 0.0
        input_usd = whole.get("input_usd", 0.0)
        part[name] = round(input_usd * weight_in + (total - input_usd) * weight_out, 9)
    part["price_version"] = whole.get("price_version", "")
    return part


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
    for record in records:
        usd = record.cost.get("usd")
        if usd is None:
            continue
        day = run.budget_day if record.attempt == 1 or not record.queued_at else record.queued_at[:10]
        by_day[day] += usd
    for day, usd in by_day.items():
        ledger.store.write(f"{_spend_prefix(ledger, day)}{run.run_id}.a~{round(usd * MICRO)}", b"")


def count_retry(ledger: Ledger, record: JobRecord) -> None:
    """A retry attempt's expected cost counts against the day it is queued."""
    name = f"{record.run_id}.c{record.chunk}a{record.attempt}.e"
    count_spend(ledger, record.queued_at[:10], name, record.estimate.get("expected_usd"))


# --- the guard --------------------------------------------------------------------------------
def over_limits(run: Run, settings: Settings, ledger: Ledger, day: str) -> list[str]:
    """Why the run may not be submitted without approval (empty: it may); its own spend is counted already."""
    if not run.options.get("budget_guard") or run.decision.get("verdict") == "approved":
        return []
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
    run.error = "; ".join(reasons)
    ports.store.write(run.report_uri, orjson.dumps(report, option=orjson.OPT_INDENT_2))
    claim.confirm("announcing the held run", 30.0)
    # Announced before the move: a holder that dies in between is redelivered and announces again
    # (at least once, consumers key on run_id); never a held run nobody heard of.
    ports.bus.publish(settings.batch_results_topic, {**report, "report": run.report_uri}, run_id=run.run_id)
    claim.move("hold")
    log.warning("run held for approval", extra={"run_id": run.run_id, "reasons": reasons, "report": run.report_uri})


def job_estimates(run: Run, chunk: int) -> dict[str, Any]:
    """A first attempt's estimate (its chunk's counts)."""
    states = run.staged.get("estimates") or []
    return chunk_estimate(run, states[chunk]) if chunk < len(states) else {}


def retry_estimate(run: Run, parent: JobRecord, rows: int) -> dict[str, Any]:
    """A retry attempt's estimate: the parent chunk's, in proportion to the rows sent again."""
    states = run.staged.get("estimates") or []
    if parent.chunk >= len(states) or not states[parent.chunk][0]:
        return {}
    return chunk_estimate(run, states[parent.chunk], rows / states[parent.chunk][0])
