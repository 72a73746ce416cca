"""Cloud Logging's query language, the part our log-based metrics use, evaluated on log entries.

Enough to hold terraform/monitoring.tf to the lines the code writes: comparisons (``=``, ``!=``,
``=~``, ``!~``, ``:`` and the ordered ones, on dotted paths, severity by rank), ``AND``, ``OR``,
``NOT``, parentheses, with Cloud Logging's precedence (``OR`` binds tighter than ``AND``), and
the metric extractors ``EXTRACT(path)`` and ``REGEXP_EXTRACT(path, "re")``. Anything else is a
SyntaxError: a filter this cannot read is a failing test, not a silent match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

SEVERITIES: Final = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
_TOKEN: Final = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op>=~|!~|!=|>=|<=|=|:|>|<)|(?P<paren>[()])'
    r"|(?P<word>[A-Za-z_0-9][\w.\-]*))"
)
Entry = dict[str, Any]
Predicate = Callable[[Entry], bool]


def _tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    text = text.strip()
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise SyntaxError(f"cannot read the filter at {text[at : at + 30]!r}")
        kind = found.lastgroup
        assert kind is not None
        out.append((kind, found.group(kind)))
        at = found.end()
    return out


def value_at(entry: Entry, path: str) -> Any:
    """The value at a dotted path of a log entry (None when absent)."""
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _compare(path: str, op: str, wanted: str) -> Predicate:
    def test(entry: Entry) -> bool:
        value = value_at(entry, path)
        if value is None:
            return op in ("!=", "!~")
        text = value if isinstance(value, str) else json.dumps(value)
        if op == "=":
            return text == wanted
        if op == "!=":
            return text != wanted
        if op == "=~":
            return re.search(wanted, text) is not None
        if op == "!~":
            return re.search(wanted, text) is None
        if op == ":":
            return wanted.lower() in text.lower()
        if path == "severity":
            have, want = SEVERITIES.index(text), SEVERITIES.index(wanted)
        else:
            have, want = float(text), float(wanted)  # type: ignore[assignment]
        return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want}[op]

    return test


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise SyntaxError("the filter ends too soon")
        self.at += 1
        return token

    def conjunction(self) -> Predicate:  # AND binds looser than OR in Cloud Logging
        parts = [self.disjunction()]
        while self.peek() is not None and self.peek() != ("paren", ")"):
            if self.peek() == ("word", "AND"):
                self.take()
            parts.append(self.disjunction())  # juxtaposition is AND too
        return lambda entry: all(p(entry) for p in parts)

    def disjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.peek() == ("word", "OR"):
            self.take()
            parts.append(self.unary())
        return lambda entry: any(p(entry) for p in parts)

    def unary(self) -> Predicate:
        kind, text = self.take()
        if (kind, text) == ("word", "NOT"):
            inner = self.unary()
            return lambda entry: not inner(entry)
        if (kind, text) == ("paren", "("):
            inner = self.conjunction()
            if self.take() != ("paren", ")"):
                raise SyntaxError("a parenthesis is not closed")
            return inner
        if kind != "word":
            raise SyntaxError(f"expected a field, not {text!r}")
        op_kind, op = self.take()
        if op_kind != "op":
            raise SyntaxError(f"expected an operator after {text}, not {op!r}")
        value_kind, value = self.take()
        if value_kind == "string":
            value = json.loads(value)
        elif value_kind != "word":
            raise SyntaxError(f"expected a value after {text}{op}")
        return _compare(text, op, value)


def compile_filter(text: str) -> Predicate:
    """A predicate on log entries for a Cloud Logging filter (SyntaxError for what it cannot read)."""
    parser = _Parser(text)
    predicate = parser.conjunction()
    if parser.peek() is not None:
        raise SyntaxError(f"unexpected {parser.peek()} in the filter")
    return predicate


_EXTRACT: Final = re.compile(r"^EXTRACT\(([\w.]+)\)$")
_REGEXP_EXTRACT: Final = re.compile(r'^REGEXP_EXTRACT\(([\w.]+),\s*("(?:[^"\\]|\\.)*")\)$')


def extract(extractor: str, entry: Entry) -> str | None:
    """What a metric's label or value extractor takes from an entry (None when nothing)."""
    found = _EXTRACT.match(extractor)
    if found:
        value = value_at(entry, found.group(1))
        return None if value is None else (value if isinstance(value, str) else json.dumps(value))
    found = _REGEXP_EXTRACT.match(extractor)
    if found:
        pattern = re.compile(json.loads(found.group(2)))
        if pattern.groups != 1:
            raise SyntaxError(f"{extractor}: REGEXP_EXTRACT takes exactly one capture group")
        value = value_at(entry, found.group(1))
        match = pattern.search(value) if isinstance(value, str) else None
        return match.group(1) if match else None
    raise SyntaxError(f"cannot read the extractor {extractor!r}")


def entry_of(line: dict[str, Any], service: str) -> Entry:
    """The LogEntry Cloud Logging makes of one of our JSON lines on a Cloud Run service's stdout."""
    payload = {k: v for k, v in line.items() if k not in ("severity", "time", "logging.googleapis.com/labels")}
    return {
        "severity": line.get("severity", "DEFAULT"),
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "jsonPayload": payload,
    }
