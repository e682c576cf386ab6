#!/usr/bin/env bash
# Set up .venv if needed, start the Kafka broker if it is not running (scripts/kafka.sh;
# stopped again afterwards), then run the whole test suite (this is what CI runs):
#   1. ruff, 2. pytest (Kafka tests included), 3. the kernel tests again with numba's
#   bounds checks on (an out-of-bounds write in a kernel corrupts memory silently otherwise).
# Extra arguments go to the main pytest run (e.g. scripts/test.sh -k churn).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
RTINDEX_EXTRAS="${RTINDEX_EXTRAS:-dev,tf,gpu}" source "$here/bootstrap.sh"
# the gpu extra brings CuPy + NVRTC: tests/test_gpu.py compiles kernels/*.cu without a GPU and must not skip here
export RTINDEX_REQUIRE_NVRTC=1
# likewise the tf extra: tests/test_neural.py must not skip here
export RTINDEX_REQUIRE_TF=1
# a skip whose reason is not on the list in tests/skip_policy.py (only "no GPU") fails the run; -ra prints every skip
export RTINDEX_STRICT_SKIPS=1
ruff check .
if ! "$here/kafka.sh" status >/dev/null 2>&1; then
  "$here/kafka.sh" start
  trap '"$here/kafka.sh" stop' EXIT
fi
# a test-only name: RTINDEX_KAFKA_* would also configure every `rtindex serve` the tests start
export RTINDEX_TEST_KAFKA="$("$here/kafka.sh" bootstrap)"
python -m pytest "$@"
if [ $# -eq 0 ] && [ "${RTINDEX_SKIP_BOUNDSCHECK:-0}" != 1 ]; then
  echo "== kernel tests with NUMBA_BOUNDSCHECK=1"
  NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR="$PWD/var/numba-boundscheck" python -m pytest -q -p no:cacheprovider \
    tests/test_api.py tests/test_bad_input.py tests/test_churn.py tests/test_concurrency.py \
    tests/test_lockstep.py tests/test_memory_safety.py tests/test_recall.py tests/test_catalog_decode.py
fi
