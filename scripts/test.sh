#!/usr/bin/env bash
# Installs everything the test suite needs on a machine that has only Python (and root for
# apt, which the device-image test needs), then runs the whole suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-image-tools.sh
bash scripts/install-test-tools.sh
bash scripts/install-postgres.sh

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[all]'

# pytest exits 5 when it collects nothing: that must fail CI, and it does (non-zero).
exec .venv/bin/python -m pytest -n 2 --dist loadfile --durations=15 "$@"
