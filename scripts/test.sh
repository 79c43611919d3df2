#!/usr/bin/env bash
# scripts/test.sh [test|check]: the stages of `make test` or `make check`. Every stage runs even when
# one before it fails; the end names the stages that failed, and the exit status is non-zero if any
# did. The tests import this checkout (PYTHONPATH), as do the processes they start.
#   test:  ruff, the whole suite, then the functional tests once more on the pure-Python data path
#          (PYWG_NO_EXT=1), which stays the reference.
#   check: ruff, and the tests that need neither root nor a VM and are not slow (pyproject markers).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PURE_PYTHON_TESTS=(tests/test_device.py tests/test_timers.py tests/test_interop.py tests/test_lease.py)
mode=${1:-test}

failed=()
stage() {
    local name=$1
    shift
    echo "=== $name: $*"
    if "$@"; then
        echo "=== $name: passed"
    else
        echo "=== $name: FAILED (exit status $?)"
        failed+=("$name")
    fi
}

case "$mode" in
test)
    stage "ruff" "$PYTHON" -m ruff check pywg cni tests benchmarks fuzz
    stage "pytest" "$PYTHON" -m pytest -q
    stage "pytest with PYWG_NO_EXT=1" env PYWG_NO_EXT=1 "$PYTHON" -m pytest -q "${PURE_PYTHON_TESTS[@]}"
    ;;
check)
    stage "ruff" "$PYTHON" -m ruff check pywg cni tests benchmarks fuzz
    stage "pytest without root, VM or slow tests" "$PYTHON" -m pytest -q -m "not root and not vm and not slow"
    ;;
*)
    echo "usage: $0 [test|check]" >&2
    exit 2
    ;;
esac

if [ ${#failed[@]} -gt 0 ]; then
    stages=$(printf '%s, ' "${failed[@]}")
    echo "make $mode: FAILED: ${stages%, }"
    exit 1
fi
echo "make $mode: all stages passed"
