"""The normalizer: golden rows for every decision, the NDJSON form, and never raising."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.normalize import (
    COLUMNS,
    OUTCOMES,
    Normalizer,
    RowContext,
    missing_row,
    normalize_line,
    parse_status,
    timestamp,
)
from shared.core.schema import load_schema

FIXTURES = Path(__file__).parent.parent / "fixtures"
CONTEXT = RowContext(
    run_id="run-1",
    job_name="projects/p/locations/us-central1/batchPredictionJobs/123",
    source_uri="gs://out/run-1/prediction-model-x/predictions.jsonl",
    attempt=2,
    loaded_at="2026-11-25T00:00:00Z",
)


def _lines(name: str) -> list[bytes]:
    return [line for line in (FIXTURES / "outputs" / name).read_bytes().splitlines() if line.strip()]


def _rows(name: str) -> dict[str, dict[str, Any]]:
    normalizer = Normalizer(CONTEXT)
    return {row["request_key"]: row for row in map(normalizer.row, _lines(name))}


@pytest.mark.parametrize("name", ["cases.jsonl", "vertex_real.jsonl"])
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


@pytest.mark.parametrize("name", ["cases.jsonl", "vertex_real.jsonl"])
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
