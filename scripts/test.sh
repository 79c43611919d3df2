#!/usr/bin/env bash
# `make test`: ruff, the whole suite, then the functional tests once more on the pure-Python data
# path (PYWG_NO_EXT=1), which stays the reference. Every stage runs even when one before it
# fails; the end names the stages that failed, and the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PURE_PYTHON_TESTS=(tests/test_device.py tests/test_timers.py tests/test_interop.py)

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

stage "ruff" "$PYTHON" -m ruff check pywg cni tests benchmarks fuzz
stage "pytest" "$PYTHON" -m pytest -q
stage "pytest with PYWG_NO_EXT=1" env PYWG_NO_EXT=1 "$PYTHON" -m pytest -q "${PURE_PYTHON_TESTS[@]}"

if [ ${#failed[@]} -gt 0 ]; then
    stages=$(printf '%s, ' "${failed[@]}")
    echo "make test: FAILED: ${stages%, }"
    exit 1
fi
echo "make test: all stages passed"
