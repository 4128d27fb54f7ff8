"""The one rollout loop: whole sessions valued, online steps, and the reference policies of the fidelity report."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import pytest

from agents import CosinePolicy, LoggingPolicy, OracleGreedyPolicy, PopularityPolicy, RandomPolicy
from agents.base import Feedback, Ranking, RankingContext, RankingPolicy
from envs.build import QuickWorld, setup_world, world_simulator
from envs.core import EnvConfig
from envs.rerank import ReRankVectorEnv
from shopgym.app.reference import REFERENCE_POLICIES, build_agent, reference_policies
from shopgym.app.rollout import EnvPages, SessionPages, rollout, value_policy
from shopgym.errors import ConfigError

CONFIG = EnvConfig(n_candidates=20, slate_size=5, max_pages=6)


@pytest.fixture(scope="module")
def setup():
    return setup_world(QuickWorld().config)


@pytest.fixture(scope="module")
def sim(setup):
    return world_simulator(setup, CONFIG)


class CountingPolicy(RankingPolicy):
    """Shows the first K candidates; counts the pages it ranked and the feedback it got."""

    name: ClassVar[str] = "counting"

    def __init__(self) -> None:
        self.ranked = 0
        self.updates = 0

    def score(self, ctx: RankingContext) -> np.ndarray:
        self.ranked += ctx.batch_size
        return -np.tile(np.arange(ctx.n_candidates, dtype=np.float64), (ctx.batch_size, 1))

    def update(self, ctx: RankingContext, ranking: Ranking, feedback: Feedback) -> None:
        assert feedback.clicked.shape == ranking.slots.shape == (ctx.batch_size, 5)
        self.updates += 1


def test_oracle_beats_random_in_true_world(sim) -> None:
    oracle = value_policy(sim, OracleGreedyPolicy(sim.source.world, sim.config.reward), 400, seed=0)
    random = value_policy(sim, RandomPolicy(), 400, seed=0)
    assert oracle.ctr > 2 * random.ctr
    assert oracle.reward_per_session > random.reward_per_session + 3 * np.hypot(oracle.reward_se, random.reward_se)


def test_session_pages_follow_every_session_to_its_end(sim) -> None:
    policy = CountingPolicy()
    rng = np.random.default_rng(0)
    pages = SessionPages(sim, 50, rng)
    ends = np.zeros(50, dtype=np.int64)
    shown = np.zeros(50, dtype=np.int64)
    steps = list(rollout(policy, pages, rng))
    for t, step in enumerate(steps):
        assert step.t == t and len(step.sessions) == step.state.batch_size == step.ctx.batch_size
        assert (ends[step.sessions] == 0).all()  # an ended session never comes back
        shown[step.sessions] += 1
        ends[step.sessions[step.ended]] += 1
    assert (ends == 1).all() and not pages.live
    assert 1 <= len(steps) <= CONFIG.max_pages and shown.max() <= CONFIG.max_pages
    assert policy.ranked == shown.sum() and policy.updates == len(steps)


def test_value_policy_accounts_for_whole_sessions(sim) -> None:
    value = value_policy(sim, CosinePolicy(), 300, seed=1, batch=128)
    pages = value.session_pages
    assert value.name == "cosine" and value.n_sessions == 300 and pages.shape == (300,)
    assert pages.min() >= 1 and pages.max() <= CONFIG.max_pages
    assert value.pages_per_session == pytest.approx(pages.mean())
    assert value.reward_per_page * pages.sum() == pytest.approx(value.reward_per_session * 300)
    assert 0.0 < value.ctr <= 1.0 and 0.0 <= value.purchase_rate <= value.ctr and value.reward_se > 0
    again = value_policy(sim, CosinePolicy(), 300, seed=1, batch=128, name="again")
    assert again.name == "again" and replace(again, name="cosine") == value  # the same seed, the same numbers
    np.testing.assert_array_equal(again.session_pages, pages)


def test_value_policy_values_the_policy_as_it_is(sim) -> None:
    frozen, learning = CountingPolicy(), CountingPolicy()
    value_policy(sim, frozen, 20, seed=0)
    value_policy(sim, learning, 20, seed=0, learn=True)
    assert frozen.updates == 0 and learning.updates > 0


@pytest.mark.parametrize(("kwargs", "match"), [({"n_sessions": 1}, "n_sessions"), ({"batch": 0}, "batch")])
def test_value_policy_rejects_bad_sizes(sim, kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        value_policy(sim, RandomPolicy(), **({"n_sessions": 10} | kwargs), seed=0)  # type: ignore[arg-type]


def test_env_pages_run_a_fixed_number_of_steps(sim) -> None:
    env = ReRankVectorEnv(8, simulator=sim)
    env.reset(seed=0)
    policy = CountingPolicy()
    steps = list(rollout(policy, EnvPages(env), np.random.default_rng(0), steps=12))
    assert len(steps) == 12 and policy.updates == 12 and policy.ranked == 12 * 8
    assert all((s.sessions == np.arange(8)).all() for s in steps)
    assert sum(int(s.ended.sum()) for s in steps) > 0  # sessions ended and restarted in place


def test_the_fidelity_reference_policies_are_the_agents_of_compare(setup, sim) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    from shopgym.cli.compare import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="compare")
    policies = reference_policies(setup.world, setup.train, sim)
    assert list(policies) == list(REFERENCE_POLICIES) == ["random", "popularity", "cosine", "logging",
                                                          "oracle-greedy"]
    for name in ("random", "popularity", "cosine"):  # compare's default agents: the very same classes
        assert type(policies[name]) is get_class(cfg.agents[name]._target_)
    assert (type(policies["random"]), type(policies["popularity"]), type(policies["cosine"])) == (
        RandomPolicy, PopularityPolicy, CosinePolicy)
    assert type(policies["logging"]) is LoggingPolicy and type(policies["oracle-greedy"]) is OracleGreedyPolicy
    assert isinstance(policies["popularity"], PopularityPolicy) and policies["popularity"].is_fitted
    assert policies["oracle-greedy"].reward == sim.config.reward  # type: ignore[attr-defined]
    for policy in policies.values():  # each one ranks the simulator's pages
        ranking = policy.rank(sim.context(sim.reset(np.random.default_rng(0), 4)), 5, np.random.default_rng(1))
        assert ranking.slots.shape == (4, 5)


def test_build_agent_names_the_configs(setup, sim) -> None:
    with pytest.raises(ConfigError, match=r"no agent config .*nope\.yaml; the configs are \[.*'oracle'"):
        build_agent("nope", {}, setup.train, sim)
