"""The dependency rule: the core stays pure (stdlib, orjson, msgspec; no env, no clock)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SHARED = Path(__file__).parents[2] / "shared"
# numpy: the key index of a 10M-line file is sorted 64-bit digests (core/keys.py), not a set of strings.
CORE_ALLOWED = {"orjson", "msgspec", "numpy", "shared"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_only_the_standard_library_orjson_msgspec_and_numpy() -> None:
    for path in sorted((SHARED / "core").rglob("*.py")):
        foreign = {n for n in _imports(path) if n not in sys.stdlib_module_names and n not in CORE_ALLOWED}
        assert not foreign, f"{path.name} imports {foreign}"


def test_core_reads_no_environment_and_no_clock() -> None:
    for path in sorted((SHARED / "core").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for forbidden in ("os.environ", "getenv", "datetime.now", "time.time", "utcnow", "uuid4"):
            assert forbidden not in text, f"{path.name} uses {forbidden}"
