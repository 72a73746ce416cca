"""Predictions files as DataFrames/Arrow tables: failed rows kept, columns typed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd

from shared.core.normalize import COLUMNS, RowContext
from shared.frames import read_dataframe, read_table

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_read_dataframe_keeps_every_line_including_failed_ones() -> None:
    path = FIXTURES / "outputs" / "cases.jsonl"
    df = read_dataframe(path)
    lines = [x for x in path.read_bytes().splitlines() if x.strip()]
    assert len(df) == len(lines)
    assert list(df.columns) == list(COLUMNS)
    assert set(df["outcome"]) == {"SUCCEEDED", "FAILED", "BLOCKED", "TRUNCATED"}
    assert (df["source_uri"] == str(path)).all()


def test_read_dataframe_types_columns() -> None:
    df = read_dataframe(FIXTURES / "outputs" / "vertex_real.jsonl").set_index("request_key")
    row = df.loc["user-defined-request-id-2"]
    assert row["total_tokens"] == 2835 and str(df["total_tokens"].dtype) == "Int64"
    assert row["processed_time"] == pd.Timestamp("2026-02-24T20:11:22.961222", tz="UTC")
    assert orjson.loads(row["response"])["usageMetadata"]["billablePromptUsage"]["imageCount"] == 1
    assert pd.isna(row["error_code"])


def test_read_table_from_a_stream_with_context() -> None:
    with (FIXTURES / "outputs" / "vertex_real.jsonl").open("rb") as stream:
        table = read_table(stream, RowContext(run_id="r", attempt=3))
    assert table.num_rows == 2
    assert table.column("run_id").to_pylist() == ["r", "r"]
    assert table.column("attempt").to_pylist() == [3, 3]
