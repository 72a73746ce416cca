"""Turn one Vertex batch output line into one ``predictions`` row.

An output line is ``{key, request, status, response, processed_time}``; ``response``
is a REST ``GenerateContentResponse`` (camelCase) that may carry fields the SDK does
not know. The normalizer never raises: a line it cannot read (not JSON, not an object,
not UTF-8, an unexpected shape) becomes a FAILED row with ``error_status =
"UNPARSEABLE_OUTPUT"``, under the line's own key when that key is readable, with the raw
text kept in ``metadata`` (``raw_line``, up to ``RAW_LINE_LIMIT`` bytes; when the line is
not UTF-8, bad bytes appear there as backslash escapes and ``raw_line_base64`` holds the
exact bytes). Every row is valid UTF-8 JSON, so one bad line never fails a load job.

Two forms of the same row:
- :meth:`Normalizer.row` gives a dict with every schema column.
- :meth:`Normalizer.ndjson` gives one NDJSON line for a BigQuery load job. To stay
  near the cost of parsing, it does not re-serialize what passes through: the
  computed columns are written, then the original line's own members follow as they
  were (``request``/``response``/``processed_time`` are columns; ``key``/``status``
  are extra members, so the load job sets ``ignore_unknown_values``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, BinaryIO, Final

import msgspec
import orjson

from shared.core.cost import ModelPrice
from shared.core.keys import key_member
from shared.core.lines import utf8_error
from shared.core.schema import column_names

COLUMNS: Final = column_names()

SUCCEEDED: Final = "SUCCEEDED"
TRUNCATED: Final = "TRUNCATED"
BLOCKED: Final = "BLOCKED"
FAILED: Final = "FAILED"
MISSING: Final = "MISSING"
OUTCOMES: Final = (SUCCEEDED, TRUNCATED, BLOCKED, FAILED, MISSING)

UNPARSEABLE_OUTPUT: Final = "UNPARSEABLE_OUTPUT"
EMPTY_RESPONSE: Final = "EMPTY_RESPONSE"

SAFETY_FINISH_REASONS: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
RETRYABLE_CODES: Final = frozenset({429, 500, 503, 504})
RETRYABLE_STATUSES: Final = frozenset({"RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
# Plain-text status prefixes seen on batch output, mapped to their HTTP codes.
_PREFIX_CODES: Final = {
    "bad request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not found": 404,
    "too many requests": 429,
    "internal server error": 500,
    "internal error": 500,
    "service unavailable": 503,
    "gateway timeout": 504,
    "deadline exceeded": 504,
}
_CODE_STATUSES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Members of an output line that the row carries as they are.
LINE_MEMBERS: Final = frozenset({"key", "request", "status", "response", "processed_time"})
RAW_LINE_LIMIT: Final = 1 << 20
_WRITE_BATCH_BYTES: Final = 1 << 20  # rows write_ndjson joins into one write
_WHITESPACE: Final = frozenset(b" \t\r\n")
_TERMINATORS: Final = (b"\n", b"\r")

# Timestamps BigQuery loads as they are; more than 6 fractional digits are cut.
_DATE_TIME: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
_ZONE: Final = r"(Z|[+-][0-9]{2}:[0-9]{2})?"
_TS: Final = re.compile(_DATE_TIME + r"(\.[0-9]{1,6})?" + _ZONE)
_TS_LONG_FRACTION: Final = re.compile("(" + _DATE_TIME + r"\.[0-9]{6})[0-9]+" + _ZONE)
_KEY_IN_TEXT: Final = re.compile(rb'"key"\s*:\s*("(?:[^"\\]|\\.)*")')


@dataclass(frozen=True, slots=True)
class RowContext:
    """Facts about where lines come from, the same for every line of a file.

    Attributes:
        run_id: The pipeline run.
        job_name: The Vertex batch job's resource name.
        source_uri: The predictions file the lines are read from.
        attempt: 1 for the first submission, +1 per re-submission.
        loaded_at: When the rows are produced (ISO 8601, UTC), passed in by the caller.
        price: The job's model's price (cost.py); None: the model has no price, rows get no cost.
        chunk: The run's chunk the lines' requests were staged in.
    """

    run_id: str | None = None
    job_name: str | None = None
    source_uri: str | None = None
    attempt: int = 1
    loaded_at: str | None = None
    price: ModelPrice | None = None
    chunk: int | None = None

    def columns(self) -> dict[str, Any]:
        """The context's own columns."""
        return {
            "run_id": self.run_id,
            "job_name": self.job_name,
            "source_uri": self.source_uri,
            "attempt": self.attempt,
            "loaded_at": self.loaded_at,
            "price_version": None if self.price is None else self.price.version,
            "chunk": self.chunk,
        }


def _loadable(value: str) -> bool:
    """Whether BigQuery loads ``value`` as a TIMESTAMP as it is."""
    # Vertex's two shapes ('...:22.961222+00:00', '...:05.247484Z') skip the regex.
    vertex_shape = (len(value) == 32 and value[26:] == "+00:00") or (len(value) == 27 and value[26] == "Z")
    if vertex_shape and value[10] == "T" and value[19] == "." and value.isascii():
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    if _TS.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value[:19])  # the regex checks the shape, this the calendar
    except ValueError:
        return False
    return True


def timestamp(value: object) -> str | None:
    """A timestamp string BigQuery loads as TIMESTAMP, or None when ``value`` is not one."""
    if type(value) is not str:
        return None
    if _loadable(value):
        return value
    long = _TS_LONG_FRACTION.fullmatch(value)
    if long:
        return long.group(1) + (long.group(2) or "")
    return None


def parse_status(status: object) -> tuple[int | None, str | None, str]:
    """Split a failed line's ``status`` into ``(code, canonical status, message)``.

    Handles ``{"error": {...}}`` JSON, a text prefix such as ``Bad Request: `` followed
    by that JSON, and plain text (the whole text becomes the message).
    """
    if isinstance(status, dict):
        text = orjson.dumps(status).decode()
        error = status.get("error", status)
    else:
        text = str(status)
        error = None
        brace = text.find("{")
        if brace >= 0:
            try:
                parsed = orjson.loads(text[brace:])
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                error = parsed.get("error", parsed)
    code: int | None = None
    canonical: str | None = None
    message = text
    if isinstance(error, dict):
        raw_code = error.get("code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
        elif isinstance(raw_code, str) and raw_code.isdigit() and len(raw_code) < 4:
            code = int(raw_code)
        if code is not None and not 0 < code < 1000:
            code = None  # not an HTTP-style code
        raw_status = error.get("status")
        canonical = raw_status if isinstance(raw_status, str) and raw_status else None
        raw_message = error.get("message")
        if isinstance(raw_message, str) and raw_message:
            message = raw_message
    if code is None:
        lowered = text.lower()
        for prefix, prefix_code in _PREFIX_CODES.items():
            if lowered.startswith(prefix):
                code = prefix_code
                break
    if canonical is None and code is not None:
        canonical = _CODE_STATUSES.get(code)
    return code, canonical, message


def is_retryable(code: int | None, canonical: str | None) -> bool:
    """Whether a failed row is worth re-submitting."""
    return code in RETRYABLE_CODES or canonical in RETRYABLE_STATUSES


def _str(value: object) -> str | None:
    """Enum-like values as strings (unknown ones kept as they are)."""
    if value is None or type(value) is str:
        return value
    return str(value)


# Typed views of the output line: only what the row needs is decoded (in C); every
# other member is skipped. Both spellings are declared where camelCase and snake_case
# differ, since Vertex writes camelCase but hand-made or re-exported files may not.
# Counts are strict ints here; the slow path converts leniently ("188" -> 188).
_RAW_ABSENT: Final = msgspec.Raw()
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # fits BigQuery INT64


class _FunctionCall(msgspec.Struct):
    name: Any = None
    args: msgspec.Raw = _RAW_ABSENT


class _Part(msgspec.Struct):
    text: Any = None
    thought: Any = None
    functionCall: _FunctionCall | None = None
    function_call: _FunctionCall | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] | None = None


class _CitationMetadata(msgspec.Struct):
    citations: msgspec.Raw = _RAW_ABSENT
    citationSources: msgspec.Raw = _RAW_ABSENT
    citation_sources: msgspec.Raw = _RAW_ABSENT


class _Candidate(msgspec.Struct):
    content: _Content | None = None
    finishReason: Any = None
    finish_reason: Any = None
    avgLogprobs: float | None = None
    avg_logprobs: float | None = None
    safetyRatings: msgspec.Raw = _RAW_ABSENT
    safety_ratings: msgspec.Raw = _RAW_ABSENT
    citationMetadata: _CitationMetadata | None = None
    citation_metadata: _CitationMetadata | None = None


class _PromptFeedback(msgspec.Struct):
    blockReason: Any = None
    block_reason: Any = None


class _Usage(msgspec.Struct):
    promptTokenCount: _Count | None = None
    prompt_token_count: _Count | None = None
    candidatesTokenCount: _Count | None = None
    candidates_token_count: _Count | None = None
    thoughtsTokenCount: _Count | None = None
    thoughts_token_count: _Count | None = None
    cachedContentTokenCount: _Count | None = None
    cached_content_token_count: _Count | None = None
    toolUsePromptTokenCount: _Count | None = None
    tool_use_prompt_token_count: _Count | None = None
    totalTokenCount: _Count | None = None
    total_token_count: _Count | None = None
    promptTokensDetails: msgspec.Raw = _RAW_ABSENT  # read only when it names AUDIO (priced apart)
    prompt_tokens_details: msgspec.Raw = _RAW_ABSENT
    trafficType: Any = None
    traffic_type: Any = None


class _Response(msgspec.Struct):
    candidates: list[_Candidate] | None = None
    promptFeedback: _PromptFeedback | None = None
    prompt_feedback: _PromptFeedback | None = None
    usageMetadata: _Usage | None = None
    usage_metadata: _Usage | None = None
    modelVersion: Any = None
    model_version: Any = None
    responseId: Any = None
    response_id: Any = None
    createTime: Any = None
    create_time: Any = None


class _GenerationConfig(msgspec.Struct):
    responseMimeType: Any = None
    response_mime_type: Any = None


class _Request(msgspec.Struct):
    generationConfig: _GenerationConfig | None = None
    generation_config: _GenerationConfig | None = None


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    key: Any = None
    request: _Request | None = None
    status: Any = None
    response: _Response | None = None
    processed_time: Any = None


_LINE_DECODER: Final = msgspec.json.Decoder(_Line)
_LENIENT_DECODER: Final = msgspec.json.Decoder(_Line, strict=False)  # "188" -> 188
_ENCODER: Final = msgspec.json.Encoder()
_RAW_COLUMNS: Final = ("safety_ratings", "citations", "response_json")
_CAMEL_USAGE: Final = (
    ("prompt_tokens", "promptTokenCount"),
    ("candidates_tokens", "candidatesTokenCount"),
    ("thoughts_tokens", "thoughtsTokenCount"),
    ("cached_tokens", "cachedContentTokenCount"),
    ("tool_use_prompt_tokens", "toolUsePromptTokenCount"),
    ("total_tokens", "totalTokenCount"),
)


def _response_columns(response: _Response, request: _Request | None, out: dict[str, Any]) -> int:
    """Fill ``out`` with the columns read from a response (non-null ones only); return its audio prompt tokens.

    This runs once per output line; it is written flat on purpose (few calls).
    """
    candidates = response.candidates
    first = None
    if candidates:
        out["candidate_count"] = len(candidates)
        first = candidates[0]
    block_reason = None
    feedback = response.promptFeedback or response.prompt_feedback
    if feedback is not None:
        block_reason = _str(feedback.blockReason or feedback.block_reason)
        if block_reason is not None:
            out["block_reason"] = block_reason
    finish = None
    if first is not None:
        finish = first.finishReason or first.finish_reason
        if finish is not None:
            if type(finish) is not str:
                finish = str(finish)
            out["finish_reason"] = finish
        content = first.content
        if content is not None and content.parts:
            text = None
            texts: list[str] | None = None
            thoughts: list[str] | None = None
            calls: list[dict[str, Any]] | None = None
            for part in content.parts:
                part_text = part.text
                if type(part_text) is str:
                    if part.thought is True:
                        if thoughts is None:
                            thoughts = [part_text]
                        else:
                            thoughts.append(part_text)
                    elif text is None:
                        text = part_text
                    elif texts is None:
                        texts = [text, part_text]
                    else:
                        texts.append(part_text)
                call = part.functionCall or part.function_call
                if call is not None:
                    if calls is None:
                        calls = []
                    calls.append({"name": _str(call.name), "args": call.args or None})
            if text is not None:
                if texts is not None:
                    text = "".join(texts)
                out["response_text"] = text
                if request is not None:
                    config = request.generationConfig or request.generation_config
                    if (
                        config is not None
                        and (config.responseMimeType or config.response_mime_type) == "application/json"
                    ):
                        try:  # noqa: SIM105 (hot path: suppress() costs a context manager per row)
                            out["response_json"] = msgspec.Raw(_ENCODER.encode(orjson.loads(text)))
                        except orjson.JSONDecodeError:
                            pass
            if thoughts is not None:
                out["thought_text"] = "".join(thoughts)
            if calls is not None:
                out["function_calls"] = calls
        ratings = first.safetyRatings or first.safety_ratings
        if ratings:
            out["safety_ratings"] = ratings
        citation_meta = first.citationMetadata or first.citation_metadata
        if citation_meta is not None:
            citations = citation_meta.citations or citation_meta.citationSources or citation_meta.citation_sources
            if citations:
                out["citations"] = citations
        logprobs = first.avgLogprobs
        if logprobs is None:
            logprobs = first.avg_logprobs
        if logprobs is not None:
            out["avg_logprobs"] = logprobs
    if block_reason is not None and first is None:
        out["outcome"] = BLOCKED
    elif finish is None or finish == "STOP":
        out["outcome"] = SUCCEEDED
    elif finish in SAFETY_FINISH_REASONS:
        out["outcome"] = BLOCKED
    elif finish == "MAX_TOKENS":
        out["outcome"] = TRUNCATED
    else:
        out["outcome"] = SUCCEEDED
    version = response.modelVersion or response.model_version
    if version is not None:
        out["model_version"] = _str(version)
    response_id = response.responseId or response.response_id
    if response_id is not None:
        out["response_id"] = _str(response_id)
    created = timestamp(response.createTime or response.create_time)
    if created is not None:
        out["response_create_time"] = created
    usage = response.usageMetadata
    if usage is not None:
        value = usage.promptTokenCount
        if value is not None:
            out["prompt_tokens"] = value
        value = usage.candidatesTokenCount
        if value is not None:
            out["candidates_tokens"] = value
        value = usage.thoughtsTokenCount
        if value is not None:
            out["thoughts_tokens"] = value
        value = usage.cachedContentTokenCount
        if value is not None:
            out["cached_tokens"] = value
        value = usage.toolUsePromptTokenCount
        if value is not None:
            out["tool_use_prompt_tokens"] = value
        value = usage.totalTokenCount
        if value is not None:
            out["total_tokens"] = value
        traffic = usage.trafficType
    else:
        usage = response.usage_metadata
        if usage is None:
            return 0
        for column, camel in _CAMEL_USAGE:
            value = getattr(usage, camel)
            if value is None:
                value = getattr(usage, _SNAKE[camel])
            if value is not None:
                out[column] = value
        traffic = usage.traffic_type
    if traffic is not None:
        out["traffic_type"] = _str(traffic)
    details = usage.promptTokensDetails or usage.prompt_tokens_details
    if details and b"AUDIO" in bytes(details):  # audio input has its own price on some models
        return _audio_tokens(details)
    return 0


def _audio_tokens(details: msgspec.Raw) -> int:
    """The AUDIO tokens of a promptTokensDetails list (anything unreadable counts 0)."""
    try:
        parsed = orjson.loads(bytes(details))
    except orjson.JSONDecodeError:
        return 0
    audio = 0
    for detail in parsed if type(parsed) is list else ():
        if type(detail) is dict and detail.get("modality") == "AUDIO":
            count = detail.get("tokenCount", detail.get("token_count"))
            if type(count) is int and count > 0:
                audio += count
    return audio


_SNAKE: Final = {camel: re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower() for _, camel in _CAMEL_USAGE}


def _key_of(key: object, line: bytes) -> str:
    if type(key) is str and key:
        return key
    if type(key) in (int, float):
        return str(key)
    return _fallback_key(line)


def _fallback_key(line: bytes) -> str:
    """The key found in an unreadable line's text, else one derived from its bytes."""
    found = _KEY_IN_TEXT.search(line)
    if found:
        try:
            key = orjson.loads(found.group(1))
        except orjson.JSONDecodeError:
            key = None
        if type(key) is str and key:
            return key
    return _unkeyed(line)


def _unkeyed(line: bytes) -> str:
    return "unkeyed-" + hashlib.sha256(line.strip()).hexdigest()[:16]


def _unreadable_key(line: bytes) -> str:
    """The key of a line that cannot be normalized, by the rule for readable ones where it can."""
    try:
        key = key_member(line)  # bad bytes or an odd shape elsewhere in the line do not hide the key
    except UnicodeDecodeError:
        return _unkeyed(line)  # the key itself is not UTF-8: no input key can match it
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _fallback_key(line)  # not one whole JSON object: look for the key in the text
    return _key_of(key, line)


def _computed(parsed: _Line, line: bytes, price: ModelPrice | None) -> dict[str, Any]:
    """The columns derived from a decoded line (non-null ones only).

    Excludes the context columns and the pass-through ones (``request``,
    ``response``, ``processed_time``, ``metadata``). ``cost_usd`` when the model has a price.
    """
    out: dict[str, Any] = {"request_key": _key_of(parsed.key, line)}
    status = parsed.status
    response = parsed.response
    audio = 0
    if status:
        code, canonical, message = parse_status(status)
        if response is not None:
            audio = _response_columns(response, parsed.request, out)
        out["outcome"] = FAILED
        if code is not None:
            out["error_code"] = code
        if canonical is not None:
            out["error_status"] = canonical
        out["error_message"] = message
        out["retryable"] = is_retryable(code, canonical)
    elif response is not None:
        audio = _response_columns(response, parsed.request, out)
    else:
        out["outcome"] = FAILED
        out["error_status"] = EMPTY_RESPONSE
        out["error_message"] = "the output line has an empty status and no response"
        out["retryable"] = False
    if price is not None:
        out["cost_usd"] = price.cost(
            out.get("prompt_tokens", 0),
            out.get("candidates_tokens", 0),
            out.get("thoughts_tokens", 0),
            out.get("cached_tokens", 0),
            out.get("tool_use_prompt_tokens", 0),
            audio,
        )
    return out


def _unparseable(line: bytes, reason: str) -> dict[str, Any]:
    return {
        "request_key": _unreadable_key(line),
        "outcome": FAILED,
        "error_status": UNPARSEABLE_OUTPUT,
        "error_message": reason,
        "retryable": False,
        "metadata": _raw_copy(line),
    }


def _raw_copy(line: bytes) -> dict[str, Any]:
    """The first ``RAW_LINE_LIMIT`` bytes of a line as text, and as base64 when the text is not exact."""
    cut = RAW_LINE_LIMIT
    while cut > RAW_LINE_LIMIT - 3 and cut < len(line) and line[cut] & 0xC0 == 0x80:
        cut -= 1  # do not split a character: line[cut] is a UTF-8 continuation byte
    head = line[:cut]
    try:
        return {"raw_line": head.decode(), "raw_line_bytes": len(line)}
    except UnicodeDecodeError:
        return {
            "raw_line": head.decode("utf-8", "backslashreplace"),
            "raw_line_bytes": len(line),
            "raw_line_base64": base64.b64encode(head).decode("ascii"),
        }


def _parse_as_dict(line: bytes, price: ModelPrice | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(parsed line, computed columns)`` from one dict parse; never raises.

    Used for :meth:`Normalizer.row` and for lines the fast typed decoder refused (extra
    members, odd types, bad JSON); counts given as strings are converted leniently.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:  # orjson checks the UTF-8 of the whole line
        return None, _unparseable(line, utf8_error(line) or f"not valid JSON: {exc}")
    if type(obj) is not dict:
        return None, _unparseable(line, f"not a JSON object: {type(obj).__name__}")
    members = {k: v for k, v in obj.items() if k in LINE_MEMBERS}
    if not isinstance(members.get("request"), dict):
        members.pop("request", None)  # only read for JSON mode; a strange echo must not fail the row
    try:  # decoded from bytes, not converted: msgspec.Raw fields can only be filled by decoding
        parsed = _LENIENT_DECODER.decode(orjson.dumps(members))
    except msgspec.ValidationError as exc:
        computed = _unparseable(line, f"unexpected shape: {exc}")
        computed.pop("metadata")
        return obj, computed
    return obj, _computed(parsed, line, price)


class Normalizer:
    """Normalizes the lines of one predictions file (one :class:`RowContext`)."""

    __slots__ = ("_context_columns", "_prefix", "context")

    def __init__(self, context: RowContext) -> None:
        self.context = context
        self._context_columns = {k: v for k, v in context.columns().items() if v is not None}
        # '{"run_id":...,"attempt":1,' written once per file, not once per line.
        self._prefix = orjson.dumps(self._context_columns)[:-1] + b","

    def row(self, line: bytes) -> dict[str, Any]:
        """One output line -> one row dict with every schema column (None where null)."""
        if line[-1:] in _TERMINATORS:
            line = line.rstrip(b"\r\n")
        return self._row(*_parse_as_dict(line, self.context.price))  # not the hot path: one parse, as a dict

    def _row(self, obj: dict[str, Any] | None, computed: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(self._context_columns)
        row.update(computed)
        if self.context.price is not None and row["cost_usd"] is None:
            row["cost_usd"] = 0.0  # an unreadable line: no usage
        for column in _RAW_COLUMNS:
            if row[column] is not None:
                row[column] = orjson.loads(bytes(row[column]))
        if row["function_calls"] is not None:
            row["function_calls"] = [
                {"name": c["name"], "args": None if c["args"] is None else orjson.loads(bytes(c["args"]))}
                for c in row["function_calls"]
            ]
        if obj is not None:
            row["request"] = obj.get("request")
            row["response"] = obj.get("response")
            raw_time = obj.get("processed_time")
            row["processed_time"] = timestamp(raw_time)
            extra = {k: v for k, v in obj.items() if k not in LINE_MEMBERS}
            if raw_time is not None and row["processed_time"] is None:
                extra["processed_time"] = raw_time
            row["metadata"] = extra or None
        return row

    def ndjson(self, line: bytes) -> bytes:
        """One output line -> one NDJSON row (with newline) for a BigQuery load job.

        ``line`` may end with its newline. This is the hot path of the pipeline.
        """
        return self.ndjson_with_facts(line)[0]

    def ndjson_with_facts(self, line: bytes) -> tuple[bytes, dict[str, Any]]:
        """Like :meth:`ndjson`, plus the computed columns (``request_key``, ``outcome``, ``retryable``...)."""
        try:
            parsed = _LINE_DECODER.decode(line)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            raw_time = parsed.processed_time
            # The line's own bytes are copied out, but msgspec did not check the UTF-8 of the
            # members it skipped: a non-ASCII line is checked whole (isascii() costs little).
            if (
                (raw_time is None or (type(raw_time) is str and _loadable(raw_time)))
                and line[:1] == b"{"
                and (line.isascii() or utf8_error(line) is None)
            ):
                end = len(line)
                while line[end - 1] in _WHITESPACE:
                    end -= 1
                if end > 2:
                    facts = _computed(parsed, line, self.context.price)
                    computed = _ENCODER.encode(facts)
                    view = memoryview(line)
                    return b"".join((self._prefix, memoryview(computed)[1:-1], b",", view[1:end], b"\n")), facts
        row = self.row(line)
        return _ENCODER.encode({k: v for k, v in row.items() if v is not None}) + b"\n", row

    def write_ndjson(self, lines: Iterable[bytes], out: BinaryIO) -> int:
        """Normalize every line of ``lines`` (blank ones skipped) into ``out``; return the row count.

        Rows go out about 1 MiB at a time: a row (~5 KB) does not fit an 8 KB file buffer
        twice, so writing each row on its own cost about one system call per row.
        """
        ndjson, write = self.ndjson, out.write
        count = pending = 0
        batch: list[bytes] = []
        try:
            for line in lines:
                if line.isspace() or not line:
                    continue
                row = ndjson(line)
                batch.append(row)
                pending += len(row)
                count += 1
                if pending >= _WRITE_BATCH_BYTES:
                    chunk = b"".join(batch)
                    batch.clear()
                    pending = 0
                    write(chunk)
        finally:  # rows normalized before an error (a failed read, say) are still written
            if batch:
                write(b"".join(batch))
        return count


def normalize_line(line: bytes, context: RowContext) -> dict[str, Any]:
    """One output line + context -> one ``predictions`` row dict. Never raises."""
    return Normalizer(context).row(line)


def missing_row(key: str, context: RowContext) -> dict[str, Any]:
    """The row for an input key that has no output line."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(context.columns())
    row["request_key"] = key
    row["outcome"] = MISSING
    if context.price is not None:
        row["cost_usd"] = 0.0
    return row
