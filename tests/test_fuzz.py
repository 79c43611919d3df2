"""The coverage-guided fuzz targets in fuzz/ (atheris), a short run each: the CI part of `make fuzz`.

Each target runs as its own process, as `make fuzz` runs it, over its corpus in fuzz/corpus and
then a few thousand fuzzed inputs, with a fixed libFuzzer seed (a failure here reproduces) and
a temporary directory for what it finds, so the repository is not written to. Any uncaught
exception or failed invariant in a target is a crash: libFuzzer exits non-zero and the test
shows the target's own report.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
# Fuzzed inputs after the corpus, about 5 s of CPU each on the CI machine: the slow targets (a whole
# device world per input, TLS material per kubeconfig) get fewer.
RUNS = {"messages": 1500, "kubeconfig": 2000, "k8s_answers": 3000}
DEFAULT_RUNS = 5000
# A cap for a slow or busy machine: the run then ends early, and still passes if nothing crashed.
MAX_SECONDS = 12
MAX_CORPUS_FILES = 100
MAX_CORPUS_FILE_SIZE = 16 * 1024


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_run", FUZZ / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_run"] = module
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def test_every_target_has_a_small_corpus() -> None:
    assert set(runner.TARGETS) >= {"messages", "uapi", "config_json", "wgquick_ini", "cni", "kubeconfig"}
    for target in runner.TARGETS:
        files = list((FUZZ / "corpus" / target).iterdir())
        assert 0 < len(files) <= MAX_CORPUS_FILES, target
        assert all(0 < f.stat().st_size <= MAX_CORPUS_FILE_SIZE for f in files), target


@pytest.mark.slow
@pytest.mark.parametrize("target", runner.TARGETS)
def test_target_survives_its_corpus_and_fuzzing(target: str, tmp_path: Path) -> None:
    corpus = sorted((FUZZ / "corpus" / target).iterdir())
    result = runner.run_target(target, tmp_path, MAX_SECONDS, runs=RUNS.get(target, DEFAULT_RUNS), seed=1)
    assert not result.crashed, f"fuzz target {target} failed:\n{result.log[-12000:]}"
    assert result.executions > len(corpus), f"{target} stopped before fuzzing:\n{result.log[-3000:]}"
    assert result.cov > 0 and result.ft > 0, result.log[-3000:]
    assert sorted((FUZZ / "corpus" / target).iterdir()) == corpus, "the run wrote into the repository"


def test_a_crashing_target_fails(tmp_path: Path) -> None:
    """The runner's verdict is libFuzzer's: an exception in a target is a crash, with its input."""
    script, corpus = tmp_path / "fuzz_crash.py", tmp_path / "seeds"
    script.write_text(
        textwrap.dedent(
            """\
            import sys
            import atheris

            def test_one_input(data: bytes) -> None:
                if data.startswith(b"boom"):
                    raise ValueError("the parser broke")

            atheris.Setup(sys.argv, test_one_input)
            atheris.Fuzz()
            """
        )
    )
    corpus.mkdir()
    (corpus / "seed").write_bytes(b"boom")
    workdir = tmp_path / "work"
    result = runner.run_command("crash", workdir, runner.command(script, corpus, workdir, MAX_SECONDS, 10), 1)
    assert result.crashed
    assert "ValueError: the parser broke" in result.log
    assert result.crash.startswith("crash-")
    assert (workdir / result.crash).read_bytes() == b"boom"
