#!/usr/bin/env bash
# The main job on embedded defaults: install, prepare SmolLM2, start `lethe serve` (SQLite, local
# storage and an in-process worker under LETHE_DATA_DIR), submit examples/harmful-smollm2.yaml over
# HTTP with the client SDK, follow its progress, print the before/after metrics, download the
# adapter, the HTML report and the signed certificate, and print how to verify it. The service
# gets an admin key at start (LETHE_BOOTSTRAP_KEY; a random one unless set), which the demo prints
# and sends as `Authorization: Bearer KEY`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LETHE_DATA_DIR=${LETHE_DATA_DIR:-$PWD/.lethe/demo}
SPEC=${1:-examples/harmful-smollm2.yaml}
PORT=${LETHE_DEMO_PORT:-8765}
mkdir -p "$LETHE_DATA_DIR"
export LETHE_BOOTSTRAP_KEY=${LETHE_BOOTSTRAP_KEY:-demo-$(python -c 'import secrets; print(secrets.token_urlsafe(24))')}
export LETHE_API_KEY=$LETHE_BOOTSTRAP_KEY

lethe models prepare smollm2-135m-instruct >/dev/null
lethe serve --host 127.0.0.1 --port "$PORT" >"$LETHE_DATA_DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "error: lethe serve exited; see $LETHE_DATA_DIR/serve.log" >&2; exit 1; }
  sleep 0.5
done
echo "service up at http://127.0.0.1:$PORT (data under $LETHE_DATA_DIR; API docs at /docs)"
echo "API key (admin, tenant default): $LETHE_API_KEY"
echo "  e.g. curl -H 'Authorization: Bearer $LETHE_API_KEY' http://127.0.0.1:$PORT/v1/jobs"
python scripts/demo.py --url "http://127.0.0.1:$PORT" --out "$LETHE_DATA_DIR/result" "$SPEC"
