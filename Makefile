PYTHON ?= python3

.PHONY: deps demo test lint entrypoint bench

deps:
	bash scripts/install-deps.sh

demo: deps
	$(PYTHON) -m pywg demo

# BENCH_ARGS: e.g. --quick, --rounds 5, --markdown --micro (benchmarks/README.md)
bench: deps
	$(PYTHON) benchmarks/throughput.py $(BENCH_ARGS)

# The suite runs with the C hot path (CI builds it); the functional tests run once more on the
# pure-Python data path, which stays the reference.
PURE_PYTHON_TESTS = tests/test_device.py tests/test_timers.py tests/test_interop.py

test: deps
	$(PYTHON) -m ruff check pywg cni tests benchmarks
	$(PYTHON) -m pytest -q
	PYWG_NO_EXT=1 $(PYTHON) -m pytest -q $(PURE_PYTHON_TESTS)

lint:
	$(PYTHON) -m ruff check pywg cni tests benchmarks
	$(PYTHON) -m ruff format --check pywg cni tests benchmarks

entrypoint:
	$(PYTHON) cni/build_entrypoint.py --out build/pywg-cni-entrypoint
