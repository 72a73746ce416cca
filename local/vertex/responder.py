"""The emulator's "model": deterministic, offline, and labelled as such in every response.

It answers from the prompt, honours ``generationConfig`` (JSON mode with or without a
``responseSchema``, ``maxOutputTokens`` -> MAX_TOKENS, ``candidateCount``, thoughts), and
reports plausible token counts. Markers in a request's text inject row faults:

    [[emulator:400]] [[emulator:429]] [[emulator:500]]   the row fails with that error
    [[emulator:429-once]] [[emulator:500-once]]          fails the first time only (per key+request)
    [[emulator:block]]                                   the prompt is blocked
    [[emulator:safety]]                                  the answer stops for SAFETY
    [[emulator:missing]]                                 the row is left out of the output
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

MARKER = re.compile(r"\[\[emulator:([a-z0-9-]+)\]\]")
ERRORS = {
    "400": ("Bad Request", 400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "429": ("Too Many Requests", 429, "RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later."),
    "500": ("Internal Server Error", 500, "INTERNAL", "Internal error encountered."),
}
IMAGE_TOKENS = 258


@dataclass(frozen=True, slots=True)
class Answer:
    """One row's outcome: a status text (empty on success) and a response, or left out."""

    status: str
    response: dict[str, Any] | None
    missing: bool = False


def error_status(code: str) -> str:
    """The status text of a failed row, as Vertex writes it."""
    prefix, number, status, message = ERRORS[code]
    body = orjson.dumps({"error": {"code": number, "message": message, "status": status}}).decode()
    return f"{prefix}: {body}"


def _texts(request: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for content in request.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


def _media_parts(request: dict[str, Any]) -> int:
    count = 0
    for content in request.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            if isinstance(part, dict) and any(
                part.get(k) for k in ("fileData", "file_data", "inlineData", "inline_data")
            ):
                count += 1
    return count


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _config(request: dict[str, Any]) -> dict[str, Any]:
    config = request.get("generationConfig") or request.get("generation_config") or {}
    return config if isinstance(config, dict) else {}


def _get(config: dict[str, Any], camel: str, snake: str) -> Any:
    value = config.get(camel)
    return config.get(snake) if value is None else value


def _from_schema(schema: Any, hint: str, depth: int = 0) -> Any:
    """A value matching an OpenAPI/JSON schema (types in either case)."""
    if not isinstance(schema, dict) or depth > 8:
        return hint
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "string")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _from_schema(sub, f"{name} of {hint}", depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_from_schema(schema.get("items"), hint, depth + 1)]
    if kind == "integer":
        return len(hint) % 100
    if kind == "number":
        return round((len(hint) % 100) / 7, 3)
    if kind == "boolean":
        return len(hint) % 2 == 0
    return hint[:80]


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def respond(key: str, request: dict[str, Any], model_id: str, now: str, seen: set[bytes]) -> Answer:
    """Answer one request line.

    Args:
        key: The request key.
        request: The request (camelCase or snake_case).
        model_id: The model id the job was created with (e.g. ``gemini-2.5-flash``).
        now: The create time to stamp (RFC 3339, UTC).
        seen: Digests of ``-once`` faults already served (shared across jobs).
    """
    texts = _texts(request)
    prompt = " ".join(texts)
    markers = set(MARKER.findall(prompt))
    digest = _digest(key, orjson.dumps(request, option=orjson.OPT_SORT_KEYS).decode())
    for code in ("400", "429", "500"):
        if code in markers:
            return Answer(error_status(code), None)
        if f"{code}-once" in markers and digest not in seen:
            seen.add(digest)
            return Answer(error_status(code), None)
    if "missing" in markers:
        return Answer("", None, missing=True)
    clean = MARKER.sub("", prompt).strip()
    media = _media_parts(request)
    prompt_tokens = _tokens(prompt) + IMAGE_TOKENS * media
    usage: dict[str, Any] = {
        "billablePromptUsage": {"textCount": len(prompt), **({"imageCount": media} if media else {})},
        "promptTokenCount": prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": _tokens(prompt)}]
        + ([{"modality": "IMAGE", "tokenCount": IMAGE_TOKENS * media}] if media else []),
        "trafficType": "ON_DEMAND",
    }
    response: dict[str, Any] = {
        "createTime": now,
        "modelVersion": f"{model_id}-offline-emulator",
        "responseId": base64.urlsafe_b64encode(digest[:16]).decode().rstrip("="),
    }
    if "block" in markers:
        usage["totalTokenCount"] = prompt_tokens
        response.update(promptFeedback={"blockReason": "PROHIBITED_CONTENT"}, usageMetadata=usage)
        return Answer("", response)
    config = _config(request)
    max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
    count = int(_get(config, "candidateCount", "candidate_count") or 1)
    thinking = _get(config, "thinkingConfig", "thinking_config") or {}
    include_thoughts = bool(isinstance(thinking, dict) and _get(thinking, "includeThoughts", "include_thoughts"))
    wants_json = _get(config, "responseMimeType", "response_mime_type") == "application/json"
    schema = _get(config, "responseSchema", "response_schema") or _get(
        config, "responseJsonSchema", "response_json_schema"
    )
    thought = f"The user asks: {clean[:120]}. A short, direct answer fits."
    thoughts_tokens = _tokens(thought) + 16
    candidates = []
    output_tokens = 0
    for index in range(count):
        suffix = f" (candidate {index + 1})" if count > 1 else ""
        if wants_json:
            value = _from_schema(schema, clean) if schema else {"answer": clean[:200]}
            text = orjson.dumps(value).decode()
        else:
            text = f"[offline emulator, {model_id}] You asked: {clean[:400]}{suffix}"
        finish = "STOP"
        if "safety" in markers:
            candidates.append(
                {
                    "finishReason": "SAFETY",
                    "safetyRatings": [
                        {"blocked": True, "category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                    ],
                }
            )
            continue
        tokens = _tokens(text)
        if max_tokens is not None and tokens > int(max_tokens):
            text, tokens, finish = text[: int(max_tokens) * 4], int(max_tokens), "MAX_TOKENS"
        output_tokens += tokens
        parts: list[dict[str, Any]] = [{"text": thought, "thought": True}] if include_thoughts else []
        parts.append({"text": text})
        logprob = -(0.05 + (digest[index % len(digest)] % 90) / 100)
        candidates.append(
            {
                "avgLogprobs": logprob,
                "content": {"parts": parts, "role": "model"},
                "finishReason": finish,
                "index": index,
                "score": round(logprob * tokens, 6),
            }
        )
        if count == 1:
            candidates[0].pop("index")
    usage.update(
        candidatesTokenCount=output_tokens or None,
        candidatesTokensDetails=[{"modality": "TEXT", "tokenCount": output_tokens}] if output_tokens else None,
        thoughtsTokenCount=thoughts_tokens,
        totalTokenCount=prompt_tokens + output_tokens + thoughts_tokens,
    )
    response.update(candidates=candidates, usageMetadata={k: v for k, v in usage.items() if v is not None})
    return Answer("", response)


def echo(request: dict[str, Any]) -> dict[str, Any]:
    """The request as Vertex echoes it: keys sorted, every part with the union of part keys (null if absent)."""
    part_keys: set[str] = set()
    for content in request.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            if isinstance(part, dict):
                part_keys.update(part)
    echoed = orjson.loads(orjson.dumps(request, option=orjson.OPT_SORT_KEYS))
    for content in echoed.get("contents") or []:
        parts = (content or {}).get("parts") or []
        for index, part in enumerate(parts):
            if isinstance(part, dict):
                parts[index] = {k: part.get(k) for k in sorted(part_keys)}
    return dict(echoed)
