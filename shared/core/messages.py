"""What a ``batch-requests`` message may say, checked before any run is claimed or anything paid for."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from shared.core.errors import PermanentError
from shared.core.ids import user_labels

# A model id ("gemini-2.5-flash", "gemini-2.0-flash-001"), a publisher model, or a full resource name.
_MODEL_ID: Final = r"[a-z0-9][a-z0-9._@-]{0,127}"
_MODEL: Final = re.compile(
    rf"{_MODEL_ID}"
    rf"|publishers/[a-z0-9-]+/models/{_MODEL_ID}"
    rf"|projects/[a-z0-9.:-]+/locations/[a-z0-9-]+/(?:publishers/[a-z0-9-]+/models|models|endpoints)/{_MODEL_ID}"
)
_GCS: Final = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(\S.*)")
_BIGQUERY: Final = re.compile(r"bq://((?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9])\.(\w{1,1024})\.([\w$-]{1,1024})")
MAX_DISPLAY_NAME: Final = 128
MAX_REASON: Final = 1024
_RUN_ID: Final = re.compile(r"[rm][0-9a-f]{20}")


def check_model(model: str) -> str:
    """``model`` when it has the form of a Vertex model name, else PermanentError."""
    if not _MODEL.fullmatch(model):
        raise PermanentError(
            f"bad model {model!r}: expected an id such as 'gemini-2.5-flash', "
            "'publishers/google/models/<id>' or 'projects/<p>/locations/<l>/...'"
        )
    return model


def check_source(source: str) -> str:
    """``source`` when it is ``gs://bucket/object`` or ``bq://project.dataset.table``, else PermanentError."""
    if not (_GCS.fullmatch(source) or _BIGQUERY.fullmatch(source)):
        raise PermanentError(
            f"bad source {source!r}: expected gs://<bucket>/<object> or bq://<project>.<dataset>.<table>"
        )
    return source


@dataclass(frozen=True)
class RequestMessage:
    """A checked ``batch-requests`` message: a source to run, or a run to resume."""

    source: str = ""
    model: str = ""
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    resume: str = ""  # a run id: the poller asks the submitter to go on with a run whose holder died
    approve: str = ""  # a run id held by the budget guard: submit it
    reject: str = ""  # a run id held by the budget guard: do not
    reason: str = ""  # why (kept with the decision)
    cancel: str = ""  # a run id: cancel it (gemini-batch cancel)
    reopen: str | None = None  # a cancel's fence: the run's latest retry when it was asked ("": none; None: any)
    retry: str = ""  # a run id: send the selected rows again (gemini-batch retry)
    selection: str = ""  # the retry's selection id
    outcomes: tuple[str, ...] = ()  # the retry's outcomes
    error_statuses: tuple[str, ...] = ()  # the retry's error statuses (empty: any)
    approved: bool = False  # the retry's cost is accepted over the budget limits
    nonce: str = ""  # names the retry's sending (its answer's file)


RUN_VERBS: Final = ("resume", "approve", "reject", "cancel", "retry")
_SELECTION: Final = re.compile(r"s[0-9a-f]{16}")
_STATUS: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_NONCE: Final = re.compile(r"[0-9a-f]{8,32}")


def _retry_members(payload: dict[str, Any]) -> dict[str, Any]:
    """What a retry message names besides its run (PermanentError listing every problem)."""
    problems: list[str] = []
    selection = payload.get("selection")
    if not isinstance(selection, str) or not _SELECTION.fullmatch(selection):
        problems.append(f'"selection" must be a selection id (gemini-batch retry makes it), not {selection!r}')
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("outcomes", "error_statuses"):
        value = payload.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and _STATUS.fullmatch(v) for v in value):
            problems.append(f'"{name}" must be a list of upper-case names such as FAILED')
            value = []
        lists[name] = tuple(value)
    if not lists["outcomes"]:
        problems.append('"outcomes" must name at least one outcome')
    model = payload.get("model") or ""
    try:
        if not isinstance(model, str):
            raise PermanentError('"model" must be a string')
        if model:
            check_model(model)
    except PermanentError as exc:
        problems.append(str(exc))
    approved = payload.get("approved", False)
    if not isinstance(approved, bool):
        problems.append('"approved" must be true or false')
    nonce = payload.get("nonce") or ""
    if not isinstance(nonce, str) or (nonce and not _NONCE.fullmatch(nonce)):
        problems.append('"nonce" must be 8 to 32 lower-case hex digits')
        nonce = ""
    if problems:
        raise PermanentError("bad retry message: " + "; ".join(problems))
    return {"selection": selection, "model": model, "approved": approved, "nonce": nonce, **lists}


def parse_request_message(payload: dict[str, Any]) -> RequestMessage:
    """Check a ``batch-requests`` payload; PermanentError lists every problem at once."""
    verbs = [verb for verb in RUN_VERBS if payload.get(verb) is not None]
    if len(verbs) > 1:
        raise PermanentError(f"a message says one of {', '.join(RUN_VERBS)}, not {' and '.join(verbs)}")
    for verb in verbs:
        run_id = payload.get(verb)
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise PermanentError(f"bad {verb} message: {run_id!r} is not a run id")
        reason = payload.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise PermanentError(f'bad {verb} message: "reason" must be a string of at most {MAX_REASON} characters')
        names: dict[str, Any] = {verb: run_id, "reason": reason}
        if verb == "cancel" and payload.get("reopen") is not None:
            fence = payload["reopen"]
            if not isinstance(fence, str) or (fence and not _SELECTION.fullmatch(fence)):
                raise PermanentError(f'bad cancel message: "reopen" must be a selection id or "", not {fence!r}')
            names["reopen"] = fence
        if verb == "retry":
            names.update(_retry_members(payload))
        return RequestMessage(**names)
    problems: list[str] = []
    source = payload.get("source")
    if not isinstance(source, str):
        problems.append('the message needs "source": "gs://…" or "bq://…"')
        source = ""
    else:
        try:
            check_source(source)
        except PermanentError as exc:
            problems.append(str(exc))
    model = payload.get("model") or ""
    if not isinstance(model, str):
        problems.append('"model" must be a string')
        model = ""
    elif model:
        try:
            check_model(model)
        except PermanentError as exc:
            problems.append(str(exc))
    display_name = payload.get("display_name") or ""
    if not isinstance(display_name, str) or len(display_name) > MAX_DISPLAY_NAME:
        problems.append(f'"display_name" must be a string of at most {MAX_DISPLAY_NAME} characters')
        display_name = ""
    raw_labels = payload.get("labels") or {}
    labels: dict[str, str] = {}
    if not isinstance(raw_labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_labels.items()
    ):
        problems.append('"labels" must be an object of strings')
    else:
        try:
            labels = user_labels(raw_labels)
        except PermanentError as exc:
            problems.append(str(exc))
    if problems:
        raise PermanentError("; ".join(problems))
    return RequestMessage(source=source, model=model, display_name=display_name, labels=labels)
