PYTHON ?= python3

.PHONY: deps demo test lint entrypoint bench

deps:
	bash scripts/install-deps.sh

demo: deps
	$(PYTHON) -m pywg demo

# BENCH_ARGS: e.g. --quick, --rounds 5, --markdown --micro (benchmarks/README.md)
bench: deps
	$(PYTHON) benchmarks/throughput.py $(BENCH_ARGS)

test: deps
	$(PYTHON) -m ruff check pywg cni tests benchmarks
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check pywg cni tests benchmarks
	$(PYTHON) -m ruff format --check pywg cni tests benchmarks

entrypoint:
	$(PYTHON) cni/build_entrypoint.py --out build/pywg-cni-entrypoint
