"""Every agent config in conf/agent composes with Hydra, instantiates, runs, and lists every constructor argument."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agents import LogFittedPolicy, RankingPolicy, ToyRankingProblem, WorldReferencePolicy
from tests.conftest import REPO_ROOT

AGENT_CONFIGS = sorted((REPO_ROOT / "conf" / "agent").glob("*.yaml"))


def test_every_agent_has_a_config():
    names = {path.stem for path in AGENT_CONFIGS}
    assert {"random", "popularity", "cosine", "item_knn", "als", "epsilon_greedy", "linucb", "lin_ts", "logistic",
            "neural_linear"} <= names


#: configs of the synthetic world's reference policies: the world (and the env's reward) is injected at build time
WORLD_REFERENCES = {"logging_policy", "oracle"}


def test_reference_policies_are_not_compare_defaults():
    assert WORLD_REFERENCES <= {path.stem for path in AGENT_CONFIGS}
    compare = OmegaConf.load(REPO_ROOT / "conf" / "compare.yaml")
    defaults = {next(iter(d)) for d in compare.defaults if not isinstance(d, str)}
    assert not {f"agent@agents.{name}" for name in WORLD_REFERENCES} & defaults


@pytest.mark.parametrize("path", AGENT_CONFIGS, ids=lambda p: Path(p).stem)
def test_config_instantiates_and_runs(path: Path, small_world):
    cfg = OmegaConf.load(path)
    if path.stem in WORLD_REFERENCES:
        from envs.reward import RewardWeights
        from tests.test_agents_reference import world_context

        extra = {"reward": RewardWeights()} if path.stem == "oracle" else {}  # as the YAML comments say
        policy = instantiate(cfg, world=small_world, **extra)
        assert isinstance(policy, WorldReferencePolicy) and policy.name == path.stem and policy.config() == {}
        rng = np.random.default_rng(0)
        ctx = world_context(small_world, rng, 3, 12)
        ranking = policy.rank(ctx, 5, rng)
        assert ranking.slots.shape == (3, 5)
        return
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
