"""Seeded, realistic Vertex batch files for benchmarks: predictions and requests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

# Mostly-ASCII answers, as in most real workloads; a share of them multilingual.
ASCII_WORDS = (
    "the",
    "model",
    "answers",
    "batch",
    "vertex",
    "gemini",
    "request",
    "response",
    "token",
    "cache",
    "region",
    "bucket",
    "table",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "that",
    "with",
    "as",
    "on",
    "it",
    "be",
    "this",
    "are",
    "by",
    "at",
    "from",
    "or",
    "an",
    "which",
    "was",
    "will",
    "can",
    "we",
)
UNICODE_WORDS = (
    "données",
    "über",
    "naïve",
    "café",
    "東京",
    "데이터",
    "résumé",
    "🚀",
    "✨",
    "façade",
    "jalapeño",
    "Ελληνικά",
    "русский",
)
UNICODE_SHARE = 0.2  # answers with non-ASCII text (multilingual prompts, emoji)
SAFETY = [
    {"category": c, "probability": "NEGLIGIBLE", "probabilityScore": 0.05, "severity": "HARM_SEVERITY_NEGLIGIBLE"}
    for c in ("HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_HARASSMENT")
]


def _text(rng: random.Random, low: int, high: int) -> str:
    words = ASCII_WORDS + UNICODE_WORDS if rng.random() < UNICODE_SHARE else ASCII_WORDS
    target = rng.randint(low, high)
    out: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(words)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:target]


def _request(rng: random.Random, kind: str) -> dict[str, Any]:
    request: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": _text(rng, 40, 400)}]}],
        "generationConfig": {"temperature": 0.4},
    }
    if rng.random() < 0.2:
        uri = f"gs://cloud-samples-data/generative-ai/image/{rng.randint(1, 500)}.jpeg"
        request["contents"][0]["parts"].append(
            {"file_data": {"file_uri": uri, "mime_type": "image/jpeg"}, "text": None}
        )
    if kind == "json":
        request["generationConfig"]["responseMimeType"] = "application/json"
    if kind == "function":
        request["tools"] = [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "OBJECT"}}]}]
    return request


def _response(rng: random.Random, kind: str, finish: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if rng.random() < 0.3:
        parts.append({"text": _text(rng, 50, 800), "thought": True})
    if kind == "json":
        parts.append({"text": orjson.dumps({"answer": _text(rng, 20, 400), "score": rng.random()}).decode()})
    elif kind == "function":
        parts.append({"functionCall": {"name": "lookup", "args": {"q": _text(rng, 5, 40)}}})
    else:
        for _ in range(rng.randint(1, 3)):
            parts.append({"text": _text(rng, 50, 1400)})
    prompt, out, thoughts = rng.randint(10, 3000), rng.randint(5, 1200), rng.randint(0, 900)
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts},
        "finishReason": finish,
        "avgLogprobs": -rng.random(),
        "score": -rng.random() * 200,
        "safetyRatings": SAFETY,
    }
    return {
        "candidates": [candidate],
        "createTime": "2026-02-24T20:11:05.247484Z",
        "modelVersion": "gemini-2.5-flash",
        "responseId": f"{rng.getrandbits(64):x}",
        "usageMetadata": {
            "billablePromptUsage": {"textCount": prompt * 4},
            "candidatesTokenCount": out,
            "promptTokenCount": prompt,
            "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + out + thoughts,
            "trafficType": "ON_DEMAND",
        },
    }


def prediction_line(rng: random.Random, index: int) -> bytes:
    """One output line: ~90% success, ~3% failed, the rest safety/MAX_TOKENS/blocked."""
    roll = rng.random()
    kind = rng.choices(("text", "json", "function"), weights=(80, 12, 8))[0]
    line: dict[str, Any] = {"key": f"req-{index:08d}", "request": _request(rng, kind)}
    if roll < 0.03:
        code, status = rng.choice(((400, "INVALID_ARGUMENT"), (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL")))
        error = orjson.dumps(
            {"error": {"code": code, "message": "Request failed: " + _text(rng, 10, 80), "status": status}}
        )
        line["status"] = "Bad Request: " + error.decode()
    elif roll < 0.04:
        line["status"] = ""
        line["response"] = {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 12},
        }
    else:
        finish = "STOP" if roll < 0.94 else rng.choice(("SAFETY", "MAX_TOKENS", "RECITATION"))
        line["status"] = ""
        line["response"] = _response(rng, kind, finish)
    line["processed_time"] = "2026-02-24T20:11:22.961222+00:00"
    return orjson.dumps(line)


def request_line(rng: random.Random, index: int) -> bytes:
    kind = rng.choices(("text", "json", "function"), weights=(80, 12, 8))[0]
    line: dict[str, Any] = {"request": _request(rng, kind)}
    if rng.random() < 0.8:
        line["key"] = f"req-{index:08d}"
    return orjson.dumps(line)


def write_predictions(path: Path, count: int, seed: int = 7) -> Path:
    """Write ``count`` prediction lines in shuffled key order."""
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)
    with path.open("wb") as out:
        for index in order:
            out.write(prediction_line(rng, index) + b"\n")
    return path


def write_requests(path: Path, count: int, seed: int = 11) -> Path:
    rng = random.Random(seed)
    with path.open("wb") as out:
        for index in range(count):
            out.write(request_line(rng, index) + b"\n")
    return path
