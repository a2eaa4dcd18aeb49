#!/usr/bin/env bash
# One command: set up (tools/setup.sh --test), then run the whole test suite.
#   bash tools/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
