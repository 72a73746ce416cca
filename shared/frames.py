"""Predictions files as Arrow tables or pandas DataFrames with the normalized columns.

Failed, blocked and unparseable lines are kept as rows (the usual ``read_json`` +
``json_normalize`` recipe crashes on them). JSON columns hold JSON text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
import pyarrow as pa

from shared.core.normalize import Normalizer, RowContext
from shared.core.schema import load_schema

if TYPE_CHECKING:
    import pandas as pd

_ARROW_TYPES = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "JSON": pa.string(),
}
BATCH_ROWS = 10_000


def arrow_schema() -> pa.Schema:
    """The ``predictions`` schema as Arrow types (JSON columns as JSON text)."""
    return pa.schema(
        [pa.field(f["name"], _ARROW_TYPES[f["type"]], nullable=f["mode"] != "REQUIRED") for f in load_schema()]
    )


def _arrow_row(row: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    for name, kind in kinds.items():
        value = row[name]
        if value is None:
            continue
        if kind == "JSON":
            row[name] = orjson.dumps(value).decode()
        elif kind == "TIMESTAMP":
            row[name] = datetime.fromisoformat(value.replace(" ", "T"))
    return row


def _batches(lines: Iterable[bytes], context: RowContext, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    normalizer = Normalizer(context)
    kinds = {f["name"]: f["type"] for f in load_schema() if f["type"] in ("JSON", "TIMESTAMP")}
    rows: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        rows.append(_arrow_row(normalizer.row(line), kinds))
        if len(rows) >= BATCH_ROWS:
            yield pa.RecordBatch.from_pylist(rows, schema=schema)
            rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def read_table(source: str | Path | BinaryIO, context: RowContext | None = None) -> pa.Table:
    """Read a predictions JSONL file into an Arrow table, one row per non-blank line.

    Args:
        source: A path or a binary stream.
        context: Run/job/attempt to stamp on every row; ``source_uri`` defaults to the path.
    """
    schema = arrow_schema()
    if isinstance(source, (str, Path)):
        context = context or RowContext(source_uri=str(source))
        with open(source, "rb") as stream:
            return pa.Table.from_batches(list(_batches(stream, context, schema)), schema=schema)
    return pa.Table.from_batches(list(_batches(source, context or RowContext(), schema)), schema=schema)


def read_dataframe(source: str | Path | BinaryIO, context: RowContext | None = None) -> pd.DataFrame:
    """Like :func:`read_table`, as a pandas DataFrame (nullable dtypes)."""
    frame: pd.DataFrame = read_table(source, context).to_pandas(types_mapper=pd_dtype)
    return frame


def pd_dtype(arrow_type: pa.DataType) -> Any:
    """Nullable pandas dtypes, so INT64/BOOL columns with nulls stay integers/booleans."""
    import pandas as pd

    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype()}
    return mapping.get(arrow_type)
