"""`import shopgym` registers shopgym/ReRank-v0 by module path; `import envs` adds nothing; the manual runs."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest

import envs.rerank
from tests.conftest import REPO_ROOT

FRESH_IMPORT = """
import sys, warnings
warnings.simplefilter("error")  # a duplicate registration warns: fail on it
import gymnasium as gym
import shopgym
assert "envs" not in sys.modules, "import shopgym imported envs"
spec = gym.spec("shopgym/ReRank-v0")
assert spec.entry_point == "envs.rerank:ReRankEnv", spec.entry_point
assert spec.vector_entry_point == "envs.rerank:ReRankVectorEnv", spec.vector_entry_point
env = gym.make("shopgym/ReRank-v0")
obs, info = env.reset(seed=0)
assert env.observation_space.contains(obs)
import importlib
import envs
importlib.reload(envs)
importlib.reload(shopgym)
vec = gym.make_vec("shopgym/ReRank-v0", num_envs=2)
assert type(vec.unwrapped).__name__ == "ReRankVectorEnv", vec
obs, info = vec.reset(seed=0)
assert obs.shape[0] == 2
print("ok")
"""


def test_import_shopgym_registers_the_env_in_a_fresh_interpreter() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", FRESH_IMPORT], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


def test_the_env_manual_examples_print_what_they_show() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(envs.rerank):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted >= 10 and results.failed == 0, results


def test_simulator_and_default_world_arguments_are_exclusive() -> None:
    from envs.core import EnvConfig
    from shopgym.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pass either `simulator` or .*got `simulator` and `env_config`"):
        envs.rerank.ReRankEnv(object(), env_config=EnvConfig())  # type: ignore[arg-type]
