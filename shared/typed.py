"""Typed access to batch output lines with google-genai's own types.

``GenerateContentResponse.model_validate(line)`` on a whole output line gives an empty
response (the payload is under ``line["response"]``), and validating the payload raises
on Vertex-only fields (``candidates[].score``, ``usageMetadata.billablePromptUsage``)
because the SDK's models forbid extra fields. Here every member the SDK does not know
is pruned from a copy first (the caller's object is never mutated), which works the
same on google-genai 1.56.0 and 3.x and any pydantic 2.
"""

from __future__ import annotations

import types as pytypes
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Union, get_args, get_origin

import orjson
import pydantic
from google.genai import types


@dataclass(frozen=True, slots=True)
class TypedLine:
    """One output line with its response as an SDK object.

    Attributes:
        key: The request key (None when the line has none).
        status: The line's status text ("" on success).
        processed_time: When Vertex processed the line, as sent.
        response: The response, or None for a failed line.
    """

    key: str | None
    status: str
    processed_time: str | None
    response: types.GenerateContentResponse | None


@cache
def _fields(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """Accepted member names (field names and camelCase aliases) -> annotation."""
    names: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        names[name] = info.annotation
        if info.alias:
            names[info.alias] = info.annotation
    return names


def _prune(value: Any, annotation: Any) -> Any:
    """A copy of ``value`` keeping only what ``annotation`` (an SDK type) declares."""
    origin = get_origin(annotation)
    if origin is Union or origin is pytypes.UnionType:
        for arg in get_args(annotation):
            if _fits(value, arg):
                return _prune(value, arg)
        return _copy(value)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        if not isinstance(value, Mapping):
            return value
        fields = _fields(annotation)
        return {k: _prune(v, fields[k]) for k, v in value.items() if k in fields}
    if origin is list and isinstance(value, list):
        (item,) = get_args(annotation) or (Any,)
        return [_prune(v, item) for v in value]
    if origin is dict and isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return _copy(value)


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the shape of one arm of a union."""
    kind = get_origin(annotation) or annotation
    if isinstance(value, Mapping):
        return kind is dict or (isinstance(kind, type) and issubclass(kind, pydantic.BaseModel))
    if isinstance(value, list):
        return kind is list
    return annotation is not type(None)


def _copy(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return orjson.loads(orjson.dumps(value))
    return value


def to_response(payload: Mapping[str, Any]) -> types.GenerateContentResponse:
    """A ``GenerateContentResponse`` from a REST response dict with Vertex extras.

    Args:
        payload: ``line["response"]`` of a batch output line (camelCase or snake_case).
    """
    return types.GenerateContentResponse.model_validate(_prune(payload, types.GenerateContentResponse))


def parse_line(line: bytes | str | Mapping[str, Any]) -> TypedLine:
    """Read one batch output line into a :class:`TypedLine`; the input is not mutated.

    Raises:
        ValueError: The line is not a JSON object.
    """
    obj = orjson.loads(line) if isinstance(line, (bytes, str)) else line
    if not isinstance(obj, Mapping):
        raise ValueError(f"an output line must be a JSON object, not {type(obj).__name__}")
    payload = obj.get("response")
    status = obj.get("status") or ""
    key = obj.get("key")
    processed = obj.get("processed_time")
    return TypedLine(
        key=None if key is None else str(key),
        status=status if isinstance(status, str) else orjson.dumps(status).decode(),
        processed_time=None if processed is None else str(processed),
        response=to_response(payload) if isinstance(payload, Mapping) and not status else None,
    )
