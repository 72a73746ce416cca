"""Reading JSONL streams line by line in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 20


def iter_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(line_number, data, size)`` for every physical line of ``stream``.

    ``line_number`` is 1-based. ``data`` is the line without its terminator (LF or
    CRLF) and, on the first line, without a UTF-8 BOM. ``size`` is the length of the
    line as read. A line longer than ``max_line_bytes`` is never held in memory:
    it is consumed in chunks and yielded with empty ``data`` and its full ``size``
    (callers test ``size > max_line_bytes``).

    Args:
        stream: A binary stream (file, GCS reader, BytesIO).
        max_line_bytes: The longest line (without terminator) that is read whole.
    """
    readline = stream.readline
    limit = max_line_bytes + 2  # room for CRLF
    number = 0
    while True:
        data = readline(limit)
        if not data:
            return
        number += 1
        if number == 1 and data.startswith(BOM):
            data = data[3:]
        if data[-1:] == b"\n":
            data = data[:-2] if data[-2:-1] == b"\r" else data[:-1]
        elif len(data) >= limit:
            size = len(data)
            while True:
                rest = readline(_SKIP_CHUNK)
                if not rest:
                    break
                if rest[-1:] == b"\n":
                    size += len(rest.rstrip(b"\r\n"))
                    break
                size += len(rest)
            yield number, b"", size
            continue
        size = len(data)
        if size > max_line_bytes:
            yield number, b"", size
            continue
        yield number, data, size
