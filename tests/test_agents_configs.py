"""Every agent config in conf/agent composes with Hydra, instantiates, runs, and lists every constructor argument."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agents import LogFittedPolicy, RankingPolicy, ToyRankingProblem
from tests.conftest import REPO_ROOT

AGENT_CONFIGS = sorted((REPO_ROOT / "conf" / "agent").glob("*.yaml"))


def test_every_agent_has_a_config():
    names = {path.stem for path in AGENT_CONFIGS}
    assert {"random", "popularity", "cosine", "item_knn", "als", "epsilon_greedy", "linucb", "lin_ts", "logistic",
            "neural_linear"} <= names


@pytest.mark.parametrize("path", AGENT_CONFIGS, ids=lambda p: Path(p).stem)
def test_config_instantiates_and_runs(path: Path):
    cfg = OmegaConf.load(path)
    policy = instantiate(cfg)
    assert isinstance(policy, RankingPolicy)
    assert policy.name == path.stem
    declared = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(declared, dict)
    declared.pop("_target_")
    assert policy.config() == declared  # the YAML spells out every argument, at its default

    problem = ToyRankingProblem(n_candidates=12)
    rng = np.random.default_rng(0)
    if isinstance(policy, LogFittedPolicy):
        logs, item_index, user_index, _ = problem.make_logs(rng, 300, 5)
        policy.fit(logs, item_index, user_index)
    ctx = problem.sample_context(rng, 3)
    ranking = policy.rank(ctx, 5, rng)
    policy.update(ctx, ranking, problem.feedback(ctx, ranking, rng))
    assert ranking.slots.shape == (3, 5)


def test_examination_override_reaches_the_policy():
    cfg = OmegaConf.load(REPO_ROOT / "conf" / "agent" / "linucb.yaml")
    cfg.examination = [1.0, 0.6, 0.4]
    policy = instantiate(cfg)
    assert policy.config()["examination"] == [1.0, 0.6, 0.4]
