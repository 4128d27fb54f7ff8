r"""Helpers that turn a policy into the probabilities the estimators need.

Bandit estimators take ``action_dist`` (n_rounds, n_actions[, n_positions]); slate estimators take a
:class:`~ope.data.SlateTarget` holding the evaluation policy's probabilities of the *logged* slates.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from ope.checks import as_array, check_finite, check_probabilities, check_scalar, check_shape, check_sums_to_one
from ope.data import BanditLog, SlateLog, SlateTarget
from ope.errors import OPEInputError
from ope.estimators import prepare_bandit_inputs
from shopgym.numeric import plackett_luce_log_prob, plackett_luce_sample

__all__ = [
    "epsilon_greedy_action_dist",
    "plackett_luce_prefix_prob",
    "sample_plackett_luce",
    "slate_target_from_position_dist",
    "slate_target_plackett_luce",
    "softmax_action_dist",
    "target_prob_of_logged",
    "uniform_action_dist",
]


def uniform_action_dist(n_rounds: int, n_actions: int, n_positions: int | None = None) -> np.ndarray:
    """The uniform-random policy: (n_rounds, n_actions[, n_positions]) filled with 1 / n_actions."""
    check_scalar(n_rounds, "n_rounds", int, min_val=1)
    check_scalar(n_actions, "n_actions", int, min_val=1)
    shape: tuple[int, ...] = (n_rounds, n_actions) if not n_positions else (n_rounds, n_actions, n_positions)
    return np.full(shape, 1.0 / n_actions)


def softmax_action_dist(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    r"""Softmax policy over actions: :math:`\pi(a|x) \propto \exp(s(x, a) / T)`.

    Args:
        scores: (n_rounds, n_actions[, n_positions]) finite scores.
        temperature: :math:`T`, > 0.

    Returns:
        Probabilities of the same shape, summing to 1 over axis 1.
    """
    s = as_array(scores, "scores", ndim=(2, 3))
    check_finite(s, "scores")
    check_scalar(temperature, "temperature", float, min_val=0.0, min_inclusive=False)
    return np.asarray(softmax(s / float(temperature), axis=1))


def epsilon_greedy_action_dist(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """Epsilon-greedy policy: the top-scored action (lowest index among ties) w.p. 1 - eps, else uniform.

    Args:
        scores: (n_rounds, n_actions[, n_positions]) finite scores.
        epsilon: exploration rate in [0, 1].

    Returns:
        Probabilities of the same shape, summing to 1 over axis 1.
    """
    s = as_array(scores, "scores", ndim=(2, 3))
    check_finite(s, "scores")
    check_scalar(epsilon, "epsilon", float, min_val=0.0, max_val=1.0)
    n_actions = s.shape[1]
    best = np.argmax(s, axis=1)  # (n,) or (n, K)
    dist = np.full(s.shape, float(epsilon) / n_actions)
    onehot = np.moveaxis(np.eye(n_actions, dtype=bool)[best], -1, 1)
    dist[onehot] += 1.0 - float(epsilon)
    return dist


def target_prob_of_logged(log: BanditLog, action_dist: np.ndarray) -> np.ndarray:
    """(n_rounds,) probability ``action_dist`` gives to each logged action (at its logged position)."""
    prob = prepare_bandit_inputs(log, action_dist=action_dist).target_prob
    assert prob is not None
    return prob


def slate_target_from_position_dist(log: SlateLog, position_dist: np.ndarray) -> SlateTarget:
    r"""Slate probabilities of a policy that fills each slot independently from its own distribution.

    Note:
        .. math:: \pi(a\ \mathrm{at}\ k|x) = p_k(a|x),\quad
            \pi(a_{1..k}|x) = \prod_{j \le k} p_j(a_j|x),\quad \pi(s|x) = \prod_{j \le K} p_j(a_j|x)

        Such a policy may repeat an item in two slots; use it for per-slot policies, or as the
        position-based approximation of a ranking policy.

    Args:
        log: the logged slates.
        position_dist: (n_rounds, n_actions, slate_size) per-slot probabilities, summing to 1 over actions.

    Returns:
        The :class:`~ope.data.SlateTarget` with all three kinds of probabilities.
    """
    dist = as_array(position_dist, "position_dist", ndim=3)
    n, k, a = log.n_rounds, log.slate_size, log.n_actions
    check_shape(dist, "position_dist", (n, a, k), f"(n_rounds={n}, n_actions={a}, slate_size={k})")
    check_probabilities(dist, "position_dist", meaning="per-slot action probabilities")
    check_sums_to_one(dist, "position_dist", axis=1)
    marginal = dist[np.arange(n)[:, None], log.slate, np.arange(k)[None, :]]
    cascade = np.cumprod(marginal, axis=1)
    return SlateTarget(slate_prob=cascade[:, -1].copy(), marginal_prob=marginal, cascade_prob=cascade)


def plackett_luce_prefix_prob(scores: np.ndarray, slate: np.ndarray) -> np.ndarray:
    """Probability of each prefix of ``slate`` under Plackett-Luce sampling without replacement.

    Args:
        scores: (n, n_actions) finite log-weights (scores divided by the temperature).
        slate: (n, K) int64 distinct actions per row.

    Returns:
        (n, K) float64: entry k is the probability that the first k+1 slots are ``slate[:, :k+1]``.
    """
    return np.exp(plackett_luce_log_prob(scores, slate, prefix=True))


def sample_plackett_luce(
    scores: np.ndarray, slate_size: int, rng: np.random.Generator, temperature: float = 1.0
) -> np.ndarray:
    r"""Sample rankings without replacement, :math:`P(a\ \mathrm{next}) \propto \exp(s_a / T)` (Gumbel top-k).

    Args:
        scores: (n_rounds, n_actions) finite scores.
        slate_size: K, in [1, n_actions].
        rng: the random generator.
        temperature: :math:`T`, > 0.

    Returns:
        (n_rounds, slate_size) int64 sampled slates.
    """
    s = as_array(scores, "scores", ndim=2)
    check_finite(s, "scores")
    check_scalar(slate_size, "slate_size", int, min_val=1, max_val=s.shape[1])
    check_scalar(temperature, "temperature", float, min_val=0.0, min_inclusive=False)
    return plackett_luce_sample(rng, s / float(temperature), slate_size)


def slate_target_plackett_luce(
    log: SlateLog,
    scores: np.ndarray,
    *,
    temperature: float = 1.0,
    n_marginal_samples: int = 0,
    seed: int | None = 0,
) -> SlateTarget:
    r"""Slate probabilities of a Plackett-Luce ranking policy (softmax sampling without replacement).

    Note:
        .. math:: \pi(a_{1..k}|x) = \prod_{j \le k}
            \frac{\exp(s_{a_j}/T)}{\sum_{a} \exp(s_a/T) - \sum_{l < j} \exp(s_{a_l}/T)}

        The cascade and slate probabilities are exact. Position-wise marginals have no closed form;
        with ``n_marginal_samples > 0`` they are estimated by sampling that many rankings per round
        (a Monte Carlo estimate, raised where needed to the exact prefix probability, which is a
        lower bound of the marginal).

    Args:
        log: the logged slates.
        scores: (n_rounds, n_actions) finite scores.
        temperature: :math:`T`, > 0.
        n_marginal_samples: rankings sampled per round for the marginals (0: no marginals), >= 0.
        seed: seeds the marginal sampling.

    Returns:
        The :class:`~ope.data.SlateTarget`.
    """
    s = as_array(scores, "scores", ndim=2)
    n, k, a = log.n_rounds, log.slate_size, log.n_actions
    check_shape(s, "scores", (n, a), f"(n_rounds={n}, n_actions={a})")
    check_finite(s, "scores")
    check_scalar(temperature, "temperature", float, min_val=0.0, min_inclusive=False)
    check_scalar(n_marginal_samples, "n_marginal_samples", int, min_val=0)
    if np.any(np.sort(log.slate, axis=1)[:, 1:] == np.sort(log.slate, axis=1)[:, :-1]):
        raise OPEInputError("`log.slate`: a Plackett-Luce policy never repeats an item; found a slate with a repeat")
    z = s / float(temperature)
    cascade = plackett_luce_prefix_prob(z, log.slate)
    marginal = None
    if n_marginal_samples:
        rng = np.random.default_rng(seed)
        marginal = np.empty((n, k))
        rows_per_chunk = max(1, (1 << 22) // (n_marginal_samples * a))
        for start in range(0, n, rows_per_chunk):
            stop = min(n, start + rows_per_chunk)
            top = plackett_luce_sample(rng, z[start:stop, None, :], k, size=(stop - start, n_marginal_samples, a))
            marginal[start:stop] = (top == log.slate[start:stop, None, :]).mean(axis=1)
        marginal[:, 0] = cascade[:, 0]  # the first slot's marginal is exact
        # a slot's marginal is at least the probability of the prefix ending there: lift MC zeros to it
        marginal = np.maximum(marginal, cascade)
    return SlateTarget(slate_prob=cascade[:, -1].copy(), marginal_prob=marginal, cascade_prob=cascade)
