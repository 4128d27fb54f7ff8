r"""Randomised rankings with the probabilities OPE needs: uniform, epsilon-mixed greedy, Monte Carlo estimates.

Every function here is vectorised over the batch; shapes use ``B`` requests, ``N`` candidates and ``K``
slots.

Exact propensities (:func:`shopgym.numeric.epsilon_mixture_propensities`; the same formulas as the synthetic
world's logging policy, ``envs/synthetic/logging_policy.py``): a uniformly random ranking of ``K`` of ``N``
candidates puts any given candidate at any given slot with probability :math:`1/N` and shows any given ranking with
probability :math:`(N-K)!/N!`. Mixing it with a greedy ranking :math:`\sigma^g` with weight
:math:`\epsilon` gives

.. math::
    P(\text{item } n \text{ at slot } k) = (1-\epsilon)\,[\sigma^g_k = n] + \epsilon / N,
    \qquad
    P(\sigma) = (1-\epsilon)\,[\sigma = \sigma^g] + \epsilon \frac{(N-K)!}{N!}.
"""

from __future__ import annotations

import numpy as np

from agents.base import Ranking, deterministic_topk
from shopgym.numeric import epsilon_mixture_propensities, uniform_ranking_probability, uniform_rankings


def uniform_ranking(rng: np.random.Generator, b: int, n: int, k: int) -> Ranking:
    """Uniformly random rankings with their exact propensities (1/N per slot, (N-K)!/N! per slate)."""
    slate = uniform_ranking_probability(n, k)
    return Ranking(uniform_rankings(rng, b, n, k), np.full((b, k), 1.0 / n), np.full(b, slate))


def epsilon_greedy_ranking(scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> Ranking:
    """Per request, the top-``k`` by ``scores`` with probability 1 - epsilon, else a uniformly random ranking.

    Args:
        scores: (B, N) float64 finite scores (ties: lower column first).
        k: slots per request, in [1, N].
        epsilon: exploration probability, in [0, 1].
        rng: draws which requests explore and their random rankings.

    Returns:
        The shown rankings with exact per-slot and slate propensities (see the module docstring).
    """
    greedy = deterministic_topk(scores, k).slots
    b, n = scores.shape
    if epsilon <= 0.0:
        return Ranking(greedy, np.ones((b, k)), np.ones(b))
    explore = np.asarray(rng.random(b) < epsilon)
    random_slots = uniform_rankings(rng, b, n, k)
    slots = np.where(explore[:, None], random_slots, greedy)
    propensity, prefix = epsilon_mixture_propensities(slots, greedy, epsilon, n)
    return Ranking(slots, propensity, prefix[:, -1])


def topk_of_samples(sample_scores: np.ndarray, k: int) -> np.ndarray:
    """(B, S, k) top-``k`` columns of each of ``S`` sampled score rows (B, S, N), best first."""
    b, s, n = sample_scores.shape
    return deterministic_topk(sample_scores.reshape(b * s, n), k).slots.reshape(b, s, k)


def monte_carlo_propensity(shown: np.ndarray, sampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Estimate per-slot and slate propensities of ``shown`` from ``S`` independent rankings of the same policy.

    Note:
        The shown ranking was itself one draw of the policy, so it is counted as a sample too: with
        :math:`c` the number of the ``S`` extra draws that agree,

        .. math:: \hat p = \frac{1 + c}{S + 1},

        a consistent estimate that is never 0 (an importance weight stays finite). Slate estimates
        are crude unless the policy is nearly deterministic: they cannot go below :math:`1/(S+1)`.

    Args:
        shown: (B, K) int64 shown column indices.
        sampled: (B, S, K) int64 rankings from independent draws of the policy.

    Returns:
        propensity: (B, K) float64, slate_propensity: (B,) float64.
    """
    s = sampled.shape[1]
    agree = sampled == shown[:, None, :]
    propensity = (1.0 + agree.sum(axis=1)) / (s + 1.0)
    slate = (1.0 + agree.all(axis=2).sum(axis=1)) / (s + 1.0)
    return propensity.astype(np.float64), slate.astype(np.float64)
