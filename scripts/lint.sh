#!/usr/bin/env bash
# Static checks, run by scripts/test.sh before the tests: ruff (lint and format) and mypy over the
# package as installed (the import contracts are a test: tests/unit/test_layers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
layout=$(mktemp -d)
trap 'rm -rf "$layout"' EXIT
python scripts/installed_layout.py "$layout"
(cd "$layout" && mypy --config-file "$OLDPWD/pyproject.toml" --cache-dir "$OLDPWD/.lethe/mypy_cache" -p lethe)
