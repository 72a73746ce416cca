"""Request keys: the user's own, or one assigned from the line number.

Every request sent to Vertex carries a top-level ``key`` so that outputs (which come
back in any order) can be joined to inputs. Assigned keys depend only on the line's
position in the file, so the same file always gets the same keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson

ASSIGNED_KEY_PREFIX = "line-"


class _KeyOnly(msgspec.Struct):
    key: Any = None


_KEY_ONLY: Final = msgspec.json.Decoder(_KeyOnly)


def key_member(line: bytes) -> object:
    """The top-level ``key`` of a JSON object line whose other members may be unreadable.

    Every other member is skipped unread (msgspec does not check the UTF-8 of what it skips),
    so a line spoiled elsewhere keeps its key. Raises UnicodeDecodeError when the key itself
    is not UTF-8, msgspec.DecodeError/ValidationError when the line is not one JSON object.
    """
    return _KEY_ONLY.decode(line).key


def assigned_key(line_number: int) -> str:
    """The key given to the request on ``line_number`` (1-based) when it has none."""
    return f"{ASSIGNED_KEY_PREFIX}{line_number:07d}"


@dataclass(frozen=True, slots=True)
class KeyedLine:
    """A valid request line, ready to send: ``data`` carries a top-level ``key``.

    Attributes:
        line_number: 1-based physical line in the source file.
        key: The request key (user's or assigned).
        assigned: True when the key was assigned by us.
        data: The JSON line (no terminator) with the key in it.
    """

    line_number: int
    key: str
    assigned: bool
    data: bytes


def with_key(data: bytes, key: str) -> bytes:
    """Insert ``"key": key`` into a JSON object line without re-serializing it.

    Args:
        data: A JSON object (bytes, possibly with surrounding whitespace) that has
            at least one member and no ``key`` member.
        key: The key to add.
    """
    body = data.strip()
    return b'{"key":' + orjson.dumps(key) + b"," + body[1:]


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What one Vertex batch job may take (both configurable).

    Attributes:
        max_requests: Requests per job (Vertex: 200,000).
        max_bytes: Bytes per input file (Vertex: 1 GB), counting a newline per line.
    """

    max_requests: int = 200_000
    max_bytes: int = 1_000_000_000

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("job limits must be positive")


def assign_chunks(lines: Iterable[KeyedLine], limits: JobLimits) -> Iterator[tuple[int, KeyedLine]]:
    """Yield ``(chunk_index, line)`` so that no chunk exceeds ``limits``.

    Chunks are numbered from 0 and filled in order; the caller starts a new output
    when the index changes, so memory stays constant. A single line larger than
    ``max_bytes`` gets a chunk of its own (the validator's line cap prevents this
    in practice).
    """
    index, count, size = 0, 0, 0
    for line in lines:
        line_bytes = len(line.data) + 1
        if count and (count >= limits.max_requests or size + line_bytes > limits.max_bytes):
            index, count, size = index + 1, 0, 0
        count += 1
        size += line_bytes
        yield index, line
