"""Real Terraform against the Google provider's schema, offline: working copies wired to the stub provider.

`make test-terraform` prepares `.venv-terraform`: the stub provider's virtualenv and one schema
file per provider release (`schemas/google-8.7.0.json`, ...; see provider_schema.py). Here each
test gets a copy of terraform/ (with the schema files and function zips it reads, at the same
relative paths), a CLI configuration whose `dev_overrides` point `hashicorp/google` and
`hashicorp/google-beta` at the stub serving one release's schema, and `terraform init` done.
The repository's own terraform/ is never initialised (init would write a lock file for the stub).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.build import build

ROOT = Path(__file__).parents[2]
STUB = Path(__file__).with_name("stub_provider.py")
PROVIDERS = ("google", "google-beta")


def schema_dir() -> Path:
    return Path(os.environ.get("TF_SCHEMAS") or ROOT / ".venv-terraform" / "schemas").absolute()


def provider_versions() -> list[str]:
    """The provider releases whose schemas are prepared (both providers must have each)."""
    found = {p.stem.rsplit("-", 1)[1] for p in schema_dir().glob("google-*.json")}
    complete = [v for v in found if all((schema_dir() / f"{n}-{v}.json").exists() for n in PROVIDERS)]
    return sorted(complete, key=lambda v: tuple(int(x) for x in v.split(".")))


@dataclass(frozen=True)
class Workdir:
    """A copy of the repository's Terraform, initialised against one provider release's schema."""

    root: Path
    env: dict[str, str]

    @property
    def terraform(self) -> Path:
        return self.root / "terraform"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tests.terraform.terraform_cli", *args]
        env = {**self.env, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            argv, cwd=self.terraform, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def validate(self) -> dict[str, object]:
        done = self.run("validate", "-json", "-no-color")
        report: dict[str, object] = json.loads(done.stdout)
        return report


def _cli_config(folder: Path, version: str) -> Path:
    """Plugin folders with a `terraform-provider-<name>` launcher each, and the CLI config that overrides them."""
    # absolute, not resolved: the virtualenv's python is a symlink to the system one
    python = Path(os.environ.get("TF_STUB_PYTHON") or ROOT / ".venv-terraform" / "bin" / "python").absolute()
    assert python.exists(), "the stub provider's virtualenv is missing: run make test-terraform"
    overrides = []
    for name in PROVIDERS:
        plugin = folder / "plugins" / name
        plugin.mkdir(parents=True)
        launcher = plugin / f"terraform-provider-{name}"
        launcher.write_text(f'#!/bin/sh\nexec "{python}" "{STUB}" "{schema_dir() / f"{name}-{version}.json"}"\n')
        launcher.chmod(0o755)
        overrides.append(f'    "hashicorp/{name}" = "{plugin}"')
    config = folder / "terraformrc"
    body = "\n".join(overrides)
    config.write_text(f"provider_installation {{\n  dev_overrides {{\n{body}\n  }}\n  direct {{}}\n}}\n")
    return config


def make_workdir(folder: Path, version: str, change: Callable[[Path], None] | None = None) -> Workdir:
    """Copy terraform/ (what it reads included), apply `change` to the copy, wire the stub, `terraform init`."""
    root = folder / "repo"
    shutil.copytree(ROOT / "terraform", root / "terraform", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copytree(ROOT / "shared" / "core" / "schemas", root / "shared" / "core" / "schemas")
    (root / "shared" / "adapters").mkdir(parents=True)
    for permissions in (ROOT / "shared" / "adapters").glob("*.permissions.json"):  # the custom roles' lists
        shutil.copy(permissions, root / "shared" / "adapters" / permissions.name)
    (root / "build").mkdir()
    for function in sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "main.py").exists()):
        build(function, root / "build")
    if change:
        change(root / "terraform")
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(_cli_config(folder, version)),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
    }
    workdir = Workdir(root, env)
    done = workdir.run("init", "-backend=false", "-input=false", "-no-color")
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir


@pytest.fixture(scope="session", params=provider_versions() or ["missing"])
def provider_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    assert version != "missing", f"no provider schemas in {schema_dir()}: run make test-terraform"
    return version


@pytest.fixture(scope="session")
def workdir(provider_version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workdir]:
    yield make_workdir(tmp_path_factory.mktemp(f"tf-{provider_version}"), provider_version)
