"""The gemini-batch CLI: exit codes, human and JSON summaries, NDJSON output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
from typer.testing import CliRunner

from shared.cli import app

FIXTURES = Path(__file__).parent.parent / "fixtures"
runner = CliRunner()


def test_cli_validate_valid_file_exits_0() -> None:
    result = runner.invoke(app, ["validate", str(FIXTURES / "requests_real.jsonl")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "valid 2" in result.output


def test_cli_validate_invalid_file_exits_1_with_line_numbers(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"request": {"contents": []}}\n\nnot json\n')
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "line 1: 'request.contents' is empty" in result.output
    assert "line 3:" in result.output
    as_json = runner.invoke(app, ["validate", "--json", str(bad)])
    assert as_json.exit_code == 1
    report = orjson.loads(as_json.output)
    assert report["invalid_by_reason"] == {"contents_empty": 1, "invalid_json": 1}
    assert report["blank"] == 1


def test_cli_normalize_writes_bigquery_ready_ndjson(tmp_path: Path) -> None:
    out = tmp_path / "rows.ndjson"
    result = runner.invoke(
        app,
        ["normalize", str(FIXTURES / "outputs" / "vertex_real.jsonl"), "-o", str(out), "--run-id", "r1"],
    )
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [(r["request_key"], r["outcome"], r["finish_reason"]) for r in rows] == [
        ("user-defined-request-id-2", "SUCCEEDED", "STOP"),
        ("user-defined-request-id-1", "SUCCEEDED", "STOP"),
    ]
    first = rows[0]
    assert (first["prompt_tokens"], first["candidates_tokens"], first["thoughts_tokens"]) == (1812, 188, 835)
    assert first["total_tokens"] == 2835
    assert all(r["run_id"] == "r1" and r["loaded_at"].endswith("Z") for r in rows)


def test_cli_normalize_several_files_to_stdout() -> None:
    files = [str(FIXTURES / "outputs" / "vertex_real.jsonl"), str(FIXTURES / "outputs" / "cases.jsonl")]
    result = runner.invoke(app, ["normalize", *files, "--loaded-at", "2026-01-01T00:00:00Z"])
    assert result.exit_code == 0
    # NDJSON separates rows with \n only (U+2028 inside a text is not a row break).
    rows = [orjson.loads(x) for x in result.stdout_bytes.split(b"\n") if x]
    assert len(rows) == 2 + sum(1 for x in Path(files[1]).read_bytes().splitlines() if x.strip())
    assert {r["source_uri"] for r in rows} == set(files)


def test_cli_normalize_table_for_people() -> None:
    result = runner.invoke(app, ["normalize", "--table", str(FIXTURES / "outputs" / "vertex_real.jsonl")])
    assert result.exit_code == 0
    assert "user-defined-request-id-2" in result.output and "2835" in result.output


def test_console_script_is_installed() -> None:
    exe = shutil.which("gemini-batch") or str(Path(__file__).parents[2] / ".venv" / "bin" / "gemini-batch")
    done = subprocess.run([exe, "validate", str(FIXTURES / "requests_real.jsonl")], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
