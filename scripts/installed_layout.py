"""Lay the `lethe` package out as it is installed: a copy of its Python files under DEST/lethe/.

The repository keeps each `lethe.X` package in a top-level folder (pyproject's package-dir) that the
editable install maps at import time; tools that read the code from disk (import-linter, mypy)
need the installed layout to see the module names. Usage: python scripts/installed_layout.py DEST
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(dest: Path) -> Path:
    """Copy each package folder of pyproject's package-dir to DEST/<package as a path>; return DEST."""
    package_dir: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    folders = {ROOT / folder for folder in package_dir.values()}
    for package, folder in package_dir.items():
        source_root = ROOT / folder
        target_root = dest.joinpath(*package.split("."))
        for source in source_root.rglob("*.py"):
            nested = {f for f in folders if f != source_root and f.is_relative_to(source_root)}
            if any(source.is_relative_to(f) for f in nested):
                continue  # a package with its own folder entry is copied under its own name
            target = target_root / source.relative_to(source_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/installed_layout.py DEST")
    installed_layout(Path(sys.argv[1]))
