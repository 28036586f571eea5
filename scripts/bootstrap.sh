#!/usr/bin/env bash
# Creates .venv (once) and installs the project with its test extras. Idempotent: a second run
# only re-installs when pyproject.toml changed. Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/pip" install -q -e "$root[test]"
  rm -f "$venv"/.installed-* && touch "$stamp"
fi
