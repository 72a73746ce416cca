"""Line-by-line validation of request JSONL files, streaming, before anything is paid for."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

import msgspec
import orjson

from shared.core.keys import JobLimits, KeyedLine, KeyIndex, assigned_key, key_member, with_key
from shared.core.lines import Oversize, iter_lines, skip_bom, utf8_error

DEFAULT_MAX_LINE_BYTES: Final = 10 * 1024 * 1024
DEFAULT_EXAMPLES: Final = 5

# Reasons, stable strings (they appear in reports and in FAILED rows).
INVALID_UTF8: Final = "invalid_utf8"
INVALID_JSON: Final = "invalid_json"
NOT_AN_OBJECT: Final = "not_an_object"
MISSING_REQUEST: Final = "missing_request"
CONTENTS_MISSING: Final = "contents_missing"
CONTENTS_NOT_A_LIST: Final = "contents_not_a_list"
CONTENTS_EMPTY: Final = "contents_empty"
CONTENT_WITHOUT_PARTS: Final = "content_without_parts"
PART_WITHOUT_DATA: Final = "part_without_data"
INVALID_ROLE: Final = "invalid_role"
LINE_TOO_LONG: Final = "line_too_long"
INVALID_KEY: Final = "invalid_key"
DUPLICATE_KEY: Final = "duplicate_key"
KEY_COLLISION: Final = "key_collision"

ROLES: Final = frozenset({"user", "model"})
SEAL_EVERY: Final = 1_000_000  # validate(): keys held exactly at most this many at a time (~90 MB)
ABSENT: Final = msgspec.UNSET  # a line without a ``key`` member (it gets one from its line number)
# A part must carry one of these (camelCase and snake_case are both accepted by Vertex).
PART_DATA_FIELDS: Final = (
    "text",
    "inlineData",
    "inline_data",
    "fileData",
    "file_data",
    "functionCall",
    "function_call",
    "functionResponse",
    "function_response",
    "executableCode",
    "executable_code",
    "codeExecutionResult",
    "code_execution_result",
    "toolCall",
    "tool_call",
    "toolResponse",
    "tool_response",
)


@dataclass(frozen=True, slots=True)
class ValidationOptions:
    """How strict validation is and what one job may take."""

    limits: JobLimits = field(default_factory=JobLimits)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_examples: int = DEFAULT_EXAMPLES


@dataclass(frozen=True, slots=True)
class LineIssue:
    """One rejected line: where and why."""

    line: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ScannedLine:
    """What the scan says about one non-blank line: valid (``issue`` is None) or not."""

    line_number: int
    data: bytes
    key: str | None
    assigned: bool
    issue: LineIssue | None
    offset: int = 0  # where the line starts in the file (bytes)

    def keyed(self) -> KeyedLine:
        """The line as it goes to Vertex, with its key (only for valid lines)."""
        if self.issue is not None or self.key is None:
            raise ValueError(f"line {self.line_number} is not valid")
        data = with_key(self.data, self.key) if self.assigned else self.data
        return KeyedLine(self.line_number, self.key, self.assigned, data, self.offset)


@dataclass(slots=True)
class ValidationSummary:
    """What a whole file looks like. Counts are over physical lines.

    Attributes:
        lines: Physical lines read (blank ones included).
        blank: Blank (or whitespace-only) lines, skipped.
        valid: Lines that will be submitted.
        invalid: Lines rejected.
        invalid_by_reason: Count per reason.
        examples: The first ``max_examples`` issues per reason.
        keys_present: Lines (JSON objects) that carry their own key.
        keys_missing: Valid lines that get an assigned key.
        keys_duplicated: Lines whose key repeats an earlier one.
        bytes: Bytes of the file, terminators included.
        max_requests / max_bytes: The per-job limits checked against.
    """

    lines: int = 0
    blank: int = 0
    valid: int = 0
    invalid: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[LineIssue]] = field(default_factory=dict)
    keys_present: int = 0
    keys_missing: int = 0
    keys_duplicated: int = 0
    bytes: int = 0
    max_requests: int = JobLimits().max_requests
    max_bytes: int = JobLimits().max_bytes

    def checkpoint(self) -> dict[str, Any]:
        """Everything counted so far, to go on from (see :meth:`restore`)."""
        data = self.as_dict()
        data["examples"] = {r: [[i.line, i.detail] for i in issues] for r, issues in self.examples.items()}
        return data

    @classmethod
    def restore(cls, data: dict[str, Any]) -> ValidationSummary:
        """A summary that goes on from a :meth:`checkpoint`."""
        keys, limits = data["keys"], data["job_limits"]
        return cls(
            lines=data["lines"],
            blank=data["blank"],
            valid=data["valid"],
            invalid=data["invalid"],
            invalid_by_reason=dict(data["invalid_by_reason"]),
            examples={r: [LineIssue(line, r, detail) for line, detail in e] for r, e in data["examples"].items()},
            keys_present=keys["present"],
            keys_missing=keys["missing"],
            keys_duplicated=keys["duplicated"],
            bytes=data["bytes"],
            max_requests=limits["max_requests"],
            max_bytes=limits["max_bytes"],
        )

    @property
    def ok(self) -> bool:
        """True when every non-blank line is valid and there is at least one."""
        return self.invalid == 0 and self.valid > 0

    @property
    def exceeds_job_limits(self) -> bool:
        """True when the valid lines do not fit one batch job (they will be split)."""
        return self.valid > self.max_requests or self.bytes > self.max_bytes

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the CLI's ``--json`` and the rejection report)."""
        return {
            "ok": self.ok,
            "lines": self.lines,
            "blank": self.blank,
            "valid": self.valid,
            "invalid": self.invalid,
            "invalid_by_reason": dict(sorted(self.invalid_by_reason.items())),
            "examples": {
                reason: [{"line": i.line, "detail": i.detail} for i in issues]
                for reason, issues in sorted(self.examples.items())
            },
            "keys": {
                "present": self.keys_present,
                "missing": self.keys_missing,
                "duplicated": self.keys_duplicated,
            },
            "bytes": self.bytes,
            "job_limits": {"max_requests": self.max_requests, "max_bytes": self.max_bytes},
            "exceeds_job_limits": self.exceeds_job_limits,
        }


def _check_request(obj: dict[str, Any]) -> tuple[str, str] | None:
    """Return ``(reason, detail)`` for the first problem of a parsed line, or None."""
    request = obj.get("request")
    if type(request) is not dict:
        if request is None:
            return MISSING_REQUEST, "no 'request' member"
        return MISSING_REQUEST, "'request' must be a JSON object"
    contents = request.get("contents")
    if type(contents) is not list:
        if contents is None:
            return CONTENTS_MISSING, "request has no 'contents'"
        return CONTENTS_NOT_A_LIST, "'request.contents' must be a list"
    if not contents:
        return CONTENTS_EMPTY, "'request.contents' is empty"
    for ci, content in enumerate(contents):
        if type(content) is not dict:
            return CONTENT_WITHOUT_PARTS, f"contents[{ci}] is not an object"
        role = content.get("role")
        if role not in ROLES:
            shown = "missing" if role is None else repr(role)
            return INVALID_ROLE, f"contents[{ci}].role is {shown}; expected 'user' or 'model'"
        parts = content.get("parts")
        if type(parts) is not list or not parts:
            return CONTENT_WITHOUT_PARTS, f"contents[{ci}] has no parts"
        for pi, part in enumerate(parts):
            if type(part) is not dict:
                return PART_WITHOUT_DATA, f"contents[{ci}].parts[{pi}] is not an object"
            for name in PART_DATA_FIELDS:
                if part.get(name) is not None:
                    break
            else:
                return (
                    PART_WITHOUT_DATA,
                    f"contents[{ci}].parts[{pi}] has no data field (text, inlineData, fileData, ...)",
                )
    return None


# Fast path: a typed decode that keeps only what validation looks at (in C). Any line it
# refuses or finds wanting goes through _check_request on the parsed dict, which names the
# reason; a property test holds the two to the same verdict.
class _Part(msgspec.Struct):
    text: Any = None
    inlineData: Any = None
    inline_data: Any = None
    fileData: Any = None
    file_data: Any = None
    functionCall: Any = None
    function_call: Any = None
    functionResponse: Any = None
    function_response: Any = None
    executableCode: Any = None
    executable_code: Any = None
    codeExecutionResult: Any = None
    code_execution_result: Any = None
    toolCall: Any = None
    tool_call: Any = None
    toolResponse: Any = None
    tool_response: Any = None


class _Content(msgspec.Struct):
    role: Any = None
    parts: list[_Part] | None = None


class _Request(msgspec.Struct):
    contents: list[_Content] | None = None


class _Line(msgspec.Struct):
    key: Any = msgspec.UNSET  # absent; null is a key, and not a valid one
    request: _Request | None = None


_LINE_DECODER: Final = msgspec.json.Decoder(_Line)
_NO_DATA: Final = len(PART_DATA_FIELDS)


def _fast_ok(line: _Line) -> bool:
    """True when a decoded line passes every request check (see _check_request)."""
    request = line.request
    if request is None or not request.contents:
        return False
    for content in request.contents:
        if content.role not in ROLES or not content.parts:
            return False
        for part in content.parts:
            if part.text is None and _astuple(part).count(None) == _NO_DATA:
                return False
    return True


_astuple: Final = msgspec.structs.astuple


class Marks:
    """Where a checkpoint can be taken around the line a scan yielded last, and its counts there.

    Right before a valid line (a continuation starts with it), right after an invalid one
    (it is counted already). ``at`` is (byte offset, line number) of that point.
    """

    __slots__ = ("at", "counts")

    def __init__(self) -> None:
        self.at = (0, 0)
        self.counts: tuple[int, int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0, 0)

    def checkpoint(self, summary: ValidationSummary) -> dict[str, Any]:
        """``summary`` as it stood at :attr:`at` (the invalid lines above it are in it already).

        The scan adds its line counters to the summary only at its end; these are them.
        """
        lines, blank, valid, present, assigned, duplicated, size = self.counts
        data = summary.checkpoint()
        data.update(
            lines=summary.lines + lines,
            blank=summary.blank + blank,
            valid=summary.valid + valid,
            bytes=summary.bytes + size,
            keys={
                "present": summary.keys_present + present,
                "missing": summary.keys_missing + assigned,
                "duplicated": summary.keys_duplicated + duplicated,
            },
        )
        return data


def scan(
    stream: BinaryIO,
    options: ValidationOptions,
    summary: ValidationSummary,
    *,
    keys: KeyIndex | None = None,
    start: tuple[int, int] = (0, 0),
    marks: Marks | None = None,
) -> Iterator[ScannedLine]:
    """Check every line of a request JSONL stream, yielding one result per non-blank line.

    Keys are checked across the file: a repeated user key is ``duplicate_key``; a
    line without a key whose assigned key is already taken (or a user key equal to an
    earlier assigned one) is ``key_collision``. ``summary`` is filled in as lines go by,
    so it is complete once the iterator is exhausted (or closed).

    To go on with a file from a checkpoint: ``stream`` starts at byte ``start[0]``, which is
    where line ``start[1] + 1`` begins; ``summary`` and ``keys`` hold what came before.
    ``marks``, when given, holds where the scan stood before each valid line it yields.
    """
    return _scan(stream, options, summary, yield_valid=True, keys=keys, start=start, marks=marks)


def _scan(
    stream: BinaryIO,
    options: ValidationOptions,
    summary: ValidationSummary,
    *,
    yield_valid: bool,
    keys: KeyIndex | None = None,
    start: tuple[int, int] = (0, 0),
    marks: Marks | None = None,
    seal_every: int = 0,
) -> Iterator[ScannedLine]:
    index = keys if keys is not None else KeyIndex()
    current, in_sealed = index.current, index.in_sealed  # the key -> line * 2 + assigned of this chunk
    first_offset, first_line = start
    if first_offset == 0:  # the BOM is not part of line 1 (nor of the byte count)
        stream, first_offset = skip_bom(stream)
    max_line = options.max_line_bytes
    # msgspec raises UnicodeDecodeError for bad bytes in a string it decodes.
    decode, fast_errors = _LINE_DECODER.decode, (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
    # Counters live in locals (this loop runs once per request) and land in the summary at the end.
    number, blank = first_line, 0
    valid = present = assigned_count = duplicated = size_total = 0
    try:
        for raw in iter_lines(stream, max_line, raw=True):  # raw: every byte is counted (offsets)
            number += 1
            problem: tuple[str, str] | None = None
            key: Any = None
            if isinstance(raw, Oversize):
                size_total += raw.size + 1
                problem = (LINE_TOO_LONG, f"line is {raw.size} bytes; the cap is {max_line}")
                data = b""
            else:
                line_start = size_total
                size_total += len(raw) + 1
                data = raw[:-1] if raw[-1:] == b"\r" else raw
                if not data or data.isspace():
                    blank += 1
                    continue
                try:
                    fast: _Line | None = decode(data)
                except fast_errors:
                    fast = None
                # Members the typed decode skips are not checked for UTF-8: a non-ASCII line that
                # passed is checked whole (isascii() is a fraction of the decode's cost).
                passed = fast is not None and _fast_ok(fast) and (data.isascii() or utf8_error(data) is None)
                if fast is not None and passed:
                    key = fast.key
                else:
                    # The slow path: parse as dicts (orjson checks all of the UTF-8), name the first problem.
                    try:
                        obj = orjson.loads(data)
                    except orjson.JSONDecodeError as exc:
                        problem = _decode_problem(data, exc)
                        key = _spoiled_key(data, problem)
                    else:
                        if type(obj) is dict:
                            key = obj.get("key", ABSENT)
                        else:
                            problem = (NOT_AN_OBJECT, f"line is a JSON {type(obj).__name__}")
                if problem is None:
                    assigned = key is ABSENT
                    if assigned:
                        key = assigned_key(number)
                    else:
                        present += 1
                        if type(key) is not str or not key:
                            key, problem = None, (INVALID_KEY, "'key' must be a non-empty string")
                if problem is None:
                    problem = None if passed else _check_request(obj)
                    if problem is None:
                        seen = current.get(key)
                        if seen is None and index.sealed:
                            seen = in_sealed(key)
                        if seen is not None:
                            if not assigned and not seen & 1:
                                duplicated += 1
                                problem = DUPLICATE_KEY, f"key {key!r} is used by line {seen >> 1}"
                            else:
                                why = f"key {key!r} (line {seen >> 1}) is both a user key and an assigned one"
                                problem = KEY_COLLISION, why
            if problem is not None:
                rejected = _reject(summary, options, number, data, key, problem)
                if marks is not None:  # right after this line (it is counted in the summary already)
                    marks.at = (first_offset + size_total, number)
                    marks.counts = (number - first_line, blank, valid, present, assigned_count, duplicated, size_total)
                yield rejected
                continue
            current[key] = number * 2 + assigned
            if seal_every and len(current) >= seal_every:
                index.seal()  # 20 bytes a key from now on, not a dict entry's ~90
            valid += 1
            if assigned:
                assigned_count += 1
            offset = first_offset + line_start  # where this line starts
            if marks is not None:  # right before this line
                marks.at = (offset, number - 1)
                marks.counts = (
                    number - 1 - first_line,
                    blank,
                    valid - 1,
                    present - (not assigned),
                    assigned_count - assigned,
                    duplicated,
                    offset - first_offset,
                )
            if yield_valid:
                yield ScannedLine(number, data, key, assigned, None, offset)
    finally:
        summary.lines += number - first_line
        summary.blank += blank
        summary.valid += valid
        summary.keys_present += present
        summary.keys_missing += assigned_count
        summary.keys_duplicated += duplicated
        summary.bytes += size_total


def _spoiled_key(data: bytes, problem: tuple[str, str]) -> str | None:
    """The user's key of a line spoiled by invalid UTF-8 elsewhere (its FAILED row keeps it), when readable."""
    if problem[0] != INVALID_UTF8:
        return None
    try:
        key = key_member(data)
    except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return key if type(key) is str and key else None


def _decode_problem(data: bytes, exc: orjson.JSONDecodeError) -> tuple[str, str]:
    bad = utf8_error(data)
    if bad is not None:
        return INVALID_UTF8, bad
    return INVALID_JSON, str(exc)


def _reject(
    summary: ValidationSummary,
    options: ValidationOptions,
    number: int,
    data: bytes,
    key: str | None,
    problem: tuple[str, str],
) -> ScannedLine:
    reason, detail = problem
    issue = LineIssue(number, reason, detail)
    summary.invalid += 1
    summary.invalid_by_reason[reason] = summary.invalid_by_reason.get(reason, 0) + 1
    examples = summary.examples.setdefault(reason, [])
    if len(examples) < options.max_examples:
        examples.append(issue)
    return ScannedLine(number, data, key, False, issue)


def validate(stream: BinaryIO, options: ValidationOptions | None = None) -> ValidationSummary:
    """Validate a whole request JSONL stream in constant memory (plus 20 bytes a key).

    Args:
        stream: The file, opened in binary mode.
        options: Limits and caps; defaults match Vertex's.

    Returns:
        The summary: counts, issues by reason with examples, keys, bytes, limits.
    """
    options = options or ValidationOptions()
    summary = ValidationSummary(max_requests=options.limits.max_requests, max_bytes=options.limits.max_bytes)
    for _ in _scan(stream, options, summary, yield_valid=False, seal_every=SEAL_EVERY):
        pass
    return summary


def keyed_lines(
    stream: BinaryIO, options: ValidationOptions | None = None, summary: ValidationSummary | None = None
) -> Iterator[KeyedLine]:
    """Yield every valid line with its key, skipping invalid ones (they land in ``summary``)."""
    options = options or ValidationOptions()
    summary = summary if summary is not None else ValidationSummary()
    for line in scan(stream, options, summary):
        if line.issue is None:
            yield line.keyed()
