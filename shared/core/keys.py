"""Request keys: the user's own, or one assigned from the line number.

Every request sent to Vertex carries a top-level ``key`` so that outputs (which come
back in any order) can be joined to inputs. Assigned keys depend only on the line's
position in the file, so the same file always gets the same keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


def key_digest(key: str) -> tuple[int, int]:
    """A stable 128-bit digest of a key, as two 64-bit halves (the same in every process, unlike ``hash``)."""
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


class KeyIndex:
    """Every key of a file seen so far: one chunk's exactly, the rest as 20 bytes a key.

    The keys of the chunk being filled are held exactly (``current``: key -> ``line * 2 +
    assigned``, read and written directly by the validator's hot loop). Those of sealed
    chunks are held as 128-bit digests with their line (20 bytes a key: ~200 MB for 10M keys,
    not the ~1 GB of a set of strings); two keys of one file share a digest with a
    probability of ~n^2 / 2^129 (~10^-25 for 10M keys), so a match is taken as the same key.
    """

    def __init__(self) -> None:
        self.current: dict[str, int] = {}  # cleared in place when sealed: callers may hold it
        self.sealed = 0  # keys in sealed chunks
        self._hi: Any = None  # numpy arrays, ordered by _hi (numpy is imported when first needed)
        self._lo: Any = None
        self._codes: Any = None
        # A bitmap of the digests' top FILTER_BITS bits: most keys are new, and are known to be
        # without a search (2^27 bits, 16 MiB: ~7% of the bits set at 10M keys).
        self._filter: bytearray | None = None

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
        hi, lo = key_digest(key)
        bit = hi >> _FILTER_SHIFT
        if self._filter is None or not self._filter[bit >> 3] & (1 << (bit & 7)):
            return None
        import numpy as np

        at = int(self._hi.searchsorted(np.uint64(hi)))
        while at < self._hi.size and self._hi[at] == hi:
            if self._lo[at] == lo:
                return int(self._codes[at])
            at += 1
        return None

    def seal(self, keep: str | None = None) -> bytes:
        """Close the chunk being filled; its keys as bytes to keep (:meth:`add_sealed` reads them back).

        ``keep``: a key seen already that belongs to the next chunk (it stays current).
        """
        import numpy as np

        kept = self.current.pop(keep, None) if keep is not None else None
        count = len(self.current)
        digests = np.fromiter(
            (half for key in self.current for half in key_digest(key)), dtype=np.uint64, count=2 * count
        )
        codes = np.fromiter(self.current.values(), dtype=np.uint32, count=count)
        sealed = digests[0::2].astype("<u8").tobytes() + digests[1::2].astype("<u8").tobytes()
        sealed += codes.astype("<u4").tobytes()
        self.add_sealed([sealed])
        self.current.clear()
        if keep is not None and kept is not None:
            self.current[keep] = kept
        return sealed

    def add_sealed(self, blobs: Iterable[bytes]) -> None:
        """Add sealed chunks' keys (from :meth:`seal`, here or in an earlier invocation), sorted in once."""
        import numpy as np

        parts = [_unpack(blob) for blob in blobs]
        if not parts:
            return
        hi = np.concatenate([p[0] for p in parts])
        lo = np.concatenate([p[1] for p in parts])
        codes = np.concatenate([p[2] for p in parts])
        del parts  # copied: one copy of the keys at a time
        if self._filter is None:
            self._filter = bytearray(1 << (_FILTER_BITS - 3))
        bits = hi >> np.uint64(_FILTER_SHIFT)
        np.bitwise_or.at(
            np.frombuffer(self._filter, dtype=np.uint8),
            (bits >> np.uint64(3)).astype(np.intp),
            (np.uint8(1) << (bits & np.uint64(7)).astype(np.uint8)),
        )
        del bits
        order = np.argsort(hi, kind="stable")
        hi = hi[order]
        lo = lo[order]
        codes = codes[order]
        del order
        if self._hi is None:
            self._hi, self._lo, self._codes = hi, lo, codes
        else:
            at = self._hi.searchsorted(hi)  # a merge: each array is copied once
            self._hi = np.insert(self._hi, at, hi)
            self._lo = np.insert(self._lo, at, lo)
            self._codes = np.insert(self._codes, at, codes)
        self.sealed += hi.size


def compact_keys(keys: Iterable[str], batch: int = 1_000_000) -> KeyIndex:
    """A set of distinct keys at ~20 bytes a key (a retry's selection: up to millions); ``earlier`` tests one."""
    index = KeyIndex()
    for key in keys:
        index.add(key, 0, False)
        if len(index.current) >= batch:
            index.seal()
    return index


_FILTER_BITS: Final = 27
_FILTER_SHIFT: Final = 64 - _FILTER_BITS


def _unpack(blob: bytes) -> tuple[Any, Any, Any]:
    import numpy as np

    count = len(blob) // 20
    hi = np.frombuffer(blob, dtype="<u8", count=count).astype(np.uint64)
    lo = np.frombuffer(blob, dtype="<u8", count=count, offset=8 * count).astype(np.uint64)
    codes = np.frombuffer(blob, dtype="<u4", count=count, offset=16 * count).astype(np.uint32)
    return hi, lo, codes
