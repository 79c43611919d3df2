PYTHON ?= python3

.PHONY: deps deps-demo demo test e2e lint entrypoint bench soak bench-cni fuzz

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

# The suite runs with the C hot path (CI builds it); the functional tests run once more on the
# pure-Python data path, which stays the reference.
PURE_PYTHON_TESTS = tests/test_device.py tests/test_timers.py tests/test_interop.py

test: deps
	$(PYTHON) -m ruff check pywg cni tests benchmarks fuzz
	$(PYTHON) -m pytest -q
	PYWG_NO_EXT=1 $(PYTHON) -m pytest -q $(PURE_PYTHON_TESTS)

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
