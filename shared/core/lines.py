"""Reading JSONL streams line by line in bounded memory."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"
BLOCK_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Oversize:
    """Stands for a line longer than the cap; only its size is kept."""

    size: int


def utf8_error(line: bytes) -> str | None:
    """Where ``line`` stops being UTF-8, as ``invalid UTF-8 at byte N (why)``; None when it is UTF-8.

    N is the 0-based offset of the first bad byte in the line. The one UTF-8 rule for
    lines: msgspec checks only the strings it decodes (it skips members it does not
    declare, bytes unread), so a line that decodes may still not be UTF-8. Callers test
    ``line.isascii()`` first where a line is hot: that costs far less than a decode.
    """
    if line.isascii():
        return None
    try:
        line.decode()
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start} ({bad.reason})"
    return None


def _line(part: bytes, max_line_bytes: int, raw: bool = False) -> bytes | Oversize:
    cr = part[-1:] == b"\r"
    size = len(part) - cr
    if size > max_line_bytes:
        return Oversize(len(part) if raw else size)
    return part[:-1] if cr and not raw else part


def iter_lines(
    stream: BinaryIO, max_line_bytes: int, block_size: int = BLOCK_SIZE, *, raw: bool = False
) -> Iterator[bytes | Oversize]:
    """Yield every physical line of ``stream``, in order, one item per line.

    A line comes without its terminator (LF or CRLF) and, on the first line, without
    a UTF-8 BOM. A line longer than ``max_line_bytes`` is never held in memory whole:
    it is counted as blocks go by and yielded as :class:`Oversize`. Memory stays
    within one block plus one line of at most ``max_line_bytes``. Callers number
    lines themselves (the n-th item is line n).

    Args:
        stream: A binary stream (file, GCS reader, BytesIO).
        max_line_bytes: The longest line (without terminator) that is yielded whole.
        block_size: How much is read at a time.
        raw: Keep a line's CR and the first line's BOM (only the LF goes), so that a caller
            can count the bytes of every line (``len(line) + 1``, ``Oversize.size + 1``).
    """
    pending = b""  # the start of a line whose end is in a later block
    skipped = -1  # >= 0 while inside an oversize line: its bytes so far
    last_cr = False  # while skipping: did the bytes so far end with CR
    first = True
    while block := stream.read(block_size):
        if first:
            first = False
            while len(block) < len(BOM) and (more := stream.read(block_size)):
                block += more  # a BOM split over short reads
            if block.startswith(BOM) and not raw:
                block = block[3:]
        parts = block.split(b"\n")
        tail = parts.pop()
        if parts:
            head = parts[0]
            if skipped >= 0:
                cr = 0 if raw else ((head[-1:] == b"\r") if head else last_cr)
                yield Oversize(skipped + len(head) - cr)
                skipped = -1
            else:
                if pending:
                    head, pending = pending + head, b""
                yield _line(head, max_line_bytes, raw)
            if len(block) <= max_line_bytes and (raw or b"\r" not in block):
                yield from islice(parts, 1, None)  # the common case, at C speed
            else:
                for part in islice(parts, 1, None):
                    yield _line(part, max_line_bytes, raw)
        if skipped >= 0:
            skipped += len(tail)
            if tail:
                last_cr = tail[-1:] == b"\r"
        elif parts or not pending:
            pending = tail
        else:
            pending += tail
        if len(pending) > max_line_bytes + 1:  # +1: a CR may still be stripped
            skipped, last_cr, pending = len(pending), pending[-1:] == b"\r", b""
    if skipped >= 0:
        yield Oversize(skipped - (0 if raw else last_cr))
    elif pending:
        yield _line(pending, max_line_bytes, raw)


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were read already: they come first again."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out  # (shorter than asked, at most once: iter_lines reads on)
        return self.stream.read(size)


def skip_bom(stream: BinaryIO) -> tuple[BinaryIO, int]:
    """``stream`` past a leading UTF-8 BOM, and how many bytes that was (3 or 0)."""
    head = stream.read(BLOCK_SIZE)  # a block, as iter_lines reads: never a small read
    while len(head) < len(BOM) and (more := stream.read(BLOCK_SIZE)):
        head += more
    skipped = len(BOM) if head.startswith(BOM) else 0
    return _Prefixed(head[skipped:], stream), skipped  # type: ignore[return-value]
