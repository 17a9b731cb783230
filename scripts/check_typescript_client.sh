#!/usr/bin/env bash
# A TypeScript client generated from the API's OpenAPI document compiles: openapi-typescript writes
# the types of every path, operation and schema, openapi-fetch is the client over them, and
# `tsc --strict --noEmit` checks scripts/typescript_client_check.ts, which calls the main
# operations, against them. Run by tests/unit/test_typescript_client.py.
#
#   scripts/check_typescript_client.sh OPENAPI_JSON WORK_DIR
#
# The npm packages are installed once, pinned, into .lethe/node (ignored by git; another folder
# with LETHE_NODE_TOOLS). Needs node and npm, and the npm registry the first time.
set -euo pipefail
schema=$(realpath "$1")
work=$2
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${LETHE_NODE_TOOLS:-$root/.lethe/node}
packages=(openapi-typescript@7.13.0 openapi-fetch@0.17.0 typescript@5.9.3)
stamp="$tools/installed-$(echo "${packages[*]}" | tr ' @/' '+-_')"

if [ ! -f "$stamp" ]; then
  rm -rf "$tools" && mkdir -p "$tools"
  (cd "$tools" && echo '{"private": true}' >package.json \
    && npm install --no-audit --no-fund --save-exact --loglevel=error "${packages[@]}")
  touch "$stamp"
fi

mkdir -p "$work"
ln -sfn "$tools/node_modules" "$work/node_modules"  # so the program's imports resolve
# --default-non-nullable false: a field with a default is optional in a request body (JobSpec's
# name, seed, ...), which is what the server does
"$tools/node_modules/.bin/openapi-typescript" "$schema" -o "$work/lethe.ts" --default-non-nullable false
cp "$root/scripts/typescript_client_check.ts" "$work/check.ts"
cat >"$work/tsconfig.json" <<'EOF'
{
  "compilerOptions": {
    "strict": true,
    "noEmit": true,
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "bundler",
    "lib": ["ES2022", "DOM"],
    "skipLibCheck": false,
    "noUnusedLocals": true
  },
  "files": ["check.ts"]
}
EOF
"$tools/node_modules/.bin/tsc" -p "$work/tsconfig.json"
echo "OK: the TypeScript client of $(basename "$schema") compiles ($(grep -c '": {$' "$work/lethe.ts") type blocks)"
