"""Tests of shopgym.numeric: top-k, Plackett-Luce, Newton logistic fit, principal directions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import expit, softmax

from shopgym.errors import ConfigError
from shopgym.numeric import (
    epsilon_mixture_propensities,
    logistic_newton,
    plackett_luce_log_prob,
    plackett_luce_marginals,
    plackett_luce_sample,
    poisson_binomial_head,
    principal_directions,
    topk,
    uniform_ranking_probability,
    uniform_rankings,
)


# ---------------------------------------------------------------------------------------------------- topk
def test_topk_worked_example() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -1.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(topk(scores, 3), [[1, 3, 2], [0, 1, 2]])
    assert topk(scores, 1).dtype == np.int64


@pytest.mark.parametrize("n_values", [2, 3, 1000])  # heavy ties, some ties, almost none
def test_topk_is_a_stable_descending_sort(n_values: int) -> None:
    rng = np.random.default_rng(n_values)
    for _ in range(200):
        n = int(rng.integers(1, 200))
        k = int(rng.integers(1, n + 1))
        scores = rng.integers(0, n_values, size=(4, n)).astype(np.float64)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(topk(scores, k), expected)


def test_topk_keeps_leading_axes_and_handles_infinities() -> None:
    scores = np.random.default_rng(0).normal(size=(2, 3, 50))
    scores[0, 0, 7] = np.inf
    scores[1, 2, :] = -np.inf
    out = topk(scores, 4)
    assert out.shape == (2, 3, 4)
    assert out[0, 0, 0] == 7
    np.testing.assert_array_equal(out[1, 2], [0, 1, 2, 3])
    np.testing.assert_array_equal(out, np.argsort(-scores, axis=-1, kind="stable")[..., :4])


@pytest.mark.parametrize("k", [0, 6, -1])
def test_topk_rejects_k_out_of_range(k: int) -> None:
    with pytest.raises(ConfigError, match=r"`k` must be in \[1, 5\].*got"):
        topk(np.zeros((2, 5)), k)


# ---------------------------------------------------------------------------------------------------- Plackett-Luce
def test_plackett_luce_probabilities_sum_to_one_and_prefixes_agree() -> None:
    logits = np.array([[0.3, -1.0, 2.0, 0.0], [5.0, 5.0, -3.0, 1.0]])
    perms = np.array(list(itertools.permutations(range(4), 3)))
    total = np.zeros(2)
    for perm in perms:
        slots = np.tile(perm, (2, 1))
        logp = plackett_luce_log_prob(logits, slots)
        prefix = plackett_luce_log_prob(logits, slots, prefix=True)
        np.testing.assert_allclose(prefix[:, -1], logp)
        np.testing.assert_allclose(np.exp(prefix[:, 0]), softmax(logits, axis=1)[:, perm[0]])
        assert (np.diff(prefix, axis=1) <= 0).all()  # a longer prefix is never more likely
        total += np.exp(logp)
    np.testing.assert_allclose(total, 1.0)


def test_plackett_luce_worked_example() -> None:
    # weights e^s = (1, 2, 3): P(2 then 0) = 3/6 * 1/3
    logits = np.log([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(np.exp(plackett_luce_log_prob(logits, np.array([[2, 0]]))), [1 / 6])


def test_plackett_luce_log_prob_stays_finite_for_extreme_logits() -> None:
    logits = np.array([[0.0, -2000.0, -2001.0]])
    logp = plackett_luce_log_prob(logits, np.array([[0, 2, 1]]))
    # slot 1: log 1 (others negligible); slot 2: -2001 - log(e^-2000 + e^-2001); slot 3: log 1
    np.testing.assert_allclose(logp, [-1.0 - np.log1p(np.exp(-1.0))], rtol=1e-12)


def test_plackett_luce_sample_matches_its_law() -> None:
    logits = np.log(np.array([[1.0, 2.0, 3.0, 0.5]]))
    rng = np.random.default_rng(0)
    n = 40_000
    draws = plackett_luce_sample(rng, np.repeat(logits, n, axis=0), 2)
    assert draws.shape == (n, 2) and draws.dtype == np.int64
    for perm in itertools.permutations(range(4), 2):
        p = float(np.exp(plackett_luce_log_prob(logits, np.array([perm])))[0])
        freq = float((draws == perm).all(axis=1).mean())
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), (perm, freq, p)


def test_plackett_luce_sample_is_gumbel_top_k_of_one_draw() -> None:
    logits = np.random.default_rng(1).normal(size=(3, 10))
    expected_keys = logits + np.random.default_rng(7).gumbel(size=logits.shape)
    np.testing.assert_array_equal(plackett_luce_sample(np.random.default_rng(7), logits, 4),
                                  np.argsort(-expected_keys, axis=1, kind="stable")[:, :4])
    many = plackett_luce_sample(np.random.default_rng(7), logits[:, None, :], 4, size=(3, 5, 10))
    assert many.shape == (3, 5, 4)
    assert all(len(set(row)) == 4 for row in many.reshape(-1, 4))


def test_uniform_rankings_are_distinct_and_uniform() -> None:
    rng = np.random.default_rng(3)
    draws = uniform_rankings(rng, 30_000, 4, 2)
    assert draws.shape == (30_000, 2) and draws.dtype == np.int64
    assert (draws[:, 0] != draws[:, 1]).all()
    p = uniform_ranking_probability(4, 2)
    assert p == pytest.approx(1 / 12)
    for perm in itertools.permutations(range(4), 2):
        freq = float((draws == perm).all(axis=1).mean())
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(draws))
    assert uniform_ranking_probability(5, 5) == pytest.approx(1 / 120)
    assert 0.0 < uniform_ranking_probability(10_000, 10) < 1e-39  # (n-k)!/n! without overflow


# ---------------------------------------------------------------------------------------------------- Newton logistic
def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.hstack([np.ones((500, 1)), rng.normal(size=(500, 3))])
    y = (rng.random(500) < expit(x @ np.array([-0.5, 1.0, -2.0, 0.0]))).astype(np.float64)
    return x, y


@pytest.mark.parametrize("penalty", [1e-3, 1.0, np.array([0.0, 2.0, 2.0, 2.0])])
def test_logistic_newton_zeroes_the_penalised_gradient(penalty: float | np.ndarray) -> None:
    x, y = _data()
    beta = logistic_newton(x, y, penalty)
    grad = x.T @ (expit(x @ beta) - y) + np.broadcast_to(penalty, beta.shape) * beta
    np.testing.assert_allclose(grad, 0.0, atol=1e-8)


def test_logistic_newton_intercept_only_is_the_logit_of_the_mean() -> None:
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    beta = logistic_newton(np.ones((5, 1)), y, 0.0)
    np.testing.assert_allclose(beta, [np.log(0.4 / 0.6)], rtol=1e-10)


def test_logistic_newton_init_and_penalty_shrink() -> None:
    x, y = _data(1)
    loose = logistic_newton(x, y, 1e-6)
    np.testing.assert_allclose(logistic_newton(x, y, 1e-6, init=loose), loose, atol=1e-10)
    tight = logistic_newton(x, y, 1e3)
    assert np.linalg.norm(tight) < np.linalg.norm(loose)
    assert logistic_newton(x, y, 1e-6, max_iter=1).shape == (4,)


# ---------------------------------------------------------------------------------------------------- PCA
def test_principal_directions_recover_a_planted_direction() -> None:
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    x = 10.0 + rng.normal(size=(400, 1)) * 5.0 * direction + rng.normal(scale=0.1, size=(400, 3))
    comps = principal_directions(x, 2)
    assert comps.shape == (2, 3) and comps.dtype == np.float64
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-12)
    assert abs(comps[0] @ direction) > 0.999
    np.testing.assert_allclose(np.abs(principal_directions(x - 10.0, 2)), np.abs(comps), atol=1e-9)  # no shift
    np.testing.assert_allclose(principal_directions(x - x.mean(axis=0), 2, centre=np.zeros(3)), comps, atol=1e-12)


def test_principal_directions_sign_and_rank_cap() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    comps = principal_directions(x, 10, fix_sign=True)
    assert comps.shape == (4, 6)
    largest = comps[np.arange(4), np.abs(comps).argmax(axis=1)]
    assert (largest > 0).all()
    np.testing.assert_allclose(np.abs(comps), np.abs(principal_directions(x, 10)))
    assert principal_directions(x, 0).shape == (0, 6)
    with pytest.raises(ConfigError, match="`rank` must be >= 0, got -1"):
        principal_directions(x, -1)


# ---------------------------------------------------------------- exact Plackett-Luce per-slot propensities
def _enumerated_marginals(logits: np.ndarray, k: int) -> np.ndarray:
    """(N, K) P(item at slot) by summing the probability of every ranking of k of N (small N only)."""
    n = logits.shape[0]
    rankings = np.array(list(itertools.permutations(range(n), k)))
    probs = np.exp(plackett_luce_log_prob(np.broadcast_to(logits, (len(rankings), n)), rankings))
    out = np.zeros((n, k))
    np.add.at(out, (rankings, np.broadcast_to(np.arange(k), rankings.shape)), probs[:, None])
    return out


@pytest.mark.parametrize("scale", [0.3, 2.0, 8.0])
def test_plackett_luce_marginals_match_enumeration(scale: float) -> None:
    rng = np.random.default_rng(int(scale * 10))
    n, k = 7, 3
    logits = rng.normal(size=n) * scale
    exact = _enumerated_marginals(logits, k)
    assert np.allclose(exact.sum(axis=0), 1.0)
    rankings = np.array([rng.permutation(n)[:k] for _ in range(40)])
    got = plackett_luce_marginals(np.broadcast_to(logits, (40, n)), rankings)
    expected = exact[rankings, np.arange(k)]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)


def test_plackett_luce_marginals_match_monte_carlo_frequencies() -> None:
    rng = np.random.default_rng(3)
    n, k, draws = 50, 5, 200_000
    logits = rng.normal(size=(1, n)) * 1.5
    shown = plackett_luce_sample(rng, logits, k)
    exact = plackett_luce_marginals(logits, shown)[0]
    samples = plackett_luce_sample(rng, logits, k, size=(draws, n))
    freq = (samples == shown).mean(axis=0)
    se = np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(freq - exact) < 5 * se), (freq, exact)


def test_plackett_luce_marginals_edge_cases() -> None:
    # K = N (every item asked about), K = 1 (the softmax), one dominant item
    logits = np.array([[0.0, 1.0, -1.0]])
    full = plackett_luce_marginals(logits, np.array([[1, 0, 2]]))
    exact = _enumerated_marginals(logits[0], 3)
    np.testing.assert_allclose(full[0], exact[[1, 0, 2], [0, 1, 2]], rtol=1e-9)
    soft = plackett_luce_marginals(logits, np.array([[2]]))
    np.testing.assert_allclose(soft[0, 0], np.exp(-1.0) / np.exp(logits).sum(), rtol=1e-9)
    peaked = plackett_luce_marginals(np.array([[50.0, 0.0, 0.0, 0.0]]), np.array([[0, 3]]))
    np.testing.assert_allclose(peaked[0], [1.0, 1 / 3], rtol=1e-9)


def test_poisson_binomial_head_matches_convolution() -> None:
    rng = np.random.default_rng(1)
    q = rng.random((13, 4))
    head = poisson_binomial_head(q, 5)
    for col in range(4):
        dist = np.array([1.0])
        for p in q[:, col]:
            dist = np.convolve(dist, [1 - p, p])
        np.testing.assert_allclose(head[:, col], dist[:5], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(poisson_binomial_head(np.zeros((0, 2)), 3), [[1, 1], [0, 0], [0, 0]])


def test_epsilon_mixture_propensities_match_frequencies() -> None:
    rng = np.random.default_rng(2)
    n, k, eps, draws = 6, 2, 0.3, 100_000
    greedy = np.array([[4, 1]])
    explore = rng.random(draws) < eps
    slots = np.where(explore[:, None], uniform_rankings(rng, draws, n, k), greedy)
    prop, prefix = epsilon_mixture_propensities(slots[:3], np.repeat(greedy, 3, axis=0), eps, n)
    slate = prefix[:, -1]
    for row in range(3):
        same_slot = (slots == slots[row]).mean(axis=0)
        np.testing.assert_allclose(prop[row], same_slot, atol=5e-3)
        np.testing.assert_allclose(slate[row], (slots == slots[row]).all(axis=1).mean(), atol=5e-3)


def test_epsilon_mixture_prefix_propensities_match_frequencies() -> None:
    rng = np.random.default_rng(4)
    n, k, eps, draws = 5, 3, 0.5, 200_000
    greedy = np.array([[2, 0, 4]])
    explore = rng.random(draws) < eps
    slots = np.where(explore[:, None], uniform_rankings(rng, draws, n, k), greedy)
    for row in (0, int(np.flatnonzero(explore)[0])):
        prefix = epsilon_mixture_propensities(slots[row:row + 1], greedy, eps, n)[1][0]
        freq = [(slots[:, :j + 1] == slots[row, :j + 1]).all(axis=1).mean() for j in range(k)]
        np.testing.assert_allclose(prefix, freq, atol=4e-3)
        own_slate = np.where((slots[row] == greedy[0]).all(), 1 - eps, 0) + eps * uniform_ranking_probability(n, k)
        assert prefix[-1] == pytest.approx(own_slate)
