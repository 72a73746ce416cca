"""The gemini-batch CLI: exit codes, human and JSON summaries, NDJSON output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.core.errors import PermanentError

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


def test_cli_validate_reports_bad_bytes_and_exits_1(tmp_path: Path) -> None:
    path = FIXTURES / "requests_bad_bytes.jsonl"
    result = runner.invoke(app, ["validate", "--examples", "10", str(path)])
    assert (result.exit_code, type(result.exception)) == (1, SystemExit), result.output  # a report, no traceback
    assert "invalid_utf8: 5 line(s)" in result.output and "invalid_json: 3 line(s)" in result.output
    assert "line 2: invalid UTF-8 at byte 103 (invalid continuation byte)" in result.output
    assert (
        "line 3: invalid UTF-8 at byte 106 (invalid continuation byte)" in result.output
    )  # a member the fast path skips
    as_json = runner.invoke(app, ["validate", "--json", str(path)])
    assert as_json.exit_code == 1
    report = orjson.loads(as_json.output)
    assert [e["line"] for e in report["examples"]["invalid_utf8"]] == [2, 3, 5, 6, 11]
    assert report["valid"] == 4


def test_cli_normalize_gives_every_line_with_bad_bytes_a_loadable_row(tmp_path: Path) -> None:
    source = FIXTURES / "outputs" / "bad_bytes.jsonl"
    out = tmp_path / "rows.ndjson"
    result = runner.invoke(app, ["normalize", str(source), "-o", str(out), "--loaded-at", "2026-01-01T00:00:00Z"])
    assert (result.exit_code, result.exception) == (0, None), result.output
    data = out.read_bytes()
    data.decode()  # the whole file is valid UTF-8: a BigQuery load job takes it
    rows = [orjson.loads(x) for x in data.split(b"\n") if x]
    assert len(rows) == sum(1 for x in source.read_bytes().split(b"\n") if x.strip())
    latin = next(r for r in rows if r["request_key"] == "latin-1-response-text")
    assert (latin["outcome"], latin["error_status"]) == ("FAILED", "UNPARSEABLE_OUTPUT")
    assert latin["error_message"].startswith("invalid UTF-8 at byte ")


def test_cli_normalize_table_survives_bad_bytes_and_markup_like_text(tmp_path: Path) -> None:
    source = tmp_path / "predictions.jsonl"
    source.write_bytes(
        (FIXTURES / "outputs" / "bad_bytes.jsonl").read_bytes()
        + b'{"key": "[/oops] [bold]", "status": "", "response": {"candidates": [{"content": {"parts": '
        + b'[{"text": "[/INST] :smile: done"}]}}]}}\n'
    )
    result = runner.invoke(app, ["normalize", "--table", str(source)])
    assert (result.exit_code, result.exception) == (0, None), result.output
    assert "latin-1-response-text" in result.output and "[/oops] [bold]" in result.output
    assert "[/INST] :smile: done" in result.output


def test_a_deployments_settings_come_from_its_terraform_outputs(tmp_path: Path) -> None:
    from shared.deployment import deployment_settings

    env = {
        "GCP_PROJECT": "p", "VERTEX_LOCATION": "us-central1", "BQ_LOCATION": "us-central1", "INPUT_BUCKET": "in",
        "WORK_BUCKET": "work", "VERTEX_BUCKET": "vertex", "BQ_DATASET": "gbp", "BATCH_REQUESTS_TOPIC": "req",
        "BATCH_FINISHED_TOPIC": "fin", "BATCH_RESULTS_TOPIC": "res", "MAX_RUN_COST_USD": "",
    }  # fmt: skip
    outputs = tmp_path / "gemini-batch.json"
    outputs.write_bytes(orjson.dumps({"settings": {"sensitive": False, "type": ["object", {}], "value": env}}))
    settings = deployment_settings(outputs)
    assert (settings.work_bucket, settings.io_bucket, settings.max_run_cost_usd) == ("work", "vertex", None)
    outputs.write_bytes(b'{"input_bucket": {"value": "in"}}')
    with pytest.raises(PermanentError, match="no settings"):
        deployment_settings(outputs)
    with pytest.raises(PermanentError, match="make outputs"):
        deployment_settings(tmp_path / "absent.json")
