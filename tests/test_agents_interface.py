"""Every agent honours the one ranking-policy interface: shapes, propensities, seeding, save/load, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agents import (
    ALSPolicy,
    CosinePolicy,
    EpsilonGreedyRanker,
    ItemKNNPolicy,
    LinTSRanker,
    LinUCBRanker,
    NeuralLinearRanker,
    NotFittedError,
    OnlineLogisticRanker,
    PopularityPolicy,
    RandomPolicy,
    ToyRankingProblem,
)
from agents.base import Feedback, PolicyInputError, Ranking, RankingContext, RankingPolicy, load_policy
from shopgym.errors import ConfigError, ShopgymError

K = 4
PROBLEM = ToyRankingProblem(n_items=30, n_users=6, dim=6, n_candidates=8, seed=1)


@pytest.fixture(scope="module")
def toy_logs():
    return PROBLEM.make_logs(np.random.default_rng(0), 600, K)


def _make(name: str, toy_logs) -> RankingPolicy:
    logs, item_index, user_index, _ = toy_logs
    makers: dict[str, Callable[[], RankingPolicy]] = {
        "random": lambda: RandomPolicy(seed=3),
        "popularity": lambda: PopularityPolicy().fit(logs, item_index),
        "cosine": lambda: CosinePolicy(),
        "item_knn": lambda: ItemKNNPolicy().fit(logs, item_index),
        "als": lambda: ALSPolicy(factors=4, iterations=3).fit(logs, item_index, user_index),
        "epsilon_greedy": lambda: EpsilonGreedyRanker(epsilon=0.3, seed=2),
        "linucb": lambda: LinUCBRanker(seed=2),
        "lin_ts": lambda: LinTSRanker(seed=2, estimate_propensity=True, n_propensity_samples=16),
        "logistic": lambda: OnlineLogisticRanker(seed=2),
        "neural_linear": lambda: NeuralLinearRanker(hidden=(8,), train_every=8, train_steps=3, batch_size=8,
                                                    buffer_size=64, estimate_propensity=True,
                                                    n_propensity_samples=16, seed=2),
    }
    return makers[name]()


ALL = ["random", "popularity", "cosine", "item_knn", "als", "epsilon_greedy", "linucb", "lin_ts", "logistic",
       "neural_linear"]
LEARNERS = ["epsilon_greedy", "linucb", "lin_ts", "logistic", "neural_linear"]


def _rollout(policy: RankingPolicy, seed: int, rounds: int = 3, batch: int = 5) -> list[tuple[Ranking, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        ctx = PROBLEM.sample_context(rng, batch)
        ranking = policy.rank(ctx, K, rng)
        policy.update(ctx, ranking, PROBLEM.feedback(ctx, ranking, rng))
        out.append((ranking, policy.score(ctx)))
    return out


@pytest.mark.parametrize("name", ALL)
def test_ranking_conforms(name, toy_logs):
    policy = _make(name, toy_logs)
    assert policy.name == name
    ctx = PROBLEM.sample_context(np.random.default_rng(5), 7)
    for _ in range(2):  # before and after one update
        scores = policy.score(ctx)
        assert scores.shape == (7, PROBLEM.n_candidates) and scores.dtype == np.float64
        assert np.isfinite(scores).all()
        ranking = policy.rank(ctx, K, np.random.default_rng(1))
        assert ranking.slots.shape == (7, K) and ranking.slots.dtype == np.int64
        assert ((ranking.slots >= 0) & (ranking.slots < PROBLEM.n_candidates)).all()
        assert all(len(set(row)) == K for row in ranking.slots.tolist())
        assert ranking.propensity.shape == (7, K) and ranking.slate_propensity.shape == (7,)
        for p in (ranking.propensity, ranking.slate_propensity):
            assert ((p > 0) & (p <= 1)).all(), p
        assert (ranking.slate_propensity <= ranking.propensity.min(axis=1) + 1e-12).all()
        policy.update(ctx, ranking, PROBLEM.feedback(ctx, ranking, np.random.default_rng(2)))


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_numbers(name, toy_logs):
    first, second = _rollout(_make(name, toy_logs), 11), _rollout(_make(name, toy_logs), 11)
    for (r1, s1), (r2, s2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(r1.slots, r2.slots)
        np.testing.assert_array_equal(r1.propensity, r2.propensity)
        np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("name", LEARNERS)
def test_learners_change_with_feedback(name, toy_logs):
    policy = _make(name, toy_logs)
    ctx = PROBLEM.sample_context(np.random.default_rng(3), 6)
    before = policy.score(ctx).copy()
    _rollout(policy, 4, rounds=4)
    assert policy.learns_online
    assert not np.allclose(before, policy.score(ctx))


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name, toy_logs, tmp_path: Path):
    policy = _make(name, toy_logs)
    _rollout(policy, 7)
    policy.save(tmp_path / name)
    loaded = load_policy(tmp_path / name)
    assert type(loaded) is type(policy) and loaded.config() == policy.config()
    ctx = PROBLEM.sample_context(np.random.default_rng(8), 5)
    if name == "random":
        return  # scores are fresh random draws
    np.testing.assert_allclose(loaded.score(ctx), policy.score(ctx), rtol=1e-6, atol=1e-9)
    if name != "lin_ts":
        a, b = policy.rank(ctx, K, np.random.default_rng(0)), loaded.rank(ctx, K, np.random.default_rng(0))
        np.testing.assert_array_equal(a.slots, b.slots)
    saved = (tmp_path / name / "state.safetensors").read_bytes()
    assert b"pickle" not in saved


def test_saved_files_are_json_and_safetensors(tmp_path: Path):
    policy = LinUCBRanker()
    _rollout(policy, 1)
    folder = policy.save(tmp_path / "p")
    assert sorted(p.name for p in folder.iterdir()) == ["policy.json", "state.safetensors"]


@pytest.mark.parametrize("name", ["popularity", "item_knn", "als"])
def test_unfitted_policies_say_so(name):
    policy = {"popularity": PopularityPolicy, "item_knn": ItemKNNPolicy, "als": ALSPolicy}[name]()
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 2)
    with pytest.raises(NotFittedError, match="fit"):
        policy.score(ctx)
    assert isinstance(NotFittedError("x"), ShopgymError)


INVALID_ARGS = [
    (LinUCBRanker, {"alpha": -1.0}, "alpha"),
    (LinUCBRanker, {"reg": 0.0}, "reg"),
    (LinUCBRanker, {"examination": [1.0, 0.0]}, "examination"),
    (LinUCBRanker, {"examination": "0.5"}, "examination"),
    (LinUCBRanker, {"target": "clicks"}, "target"),
    (LinUCBRanker, {"blocks": ["cos", "users"]}, "blocks"),
    (LinUCBRanker, {"blocks": []}, "blocks"),
    (LinUCBRanker, {"proj_dim": 0}, "proj_dim"),
    (LinUCBRanker, {"update_method": "woodbury"}, "update_method"),
    (LinUCBRanker, {"cosine_prior": 0.5, "blocks": ["i"]}, "cosine_prior"),
    (LinUCBRanker, {"item_reg": 0.0}, "item_reg"),
    (LinUCBRanker, {"cascade": "yes"}, "cascade"),
    (LinTSRanker, {"scale": 0.0}, "scale"),
    (LinTSRanker, {"n_propensity_samples": 0}, "n_propensity_samples"),
    (EpsilonGreedyRanker, {"epsilon": 1.5}, "epsilon"),
    (OnlineLogisticRanker, {"optimizer": "adam"}, "optimizer"),
    (OnlineLogisticRanker, {"target": "reward"}, "target"),
    (OnlineLogisticRanker, {"lr": 0}, "lr"),
    (NeuralLinearRanker, {"hidden": []}, "hidden"),
    (NeuralLinearRanker, {"buffer_size": 10, "batch_size": 20}, "buffer_size"),
    (NeuralLinearRanker, {"exploration": "greedy"}, "exploration"),
    (RandomPolicy, {"seed": -1}, "seed"),
    (RandomPolicy, {"seed": 1.5}, "seed"),
    (PopularityPolicy, {"metric": "ctr"}, "metric"),
    (PopularityPolicy, {"prior_strength": -1}, "prior_strength"),
    (CosinePolicy, {"user_weight": 0.0, "query_weight": 0.0}, "user_weight"),
    (ItemKNNPolicy, {"n_neighbors": 0}, "n_neighbors"),
    (ItemKNNPolicy, {"group": "household"}, "group"),
    (ALSPolicy, {"factors": 0}, "factors"),
    (ALSPolicy, {"regularization": 0.0}, "regularization"),
]


@pytest.mark.parametrize(("cls", "kwargs", "match"), INVALID_ARGS)
def test_constructors_reject_bad_args(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def _ctx_with(ctx: RankingContext, **changes) -> RankingContext:
    fields = {f: getattr(ctx, f) for f in ("user", "query", "is_search", "candidates", "candidate_vecs", "user_ids",
                                           "history", "extra")}
    return RankingContext(**(fields | changes))


@pytest.mark.parametrize("name", ALL)
def test_bad_k_is_rejected(name, toy_logs):
    policy = _make(name, toy_logs)
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 2)
    for k in (0, PROBLEM.n_candidates + 1):
        with pytest.raises(PolicyInputError, match="`k`"):
            policy.rank(ctx, k, np.random.default_rng(0))


@pytest.mark.parametrize("name", LEARNERS)
def test_bad_feedback_is_rejected(name, toy_logs):
    policy = _make(name, toy_logs)
    rng = np.random.default_rng(0)
    ctx = PROBLEM.sample_context(rng, 3)
    ranking = policy.rank(ctx, K, rng)
    fb = PROBLEM.feedback(ctx, ranking, rng)
    short = Feedback(fb.clicked[:, :2], fb.carted, fb.purchased, fb.reward)
    with pytest.raises(PolicyInputError, match="feedback.clicked"):
        policy.update(ctx, ranking, short)
    out_of_range = Ranking(ranking.slots + PROBLEM.n_candidates, ranking.propensity, ranking.slate_propensity)
    with pytest.raises(PolicyInputError, match="ranking.slots"):
        policy.update(ctx, out_of_range, fb)
    nan_reward = Feedback(fb.clicked, fb.carted, fb.purchased, np.full(fb.reward.shape, np.nan))
    with pytest.raises(PolicyInputError, match="finite"):
        policy.update(ctx, ranking, nan_reward)


@pytest.mark.parametrize("name", LEARNERS)
def test_dimension_change_is_rejected(name, toy_logs):
    policy = _make(name, toy_logs)
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 2)
    policy.score(ctx)
    wider = _ctx_with(ctx, extra=np.zeros((2, PROBLEM.n_candidates, 3), dtype=np.float32))
    with pytest.raises(PolicyInputError, match="extra features"):
        policy.score(wider)


@pytest.mark.parametrize("name", ["popularity", "item_knn", "als"])
def test_out_of_catalog_candidates_are_rejected(name, toy_logs):
    policy = _make(name, toy_logs)
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 2)
    bad = ctx.candidates.copy()
    bad[1, 3] = PROBLEM.n_items + 5
    with pytest.raises(PolicyInputError, match=r"candidates.*\(request 1, candidate 3\)"):
        policy.score(_ctx_with(ctx, candidates=bad))


def test_examination_shorter_than_slate_is_rejected():
    policy = LinUCBRanker(examination=[1.0, 0.5])
    rng = np.random.default_rng(0)
    ctx = PROBLEM.sample_context(rng, 2)
    ranking = policy.rank(ctx, K, rng)
    with pytest.raises(PolicyInputError, match="examination"):
        policy.update(ctx, ranking, PROBLEM.feedback(ctx, ranking, rng))


def test_load_rejects_tampered_state(tmp_path: Path):
    policy = LinUCBRanker()
    _rollout(policy, 1)
    folder = policy.save(tmp_path / "p")
    from safetensors.numpy import load_file, save_file

    state = load_file(str(folder / "state.safetensors"))
    state["ridge.A"] = state["ridge.A"][:3, :3].copy()
    save_file(state, str(folder / "state.safetensors"))
    with pytest.raises(ConfigError, match="ridge.A"):
        load_policy(folder)
