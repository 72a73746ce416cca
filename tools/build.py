"""``make build``: one deterministic zip per function (its folder + shared/ + pinned requirements).

Zips carry fixed timestamps and sorted entries, so the same sources give the same bytes and the
same hash: Terraform names the uploaded object by that hash and redeploys only on a change.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def build(name: str, out: Path) -> Path:
    """Build ``out/<name>.zip`` for the function in ``functions/<name>``."""
    source = ROOT / "functions" / name
    target = out / f"{name}.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in _files(source):
            if path.name != "requirements.txt":
                _add(archive, path.relative_to(source).as_posix(), path.read_bytes())
        # The deployed requirements: the pinned set, not the repo-relative include.
        _add(archive, "requirements.txt", (ROOT / "requirements-functions.txt").read_bytes())
        for path in _files(ROOT / "shared"):
            _add(archive, path.relative_to(ROOT).as_posix(), path.read_bytes())
    return target


def main() -> None:
    """Build every function under functions/ into build/."""
    out = ROOT / "build"
    out.mkdir(exist_ok=True)
    for folder in sorted(p for p in (ROOT / "functions").iterdir() if (p / "main.py").exists()):
        sys.stdout.write(f"{build(folder.name, out)}\n")


if __name__ == "__main__":
    main()
