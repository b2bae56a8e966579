#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/install_chromium.sh ]; then
  bash scripts/install_chromium.sh || echo "chromium could not be installed: the browser test will be skipped"
fi
exec .venv/bin/python -m pytest -q "$@"
