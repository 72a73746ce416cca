"""What the ledger keeps: runs and job attempts as plain values, and the one table of their states.

Every status change goes through :func:`move`, which checks it against :data:`TRANSITIONS`.
:data:`TIMEOUTS` says, for every non-terminal state, what moves it on when its holder dies;
the README's state table is generated from both (and a test holds the README to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final, Self

import orjson

RUN_SUBMITTING: Final = "SUBMITTING"  # a submitter holds it (lease): validating, staging, creating jobs
RUN_AWAITING_APPROVAL: Final = "AWAITING_APPROVAL"  # over a cost limit: nothing submitted until approved
RUN_REJECTED: Final = "REJECTED"  # nothing was submitted; the report says why
RUN_RUNNING: Final = "RUNNING"  # every chunk has its first attempt; attempts are followed
RUN_COMPLETE: Final = "COMPLETE"  # every chunk's latest attempt is collected; ``announced`` once published
RUN_CANCELLED: Final = "CANCELLED"  # cancelled by an operator: what was loaded is kept, the rest MISSING (cancelled)

JOB_QUEUED: Final = "QUEUED"  # waiting in our ledger for a free slot (MAX_CONCURRENT_JOBS) or a 429's backoff
JOB_CLAIMED: Final = "CLAIMED"  # admitted: about to call batches.create (lease); followed by the poller from now on
JOB_SUBMITTED: Final = "SUBMITTED"  # Vertex has it; ``vertex_state`` follows it
JOB_FINISHED: Final = "FINISHED"  # final on Vertex (or refused at create); batch-finished published
JOB_COLLECTING: Final = "COLLECTING"  # a collector holds it (lease)
JOB_COLLECTED: Final = "COLLECTED"  # rows loaded, retries submitted, batch_jobs row loaded
JOB_UNCOLLECTABLE: Final = "UNCOLLECTABLE"  # collection failed for a permanent reason (``error`` says which)

RUN_TERMINAL: Final = frozenset({RUN_REJECTED, RUN_COMPLETE, RUN_CANCELLED})
RUN_FINISHED: Final = frozenset({RUN_COMPLETE, RUN_CANCELLED})  # what a retry may reopen (once announced)
JOB_TERMINAL: Final = frozenset({JOB_COLLECTED, JOB_UNCOLLECTABLE})

VERTEX_FINAL: Final = frozenset(
    {
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One allowed status change of a run or a job attempt."""

    name: str
    kind: str  # "run" or "job"
    sources: tuple[str, ...]  # "" = the record does not exist yet
    target: str
    by: str
    when: str
    holds: bool = False  # the mover keeps holding the record (its lease) after the move


TRANSITIONS: Final = (
    Transition(
        "claim", "run", ("",), RUN_SUBMITTING, "submit_batch, submit_request", "an upload or a message", holds=True
    ),
    Transition(
        "resume",
        "run",
        (RUN_SUBMITTING,),
        RUN_SUBMITTING,
        "submit_batch, submit_request",
        "a redelivery, or the poller's resume message, once the holder's lease has lapsed",
        holds=True,
    ),
    Transition(
        "reject",
        "run",
        (RUN_SUBMITTING,),
        RUN_REJECTED,
        "submit_batch, submit_request",
        "invalid lines (without SKIP_INVALID_LINES), no requests, or a source that cannot be read",
    ),
    Transition(
        "hold",
        "run",
        (RUN_SUBMITTING,),
        RUN_AWAITING_APPROVAL,
        "submit_batch, submit_request",
        "its expected cost is over MAX_RUN_COST_USD, or the UTC day's with it over MAX_DAILY_COST_USD (or the "
        "model has no price while a limit is set): before any job; a cost report is written and announced",
    ),
    Transition(
        "approve",
        "run",
        (RUN_AWAITING_APPROVAL,),
        RUN_SUBMITTING,
        "submit_request",
        'an {"approve": run} message on batch-requests (once, however often delivered): its jobs are queued',
        holds=True,
    ),
    Transition(
        "decline",
        "run",
        (RUN_AWAITING_APPROVAL,),
        RUN_REJECTED,
        "submit_request, poll_batches",
        'a {"reject": run} message, or no decision within APPROVAL_TIMEOUT_SECONDS: no job is created',
    ),
    Transition(
        "start",
        "run",
        (RUN_SUBMITTING,),
        RUN_RUNNING,
        "submit_batch, submit_request",
        "every chunk has attempt 1 (queued or further)",
    ),
    Transition(
        "complete",
        "run",
        (RUN_RUNNING,),
        RUN_COMPLETE,
        "collect_results, submit_*",
        "every chunk has an attempt, and every attempt is COLLECTED or UNCOLLECTABLE",
        holds=True,
    ),
    Transition(
        "announce",
        "run",
        (RUN_COMPLETE,),
        RUN_COMPLETE,
        "collect_results, submit_*",
        "published on batch-results (`announced`)",
    ),
    Transition(
        "cancel",
        "run",
        (RUN_AWAITING_APPROVAL,),
        RUN_CANCELLED,
        "submit_request, poll_batches",
        'a {"cancel": run} message for a held run: no job is created; announced',
    ),
    Transition(
        "cancel",
        "run",
        (RUN_RUNNING,),
        RUN_CANCELLED,
        "collect_results, submit_*, poll_batches",
        "cancel requested (ledger/cancel/<run>) and every attempt is COLLECTED or UNCOLLECTABLE (queued ones "
        "dropped, live jobs cancelled: their rows MISSING, not retried)",
        holds=True,
    ),
    Transition(
        "announce",
        "run",
        (RUN_CANCELLED,),
        RUN_CANCELLED,
        "collect_results, submit_*, poll_batches",
        "published on batch-results (`announced`)",
    ),
    Transition(
        "reopen",
        "run",
        (RUN_COMPLETE, RUN_CANCELLED),
        RUN_RUNNING,
        "submit_request",
        'a {"retry": run, "selection": id} message (gemini-batch retry), once per selection of its latest rows: '
        "a new attempt of every chunk with selected rows",
        holds=True,
    ),
    Transition(
        "queue",
        "job",
        ("",),
        JOB_QUEUED,
        "submit_*, collect_results (retry)",
        "a chunk needs an attempt: it waits in the ledger's queue (no expiry clock), never in Vertex's",
    ),
    Transition(
        "admit",
        "job",
        (JOB_QUEUED,),
        JOB_CLAIMED,
        "admission: poll_batches each tick, submit_* and collect_results when it is free",
        "fewer than MAX_CONCURRENT_JOBS jobs are live and no 429 backoff runs: the run given the fewest jobs "
        "so far first, its oldest attempt first (one queued 6 h goes before any)",
        holds=True,
    ),
    Transition(
        "resume",
        "job",
        (JOB_CLAIMED,),
        JOB_CLAIMED,
        "poll_batches (redrive)",
        "the holder's lease lapsed or was released after a failed create",
        holds=True,
    ),
    Transition(
        "submitted",
        "job",
        (JOB_CLAIMED,),
        JOB_SUBMITTED,
        "the claim holder",
        "batches.create answered, or a job with the attempt's labels was found",
    ),
    Transition(
        "throttled",
        "job",
        (JOB_CLAIMED,),
        JOB_QUEUED,
        "the claim holder",
        "batches.create answered 429: queued again in its place, admission paused (CREATE_BACKOFF_SECONDS, doubling)",
    ),
    Transition(
        "refused",
        "job",
        (JOB_CLAIMED,),
        JOB_FINISHED,
        "the claim holder",
        "batches.create refused the job for good (e.g. an unknown model): its rows become MISSING with the reason",
    ),
    Transition(
        "dropped",
        "job",
        (JOB_QUEUED, JOB_CLAIMED),
        JOB_FINISHED,
        "submit_request, poll_batches, the claim holder",
        "its run was cancelled before its job was created: its rows become MISSING (cancelled)",
    ),
    Transition(
        "finished",
        "job",
        (JOB_SUBMITTED,),
        JOB_FINISHED,
        "poll_batches",
        "Vertex reports a final state (or the job no longer exists)",
    ),
    Transition(
        "abandoned",
        "job",
        (JOB_SUBMITTED,),
        JOB_FINISHED,
        "poll_batches",
        "still CANCELLING on Vertex past CANCEL_TIMEOUT_SECONDS",
    ),
    Transition(
        "collect",
        "job",
        (JOB_SUBMITTED, JOB_FINISHED, JOB_COLLECTING),
        JOB_COLLECTING,
        "collect_results",
        "a batch-finished message for a final job (COLLECTING: once the holder's lease has lapsed)",
        holds=True,
    ),
    Transition(
        "collected",
        "job",
        (JOB_COLLECTING,),
        JOB_COLLECTED,
        "collect_results",
        "rows loaded, the retry attempt queued, the batch_jobs row loaded",
    ),
    Transition(
        "uncollectable",
        "job",
        (JOB_COLLECTING,),
        JOB_UNCOLLECTABLE,
        "collect_results",
        "a permanent error while collecting (the reason is kept, in batch_jobs and in the announcement)",
    ),
)

# What moves each non-terminal state on when nothing else does (its holder died, a message was lost).
TIMEOUTS: Final = {
    ("run", RUN_SUBMITTING): "LEASE_SECONDS after the claim: poll_batches sends a resume message to batch-requests",
    ("run", RUN_AWAITING_APPROVAL): "APPROVAL_TIMEOUT_SECONDS after it was held: poll_batches rejects it",
    ("run", RUN_RUNNING): (
        "poll_batches nudges collection (batch-finished) when no attempt of it is left to follow; a retry not "
        "yet queued (its holder died) is sent again to batch-requests; a cancelled run's queued attempts are "
        "dropped and its live jobs cancelled"
    ),
    ("run", RUN_COMPLETE): "not yet announced, LEASE_SECONDS after the claim: poll_batches nudges collection again",
    ("run", RUN_CANCELLED): "not yet announced, LEASE_SECONDS after the claim: poll_batches nudges collection again",
    ("job", JOB_QUEUED): "admitted as capacity frees (it never expires); its run's backstop rewrites a lost marker",
    ("job", JOB_CLAIMED): "LEASE_SECONDS after the claim (at once when released): poll_batches finds or creates it",
    ("job", JOB_SUBMITTED): (
        "queued or paused past QUEUE_TIMEOUT_SECONDS, running past RUN_TIMEOUT_SECONDS: poll_batches cancels it "
        "(stuck); still cancelling past CANCEL_TIMEOUT_SECONDS: abandoned"
    ),
    ("job", JOB_FINISHED): "LEASE_SECONDS after batch-finished was published: poll_batches publishes it again",
    ("job", JOB_COLLECTING): "LEASE_SECONDS after the claim (renewed while working): poll_batches publishes it again",
}


def move(record: Run | JobRecord, name: str) -> Transition:
    """Apply the transition ``name`` to ``record`` (ValueError when it is not allowed from its status)."""
    kind = "run" if isinstance(record, Run) else "job"
    named = [t for t in TRANSITIONS if t.kind == kind and t.name == name]
    if not named:
        raise ValueError(f"no {kind} transition named {name!r}")
    for transition in named:
        if record.status in transition.sources:
            record.status = transition.target
            return transition
    raise ValueError(f"{kind} {name}: not allowed from {record.status}")


def state_table() -> str:
    """The README's state table (markdown), from :data:`TRANSITIONS` and :data:`TIMEOUTS`."""
    lines = ["| record | from | to | by | when |", "|---|---|---|---|---|"]
    for t in TRANSITIONS:
        sources = ", ".join(s or "(new)" for s in t.sources)
        lines.append(f"| {t.kind} | {sources} | {t.target} | {t.name}: {t.by} | {t.when} |")
    lines += ["", "| record | state | when its holder dies or a message is lost |", "|---|---|---|"]
    lines += [f"| {kind} | {state} | {why} |" for (kind, state), why in TIMEOUTS.items()]
    return "\n".join(lines)


class _Record:
    """JSON round trip shared by the ledger's records."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (orjson reads a dataclass natively: far cheaper than ``asdict``)."""
        data: dict[str, Any] = orjson.loads(orjson.dumps(self))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Read back, ignoring members a newer version may have added."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Run(_Record):
    """One uploaded file (or one request message) and where it stands."""

    run_id: str
    source: str
    model: str
    status: str = RUN_SUBMITTING
    generation: str = ""  # a gs:// source's generation, pinned at the first delivery
    origin: str = "upload"  # "upload" (submit_batch) or "message" (submit_request)
    chunks: int = 0
    requests: int = 0
    invalid: int = 0
    claimed_at: str = ""  # the lease: real time of the claim (or its last renewal); "" = released
    holder: str = ""  # the invocation that made (or last renewed) the claim
    updated_at: str = ""
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    report_uri: str = ""
    error: str = ""  # why a run was rejected when it is not about lines
    options: dict[str, Any] = field(default_factory=dict)  # staging settings, frozen when the run is created
    # The checkpoint of staging (submit.py): chunk files and counts, where the next chunk starts
    # (offset, line), the validation summary so far, invalid-line segments, "done".
    staged: dict[str, Any] = field(default_factory=dict)
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)  # load name -> its load job (see loads.py)
    announced: bool = False
    resume_sent_at: str = ""  # the poller's last resume message
    nudged_at: str = ""  # the poller's last batch-finished nudge
    estimate: dict[str, Any] = field(default_factory=dict)  # cost.Estimate.as_dict() (+ model), before any job
    held_at: str = ""  # when the budget guard held it for approval
    decision: dict[str, str] = field(default_factory=dict)  # {"verdict": approved|rejected|expired, "at", "why"}
    budget_day: str = ""  # the UTC day its jobs count against (MAX_DAILY_COST_USD)
    created_at: str = ""  # when the run was first claimed (its age, for RUN_SLA_SECONDS)
    finished_at: str = ""  # when it was last completed, cancelled or rejected
    counts: dict[str, int] = field(default_factory=dict)  # its latest rows per outcome, when it was announced
    attempts: int = 0  # its job attempts, when it was announced
    cost: dict[str, Any] = field(default_factory=dict)  # runs.cost_of() when it was announced
    cancel: dict[str, str] = field(default_factory=dict)  # {"at", "why"}: copied from its cancel marker when it ends
    reopen: dict[str, Any] = field(default_factory=dict)  # the latest retry (retry.py): selection, chunks, "done"
    retries: list[str] = field(default_factory=list)  # the selections retried (each once)
    state_rows: int = 0  # run_states rows written (each a load of its own file, through the windows)


@dataclass
class JobRecord(_Record):
    """One attempt of one chunk: its Vertex job and what has been done with it."""

    run_id: str
    chunk: int
    attempt: int
    input_uri: str
    dest_prefix: str
    requests: int
    status: str = JOB_CLAIMED
    queued_at: str = ""  # when it was queued (its place in the queue: oldest first)
    throttled: int = 0  # 429s answered to its creates
    job_name: str = ""
    location: str = ""
    vertex_state: str = ""
    history: list[dict[str, str]] = field(default_factory=list)
    claimed_at: str = ""
    holder: str = ""
    submitted_at: str = ""
    finished_at: str = ""  # when batch-finished was (last) published
    stuck: bool = False  # cancelled (or abandoned) by our own deadlines
    cancel_requested_at: str = ""  # when the pipeline last asked Vertex to cancel it
    error: dict[str, Any] = field(default_factory=dict)  # job-level: {"code", "status", "message", "source"}
    collect_error: str = ""  # why an UNCOLLECTABLE attempt could not be collected
    counts: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # rows sent to the next attempt
    child: str = ""  # the next attempt's key, when there is one
    estimate: dict[str, Any] = field(default_factory=dict)  # its requests' expected cost (cost.Estimate.as_dict())
    cost: dict[str, Any] = field(
        default_factory=dict
    )  # {"usd", "by_outcome", "price_version"} once its rows are staged
    staged: dict[str, Any] = field(default_factory=dict)  # the collector's files, once written (see collect.py)
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str = ""  # the model its job runs on when not the run's (a retry with --model)
    base: int = 1  # the first attempt of its series: MAX_ATTEMPTS counts from it (a retry starts a new one)
    cancelled: str = ""  # why its run was cancelled, when it was while this attempt was open


ADMISSION_OPEN: Final = "OPEN"


@dataclass
class Admission(_Record):
    """The slots of Vertex's concurrent-job limit this deployment uses, held by one admitter at a time.

    ``live``: the attempts admitted and not yet seen final (job key -> when admitted); an
    admitter drops those its reads find queued again, finished or gone before it counts.
    """

    status: str = ADMISSION_OPEN
    live: dict[str, str] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)  # run -> jobs admitted (while it has some live or queued)
    paused_until: str = ""  # after a 429 on create: nothing is admitted before
    throttles: int = 0  # 429s in a row (the backoff doubles with each)
    claimed_at: str = ""
    holder: str = ""
    updated_at: str = ""


WINDOW_LOADING: Final = "LOADING"  # its files are fixed; its load jobs run
WINDOW_DONE: Final = "DONE"  # every file loaded (or, alone in a failed load, recorded in ``failed``)


@dataclass
class Window(_Record):
    """The files registered for one table in one time window, loaded together (windows.py).

    ``sources`` is fixed when the record is created (before any job exists): a file is loaded
    by the one window whose sources name it. ``parts`` are its load jobs (at most 10,000 files
    each, BigQuery's limit); a part failing for its data is split in two until the bad file is
    alone (``failed``: its uri -> the error).
    """

    table: str
    window: int
    seconds: int  # the window's length (windows of another LOAD_WINDOW_SECONDS are others)
    sources: list[str] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)  # {"name", "start", "end", "state"}
    failed: dict[str, str] = field(default_factory=dict)
    data_failures: int = 0  # loads refused for their data (halving stops past what isolates one file)
    failures: int = 0  # loads refused for another reason in a row (each retry waits longer)
    retry_at: str = ""  # the next try after such a refusal
    status: str = WINDOW_LOADING
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    claimed_at: str = ""
    holder: str = ""
    updated_at: str = ""
