r"""Small synthetic worlds with an exactly known policy value, for tests and estimator studies.

Both worlds draw contexts from a *finite* population, so the evaluation policy's true value is an
exact finite sum (no Monte Carlo error in the ground truth).

* :class:`SyntheticBandit`: a contextual bandit with logistic mean rewards
  :math:`\mu(x, a) = \sigma(x^\top\theta_a + b_a)`, a softmax logging policy and a (greedier)
  softmax evaluation policy over the true logits.
* :class:`SyntheticSlates`: rankings of ``slate_size`` out of ``n_actions`` items drawn by
  Plackett-Luce policies, with per-slot clicks following either the item-position model
  (:math:`P(\text{click at }k) = \beta_k \mu(x, a_k)`) or the cascade model (the user scans down and
  stops at the first click). The truth is computed by enumerating every ranking.

The world's parameters come from ``seed``; the rounds are drawn from the generator given to
``sample``, so one world can be sampled in many independent replications.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import expit, softmax

from ope.checks import check_scalar
from ope.data import BanditLog, SlateLog, SlateTarget
from ope.errors import OPEInputError
from ope.targets import plackett_luce_prefix_prob, sample_plackett_luce

__all__ = ["BanditSample", "SlateSample", "SyntheticBandit", "SyntheticSlates"]


@dataclass(frozen=True)
class BanditSample:
    """One simulated bandit log with its evaluation policy and the exact truth.

    Attributes:
        log: the logged rounds (with propensities and contexts).
        action_dist: (n_rounds, n_actions) the evaluation policy's probabilities.
        logging_action_dist: (n_rounds, n_actions) the logging policy's probabilities.
        expected_reward: (n_rounds, n_actions) the true mean rewards.
        true_value: the evaluation policy's exact value over the context population.
        context_index: (n_rounds,) int64 which population context each round drew.
    """

    log: BanditLog
    action_dist: np.ndarray
    logging_action_dist: np.ndarray
    expected_reward: np.ndarray
    true_value: float
    context_index: np.ndarray


@dataclass(frozen=True)
class SyntheticBandit:
    r"""A contextual bandit with logistic rewards and softmax policies.

    Note:
        .. math::
            \mu(x_c, a) = \sigma(x_c^\top \theta_a + b_a),\quad
            \pi_b(a|x) \propto e^{\beta_b\, \mathrm{logit}\,\mu(x, a)},\quad
            \pi_e(a|x) \propto e^{\beta_e\, \mathrm{logit}\,\mu(x, a)},\quad
            V(\pi_e) = \frac{1}{C}\sum_{c=1}^C \sum_a \pi_e(a|x_c)\,\mu(x_c, a)

        with contexts :math:`x_c \sim N(0, I_d)`, :math:`\theta_a \sim N(0, I_d / d)`,
        :math:`b_a \sim N(-1, 0.5^2)` and contexts drawn uniformly from the :math:`C` of them.
        ``reward="binary"`` draws Bernoulli(:math:`\mu`) rewards; ``"gaussian"`` adds N(0, 0.1^2) noise.

    Args:
        n_actions: number of actions, >= 2.
        dim_context: context dimension, >= 1.
        n_contexts: size :math:`C` of the context population, >= 1.
        logging_beta: :math:`\beta_b` (0: uniform logging).
        target_beta: :math:`\beta_e` (larger: greedier, further from logging).
        reward: ``"binary"`` or ``"gaussian"``.
        seed: seeds the world's parameters.
    """

    n_actions: int = 10
    dim_context: int = 5
    n_contexts: int = 200
    logging_beta: float = 0.5
    target_beta: float = 2.0
    reward: Literal["binary", "gaussian"] = "binary"
    seed: int = 0
    _contexts: np.ndarray = field(init=False, repr=False, compare=False)
    _mu: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_scalar(self.n_actions, "n_actions", int, min_val=2)
        check_scalar(self.dim_context, "dim_context", int, min_val=1)
        check_scalar(self.n_contexts, "n_contexts", int, min_val=1)
        check_scalar(self.logging_beta, "logging_beta", float)
        check_scalar(self.target_beta, "target_beta", float)
        if self.reward not in ("binary", "gaussian"):
            raise OPEInputError(f"`reward` must be 'binary' or 'gaussian'; found {self.reward!r}")
        rng = np.random.default_rng(self.seed)
        x = rng.normal(size=(self.n_contexts, self.dim_context))
        theta = rng.normal(scale=1 / np.sqrt(self.dim_context), size=(self.dim_context, self.n_actions))
        bias = rng.normal(-1.0, 0.5, size=self.n_actions)
        object.__setattr__(self, "_contexts", x)
        object.__setattr__(self, "_mu", expit(x @ theta + bias))

    def _logits(self) -> np.ndarray:
        return np.log(self._mu / (1 - self._mu))

    @property
    def logits(self) -> np.ndarray:
        """(n_contexts, n_actions) true reward logits of the context population."""
        return self._logits()

    @property
    def true_value(self) -> float:
        """Exact value of the evaluation policy."""
        pe = softmax(self.target_beta * self._logits(), axis=1)
        return float((pe * self._mu).sum(axis=1).mean())

    @property
    def logging_value(self) -> float:
        """Exact value of the logging policy."""
        pb = softmax(self.logging_beta * self._logits(), axis=1)
        return float((pb * self._mu).sum(axis=1).mean())

    def sample(self, n_rounds: int, rng: np.random.Generator) -> BanditSample:
        """Simulate ``n_rounds`` logged rounds.

        Args:
            n_rounds: number of rounds, >= 1.
            rng: the generator drawing contexts, actions and rewards.

        Returns:
            The log, both policies' distributions over its rounds, and the exact truth.
        """
        check_scalar(n_rounds, "n_rounds", int, min_val=1)
        c = rng.integers(0, self.n_contexts, size=n_rounds)
        logits = self._logits()[c]
        mu = self._mu[c]
        pb = softmax(self.logging_beta * logits, axis=1)
        pe = softmax(self.target_beta * logits, axis=1)
        action = (pb.cumsum(axis=1) > rng.random((n_rounds, 1))).argmax(axis=1)
        action = np.minimum(action, self.n_actions - 1)
        rows = np.arange(n_rounds)
        mean = mu[rows, action]
        if self.reward == "binary":
            reward = (rng.random(n_rounds) < mean).astype(np.float64)
        else:
            reward = mean + rng.normal(scale=0.1, size=n_rounds)
        log = BanditLog(reward=reward, action=action, n_actions=self.n_actions, pscore=pb[rows, action],
                        context=self._contexts[c])
        return BanditSample(log, pe, pb, mu, self.true_value, c)


@dataclass(frozen=True)
class SlateSample:
    """One simulated slate log with the evaluation policy's probabilities and the exact truth.

    Attributes:
        log: the logged slates (slate, marginal and cascade propensities).
        target: the evaluation policy's probabilities of the logged slates (all three kinds, exact).
        true_value: the evaluation policy's exact expected clicks per slate.
        logging_value: the logging policy's exact expected clicks per slate.
        context_index: (n_rounds,) int64 which population context each round drew.
    """

    log: SlateLog
    target: SlateTarget
    true_value: float
    logging_value: float
    context_index: np.ndarray


@dataclass(frozen=True)
class SyntheticSlates:
    r"""Rankings drawn by Plackett-Luce policies with item-position or cascade clicks.

    Note:
        Item-position model: :math:`P(r_k = 1) = \beta_k\,\mu(x, a_k)` independently per slot.
        Cascade model: the user clicks slot :math:`k` with probability :math:`\mu(x, a_k)` if no slot
        above was clicked, so :math:`E\sum_k r_k = 1 - \prod_k (1 - \mu(x, a_k))`. Policies rank by
        softmax sampling without replacement of scores :math:`\beta\,\mathrm{logit}\,\mu`
        (:math:`\beta_b` logging, :math:`\beta_e` evaluation). Truths enumerate all
        :math:`A!/(A-K)!` rankings (kept below 50,000).

    Args:
        n_actions: number of items, >= 2.
        slate_size: K, in [1, n_actions].
        n_contexts: size of the context population.
        click_model: ``"position"`` or ``"cascade"``.
        logging_beta: :math:`\beta_b`.
        target_beta: :math:`\beta_e`.
        seed: seeds the world's parameters.
    """

    n_actions: int = 6
    slate_size: int = 3
    n_contexts: int = 50
    click_model: Literal["position", "cascade"] = "position"
    logging_beta: float = 0.5
    target_beta: float = 1.5
    seed: int = 0
    _mu: np.ndarray = field(init=False, repr=False, compare=False)
    _rankings: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_scalar(self.n_actions, "n_actions", int, min_val=2)
        check_scalar(self.slate_size, "slate_size", int, min_val=1, max_val=self.n_actions)
        check_scalar(self.n_contexts, "n_contexts", int, min_val=1)
        if self.click_model not in ("position", "cascade"):
            raise OPEInputError(f"`click_model` must be 'position' or 'cascade'; found {self.click_model!r}")
        rankings = np.array(list(itertools.permutations(range(self.n_actions), self.slate_size)), dtype=np.int64)
        if rankings.shape[0] > 50_000:
            raise OPEInputError(
                f"`n_actions`/`slate_size`: {rankings.shape[0]} rankings are too many to enumerate the truth; "
                "keep A!/(A-K)! <= 50,000"
            )
        rng = np.random.default_rng(self.seed)
        logits = rng.normal(-1.5, 1.0, size=(self.n_contexts, self.n_actions))
        object.__setattr__(self, "_mu", expit(logits))
        object.__setattr__(self, "_rankings", rankings)

    @property
    def logits(self) -> np.ndarray:
        """(n_contexts, n_actions) true click logits; the policies rank by ``beta * logits``."""
        return np.log(self._mu / (1 - self._mu))

    @property
    def position_bias(self) -> np.ndarray:
        """(slate_size,) examination probabilities of the item-position model, 1/(k+1)^0.5."""
        return 1.0 / np.sqrt(np.arange(1, self.slate_size + 1))

    def _expected_clicks(self, mu_slots: np.ndarray) -> np.ndarray:
        """Expected summed clicks of slates given the per-slot mean rewards (..., K)."""
        if self.click_model == "position":
            return (mu_slots * self.position_bias).sum(axis=-1)
        return 1.0 - np.prod(1.0 - mu_slots, axis=-1)

    def _value(self, beta: float) -> float:
        scores = beta * np.log(self._mu / (1 - self._mu))  # (C, A)
        c = self.n_contexts
        r = self._rankings.shape[0]
        rankings = np.broadcast_to(self._rankings, (c, r, self.slate_size)).reshape(c * r, self.slate_size)
        prob = plackett_luce_prefix_prob(np.repeat(scores, r, axis=0), rankings)[:, -1].reshape(c, r)
        mu_slots = np.take_along_axis(np.repeat(self._mu, r, axis=0), rankings, axis=1).reshape(c, r, -1)
        return float((prob * self._expected_clicks(mu_slots)).sum(axis=1).mean())

    @property
    def true_value(self) -> float:
        """Exact expected clicks per slate of the evaluation policy."""
        return self._value(self.target_beta)

    @property
    def logging_value(self) -> float:
        """Exact expected clicks per slate of the logging policy."""
        return self._value(self.logging_beta)

    def sample(self, n_rounds: int, rng: np.random.Generator) -> SlateSample:
        """Simulate ``n_rounds`` logged slates.

        Args:
            n_rounds: number of rounds, >= 1.
            rng: the generator drawing contexts, slates and clicks.

        Returns:
            The log (slate, marginal and cascade propensities, the marginals exact by enumeration),
            the evaluation policy's exact probabilities of the logged slates, and both truths.
        """
        check_scalar(n_rounds, "n_rounds", int, min_val=1)
        c = rng.integers(0, self.n_contexts, size=n_rounds)
        logit = np.log(self._mu / (1 - self._mu))[c]
        mu = self._mu[c]
        slate = sample_plackett_luce(self.logging_beta * logit, self.slate_size, rng)
        mu_slots = np.take_along_axis(mu, slate, axis=1)
        k = self.slate_size
        if self.click_model == "position":
            reward = (rng.random((n_rounds, k)) < mu_slots * self.position_bias).astype(np.float64)
        else:
            raw = rng.random((n_rounds, k)) < mu_slots
            first = np.where(raw.any(axis=1), raw.argmax(axis=1), k)
            reward = (np.arange(k)[None, :] == first[:, None]).astype(np.float64)

        def probs(beta: float) -> tuple[np.ndarray, np.ndarray]:
            cascade = plackett_luce_prefix_prob(beta * logit, slate)
            marginal = self._marginals(beta)[c[:, None], np.arange(k)[None, :], slate]
            return cascade, np.maximum(marginal, cascade)

        b_casc, b_marg = probs(self.logging_beta)
        e_casc, e_marg = probs(self.target_beta)
        log = SlateLog(reward=reward, slate=slate, n_actions=self.n_actions, slate_pscore=b_casc[:, -1].copy(),
                       marginal_pscore=b_marg, cascade_pscore=b_casc)
        target = SlateTarget(slate_prob=e_casc[:, -1].copy(), marginal_prob=e_marg, cascade_prob=e_casc)
        return SlateSample(log, target, self.true_value, self.logging_value, c)

    def _marginals(self, beta: float) -> np.ndarray:
        """(C, K, A) exact probability that item a is at slot k, by enumeration of all rankings."""
        scores = beta * np.log(self._mu / (1 - self._mu))
        c, r, k, a = self.n_contexts, self._rankings.shape[0], self.slate_size, self.n_actions
        rankings = np.broadcast_to(self._rankings, (c, r, k)).reshape(c * r, k)
        prob = plackett_luce_prefix_prob(np.repeat(scores, r, axis=0), rankings)[:, -1].reshape(c, r)
        out = np.zeros((c, k, a))
        for slot in range(k):  # loop over the K slots, vectorised over contexts and rankings
            onehot = np.eye(a)[self._rankings[:, slot]]  # (R, A)
            out[:, slot, :] = prob @ onehot
        return out
