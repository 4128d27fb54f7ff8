"""The synthetic world's reference policies (its logging policy, the oracle) honour the ranking-policy interface."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents import LoggingPolicy, OracleGreedyPolicy, RandomPolicy
from agents.base import PolicyInputError, RankingContext, RankingPolicy
from envs.backends import Sessions
from envs.reward import RewardWeights
from envs.synthetic import SyntheticWorld, logging_policy_for
from shopgym.errors import ConfigError

K = 5
N = 20
DIM = 4
REWARD = RewardWeights(click=1.0, cart=0.5, purchase=2.0, revenue=0.01)


def world_context(world: SyntheticWorld, rng: np.random.Generator, b: int, n: int = N) -> RankingContext:
    """A batch of ``b`` requests of the world's shoppers, with ``n`` candidates each and their true sessions."""
    users, intent = world.sample_sessions(rng, b)
    candidates = world.sample_candidates(rng, users, intent, n).astype(np.int64)
    sessions = Sessions(np.full(b, -1), users, intent, np.full(b, -1), intent.is_search, np.zeros(b, dtype=bool))
    return RankingContext(np.zeros((b, DIM), np.float32), np.zeros((b, DIM), np.float32), intent.is_search,
                          candidates, np.zeros((b, n, DIM), np.float32), np.full(b, -1, dtype=np.int64),
                          np.full((b, 1), -1, dtype=np.int64), np.zeros((b, n, 0), np.float32), sessions)


def _make(name: str, world: SyntheticWorld) -> RankingPolicy:
    return LoggingPolicy(world) if name == "logging_policy" else OracleGreedyPolicy(world, REWARD)


NAMES = ["logging_policy", "oracle"]


@pytest.mark.parametrize("name", NAMES)
def test_ranking_conforms(name, small_world):
    policy = _make(name, small_world)
    assert policy.name == name and not policy.learns_online
    ctx = world_context(small_world, np.random.default_rng(5), 7)
    scores = policy.score(ctx)
    assert scores.shape == (7, N) and scores.dtype == np.float64 and np.isfinite(scores).all()
    ranking = policy.rank(ctx, K, np.random.default_rng(1))
    assert ranking.slots.shape == (7, K) and ranking.slots.dtype == np.int64
    assert ((ranking.slots >= 0) & (ranking.slots < N)).all()
    assert all(len(set(row)) == K for row in ranking.slots.tolist())
    assert ranking.propensity.shape == (7, K) and ranking.slate_propensity.shape == (7,)
    for p in (ranking.propensity, ranking.slate_propensity):
        assert ((p > 0) & (p <= 1)).all(), p
    assert (ranking.slate_propensity <= ranking.propensity.min(axis=1) + 1e-12).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_numbers(name, small_world):
    ctx = world_context(small_world, np.random.default_rng(2), 9)
    first = _make(name, small_world).rank(ctx, K, np.random.default_rng(11))
    second = _make(name, small_world).rank(ctx, K, np.random.default_rng(11))
    np.testing.assert_array_equal(first.slots, second.slots)
    np.testing.assert_array_equal(first.propensity, second.propensity)
    np.testing.assert_array_equal(first.slate_propensity, second.slate_propensity)


@pytest.mark.parametrize("name", NAMES)
def test_without_the_true_shoppers_they_say_so(name, small_world):
    policy = _make(name, small_world)
    ctx = world_context(small_world, np.random.default_rng(0), 3)
    no_sessions = replace(ctx, sessions=None)
    for method in (lambda c: policy.score(c), lambda c: policy.rank(c, K, np.random.default_rng(0))):
        with pytest.raises(PolicyInputError, match=r"`ctx.sessions`.*synthetic-world simulator.*got None"):
            method(no_sessions)
    assert ctx.sessions is not None
    logged = replace(ctx, sessions=replace(ctx.sessions, intent=None))  # a simulator fitted from a user's logs
    with pytest.raises(PolicyInputError, match="fitted from logs"):
        policy.score(logged)
    outside = replace(ctx, sessions=replace(ctx.sessions, world_user=np.array([0, small_world.population.n_users, 1])))
    with pytest.raises(PolicyInputError, match=rf"world_user.*\[0, {small_world.population.n_users}\).*request 1"):
        policy.score(outside)
    bad = ctx.candidates.copy()
    bad[2, 4] = small_world.catalog.n_items
    with pytest.raises(PolicyInputError, match=r"candidates.*\(request 2, candidate 4\)"):
        policy.score(replace(ctx, candidates=bad))


@pytest.mark.parametrize("name", NAMES)
def test_bad_k_is_rejected(name, small_world):
    policy = _make(name, small_world)
    ctx = world_context(small_world, np.random.default_rng(0), 2)
    for k in (0, N + 1):
        with pytest.raises(PolicyInputError, match="`k`"):
            policy.rank(ctx, k, np.random.default_rng(0))


@pytest.mark.parametrize("name", NAMES)
def test_they_are_rebuilt_from_the_world_not_saved(name, small_world, tmp_path):
    with pytest.raises(ConfigError, match="rebuild it from the world"):
        _make(name, small_world).save(tmp_path / name)
    assert not (tmp_path / name).exists()


def test_constructors_reject_bad_args(small_world):
    with pytest.raises(ConfigError, match="`world` must be a SyntheticWorld.*got dict"):
        LoggingPolicy({})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`world` must be a SyntheticWorld.*got NoneType"):
        OracleGreedyPolicy(None, REWARD)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"`reward`.*unknown \['clicks'\]"):
        OracleGreedyPolicy(small_world, {"clicks": 1.0})
    with pytest.raises(ConfigError, match="`reward` must be the env's RewardWeights.*got float"):
        OracleGreedyPolicy(small_world, 1.0)  # type: ignore[arg-type]
    assert OracleGreedyPolicy(small_world, {"click": 1, "revenue": 0.5}).reward == RewardWeights(revenue=0.5)


def test_context_take_keeps_the_sessions(small_world):
    ctx = world_context(small_world, np.random.default_rng(4), 6)
    rows = np.array([4, 1])
    sub = ctx.take(rows)
    assert sub.sessions is not None and ctx.sessions is not None and ctx.sessions.intent is not None
    np.testing.assert_array_equal(sub.sessions.world_user, ctx.sessions.world_user[rows])
    assert sub.sessions.intent is not None
    np.testing.assert_array_equal(sub.sessions.intent.category, ctx.sessions.intent.category[rows])
    assert replace(ctx, sessions=None).take(rows).sessions is None
    with pytest.raises(PolicyInputError, match="RankingContext.sessions must describe the 6 requests, got 2"):
        replace(ctx, sessions=sub.sessions)


def test_logging_policy_is_the_worlds_and_reports_its_propensities(small_world):
    """Same draws as the world's logging policy; propensities are its exact per-slot marginals and slate law."""
    ctx = world_context(small_world, np.random.default_rng(7), 64)
    assert ctx.sessions is not None and ctx.sessions.intent is not None
    users, intent = ctx.sessions.world_user, ctx.sessions.intent
    truth = logging_policy_for(small_world)
    expected = truth.sample(np.random.default_rng(3), users, ctx.candidates, intent, K)
    ranking = LoggingPolicy(small_world).rank(ctx, K, np.random.default_rng(3))
    np.testing.assert_array_equal(ranking.slots, expected.slots)
    marginals = truth.marginals(users, ctx.candidates, intent, K)  # (B, K, N)
    shown = np.take_along_axis(marginals, ranking.slots[:, :, None], axis=2)[..., 0]
    np.testing.assert_allclose(ranking.propensity, shown)
    greedy = truth.greedy(users, ctx.candidates, intent, K)
    np.testing.assert_allclose(ranking.slate_propensity, truth.slate_probability(ranking.slots, greedy, N))
    np.testing.assert_allclose(LoggingPolicy(small_world).score(ctx), truth.scores(users, ctx.candidates, intent))
    # and they are frequencies: how often each request's greedy ranking is drawn, over many draws
    eps = small_world.config.logging_epsilon
    policy, rng = LoggingPolicy(small_world), np.random.default_rng(0)
    hits = np.mean([(policy.rank(ctx, K, rng).slots == greedy).all(axis=1) for _ in range(400)], axis=0)
    greedy_prob = truth.slate_probability(greedy, greedy, N)
    assert greedy_prob == pytest.approx(np.full(64, (1 - eps) + eps * _uniform(N, K)))
    p = greedy_prob.mean()
    assert abs(hits.mean() - p) < 4 * np.sqrt(p * (1 - p) / (400 * 64))


def _uniform(n: int, k: int) -> float:
    """(N-K)!/N!: the probability of one ranking of K of N under uniform sampling."""
    return float(np.prod(1.0 / np.arange(n - k + 1, n + 1)))


def test_oracle_ranks_by_true_item_value(small_world):
    ctx = world_context(small_world, np.random.default_rng(8), 16)
    assert ctx.sessions is not None and ctx.sessions.intent is not None
    oracle = OracleGreedyPolicy(small_world, REWARD)
    values = small_world.item_value(ctx.sessions.world_user, ctx.candidates, ctx.sessions.intent, REWARD)
    np.testing.assert_array_equal(oracle.score(ctx), values)
    ranking = oracle.rank(ctx, K, np.random.default_rng(0))
    shown = np.take_along_axis(values, ranking.slots, axis=1)
    assert (np.diff(shown, axis=1) <= 0).all() and (shown[:, -1] >= np.sort(values, axis=1)[:, -K]).all()
    assert (ranking.propensity == 1).all() and (ranking.slate_propensity == 1).all()
    # the true examination falls with the slot, so no other ranking of the page expects more
    exam = small_world.examination_probs(K)
    random = RandomPolicy().rank(ctx, K, np.random.default_rng(1))
    assert (shown @ exam >= np.take_along_axis(values, random.slots, axis=1) @ exam - 1e-12).all()

