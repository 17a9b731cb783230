#!/usr/bin/env bash
# The whole test suite: unit tests, then the integration tier against the real PostgreSQL and
# Redis on this machine with real Celery worker processes. With CI=true an unreachable service
# fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LETHE_CACHE_DIR=${LETHE_CACHE_DIR:-$PWD/.lethe/cache}
python -m pytest -q -p no:cacheprovider --timeout 600 tests "$@"
