"""Baselines on problems with a known optimum: random, popularity, cosine, item-kNN and ALS (with cold start)."""

from __future__ import annotations

from math import perm

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from agents import (
    ALSPolicy,
    CosinePolicy,
    ItemKNNPolicy,
    PopularityPolicy,
    RandomPolicy,
    ToyRankingProblem,
    als_factors,
    run_online,
)
from agents.base import RankingContext
from agents.cf import _cg_half_step
from shopgym.data import LoggedData
from shopgym.data import schema as S

# ---------------------------------------------------------------------------------------- helpers
N_CLUSTERS, ITEMS_PER, N_USERS = 3, 10, 30
N_ITEMS = N_CLUSTERS * ITEMS_PER
COLD_ITEM = N_ITEMS - 1  # never logged


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered_logs(seed: int = 0, n_requests: int = 2000, k: int = 5) -> tuple[LoggedData, pd.Index, pd.Index]:
    """Users of cluster c click items of cluster c (p=0.6), others rarely (p=0.01); COLD_ITEM never shown."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, n_requests)
    shown = np.argsort(rng.random((n_requests, N_ITEMS - 1)), axis=1)[:, :k]
    same = (shown // ITEMS_PER) == (users % N_CLUSTERS)[:, None]
    clicked = rng.random(shown.shape) < np.where(same, 0.6, 0.01)
    item_ids = pd.Index([f"i{j:02d}" for j in range(N_ITEMS)])
    user_ids = pd.Index([f"u{j:02d}" for j in range(N_USERS)])
    request = np.repeat(np.arange(n_requests), k)
    inter = pd.DataFrame({
        S.REQUEST_ID: request.astype(str), S.USER_ID: user_ids[users[request]],
        S.TIMESTAMP: pd.Timestamp("2024-01-01") + pd.to_timedelta(request, unit="min"),
        S.POSITION: np.tile(np.arange(1, k + 1), n_requests), S.ITEM_ID: item_ids[shown.ravel()],
        S.CLICKED: clicked.ravel().astype(int),
    })
    items = pd.DataFrame({S.ITEM_ID: item_ids, S.TEXT: ["x"] * N_ITEMS})
    return LoggedData.from_frames(items, inter), item_ids, user_ids


def cluster_context(user_ids: np.ndarray, history: np.ndarray, candidates: np.ndarray, item_vecs: np.ndarray,
                    user_vecs: np.ndarray | None = None) -> RankingContext:
    b, n = candidates.shape
    d = item_vecs.shape[1]
    return RankingContext(
        user=np.zeros((b, d), np.float32) if user_vecs is None else user_vecs.astype(np.float32),
        query=np.zeros((b, d), np.float32), is_search=np.zeros(b, bool), candidates=candidates,
        candidate_vecs=item_vecs[candidates], user_ids=user_ids, history=history,
        extra=np.zeros((b, n, 0), np.float32))


def in_cluster_share(slots: np.ndarray, candidates: np.ndarray, clusters: np.ndarray) -> float:
    items = np.take_along_axis(candidates, slots, axis=1)
    return float(((items // ITEMS_PER) == clusters[:, None]).mean())


@pytest.fixture(scope="module")
def clusters():
    return clustered_logs()


def _cluster_batch(seed: int, b: int = 12, n: int = 12):
    rng = np.random.default_rng(seed)
    users = np.arange(b) % N_USERS
    cluster = users % N_CLUSTERS
    # 4 in-cluster candidates + 8 others per request; history = 3 other items of the user's cluster
    own = cluster[:, None] * ITEMS_PER + np.argsort(rng.random((b, ITEMS_PER - 1)), axis=1)[:, :7]
    others = (cluster[:, None] + 1 + rng.integers(0, N_CLUSTERS - 1, (b, n - 4))) % N_CLUSTERS * ITEMS_PER \
        + rng.integers(0, ITEMS_PER - 1, (b, n - 4))
    candidates = np.concatenate([own[:, :4], others], axis=1)
    # shuffle columns per row so that in-cluster candidates are not simply the first columns
    order = np.argsort(rng.random((b, n)), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    history = np.concatenate([own[:, 4:], np.full((b, 2), -1)], axis=1)
    return users.astype(np.int64), cluster, history.astype(np.int64), candidates.astype(np.int64)


# ---------------------------------------------------------------------------------------- random
def test_random_has_exact_uniform_propensities():
    policy = RandomPolicy(seed=0)
    problem = ToyRankingProblem(n_candidates=6)
    ctx = problem.sample_context(np.random.default_rng(0), 1)
    rng = np.random.default_rng(1)
    counts = np.zeros((3, 6))
    draws = 6000
    for _ in range(10):  # 10 batched calls of 600 identical requests
        batch = ctx.take(np.zeros(600, dtype=np.int64))
        ranking = policy.rank(batch, 3, rng)
        np.testing.assert_allclose(ranking.propensity, 1 / 6)
        np.testing.assert_allclose(ranking.slate_propensity, 1 / perm(6, 3))
        for slot in range(3):
            counts[slot] += np.bincount(ranking.slots[:, slot], minlength=6)
    freq = counts / draws
    assert np.abs(freq - 1 / 6).max() < 4 * np.sqrt((1 / 6) * (5 / 6) / draws)


def test_random_regret_is_that_of_a_uniform_ranking():
    problem = ToyRankingProblem()
    trace = run_online(RandomPolicy(), problem, 60, 16, 5, seed=2)
    ctx = problem.sample_context(np.random.default_rng(9), 400)
    alpha = problem.attractiveness(ctx.user_ids, ctx.candidates)
    exam = problem.examination(5)
    expected = (np.sort(alpha, axis=1)[:, ::-1][:, :5] @ exam - alpha.mean(axis=1) * exam.sum()).mean()
    assert trace.regret.mean() == pytest.approx(expected, rel=0.1)


# ---------------------------------------------------------------------------------------- popularity
def fixed_order_logs(alpha: np.ndarray, exam: np.ndarray, n_requests: int, seed: int) -> LoggedData:
    """Every request shows items 0..K-1 in this order; item j is clicked with prob exam[j] * alpha[j]."""
    k = len(alpha)
    rng = np.random.default_rng(seed)
    clicked = rng.random((n_requests, k)) < exam[None, :] * alpha[None, :]
    request = np.repeat(np.arange(n_requests), k)
    inter = pd.DataFrame({
        S.REQUEST_ID: request.astype(str), S.TIMESTAMP: pd.Timestamp("2024-01-01") + pd.to_timedelta(request, "s"),
        S.POSITION: np.tile(np.arange(1, k + 1), n_requests), S.ITEM_ID: np.tile([f"i{j}" for j in range(k)],
                                                                                    n_requests),
        S.CLICKED: clicked.ravel().astype(int),
    })
    items = pd.DataFrame({S.ITEM_ID: [f"i{j}" for j in range(k + 1)], S.TEXT: [""] * (k + 1)})
    return LoggedData.from_frames(items, inter)


ALPHA = np.array([0.2, 0.3, 0.4, 0.5, 0.6])  # the best items are always shown at the bottom
EXAM = 1.0 / np.arange(1, 6)


def test_popularity_with_examination_undoes_position_bias():
    logs = fixed_order_logs(ALPHA, EXAM, 4000, seed=0)
    index = logs.item_index()
    aware = PopularityPolicy(examination=EXAM.tolist(), prior_strength=0.0).fit(logs, index)
    unaware = PopularityPolicy(prior_strength=0.0).fit(logs, index)
    assert aware.item_scores is not None and unaware.item_scores is not None
    np.testing.assert_allclose(aware.item_scores[:5], ALPHA, atol=0.04)  # the examined click rate itself
    assert np.all(np.diff(aware.item_scores[:5]) > 0)  # true order
    assert np.argmax(unaware.item_scores[:5]) == 0  # the raw CTR puts the worst item first


def test_popularity_unseen_items_fall_back_to_the_prior():
    logs = fixed_order_logs(ALPHA, EXAM, 500, seed=1)
    policy = PopularityPolicy(prior_strength=10.0).fit(logs, logs.item_index())
    assert policy.item_scores is not None
    global_rate = logs.interactions[S.CLICKED].mean()
    assert policy.item_scores[5] == pytest.approx(global_rate)  # item 5 never shown
    counts = PopularityPolicy(metric="count").fit(logs, logs.item_index()).item_scores
    assert counts is not None and counts[5] == 0 and counts.sum() == logs.interactions[S.CLICKED].sum()


def test_popularity_learns_the_best_non_personalised_ranking():
    problem = ToyRankingProblem()
    logs, item_index, _, _ = problem.make_logs(np.random.default_rng(0), 3000, 5)
    policy = PopularityPolicy(examination=problem.examination(5).tolist()).fit(logs, item_index)
    users = np.repeat(np.arange(problem.n_users), problem.n_items)
    items = np.tile(np.arange(problem.n_items), problem.n_users)
    mean_alpha = problem.attractiveness(users, items[:, None])[:, 0].reshape(problem.n_users, -1).mean(axis=0)
    assert policy.item_scores is not None
    assert np.corrcoef(policy.item_scores, mean_alpha)[0, 1] > 0.8
    random_regret = run_online(RandomPolicy(), problem, 40, 16, 5, seed=3).regret.mean()
    assert run_online(policy, problem, 40, 16, 5, seed=3).regret.mean() < 0.8 * random_regret


def test_popularity_ignores_logged_items_outside_the_catalog():
    logs = fixed_order_logs(ALPHA, EXAM, 50, seed=2)
    with pytest.warns(UserWarning, match="outside `item_index`"):
        policy = PopularityPolicy().fit(logs, pd.Index(["i0", "i1", "i9"]))
    assert policy.item_scores is not None and len(policy.item_scores) == 3


# ---------------------------------------------------------------------------------------- cosine
def test_cosine_ranks_by_angle_and_uses_the_query_in_search():
    n = 6
    angles = np.array([0.5, 0.1, 1.2, 0.0, 0.8, 0.3])
    vecs = np.stack([np.cos(angles), np.sin(angles), np.zeros(n), np.zeros(n)], axis=1).astype(np.float32)
    user = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    query = np.array([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    ctx = RankingContext(user, query, np.array([False, True, False]), np.tile(np.arange(n), (3, 1)),
                         np.tile(vecs, (3, 1, 1)), np.full(3, -1), np.full((3, 1), -1), np.zeros((3, n, 0), np.float32))
    ranking = CosinePolicy().rank(ctx, n, np.random.default_rng(0))
    assert ranking.slots[0].tolist() == np.argsort(angles).tolist()  # closest to the user first
    assert ranking.slots[1].tolist() == np.argsort(-angles).tolist()  # cold user searching: the query decides
    np.testing.assert_array_equal(CosinePolicy().score(ctx)[2], 0.0)  # cold user browsing: no information
    np.testing.assert_allclose(CosinePolicy().score(ctx)[0], np.cos(angles), atol=1e-6)


def test_cosine_is_optimal_when_clicks_follow_the_cosine():
    problem = ToyRankingProblem(quality=0.0, dim=8)
    object.__setattr__(problem, "weights", np.ones(problem.dim))  # alpha = sigmoid(b + a u.v): monotone in u.v
    trace = run_online(CosinePolicy(), problem, 20, 16, 5, seed=0)
    assert trace.regret.max() < 1e-12


# ---------------------------------------------------------------------------------------- item-kNN
def test_item_knn_similarity_matches_the_formula():
    r = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=float)  # users x items, binary
    item_ids = pd.Index(["a", "b", "c"])
    rows, cols = np.nonzero(r)
    inter = pd.DataFrame({S.REQUEST_ID: [f"r{j}" for j in range(len(rows))], S.USER_ID: [f"u{u}" for u in rows],
                          S.TIMESTAMP: pd.Timestamp("2024-01-01"), S.POSITION: 1, S.ITEM_ID: item_ids[cols],
                          S.CLICKED: 1})
    logs = LoggedData.from_frames(pd.DataFrame({S.ITEM_ID: item_ids, S.TEXT: ""}), inter)
    policy = ItemKNNPolicy(shrinkage=1.0, n_neighbors=1).fit(logs, item_ids)
    co, norm = r.T @ r, np.sqrt((r * r).sum(axis=0))
    full = co / (np.outer(norm, norm) + 1.0)
    np.fill_diagonal(full, 0.0)
    expected = np.where(full == full.max(axis=1, keepdims=True), full, 0.0)  # one neighbour per row
    assert policy.similarity is not None
    np.testing.assert_allclose(policy.similarity.toarray(), expected)


def test_item_knn_finds_the_users_cluster(clusters):
    logs, item_index, _ = clusters
    policy = ItemKNNPolicy(cosine_weight=0.0, n_neighbors=20).fit(logs, item_index)
    users, cluster, history, candidates = _cluster_batch(0)
    vecs = _unit(np.random.default_rng(0).standard_normal((N_ITEMS, 8)))  # uninformative embeddings
    ctx = cluster_context(users, history, candidates, vecs)
    ranking = policy.rank(ctx, 4, np.random.default_rng(0))
    assert in_cluster_share(ranking.slots, candidates, cluster) == 1.0  # the known optimum


def test_item_knn_cold_user_falls_back_to_cosine(clusters):
    logs, item_index, _ = clusters
    policy = ItemKNNPolicy(cosine_weight=0.1).fit(logs, item_index)
    users, _, history, candidates = _cluster_batch(1)
    vecs = _unit(np.random.default_rng(1).standard_normal((N_ITEMS, 8)))
    profile = _unit(np.random.default_rng(2).standard_normal((len(users), 8)))
    ctx = cluster_context(np.full(len(users), -1), np.full_like(history, -1), candidates, vecs, profile)
    cos = CosinePolicy().score(ctx)
    np.testing.assert_allclose(policy.score(ctx), 0.1 * cos, atol=1e-12)


# ---------------------------------------------------------------------------------------- ALS
def test_cg_half_step_matches_the_exact_least_squares_solution():
    rng = np.random.default_rng(0)
    n_rows, n_cols, f, reg = 25, 15, 4, 0.5
    strength = sp.random(n_rows, n_cols, density=0.25, random_state=1, format="csr") * 3
    conf = sp.csr_array(strength)
    conf.data = 2.0 * conf.data
    y, x0 = rng.standard_normal((n_cols, f)), rng.standard_normal((n_rows, f))
    exact = np.zeros((n_rows, f))
    dense = conf.toarray()
    for u in range(n_rows):  # reference: one dense solve per row
        c, p = 1.0 + dense[u], (dense[u] > 0).astype(float)
        exact[u] = np.linalg.solve(y.T @ (c[:, None] * y) + reg * np.eye(f), y.T @ (c * p))
    np.testing.assert_allclose(_cg_half_step(conf, y, x0, reg, cg_steps=f), exact, atol=1e-8)
    few = _cg_half_step(conf, y, x0, reg, cg_steps=2)
    assert np.abs(few - exact).max() < np.abs(x0 - exact).max()


def test_als_factors_fit_the_preferences():
    logs, item_index, _ = clustered_logs(seed=1)
    from agents.cf import interaction_matrix

    matrix, users = interaction_matrix(logs, item_index, S.USER_ID, (1.0, 2.0, 4.0), "test")
    x, y = als_factors(matrix, 3, 0.1, 1.0, 10, 3, np.random.default_rng(0))
    pred = x @ y.T
    user_cluster = np.array([int(u[1:]) for u in users]) % N_CLUSTERS
    same = (np.arange(N_ITEMS)[None, :] // ITEMS_PER) == user_cluster[:, None]
    unobserved_other = ~same & (matrix.toarray() == 0)
    assert pred[:, :COLD_ITEM][same[:, :COLD_ITEM]].mean() > 0.8 and pred[unobserved_other].mean() < 0.3
    np.testing.assert_array_equal(y[COLD_ITEM], 0.0)  # never logged: zero factor

    def loss(x: np.ndarray, y: np.ndarray) -> float:
        dense = matrix.toarray()
        return float(((1 + dense) * ((dense > 0) - x @ y.T) ** 2).sum() + 0.1 * ((x**2).sum() + (y**2).sum()))

    x1, y1 = als_factors(matrix, 3, 0.1, 1.0, 1, 3, np.random.default_rng(0))
    assert loss(x, y) < loss(x1, y1)  # more sweeps, lower objective


def test_als_finds_the_users_cluster_known_and_folded_in(clusters):
    logs, item_index, user_index = clusters
    policy = ALSPolicy(factors=3, alpha=1.0, cosine_weight=0.0).fit(logs, item_index, user_index)
    users, cluster, history, candidates = _cluster_batch(2)
    vecs = _unit(np.random.default_rng(0).standard_normal((N_ITEMS, 8)))
    known = cluster_context(users, np.full_like(history, -1), candidates, vecs)
    assert in_cluster_share(policy.rank(known, 4, np.random.default_rng(0)).slots, candidates, cluster) == 1.0
    unknown = cluster_context(np.full(len(users), -1), history, candidates, vecs)  # fold-in from history
    assert in_cluster_share(policy.rank(unknown, 4, np.random.default_rng(0)).slots, candidates, cluster) == 1.0


def test_als_fold_in_is_the_exact_new_row_solution(clusters):
    logs, item_index, user_index = clusters
    policy = ALSPolicy(factors=3).fit(logs, item_index, user_index)
    _, _, history, candidates = _cluster_batch(3, b=3)
    ctx = cluster_context(np.full(3, -1), history, candidates, _unit(np.ones((N_ITEMS, 2))))
    y, lam, a = policy.item_factors, policy.regularization, policy.alpha
    assert y is not None
    for b in range(3):
        yh = y[history[b][history[b] >= 0]]
        expected = np.linalg.solve(y.T @ y + lam * np.eye(3) + a * yh.T @ yh, (1 + a) * yh.sum(axis=0))
        np.testing.assert_allclose(policy.user_vectors(ctx)[b], expected, rtol=1e-10)


def test_als_cold_users_and_items_fall_back_to_cosine(clusters):
    logs, item_index, user_index = clusters
    policy = ALSPolicy(factors=3, cosine_weight=0.1).fit(logs, item_index, user_index)
    users, _, history, candidates = _cluster_batch(4)
    vecs = _unit(np.random.default_rng(3).standard_normal((N_ITEMS, 8)))
    profile = _unit(np.random.default_rng(4).standard_normal((len(users), 8)))
    cold_users = cluster_context(np.full(len(users), -1), np.full_like(history, -1), candidates, vecs, profile)
    np.testing.assert_allclose(policy.score(cold_users), 0.1 * CosinePolicy().score(cold_users), atol=1e-12)
    candidates[:, 0] = COLD_ITEM  # a never-logged item in a warm user's request: cosine only
    warm = cluster_context(users, np.full_like(history, -1), candidates, vecs, profile)
    np.testing.assert_allclose(policy.cf_scores(warm)[:, 0], 0.0)
    np.testing.assert_allclose(policy.score(warm)[:, 0], 0.1 * CosinePolicy().score(warm)[:, 0], atol=1e-12)


def test_als_user_index_order_is_respected(clusters):
    logs, item_index, user_index = clusters
    reversed_index = pd.Index(user_index[::-1].tolist() + ["u_new"])
    a = ALSPolicy(factors=3).fit(logs, item_index, user_index)
    b = ALSPolicy(factors=3).fit(logs, item_index, reversed_index)
    assert a.user_factors is not None and b.user_factors is not None
    np.testing.assert_allclose(b.user_factors[: len(user_index)], a.user_factors[::-1])
    np.testing.assert_array_equal(b.user_factors[-1], 0.0)  # in the index, not in the logs: cold
