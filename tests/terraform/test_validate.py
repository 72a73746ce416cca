"""The REAL `terraform validate` and `terraform test` against the Google provider's schema (oldest and newest
release allowed by versions.tf), served by the schema-only stub; and that each catches what it should."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.terraform.conftest import Workdir, make_workdir, provider_versions, schema_dir

ROOT = Path(__file__).parents[2]


def _errors(report: dict[str, object]) -> list[str]:
    diagnostics = report["diagnostics"]
    assert isinstance(diagnostics, list)
    return [f"{d['summary']}: {d.get('detail', '')}" for d in diagnostics if d["severity"] == "error"]


def test_the_schemas_cover_the_provider_versions_terraform_allows() -> None:
    versions = provider_versions()
    assert len(versions) >= 2, f"expected the oldest and newest allowed releases in {schema_dir()}"
    versions_tf = (ROOT / "terraform" / "versions.tf").read_text()
    constraint = re.findall(r'version\s*=\s*">= (\d+)\.(\d+), < (\d+)\.0"', versions_tf)
    assert len(constraint) == 2 and len(set(constraint)) == 1, "google and google-beta share one constraint"
    low_major, low_minor, high_major = (int(x) for x in constraint[0])
    releases = sorted(tuple(int(x) for x in v.split(".")) for v in versions)
    assert releases[0][:2] == (low_major, low_minor), "the lowest allowed release is the one validated"
    assert releases[-1][0] == high_major - 1, "the newest major release allowed is validated"


def test_terraform_validate_passes(workdir: Workdir) -> None:
    report = workdir.validate()
    assert report["valid"] is True, _errors(report)
    # ...and it was the stub that answered: Terraform warns about the dev_overrides in effect.
    diagnostics = report["diagnostics"]
    assert isinstance(diagnostics, list)
    assert any("development overrides" in d["summary"] for d in diagnostics)


def test_terraform_test_passes(workdir: Workdir) -> None:
    files = (workdir.terraform / "tests").glob("*.tftest.hcl")
    runs = sum(len(re.findall(r'^run "', p.read_text(), re.M)) for p in files)
    done = workdir.run("test", "-no-color")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Success! {runs} passed, 0 failed." in done.stdout, done.stdout


# Each mistake below is made once in one broken copy; each message names its own mistake, so each
# test shows that mistake caught (Terraform reports every schema error of a configuration at once).
VALIDATE_CATCHES = {
    "misspelled-attribute": (
        ("modules/function/main.tf", "ingress_settings ", "ingres_settings "),
        'An argument named "ingres_settings" is not expected here. Did you mean "ingress_settings"?',
    ),
    "missing-required-attribute": (
        ("storage.tf", "  location                    = var.region\n", ""),
        'The argument "location" is required, but no definition was found.',
    ),
    "misspelled-computed-attribute": (
        ("iam.tf", "vertex_agent.email}", "vertex_agent.mail}"),
        'This object has no argument, nested block, or exported attribute named "mail"',
    ),
    "misspelled-block": (
        ("scheduler.tf", "  pubsub_target {", "  pubsub_targets {"),
        'Blocks of type "pubsub_targets" are not expected here',
    ),
    "wrong-type": (
        ("bigquery.tf", "deletion_protection = false", 'deletion_protection = ["no"]'),
        "bool required",
    ),
}

TEST_CATCHES = {
    "public-ingress": (
        ("modules/function/main.tf", '"ALLOW_INTERNAL_ONLY"', '"ALLOW_ALL"'),
        "functions are reachable from inside the project only",
    ),
    "public-bucket": (
        ("storage.tf", 'public_access_prevention    = "enforced"', 'public_access_prevention    = "inherited"'),
        "every bucket has uniform access and public access prevention",
    ),
    "environment-not-passed": (
        (
            "modules/function/main.tf",
            "environment_variables = merge(var.environment, { FUNCTION_TIMEOUT_SECONDS = tostring(var.timeout_seconds)"
            " })",
            "",
        ),
        "the function gets exactly the environment it is given",
    ),
    "no-retries": (
        ("modules/function/main.tf", '"RETRY_POLICY_RETRY"', '"RETRY_POLICY_DO_NOT_RETRY"'),
        "failed deliveries are retried",
    ),
    "work-files-deleted-by-age": (
        ("storage.tf", "days_since_custom_time = var.work_retention_days", "age = var.work_retention_days"),
        "work files are deleted only after the custom time",
    ),
}


def _broken(edits: list[tuple[str, str, str]]) -> Callable[[Path], None]:
    def change(terraform: Path) -> None:
        for relative, old, new in edits:
            path = terraform / relative
            text = path.read_text()
            assert old in text, f"{relative} no longer contains {old!r}: update the test"
            path.write_text(text.replace(old, new, 1))

    return change


@pytest.fixture(scope="module")
def validate_errors(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    edits = [edit for edit, _ in VALIDATE_CATCHES.values()]
    workdir = make_workdir(tmp_path_factory.mktemp("broken-validate"), provider_versions()[-1], _broken(edits))
    report = workdir.validate()
    assert report["valid"] is False
    return _errors(report)


@pytest.fixture(scope="module")
def test_failures(tmp_path_factory: pytest.TempPathFactory) -> str:
    edits = [edit for edit, _ in TEST_CATCHES.values()]
    workdir = make_workdir(tmp_path_factory.mktemp("broken-test"), provider_versions()[-1], _broken(edits))
    done = workdir.run("test", "-no-color")
    assert done.returncode != 0
    return done.stdout + done.stderr


@pytest.mark.parametrize("mistake", VALIDATE_CATCHES)
def test_terraform_validate_catches(mistake: str, validate_errors: list[str]) -> None:
    expected = VALIDATE_CATCHES[mistake][1]
    assert any(expected in error for error in validate_errors), validate_errors


@pytest.mark.parametrize("mistake", TEST_CATCHES)
def test_terraform_test_catches(mistake: str, test_failures: str) -> None:
    assert TEST_CATCHES[mistake][1] in test_failures, test_failures
