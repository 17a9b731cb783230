#!/usr/bin/env bash
# Every method on both SmolLM2 examples at each spec's step budget, with robustness probes; the
# tables replace their sections of docs/results.md. Long: nine jobs per example (10-20 minutes each
# on a 2-core CPU at the specs' budgets with full probes). Resumable: rerun after an interruption.
#   scripts/compare_methods.sh [OUT_DIR] [extra flags for compare_methods.py, e.g. --steps 40]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/compare}"
shift || true
# RMU's c must exceed SmolLM2's layer-7 activation norms (about 114; docs/methods.md, rmu)
for spec in harmful-smollm2 copyright-smollm2; do
  python scripts/compare_methods.py --spec "examples/${spec}.yaml" --out "${out}/${spec}" \
    --set rmu.steering_coeff=300 --results docs/results.md "$@"
done
