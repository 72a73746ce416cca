"""The normalizer: golden rows for every decision, the NDJSON form, and never raising."""

from __future__ import annotations

import base64
import copy
import io
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from shared.core.cost import ModelPrice, Tier
from shared.core.normalize import (
    COLUMNS,
    OUTCOMES,
    RAW_LINE_LIMIT,
    Normalizer,
    RowContext,
    missing_row,
    normalize_line,
    parse_status,
    timestamp,
)
from shared.core.schema import load_schema
from tests.unit.test_validate import spliced

FIXTURES = Path(__file__).parent.parent / "fixtures"
CONTEXT = RowContext(
    run_id="run-1",
    job_name="projects/p/locations/us-central1/batchPredictionJobs/123",
    source_uri="gs://out/run-1/prediction-model-x/predictions.jsonl",
    attempt=2,
    loaded_at="2026-11-25T00:00:00Z",
    # A price of round numbers (not the shipped table: the goldens must not move with Google's prices).
    price=ModelPrice("test-model", Tier(1.0, 10.0, 0.1), 0.5, 65_536, 200_000, Tier(2.0, 20.0, 0.2), "test-1"),
)


def _lines(name: str) -> list[bytes]:
    # Split as the pipeline does: on LF only (a lone CR stays inside its line).
    return [line for line in (FIXTURES / "outputs" / name).read_bytes().split(b"\n") if line.strip()]


def _rows(name: str) -> dict[str, dict[str, Any]]:
    normalizer = Normalizer(CONTEXT)
    return {row["request_key"]: row for row in map(normalizer.row, _lines(name))}


@pytest.mark.parametrize("name", ["cases.jsonl", "vertex_real.jsonl", "bad_bytes.jsonl"])
def test_normalizer_matches_golden_rows(name: str) -> None:
    rows = _rows(name)
    golden = FIXTURES / "golden" / name.replace(".jsonl", ".rows.json")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert rows == orjson.loads(golden.read_bytes())


def test_normalizer_reads_the_real_vertex_lines() -> None:
    rows = _rows("vertex_real.jsonl")
    two = rows["user-defined-request-id-2"]
    assert (two["outcome"], two["finish_reason"]) == ("SUCCEEDED", "STOP")
    assert (two["prompt_tokens"], two["candidates_tokens"], two["thoughts_tokens"], two["total_tokens"]) == (
        1812,
        188,
        835,
        2835,
    )
    assert two["response_text"].startswith("Here are the objects visible in the image:\n\n1. **Watering can:**")
    # Vertex-only extras survive in the raw response column.
    assert two["response"]["candidates"][0]["score"] == pytest.approx(-158.42027282714844)
    assert two["response"]["usageMetadata"]["billablePromptUsage"] == {"imageCount": 1, "textCount": 23}
    assert two["processed_time"] == "2026-02-24T20:11:22.961222+00:00"
    assert two["response_create_time"] == "2026-02-24T20:11:05.247484Z"
    assert rows["user-defined-request-id-1"]["total_tokens"] == 2010


# key -> the fields that decide it (the golden file holds the full rows).
EXPECTED: dict[str, dict[str, Any]] = {
    "success-multi-part": {"outcome": "SUCCEEDED", "response_text": "Hello, world.", "thought_text": None},
    "thoughts": {
        "outcome": "SUCCEEDED",
        "response_text": "answer",
        "thought_text": "let me think",
        "thoughts_tokens": 7,
    },
    "function-call": {
        "outcome": "SUCCEEDED",
        "response_text": None,
        "function_calls": [{"name": "lookup", "args": {"city": "Zürich", "days": 3}}],
    },
    "json-mode": {"response_json": {"answer": 42, "tags": ["a", "b"]}},
    "json-mode-pretty": {"response_json": {"answer": 1}},
    "json-mode-not-json": {"outcome": "SUCCEEDED", "response_json": None},
    "unicode": {"response_text": "東京 café 🚀 naïve — \u2028line sep"},
    "max-tokens": {"outcome": "TRUNCATED", "finish_reason": "MAX_TOKENS"},
    "safety-finish": {"outcome": "BLOCKED", "finish_reason": "SAFETY", "response_text": None},
    "recitation-finish": {"outcome": "BLOCKED"},
    "blocked-prompt": {"outcome": "BLOCKED", "block_reason": "PROHIBITED_CONTENT", "candidate_count": None},
    "failed-bad-request": {
        "outcome": "FAILED",
        "error_code": 400,
        "error_status": "INVALID_ARGUMENT",
        "error_message": "Unable to submit request because it has an empty text parameter.",
        "retryable": False,
    },
    "failed-429": {"outcome": "FAILED", "error_code": 429, "error_status": "RESOURCE_EXHAUSTED", "retryable": True},
    "failed-json-only": {"error_code": 500, "error_status": "INTERNAL", "retryable": True},
    "failed-plain-text": {
        "error_code": 500,
        "error_status": "INTERNAL",
        "error_message": "Internal error occurred. Please retry.",
        "retryable": True,
    },
    "failed-unknown-text": {
        "error_code": None,
        "error_status": None,
        "error_message": "Something odd happened",
        "retryable": False,
    },
    "failed-503-no-status": {"error_code": 503, "error_status": "UNAVAILABLE", "retryable": True},
    "empty-response": {"outcome": "FAILED", "error_status": "EMPTY_RESPONSE", "retryable": False},
    "snake-case": {
        "outcome": "SUCCEEDED",
        "response_text": "snake",
        "finish_reason": "STOP",
        "prompt_tokens": 3,
        "total_tokens": 4,
        "traffic_type": "ON_DEMAND",
        "model_version": "m",
        "response_create_time": "2026-02-24T20:11:05Z",
    },
    "unknown-enum-and-fields": {"outcome": "SUCCEEDED", "finish_reason": "SOME_NEW_REASON"},
    "string-token-counts": {"prompt_tokens": 10, "candidates_tokens": 5, "total_tokens": 15},
    "extra-top-level": {"outcome": "SUCCEEDED", "metadata": {"instance_id": "abc-123"}},
    "bad-processed-time": {"processed_time": None, "metadata": {"processed_time": "yesterday"}},
    "citations-and-safety": {
        "citations": [{"startIndex": 0, "endIndex": 6, "uri": "https://example.com"}],
        "safety_ratings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}],
    },
    "multiple-candidates": {"candidate_count": 2, "response_text": "one"},
    # Extra member and a string count: the dict path, which must keep the raw JSON columns too.
    "extra-member-with-raw-fields": {
        "outcome": "SUCCEEDED",
        "function_calls": [{"name": "f", "args": {"x": 1}}],
        "safety_ratings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}],
        "citations": [{"uri": "https://example.com"}],
        "prompt_tokens": 3,
        "metadata": {"instance_id": "abc"},
    },
    "candidates-not-a-list": {"outcome": "FAILED", "error_status": "UNPARSEABLE_OUTPUT", "retryable": False},
    "truncated-line": {"outcome": "FAILED", "error_status": "UNPARSEABLE_OUTPUT", "request": None},
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_normalizer_decides_each_case(key: str) -> None:
    row = _rows("cases.jsonl")[key]
    assert {field: row[field] for field in EXPECTED[key]} == EXPECTED[key]


def test_normalizer_keeps_unknown_fields_in_raw_columns() -> None:
    row = _rows("cases.jsonl")["unknown-enum-and-fields"]
    assert row["response"]["newTopLevelResponseField"] == {"x": 1}
    assert row["response"]["candidates"][0]["content"]["parts"][0]["brandNewPartField"] == 1


def test_normalizer_gives_unparseable_lines_a_failed_row_with_the_raw_text() -> None:
    rows = _rows("cases.jsonl")
    truncated = rows["truncated-line"]  # the key is recovered from the text
    assert truncated["metadata"]["raw_line"].startswith('{"key": "truncated-line"')
    unkeyed = [r for k, r in rows.items() if k.startswith("unkeyed-") and r["outcome"] == "FAILED"]
    assert len(unkeyed) == 1  # the JSON array line
    assert unkeyed[0]["error_status"] == "UNPARSEABLE_OUTPUT"
    assert unkeyed[0]["error_message"].startswith("not a JSON object")
    assert unkeyed[0]["metadata"]["raw_line"] == '["not", "an", "object"]'


CLEAN = _lines("bad_bytes.jsonl")[0]  # a real-shaped output line, keyed "clean"


def _assert_invalid_utf8_row(row: dict[str, Any], line: bytes) -> None:
    with pytest.raises(UnicodeDecodeError) as bad:
        line.decode()
    assert (row["outcome"], row["error_status"], row["retryable"]) == ("FAILED", "UNPARSEABLE_OUTPUT", False)
    assert row["error_message"] == f"invalid UTF-8 at byte {bad.value.start} ({bad.value.reason})"
    assert row["metadata"] == {
        "raw_line": line.decode("utf-8", "backslashreplace"),
        "raw_line_bytes": len(line),
        "raw_line_base64": base64.b64encode(line).decode(),
    }
    assert row["request"] is row["response"] is row["response_text"] is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Gr\xc3\xbc\xc3\x9fe", b"Gr\xfc\xdfe"),  # Latin-1 in the response text (a decoded field)
        (b"Say hi", b"Say \xed\xa0\x80"),  # an encoded surrogate in the request echo (skipped by the fast path)
        (b"HARM_CATEGORY_HATE_SPEECH", b"HARM_\xc0\xaf"),  # overlong, in safetyRatings (kept raw)
        (b"gemini-2.5-flash", b"gemini-\xe6\x97"),  # truncated, in modelVersion
        (b'"finishReason"', b'"\xff": 1, "finishReason"'),  # a member name
        (b"ON_DEMAND", b"ON_\xf0\x9f\x98"),  # an emoji cut short
    ],
)
def test_normalizer_gives_a_line_with_invalid_utf8_a_failed_row_under_its_own_key(old: bytes, new: bytes) -> None:
    line = CLEAN.replace(old, new)
    assert line != CLEAN
    normalizer = Normalizer(CONTEXT)
    row = normalizer.row(line)
    assert row["request_key"] == "clean"  # the collector joins it to its input: no second (MISSING) row
    _assert_invalid_utf8_row(row, line)
    for encoded, facts in (normalizer.ndjson_with_facts(line), normalizer.ndjson_with_facts(line + b"\r\n")):
        loaded = orjson.loads(encoded)  # valid UTF-8 JSON: BigQuery loads it
        assert loaded == {k: v for k, v in row.items() if v is not None}
        assert (facts["request_key"], facts["outcome"], facts["retryable"]) == ("clean", "FAILED", False)


def test_normalizer_keys_a_line_whose_key_is_unreadable_by_its_bytes() -> None:
    line = CLEAN.replace(b'"clean"', b'"cl\xe9an"')
    row = normalize_line(line, CONTEXT)
    assert row["request_key"].startswith("unkeyed-")
    assert row["request_key"] == normalize_line(line, CONTEXT)["request_key"]
    _assert_invalid_utf8_row(row, line)


def test_normalizer_recovers_the_key_of_a_truncated_line_with_invalid_utf8() -> None:
    line = CLEAN.replace(b"Say hi", b"Say \xff")[:200]
    row = normalize_line(line, CONTEXT)
    assert row["request_key"] == "clean"
    _assert_invalid_utf8_row(row, line)


@pytest.mark.parametrize(
    "line",
    [
        CLEAN.replace(b" aus ", b" a\x00b "),  # a raw NUL
        b"\xef\xbb\xbf" + CLEAN,  # a BOM on a line that does not open the file
        CLEAN + b"\r" + CLEAN,  # two lines joined by a lone CR
        b"\r",
        b"\x00",
        CLEAN.replace(b'"key": "clean"', b'"key": "a\\ud800"'),  # an escaped lone surrogate
    ],
)
def test_normalizer_gives_other_odd_bytes_a_failed_row(line: bytes) -> None:
    normalizer = Normalizer(CONTEXT)
    row = normalizer.row(line)
    assert (row["outcome"], row["error_status"]) == ("FAILED", "UNPARSEABLE_OUTPUT")
    assert row["error_message"].startswith("not valid JSON: ")
    assert row["metadata"]["raw_line"] == line.rstrip(b"\r\n").decode()
    assert "raw_line_base64" not in row["metadata"]  # the text is the line: nothing to add
    encoded, facts = normalizer.ndjson_with_facts(line)
    assert orjson.loads(encoded)["request_key"] == row["request_key"] == facts["request_key"]


def test_normalizer_keeps_odd_but_valid_bytes_as_they_are() -> None:
    line = CLEAN.replace(b" aus ", b" \\u0000\xef\xbb\xbf ").replace(b'": ', b'":\r')
    normalizer = Normalizer(CONTEXT)
    row = normalizer.row(line)
    assert (row["outcome"], row["response_text"]) == ("SUCCEEDED", "Grüße \x00\ufeff Zürich.")
    assert orjson.loads(normalizer.ndjson(line))["response_text"] == row["response_text"]


def test_normalizer_cuts_a_long_raw_line_at_a_character_boundary() -> None:
    text = "é" * RAW_LINE_LIMIT
    line = (
        b'{"key": "long", "status": "", "response": {"candidates": [{"content": {"parts": [{"text": "' + text.encode()
    )
    row = normalize_line(line, CONTEXT)  # a truncated line: not valid JSON, valid UTF-8
    assert row["request_key"] == "long"
    raw = row["metadata"]["raw_line"]
    assert raw.endswith("éé") and "\ufffd" not in raw and "raw_line_base64" not in row["metadata"]
    assert len(raw.encode()) <= RAW_LINE_LIMIT and row["metadata"]["raw_line_bytes"] == len(line)


def test_normalizer_caps_the_raw_copy_of_a_long_invalid_line() -> None:
    line = b'{"key": "long", "status": "\xff' + b"x" * RAW_LINE_LIMIT + b'"}'
    row = normalize_line(line, CONTEXT)
    assert row["request_key"] == "long"
    assert base64.b64decode(row["metadata"]["raw_line_base64"]) == line[:RAW_LINE_LIMIT]
    assert row["metadata"]["raw_line_bytes"] == len(line)


def test_write_ndjson_gives_every_line_of_a_file_with_bad_bytes_one_loadable_row() -> None:
    data = (FIXTURES / "outputs" / "bad_bytes.jsonl").read_bytes()
    out = io.BytesIO()
    count = Normalizer(CONTEXT).write_ndjson(io.BytesIO(data), out)
    rows = [orjson.loads(x) for x in out.getvalue().split(b"\n") if x]
    assert count == len(rows) == len(_lines("bad_bytes.jsonl")) == 11
    assert [r["request_key"] for r in rows] == [
        "clean",
        "latin-1-response-text",
        "surrogate-in-request-echo",
        "overlong-in-status",
        "ff-in-safety-ratings",
        rows[5]["request_key"],  # its own key is not valid UTF-8
        "truncated-emoji-in-thought",
        "latin-1-member-name",
        "nul-byte",
        "bom-line",
        "lone-cr",
    ]
    assert rows[5]["request_key"].startswith("unkeyed-")
    assert [r["outcome"] for r in rows] == ["SUCCEEDED"] + ["FAILED"] * 10
    assert sum(r["error_message"].startswith("invalid UTF-8 at byte ") for r in rows[1:]) == 7


def test_normalizer_assigns_a_stable_key_to_a_line_without_one() -> None:
    line = next(x for x in _lines("cases.jsonl") if b'"key"' not in x)
    first, second = normalize_line(line, CONTEXT), normalize_line(line, CONTEXT)
    assert first["request_key"] == second["request_key"]
    assert first["request_key"].startswith("unkeyed-")
    assert first["outcome"] == "SUCCEEDED"


def test_normalizer_row_has_every_schema_column_and_context() -> None:
    for row in _rows("cases.jsonl").values():
        assert tuple(row) == COLUMNS
        assert (row["run_id"], row["attempt"], row["loaded_at"]) == ("run-1", 2, "2026-11-25T00:00:00Z")
        assert row["outcome"] in OUTCOMES


@pytest.mark.parametrize("name", ["cases.jsonl", "vertex_real.jsonl", "bad_bytes.jsonl"])
def test_ndjson_row_carries_the_same_values_as_the_dict_row(name: str) -> None:
    normalizer = Normalizer(CONTEXT)
    for line in _lines(name):
        row = normalizer.row(line)
        for encoded in (normalizer.ndjson(line), normalizer.ndjson(line + b"\r\n")):
            assert encoded.endswith(b"\n")
            assert encoded.count(b"\n") == 1, "one NDJSON row per line"
            loaded = orjson.loads(encoded)
            # Only the line's own key/status may stand beside the schema columns.
            assert set(loaded) - set(COLUMNS) <= {"key", "status"}
            assert {k: v for k, v in loaded.items() if k in COLUMNS} == {k: v for k, v in row.items() if v is not None}


def test_normalizer_does_not_mutate_anything_between_lines() -> None:
    normalizer = Normalizer(CONTEXT)
    lines = _lines("cases.jsonl")
    first = [normalizer.row(line) for line in lines]
    snapshot = copy.deepcopy(first)
    again = [normalizer.row(line) for line in lines]
    assert first == snapshot == again


def test_missing_row_has_outcome_missing_and_nothing_else() -> None:
    row = missing_row("k-1", CONTEXT)
    assert (row["request_key"], row["outcome"], row["attempt"]) == ("k-1", "MISSING", 2)
    assert row["response"] is None and tuple(row) == COLUMNS


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            'Bad Request: {"error": {"code": 400, "message": "m", "status": "INVALID_ARGUMENT"}}',
            (400, "INVALID_ARGUMENT", "m"),
        ),
        ('{"error": {"code": "429", "message": "slow down"}}', (429, "RESOURCE_EXHAUSTED", "slow down")),
        ("Gateway Timeout", (504, "DEADLINE_EXCEEDED", "Gateway Timeout")),
        ("Bad Request: {not json", (400, "INVALID_ARGUMENT", "Bad Request: {not json")),
        ({"code": 503, "message": "down", "status": "UNAVAILABLE"}, (503, "UNAVAILABLE", "down")),
        ("weird", (None, None, "weird")),
    ],
)
def test_parse_status_reads_every_form(status: object, expected: tuple[object, ...]) -> None:
    assert parse_status(status) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-24T20:11:22.961222+00:00", "2026-02-24T20:11:22.961222+00:00"),
        ("2026-02-24T20:11:05.247484123Z", "2026-02-24T20:11:05.247484Z"),
        ("2026-02-24 20:11:05", "2026-02-24 20:11:05"),
        ("2026-13-24T20:11:22.961222+00:00", None),
        ("2026-02-30 20:11:05", None),
        ("٢٠٢٦-02-24T20:11:05Z", None),
        ("yesterday", None),
        (1700000000, None),
    ],
)
def test_timestamp_accepts_only_what_bigquery_loads(value: object, expected: str | None) -> None:
    assert timestamp(value) == expected


def test_schema_file_lists_the_row_columns_with_descriptions() -> None:
    schema = load_schema()
    assert [f["name"] for f in schema] == list(COLUMNS)
    assert all(f["description"] and f["type"] and f["mode"] in ("NULLABLE", "REQUIRED") for f in schema)
    assert {f["name"] for f in schema if f["mode"] == "REQUIRED"} == {"request_key", "outcome"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
line_like = st.fixed_dictionaries(
    {},
    optional={
        "key": json_values,
        "request": json_values,
        "status": json_values,
        "response": st.fixed_dictionaries(
            {},
            optional={
                "candidates": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "content": st.fixed_dictionaries({}, optional={"parts": st.lists(json_values, max_size=3)}),
                            "finishReason": json_values,
                            "avgLogprobs": json_values,
                            "safetyRatings": json_values,
                        },
                    ),
                    max_size=2,
                )
                | json_values,
                "usageMetadata": st.dictionaries(
                    st.sampled_from(["promptTokenCount", "totalTokenCount", "x"]), json_values
                ),
                "promptFeedback": json_values,
                "createTime": json_values,
            },
        )
        | json_values,
        "processed_time": json_values,
        "extra": json_values,
    },
)


def _check_row(normalizer: Normalizer, line: bytes) -> None:
    row = normalizer.row(line)
    assert tuple(row) == COLUMNS
    assert row["outcome"] in OUTCOMES
    assert isinstance(row["request_key"], str) and row["request_key"]
    encoded = normalizer.ndjson(line)
    assert encoded.count(b"\n") == 1 and encoded.endswith(b"\n")
    loaded = orjson.loads(encoded)
    assert loaded["outcome"] == row["outcome"] and loaded["request_key"] == row["request_key"]


def test_normalizer_survives_integers_beyond_64_bits() -> None:
    line = (
        b'{"key": 123456789012345678901234567890, "status": "",'
        b' "response": {"usageMetadata": {"totalTokenCount": 99999999999999999999999}}}'
    )
    _check_row(Normalizer(CONTEXT), line)
    row = Normalizer(CONTEXT).row(line)
    assert row["total_tokens"] is None  # would not fit INT64: the load job would reject the file
    assert (row["outcome"], row["error_status"]) == ("FAILED", "UNPARSEABLE_OUTPUT")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_normalizer_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    _check_row(Normalizer(CONTEXT), data.replace(b"\n", b" "))


@settings(max_examples=300, deadline=None)
@given(line_like)
def test_normalizer_never_raises_on_odd_shapes(obj: dict[str, Any]) -> None:
    _check_row(Normalizer(CONTEXT), orjson.dumps(obj))


usable_keys = st.text(min_size=1, max_size=8) | st.integers(-(2**63), 2**64 - 1)
keyed_line_like = st.tuples(line_like, usable_keys | json_values, st.booleans()).map(
    lambda t: {"key": t[1], **{k: v for k, v in t[0].items() if k != "key"}} if t[2] else {**t[0], "key": t[1]}
)


@settings(max_examples=300, deadline=None)
@given(st.lists(keyed_line_like, min_size=1, max_size=5), st.data())
def test_normalizer_gives_each_line_with_invalid_utf8_inside_a_string_one_row(
    objs: list[dict[str, Any]], data: st.DataObject
) -> None:
    normalizer = Normalizer(CONTEXT)
    lines = [orjson.dumps(o) for o in objs]
    corrupted = list(lines)
    offsets: dict[int, int] = {}
    for index, line in enumerate(lines):
        if data.draw(st.booleans(), label=f"corrupt line {index + 1}"):
            key = objs[index]["key"]
            within = None
            if type(key) is str and data.draw(st.booleans(), label="aim at the key"):
                start = line.index(b'"key":' + orjson.dumps(key)) + len(b'"key":"')
                within = (start, start + len(orjson.dumps(key)) - 2)
            corrupted[index], offsets[index] = data.draw(spliced(line, within), label=f"line {index + 1}")
    out = io.BytesIO()
    assert normalizer.write_ndjson(corrupted, out) == len(lines)
    encoded = out.getvalue().split(b"\n")
    assert encoded.pop() == b"" and len(encoded) == len(lines)  # one row per line
    for index, (line, text) in enumerate(zip(corrupted, encoded, strict=True)):
        loaded = orjson.loads(text)  # valid UTF-8 JSON, whatever the line held
        row = normalizer.row(line)
        fast, facts = normalizer.ndjson_with_facts(line)
        assert fast == text + b"\n"
        # The fast path copies the line's own members, nulls included; a null loads as no value.
        assert {k: v for k, v in loaded.items() if k in COLUMNS and v is not None} == {
            k: v for k, v in row.items() if v is not None
        }
        assert (facts["request_key"], facts["outcome"]) == (row["request_key"], row["outcome"])
        assert bool(facts.get("retryable")) is bool(row["retryable"])
        if index not in offsets:
            continue
        _assert_invalid_utf8_row(row, line)
        assert offsets[index] <= int(row["error_message"].split(" ")[4]) < offsets[index] + 5
        key = objs[index]["key"]
        usable = (type(key) is str and key) or type(key) is int
        # Where the bytes landed: read the line as if every bad byte were U+FFFD.
        seen = orjson.loads(line.decode("utf-8", "replace"))
        if usable and seen.get("key") == key:
            event("bad bytes beside a usable key")
            assert row["request_key"] == normalizer.row(lines[index])["request_key"] == str(key)
        elif usable and "key" in seen:
            event("bad bytes in the key")
            assert row["request_key"].startswith("unkeyed-")  # the key itself is unreadable
        assert row["request_key"] and row["request_key"] == normalize_line(line, CONTEXT)["request_key"]
