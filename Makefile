PYTHON ?= python3

.PHONY: deps demo test lint entrypoint

deps:
	bash scripts/install-deps.sh

demo: deps
	$(PYTHON) -m pywg demo

test: deps
	$(PYTHON) -m ruff check pywg cni tests benchmarks
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check pywg cni tests benchmarks
	$(PYTHON) -m ruff format --check pywg cni tests benchmarks

entrypoint:
	$(PYTHON) cni/build_entrypoint.py --out build/pywg-cni-entrypoint
