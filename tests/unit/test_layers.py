"""The import contracts of pyproject.toml ([tool.importlinter]), checked by import-linter.

import-linter reads modules from disk, so the test lints the package laid out as installed
(scripts/installed_layout.py: the repository keeps each `lethe.X` package in its own folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def installed_layout(dest: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "installed_layout.py"), str(dest)], check=True)
    return dest


def lint_imports(tree: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [
        sys.executable,
        "-c",
        "from importlinter.cli import lint_imports_command; lint_imports_command()",
        str(config),
        "--no-cache",
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env, timeout=300)


def test_every_import_contract_is_kept(tmp_path: Path) -> None:
    tree = installed_layout(tmp_path / "tree")
    result = lint_imports(tree, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_a_contract(tmp_path: Path) -> None:
    """The check can fail: the engine importing the service is reported."""
    tree = installed_layout(tmp_path / "tree")
    losses = tree / "lethe" / "core" / "methods" / "losses.py"
    losses.write_text(losses.read_text() + "\nfrom lethe.service.infra import settings  # noqa\n")
    result = lint_imports(tree, ROOT / "pyproject.toml")
    assert result.returncode != 0
    assert "lethe.core.methods.losses -> lethe.service.infra.settings" in result.stdout
