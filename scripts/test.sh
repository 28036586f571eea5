#!/usr/bin/env bash
# The whole test suite from a clean clone: Debian packages the tests use (chromium for the browser
# tests, oathtool as an independent TOTP implementation), a venv with the project, then pytest.
# Needs PostgreSQL on 127.0.0.1:5432 (database `test`) for the store conformance suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/system-packages.sh
source scripts/bootstrap.sh
mkdir -p test-artifacts
exec "$root/.venv/bin/python" -m pytest -p no:cacheprovider "$@"
