"""Reading JSONL streams line by line in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"
BLOCK_SIZE = 1 << 20


def iter_lines(stream: BinaryIO, max_line_bytes: int, block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(line_number, data, size)`` for every physical line of ``stream``.

    ``line_number`` is 1-based. ``data`` is the line without its terminator (LF or
    CRLF) and, on the first line, without a UTF-8 BOM. ``size`` is the line's length
    without its terminator. A line longer than ``max_line_bytes`` is never held in
    memory whole: it is counted as blocks go by and yielded with empty ``data`` and
    its full ``size`` (callers test ``size > max_line_bytes``). Memory stays within
    one block plus one line of at most ``max_line_bytes``.

    Args:
        stream: A binary stream (file, GCS reader, BytesIO).
        max_line_bytes: The longest line (without terminator) that is yielded whole.
        block_size: How much is read at a time.
    """
    number = 0
    pending = b""  # the start of a line whose end is in a later block
    skipped = -1  # >= 0 while inside an oversize line: its bytes so far
    last_cr = False  # while skipping: did the bytes so far end with CR
    first = True
    while block := stream.read(block_size):
        if first:
            first = False
            while len(block) < len(BOM) and (more := stream.read(block_size)):
                block += more  # a BOM split over short reads
            if block.startswith(BOM):
                block = block[3:]
        parts = block.split(b"\n")
        tail = parts.pop()
        if parts:
            head = parts[0]
            number += 1
            if skipped >= 0:
                size = skipped + len(head) - ((head[-1:] == b"\r") if head else last_cr)
                skipped = -1
                yield number, b"", size
            else:
                if pending:
                    head, pending = pending + head, b""
                if head[-1:] == b"\r":
                    head = head[:-1]
                size = len(head)
                yield (number, head, size) if size <= max_line_bytes else (number, b"", size)
            for part in islice(parts, 1, None):
                number += 1
                line = part[:-1] if part[-1:] == b"\r" else part
                size = len(line)
                yield (number, line, size) if size <= max_line_bytes else (number, b"", size)
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
    if pending or skipped >= 0:
        number += 1
        if skipped >= 0:
            yield number, b"", skipped - last_cr
        else:
            if pending[-1:] == b"\r":
                pending = pending[:-1]
            size = len(pending)
            yield (number, pending, size) if size <= max_line_bytes else (number, b"", size)
