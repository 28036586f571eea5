#!/usr/bin/env bash
# `gateway demo` from a clean clone: a venv with the project, then the gateway in front of a demo
# dashboard and a demo API on http://127.0.0.1:8080/ (state in ./.demo).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/bootstrap.sh
exec "$root/.venv/bin/gateway" demo "$@"
