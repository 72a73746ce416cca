"""Structured JSON logs on stdout, one object per line, with Cloud Logging's fields.

Cloud Logging reads ``severity`` and ``message`` from each line and keeps every other
field as ``jsonPayload``; ``logging.googleapis.com/labels`` and ``…/trace`` are special.
Data goes in fields (``extra={...}``), not in the message.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (severity, message, time, logger, fields)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "logger": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["stack_trace"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure(name: str = "gbp", level: int = logging.INFO, stream: TextIO | None = None) -> logging.Logger:
    """Send ``name``'s records to ``stream`` (stdout) as JSON; idempotent.

    A named logger, because functions-framework sets the root logger to WARNING.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
