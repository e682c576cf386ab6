#!/usr/bin/env bash
# Set up .venv with the peer libraries (hnswlib, faiss, usearch), then run a benchmark:
#   scripts/bench.sh core [options]   -> bench/bench_core.py
#   scripts/bench.sh categories [options] -> bench/bench_categories.py
#   scripts/bench.sh neural [options] -> bench/bench_neural.py (installs the tf extra)
#   scripts/bench.sh gpu [options]    -> bench/bench_gpu.py (NVIDIA GPU; installs the gpu extra)
set -euo pipefail
name="${1:?usage: scripts/bench.sh core|categories|server|kafka|snapshot|neural|gpu [options]}"
shift
extras="dev,bench"
if [ "$name" = gpu ]; then extras="dev,bench,gpu"; fi  # CuPy; bench_gpu.py exits 2 without a GPU
if [ "$name" = neural ]; then extras="dev,bench,tf"; fi  # TensorFlow
RTINDEX_EXTRAS="$extras" source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
python "bench/bench_${name}.py" "$@"
