PYTHON ?= python3

.PHONY: deps deps-demo demo test check ext e2e lint entrypoint bench bench-scale soak bench-cni fuzz

# What the tests (and everything else) need; deps-demo: only what the demo, bench and soak need.
deps:
	bash scripts/install-deps.sh test

deps-demo:
	bash scripts/install-deps.sh demo

demo: deps-demo
	$(PYTHON) -m pywg demo

# BENCH_ARGS: e.g. --quick, --rounds 5, --markdown --micro (benchmarks/README.md)
bench: deps-demo
	$(PYTHON) benchmarks/throughput.py $(BENCH_ARGS)

# SCALE_ARGS: e.g. --smoke, --rounds 3 --markdown, --peers 1,1000,50000 (benchmarks/README.md); ~3 minutes
bench-scale: deps-demo
	$(PYTHON) benchmarks/scale.py $(SCALE_ARGS)

# SOAK_ARGS: e.g. --minutes 30, --rate 1000 (benchmarks/README.md); ten minutes by default
soak: deps-demo
	$(PYTHON) benchmarks/soak.py $(SOAK_ARGS)

# CNI_BENCH_ARGS: e.g. --pods 20 --idle 10 (benchmarks/README.md); about two minutes
bench-cni: deps entrypoint
	$(PYTHON) benchmarks/cni_bench.py $(CNI_BENCH_ARGS)

# Coverage-guided fuzzing (fuzz/README.md): every target FUZZ_SECONDS long, FUZZ_JOBS at a time.
# FUZZ_ARGS: target names (default all), --merge to keep new coverage in fuzz/corpus.
FUZZ_SECONDS ?= 300
FUZZ_JOBS ?= 2
fuzz: deps
	$(PYTHON) fuzz/run.py --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_ARGS)

# ruff, the suite with the C hot path (CI builds it), the functional tests once more on the pure-Python
# data path; every stage runs even if one fails, and the end says which failed (scripts/test.sh).
test: deps
	PYTHON=$(PYTHON) bash scripts/test.sh test

# Without root: ruff and the tests that need neither root nor a VM and are not slow (pytest markers,
# pyproject.toml), in under a minute. Needs the Python packages of '.[test]', gcc and libssl-dev.
check: ext
	PYTHON=$(PYTHON) bash scripts/test.sh check

# The C hot path, built in place (make deps does it through pip install -e).
ext:
	$(PYTHON) setup.py build_ext --inplace -q

# The node path end to end (tests/test_e2e.py, also part of `make test`): the image built from
# deploy/Containerfile, its agent and CNI entrypoint run by a private containerd with Multus, against a
# real kube-apiserver. Needs ../shared/k8s (docs/kubernetes.md); about 4 minutes the first time on a
# machine, under 2 with the caches in /var/cache/pywg-e2e.
e2e: deps
	$(PYTHON) -m pytest -q tests/test_e2e.py

lint:
	$(PYTHON) -m ruff check pywg cni tests benchmarks fuzz
	$(PYTHON) -m ruff format --check pywg cni tests benchmarks fuzz

entrypoint:
	$(PYTHON) cni/build_entrypoint.py --out build/pywg-cni-entrypoint
