"""Online learners: regret shrinks on a known-optimum problem, position-aware credit, exact updates, propensities."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from agents import (
    ALSPolicy,
    CandidateFeatures,
    CosinePolicy,
    EpsilonGreedyRanker,
    ItemKNNPolicy,
    LinTSRanker,
    LinUCBRanker,
    NeuralLinearRanker,
    OnlineLogisticRanker,
    RandomPolicy,
    RidgeModel,
    ToyRankingProblem,
    run_online,
    slot_credit,
)
from agents.base import Feedback, Ranking, RankingContext, RankingPolicy

PROBLEM = ToyRankingProblem()  # 60 items, 12 users, d = 8, N = 12, examination 1/k
K, ROUNDS, BATCH = 5, 150, 8
EXAM = PROBLEM.examination(K).tolist()

LEARNERS: dict[str, Callable[[], RankingPolicy]] = {
    "epsilon_greedy": lambda: EpsilonGreedyRanker(epsilon=0.05, examination=EXAM),
    "linucb": lambda: LinUCBRanker(examination=EXAM),
    "lin_ts": lambda: LinTSRanker(examination=EXAM),
    "logistic": lambda: OnlineLogisticRanker(examination=EXAM, lr=0.3),  # the default lr=1 suits the shop world
    "neural_linear": lambda: NeuralLinearRanker(examination=EXAM, hidden=(32,), train_every=1000, train_steps=30,
                                                batch_size=128),
}


@pytest.fixture(scope="module")
def random_regret() -> float:
    return float(run_online(RandomPolicy(), PROBLEM, ROUNDS, BATCH, K, seed=1).regret.mean())


@pytest.mark.parametrize("name", list(LEARNERS))
def test_regret_shrinks(name, random_regret):
    trace = run_online(LEARNERS[name](), PROBLEM, ROUNDS, BATCH, K, seed=1)
    first, _, last = trace.thirds()
    assert last < 0.6 * first, (first, last)
    assert last < 0.2 * random_regret, (last, random_regret)


# ---------------------------------------------------------------------------------------- position bias
ALPHA = np.array([0.2, 0.3, 0.4, 0.5, 0.6])  # a fixed logger always shows the best items at the bottom
BIAS_EXAM = 1.0 / np.arange(1, 6)


def _one_hot_context(b: int) -> RankingContext:
    n = len(ALPHA)
    eye = np.eye(n, dtype=np.float32)
    return RankingContext(np.zeros((b, n), np.float32), np.zeros((b, n), np.float32), np.zeros(b, bool),
                          np.tile(np.arange(n), (b, 1)), np.tile(eye, (b, 1, 1)), np.full(b, -1),
                          np.full((b, 1), -1), np.zeros((b, n, 0), np.float32))


def _learn_from_fixed_logger(policy: RankingPolicy, rounds: int = 300, b: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    ctx = _one_hot_context(b)
    slots = np.tile(np.arange(len(ALPHA)), (b, 1))
    ranking = Ranking(slots, np.ones(slots.shape), np.ones(b))
    for _ in range(rounds):
        clicked = (rng.random(slots.shape) < BIAS_EXAM * ALPHA).astype(np.int8)
        zero = np.zeros_like(clicked)
        policy.update(ctx, ranking, Feedback(clicked, zero, zero, clicked.astype(np.float64)))
    return policy.score(_one_hot_context(1))[0]


POSITION_LEARNERS: dict[str, Callable[[list[float] | None], RankingPolicy]] = {
    "ridge": lambda e: LinUCBRanker(alpha=0.0, blocks=["i"], proj_dim=None, item_reg=None, examination=e),
    "ridge_item_effects": lambda e: LinUCBRanker(alpha=0.0, blocks=["bias"], item_reg=1.0, examination=e),
    "logistic": lambda e: OnlineLogisticRanker(blocks=["i"], proj_dim=None, lr=0.3, examination=e),
    "neural_linear": lambda e: NeuralLinearRanker(hidden=(8,), blocks=["i"], proj_dim=None, train_every=3000,
                                                  train_steps=50, batch_size=64, examination=e),
}


@pytest.mark.parametrize("name", list(POSITION_LEARNERS))
def test_examination_weighting_removes_position_bias(name):
    aware = _learn_from_fixed_logger(POSITION_LEARNERS[name](BIAS_EXAM.tolist()))
    unaware = _learn_from_fixed_logger(POSITION_LEARNERS[name](None))
    assert np.argsort(aware).tolist() == [0, 1, 2, 3, 4], aware  # the true order
    assert np.argmax(unaware) == 0, unaware  # raw click rates crown the item shown on top, the worst one


def test_aware_ridge_estimates_the_examined_click_rate():
    scores = _learn_from_fixed_logger(POSITION_LEARNERS["ridge"](BIAS_EXAM.tolist()), rounds=600)
    np.testing.assert_allclose(scores, ALPHA, atol=0.05)


def test_cascade_skips_slots_after_the_last_click():
    clicked = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int8)
    fb = Feedback(clicked, np.zeros_like(clicked), np.zeros_like(clicked), 2.0 * clicked)
    credit = slot_credit(fb, BIAS_EXAM, cascade=True, target="reward")
    np.testing.assert_array_equal(credit.mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    np.testing.assert_allclose(credit.weight, np.where(credit.mask, BIAS_EXAM, 0.0))
    np.testing.assert_allclose(credit.target * credit.examination, credit.reward)
    plain = slot_credit(fb, None, cascade=False, target="click")
    assert plain.mask.all() and (plain.weight == 1.0).all() and (plain.reward == clicked).all()


# ---------------------------------------------------------------------------------------- item effects, priors
def test_item_effects_learn_what_the_embeddings_cannot_see():
    """Six items with identical embeddings but different click rates: only per-item effects separate them."""
    n, b = 6, 16
    alpha = np.linspace(0.1, 0.6, n)
    vec = np.ones((n, 4), np.float32) / 2.0
    ctx = RankingContext(np.tile(vec[0], (b, 1)), np.zeros((b, 4), np.float32), np.zeros(b, bool),
                         np.tile(np.arange(n), (b, 1)), np.tile(vec, (b, 1, 1)), np.zeros(b, np.int64),
                         np.full((b, 1), -1), np.zeros((b, n, 0), np.float32))
    rng = np.random.default_rng(0)
    with_items, without = LinTSRanker(item_reg=5.0, scale=0.2), LinTSRanker(item_reg=None, scale=0.2)
    for policy in (with_items, without):
        for _ in range(150):
            ranking = policy.rank(ctx, 3, rng)
            items = np.take_along_axis(ctx.candidates, ranking.slots, axis=1)
            clicked = (rng.random(items.shape) < alpha[items]).astype(np.int8)
            zero = np.zeros_like(clicked)
            policy.update(ctx, ranking, Feedback(clicked, zero, zero, clicked.astype(np.float64)))
    assert np.argsort(with_items.score(ctx)[0])[-3:].tolist() == [3, 4, 5]
    assert np.ptp(without.score(ctx)[0]) < 1e-9  # the shared model cannot tell them apart


def test_cosine_prior_starts_from_the_cosine_ranking():
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 10)
    prior = LinUCBRanker(alpha=0.0, cosine_prior=1.0, item_reg=None).rank(ctx, K, np.random.default_rng(0))
    cosine = CosinePolicy().rank(ctx, K, np.random.default_rng(0))
    np.testing.assert_array_equal(prior.slots, cosine.slots)


# ---------------------------------------------------------------------------------------- exact updates
def test_sherman_morrison_and_cholesky_agree_with_a_direct_solve():
    rng = np.random.default_rng(0)
    p, m = 12, 40
    x, w, r = rng.standard_normal((m, p)), rng.uniform(0.1, 1.0, m), rng.standard_normal(m)
    models = {method: RidgeModel(p, reg=0.7, update_method=method) for method in ("sherman_morrison", "cholesky")}
    for model in models.values():
        for rows in np.array_split(np.arange(m), 5):
            model.add(x[rows], w[rows], r[rows])
    a = 0.7 * np.eye(p) + (x * w[:, None]).T @ x
    theta = np.linalg.solve(a, r @ x)
    for model in models.values():
        np.testing.assert_allclose(model.A, a, atol=1e-10)
        np.testing.assert_allclose(model.A_inv, np.linalg.inv(a), atol=1e-10)
        np.testing.assert_allclose(model.theta, theta, atol=1e-10)


def test_auto_update_switches_path_and_refresh_resets_drift():
    rng = np.random.default_rng(1)
    model = RidgeModel(8, sm_max_obs=3, refresh_every=5)
    model.add(rng.standard_normal((2, 8)), np.ones(2), np.ones(2))  # Sherman-Morrison
    assert model._since_refresh == 2
    model.add(rng.standard_normal((4, 8)), np.ones(4), np.ones(4))  # batch > sm_max_obs: Cholesky
    assert model._since_refresh == 0
    for _ in range(3):
        model.add(rng.standard_normal((2, 8)), np.ones(2), np.ones(2))
    assert model._since_refresh < 5  # refreshed once 5 Sherman-Morrison steps would have accumulated
    np.testing.assert_allclose(model.A_inv @ model.A, np.eye(8), atol=1e-10)


def test_one_batch_equals_the_same_observations_one_by_one():
    rng = np.random.default_rng(2)
    ctx = PROBLEM.sample_context(rng, 6)
    ranking = LinUCBRanker().rank(ctx, K, rng)
    fb = PROBLEM.feedback(ctx, ranking, rng)
    batched, sequential = LinUCBRanker(item_reg=None), LinUCBRanker(item_reg=None)
    batched.update(ctx, ranking, fb)
    for i in range(6):
        row = np.array([i])
        sequential.update(ctx.take(row), Ranking(ranking.slots[row], ranking.propensity[row],
                                                 ranking.slate_propensity[row]),
                          Feedback(fb.clicked[row], fb.carted[row], fb.purchased[row], fb.reward[row]))
    np.testing.assert_allclose(batched.score(ctx), sequential.score(ctx), atol=1e-10)


# ---------------------------------------------------------------------------------------- propensities
def test_epsilon_greedy_propensities_are_exact():
    policy = EpsilonGreedyRanker(epsilon=0.3)
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 1)
    batch = ctx.take(np.zeros(20_000, dtype=np.int64))
    ranking = policy.rank(batch, 3, np.random.default_rng(5))
    n = PROBLEM.n_candidates
    greedy = np.argsort(-policy.score(ctx)[0], kind="stable")[:3]
    for slot in range(3):
        freq = np.bincount(ranking.slots[:, slot], minlength=n) / len(ranking.slots)
        expected = np.full(n, 0.3 / n)
        expected[greedy[slot]] += 0.7
        np.testing.assert_allclose(freq, expected, atol=0.015)
        shown_expected = expected[ranking.slots[:, slot]]
        np.testing.assert_allclose(ranking.propensity[:, slot], shown_expected)
    is_greedy = (ranking.slots == greedy).all(axis=1)
    uniform = 1.0 / (n * (n - 1) * (n - 2))
    np.testing.assert_allclose(ranking.slate_propensity, np.where(is_greedy, 0.7, 0.0) + 0.3 * uniform)


def test_thompson_monte_carlo_propensities_track_the_real_frequencies():
    samples = 200
    policy = LinTSRanker(scale=1.0, estimate_propensity=True, n_propensity_samples=samples, item_reg=None)
    run_online(policy, PROBLEM, 10, 8, K, seed=3)  # a partly trained posterior: rankings still vary
    ctx = PROBLEM.sample_context(np.random.default_rng(1), 1)
    batch = ctx.take(np.zeros(1500, dtype=np.int64))
    ranking = policy.rank(batch, K, np.random.default_rng(2))
    top = ranking.slots[:, 0]
    freq = np.bincount(top, minlength=PROBLEM.n_candidates) / len(top)  # the real marginal of slot 1
    assert 0.05 < freq.max() < 0.95  # a genuinely random policy
    error = ranking.propensity[:, 0] - freq[top]
    assert abs(error.mean()) < 0.01  # unbiased up to the (1 + c) / (S + 1) smoothing
    assert np.abs(error).max() < 5 * 0.5 / np.sqrt(samples)  # within 5 binomial standard deviations
    assert np.isnan(LinTSRanker().rank(ctx, K, np.random.default_rng(0)).propensity).all()  # default: unknown


# ---------------------------------------------------------------------------------------- features
def test_feature_blocks_and_the_cosine_identity():
    ctx = PROBLEM.sample_context(np.random.default_rng(0), 3)
    full = CandidateFeatures(proj_dim=None)
    x = full(ctx)
    d = PROBLEM.dim
    assert full.sizes == {"cos": 3, "ui": d, "i": d, "qi": d, "extra": 0, "bias": 1}
    assert x.shape == (3, PROBLEM.n_candidates, full.n_features) and x.dtype == np.float32
    cos = np.einsum("bnd,bd->bn", ctx.candidate_vecs, ctx.user)
    np.testing.assert_allclose(x[..., 0], cos, atol=1e-6)
    np.testing.assert_allclose(x[..., 3:3 + d].sum(axis=2) / np.sqrt(d), cos, atol=1e-5)  # sum of u*v = cos
    np.testing.assert_array_equal(x[..., -1], 1.0)
    cols = np.array([[2, 0], [1, 1], [5, 3]])
    np.testing.assert_allclose(full(ctx, cols), np.take_along_axis(x, cols[:, :, None], axis=1))
    small = CandidateFeatures(proj_dim=3, seed=4)
    small(ctx)
    proj = small.state_dict()["features.projection"]
    np.testing.assert_allclose(proj.T @ proj, np.eye(3), atol=1e-6)  # orthonormal columns
    again = CandidateFeatures(proj_dim=3, seed=4)
    again(ctx)
    np.testing.assert_array_equal(again.state_dict()["features.projection"], proj)


# ---------------------------------------------------------------------------------------- log-fitted features
@pytest.fixture(scope="module")
def toy_logs():
    return PROBLEM.make_logs(np.random.default_rng(0), 1500, K)


def test_log_features_are_zero_until_fitted_and_then_carry_the_cf_scores(toy_logs):
    logs, item_index, user_index, history = toy_logs
    policy = LinUCBRanker(log_features=["als", "item_knn"])
    ctx = PROBLEM.sample_context(np.random.default_rng(1), 4, history)
    x = policy._raw(ctx)
    p = policy.features.n_features
    assert x.shape[2] == policy.n_inputs == p + 2
    np.testing.assert_array_equal(x[..., p:], 0.0)
    policy.fit(logs, item_index, user_index)
    x = policy._raw(ctx)
    als, knn = policy.log_models["als"], policy.log_models["item_knn"]
    assert isinstance(als, ALSPolicy) and isinstance(knn, ItemKNNPolicy)
    np.testing.assert_allclose(x[..., p], als.cf_scores(ctx), rtol=1e-5, atol=1e-6)
    n_hist = np.maximum((ctx.history >= 0).sum(axis=1), 1)[:, None]
    np.testing.assert_allclose(x[..., p + 1], knn.cf_scores(ctx) / n_hist, rtol=1e-5, atol=1e-6)


def test_log_features_help_when_the_embeddings_say_nothing():
    """Clustered tastes, embeddings that are pure noise: only the logs reveal who likes what."""
    problem = ToyRankingProblem(affinity=0.0, quality=0.0, dim=4, n_items=60, n_users=12, seed=5)
    cluster_items = np.arange(problem.n_items) % 3
    alpha = np.where(cluster_items[None, :] == (np.arange(problem.n_users) % 3)[:, None], 0.6, 0.05)
    object.__setattr__(problem, "attractiveness", lambda users, items: alpha[np.asarray(users)[:, None], items])
    logs, item_index, user_index, history = problem.make_logs(np.random.default_rng(0), 1500, K)
    with_logs = LinUCBRanker(examination=EXAM).fit(logs, item_index, user_index)
    without = LinUCBRanker(examination=EXAM, log_features=[])
    informed = run_online(with_logs, problem, 40, BATCH, K, seed=2, history=history).regret[20:].mean()
    blind = run_online(without, problem, 40, BATCH, K, seed=2, history=history).regret[20:].mean()
    assert informed < 0.5 * blind, (informed, blind)


def test_log_features_survive_save_and_load(toy_logs, tmp_path):
    from agents.base import load_policy

    logs, item_index, user_index, history = toy_logs
    policy = LinTSRanker(log_features=["als", "item_knn"]).fit(logs, item_index, user_index)
    run_online(policy, PROBLEM, 3, 4, K, seed=0, history=history)
    loaded = load_policy(policy.save(tmp_path / "ts"))
    ctx = PROBLEM.sample_context(np.random.default_rng(3), 5, history)
    np.testing.assert_allclose(loaded.score(ctx), policy.score(ctx), rtol=1e-6, atol=1e-9)


def test_log_features_skip_models_the_logs_cannot_fit(toy_logs):
    logs, item_index, _, _ = toy_logs
    from shopgym.data import LoggedData
    from shopgym.data import schema as S

    anonymous = LoggedData.from_frames(logs.items, logs.interactions.drop(columns=[S.USER_ID]))
    with pytest.warns(UserWarning, match="'als' left at 0"):
        policy = LinUCBRanker(log_features=["als", "item_knn"]).fit(anonymous, item_index)
    assert not policy.log_models["als"].is_fitted and policy.log_models["item_knn"].is_fitted
