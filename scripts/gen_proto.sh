#!/usr/bin/env bash
# Regenerate the Python code of proto/ into rtindex/api/v1/ (committed; a test checks it is
# current). Usage: scripts/gen_proto.sh [output-root]  (default: the repository root)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root}"
python="${RTINDEX_PYTHON_BIN:-$root/.venv/bin/python}"
cd "$root"
"$python" -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" proto/rtindex/api/v1/*.proto
