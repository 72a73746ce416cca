"""Typed access with google-genai's own types (run under 1.56.0 and the latest)."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from google.genai import types

from shared.core.normalize import Normalizer, RowContext
from shared.typed import parse_line, to_response

FIXTURES = Path(__file__).parent.parent / "fixtures"
REAL = [orjson.loads(line) for line in (FIXTURES / "outputs" / "vertex_real.jsonl").read_bytes().splitlines()]


def test_the_sdk_trap_is_real_in_this_version() -> None:
    # What users hit, and why this module exists.
    assert types.GenerateContentResponse.model_validate(REAL[0], extra="ignore").candidates is None
    with pytest.raises(ValueError, match="score"):
        types.GenerateContentResponse.model_validate(REAL[0]["response"])


def test_parse_line_populates_the_sdk_response_from_a_real_line() -> None:
    typed = parse_line(orjson.dumps(REAL[0]))
    assert (typed.key, typed.status, typed.processed_time) == (
        "user-defined-request-id-2",
        "",
        "2026-02-24T20:11:22.961222+00:00",
    )
    response = typed.response
    assert response is not None
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (1812, 188, 835)
    assert usage.total_token_count == 2835
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.candidates[0].avg_logprobs == pytest.approx(-0.8426610256763215)
    assert response.model_version == "gemini-2.5-flash"
    assert response.response_id == "2QWeabyND8T5jNsPlLOF-AY"


@pytest.mark.parametrize("index", [0, 1])
def test_parse_line_text_matches_the_normalized_response_text(index: int) -> None:
    typed = parse_line(REAL[index])
    row = Normalizer(RowContext()).row(orjson.dumps(REAL[index]))
    assert typed.response is not None
    assert typed.response.text == row["response_text"]


def test_parse_line_does_not_mutate_its_input() -> None:
    original = copy.deepcopy(REAL)
    for line in REAL:
        parse_line(line)
    assert original == REAL


def test_parse_line_on_a_failed_line_has_no_response() -> None:
    status = 'Bad Request: {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}'
    typed = parse_line({"key": "k", "request": {}, "status": status})
    assert (typed.key, typed.status, typed.response) == ("k", status, None)


def test_to_response_keeps_thoughts_function_calls_and_block_reasons() -> None:
    response = to_response(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "thinking", "thought": True},
                            {"text": "done", "unknownPartField": 1},
                            {"functionCall": {"name": "lookup", "args": {"q": "x"}}},
                        ],
                    },
                    "score": 1.0,
                }
            ],
            "promptFeedback": {"blockReason": "SAFETY", "newField": True},
            "usageMetadata": {"billablePromptUsage": {"textCount": 1}, "promptTokenCount": 3},
        }
    )
    assert response.candidates is not None
    parts = response.candidates[0].content.parts  # type: ignore[union-attr]
    assert parts is not None and parts[0].thought is True
    assert response.function_calls is not None and response.function_calls[0].args == {"q": "x"}
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_to_response_accepts_snake_case() -> None:
    response = to_response({"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finish_reason": "STOP"}]})
    assert response.text == "hi"


def test_parse_line_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        parse_line(b"[1]")
