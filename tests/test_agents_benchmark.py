"""The agents benchmark runs end to end (smoke run; slow: it starts a fresh interpreter and imports torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_bench_agents_quick_run_prints_every_table():
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_agents.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for name in ("random", "popularity", "cosine", "item_knn", "als", "epsilon_greedy", "linucb", "lin_ts",
                 "logistic", "neural_linear"):
        assert f"\n{name} " in out
    assert "naive inverse" in out and "sherman_morrison" in out and "proj_dim" in out
