#!/usr/bin/env bash
# Set up .venv if needed, then run the embedded demo (no Kafka, no GPU needed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
rtindex demo "$@"
