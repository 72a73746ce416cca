"""Request keys: the user's own, or one assigned from the line number.

Every request sent to Vertex carries a top-level ``key`` so that outputs (which come
back in any order) can be joined to inputs. Assigned keys depend only on the line's
position in the file, so the same file always gets the same keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from hashlib import blake2b
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
        offset: Where the line starts in the source file (bytes).
    """

    line_number: int
    key: str
    assigned: bool
    data: bytes
    offset: int = 0


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


def key_digest(key: str) -> int:
    """A stable 64-bit digest of a key (the same in every process, unlike ``hash``)."""
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class KeyIndex:
    """Every key of a file seen so far, in memory bounded by one chunk.

    The keys of the chunk being filled are held exactly (``current``: key -> ``line * 2 +
    assigned``, read and written directly by the validator's hot loop); those of sealed
    chunks only as sorted 64-bit digests with their chunk (12 bytes a key: ~120 MB for 10M
    keys, not the ~1 GB of a set of strings). A digest that matches is confirmed against the
    sealed chunk's own keys (``sealed_keys``, read from wherever the caller keeps them), so
    a digest collision never makes a false duplicate.
    """

    def __init__(self, sealed_keys: Callable[[int], Iterable[tuple[str, int, bool]]] | None = None) -> None:
        self.current: dict[str, int] = {}  # cleared in place when sealed: callers may hold it
        self.sealed = 0  # keys in sealed chunks
        self._digests: Any = None  # numpy arrays (imported when a chunk is first sealed)
        self._chunks: Any = None
        self._sealed_keys = sealed_keys
        self._cached: tuple[int, dict[str, int]] | None = None

    def earlier(self, key: str) -> tuple[int, bool] | None:
        """Where ``key`` was seen before (line, assigned), or None."""
        code = self.current.get(key)
        if code is None and self.sealed:
            code = self.in_sealed(key)
        return None if code is None else (code >> 1, bool(code & 1))

    def add(self, key: str, line: int, assigned: bool) -> None:
        """Remember ``key`` as seen on ``line``."""
        self.current[key] = line * 2 + assigned

    def in_sealed(self, key: str) -> int | None:
        """``line * 2 + assigned`` of ``key`` in a sealed chunk, or None."""
        import numpy as np

        digest = np.uint64(key_digest(key))
        at = int(self._digests.searchsorted(digest))
        while at < self._digests.size and self._digests[at] == digest:
            code = self._chunk_keys(int(self._chunks[at])).get(key)
            if code is not None:
                return code
            at += 1  # a digest collision: another key of the same digest
        return None

    def seal(self, chunk: int, keep: str | None = None) -> tuple[list[tuple[str, int, bool]], bytes]:
        """Close the chunk being filled: its keys (to keep) and their digests (little-endian uint64).

        ``keep``: a key seen already that belongs to the next chunk (it stays current).
        """
        import numpy as np

        kept = self.current.pop(keep, None) if keep is not None else None
        entries = [(key, code >> 1, bool(code & 1)) for key, code in self.current.items()]
        digests = np.fromiter((key_digest(key) for key, _, _ in entries), dtype=np.uint64, count=len(entries))
        self.add_sealed(chunk, digests)
        self.current.clear()
        if keep is not None and kept is not None:
            self.current[keep] = kept
        return entries, digests.astype("<u8").tobytes()

    def add_sealed(self, chunk: int, digests: Any) -> None:
        """Add a sealed chunk's digests (a numpy array from :meth:`seal`, or read back by a later invocation)."""
        import numpy as np

        ordered = np.sort(np.asarray(digests, dtype=np.uint64))
        if self._digests is None:
            self._digests, self._chunks = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint32)
        at = self._digests.searchsorted(ordered)
        self._digests = np.insert(self._digests, at, ordered)
        self._chunks = np.insert(self._chunks, at, np.uint32(chunk))
        self.sealed += ordered.size

    def _chunk_keys(self, chunk: int) -> dict[str, int]:
        if self._cached is None or self._cached[0] != chunk:
            if self._sealed_keys is None:
                raise ValueError("a sealed chunk's keys are needed, and none can be read")
            entries = self._sealed_keys(chunk)
            self._cached = (chunk, {key: line * 2 + assigned for key, line, assigned in entries})
        return self._cached[1]
