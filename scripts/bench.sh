#!/usr/bin/env bash
# Set up .venv with the peer libraries (hnswlib, faiss, usearch), then run a benchmark:
#   scripts/bench.sh core [options]   -> bench/bench_core.py
set -euo pipefail
RTINDEX_EXTRAS="dev,bench" source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
name="${1:?usage: scripts/bench.sh core [options]}"
shift
python "bench/bench_${name}.py" "$@"
