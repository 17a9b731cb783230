#!/usr/bin/env bash
# The whole test suite: the static checks (scripts/lint.sh), unit tests, then the integration tier against the real PostgreSQL and
# Redis on this machine with real Celery worker processes. With CI=true an unreachable service
# fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# one BLAS/OpenMP thread per process: the integration tier runs the API, workers and pytest at once
# on 2 cores, and oversubscribed OpenMP threads spin instead of working (several times slower)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export LETHE_CACHE_DIR=${LETHE_CACHE_DIR:-$PWD/.lethe/cache}
bash scripts/lint.sh  # ruff (lint, format) and mypy; the import contracts run as a test
python -m pytest -q -p no:cacheprovider --timeout 600 tests "$@"
