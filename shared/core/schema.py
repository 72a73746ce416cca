"""The ``predictions`` table schema: one JSON file shared by the code and Terraform."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_PACKAGE = "shared.core.schemas"


@cache
def load_schema(table: str = "predictions") -> tuple[dict[str, Any], ...]:
    """The BigQuery schema of ``table`` as a tuple of field dicts (name, type, mode, description)."""
    text = resources.files(SCHEMA_PACKAGE).joinpath(f"{table}.json").read_text(encoding="utf-8")
    return tuple(json.loads(text))


def column_names(table: str = "predictions") -> tuple[str, ...]:
    """Column names of ``table`` in schema order."""
    return tuple(f["name"] for f in load_schema(table))
