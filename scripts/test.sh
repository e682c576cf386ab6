#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (this is what CI runs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
ruff check .
python -m pytest "$@"
