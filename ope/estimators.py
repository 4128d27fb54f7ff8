r"""Off-policy estimators for single-action (bandit) logs.

Notation: round :math:`i` of :math:`n` has context :math:`x_i` (including the logged position, if
any), logged action :math:`a_i`, reward :math:`r_i` and logging propensity
:math:`\pi_b(a_i|x_i)` (``pscore``). The evaluation policy :math:`\pi_e` is given either as
``action_dist`` (n, n_actions[, n_positions]) or as ``target_prob`` (n,), the probability it gives to
the logged action. The importance weight is :math:`w_i = \pi_e(a_i|x_i) / \pi_b(a_i|x_i)`. A reward
model gives :math:`\hat q(x, a)` as ``q_hat`` (n, n_actions[, n_positions]), and
:math:`\hat q(x_i, \pi_e) = \sum_a \pi_e(a|x_i)\,\hat q(x_i, a)`.

Every estimator is a small frozen dataclass with

* ``estimate(log, *, action_dist=None, target_prob=None, q_hat=None) -> float``;
* ``estimate_rounds(...) -> (n,)`` per-round contributions whose mean is the estimate (for the
  self-normalised estimators, the delta-method linearisation);
* ``round_terms(...) -> RoundTerms``: the pieces the bootstrap re-normalises in every resample.

Estimators do not warn; :func:`ope.diagnostics.diagnose` (called by :func:`ope.evaluate`) does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ope.checks import as_array, check_finite, check_probabilities, check_scalar, check_shape, check_sums_to_one
from ope.data import BanditLog
from ope.errors import MissingPropensityError, OPEInputError
from ope.terms import RoundTerms

__all__ = [
    "BanditEstimator",
    "BanditInputs",
    "ClippedIPS",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustWithShrinkage",
    "IPS",
    "SelfNormalizedDR",
    "SelfNormalizedIPS",
    "SwitchDR",
    "WorstCaseBound",
    "at_logged_position",
    "check_action_dist",
    "prepare_bandit_inputs",
]


def check_action_dist(log: BanditLog, action_dist: object, name: str = "action_dist") -> np.ndarray:
    """Validate an evaluation-policy distribution against ``log``.

    Args:
        log: the logged data.
        action_dist: (n_rounds, n_actions) or (n_rounds, n_actions, n_positions) probabilities,
            summing to 1 over actions for every round (and position).
        name: the argument's name in messages.

    Returns:
        The distribution as float64.

    Raises:
        OPEInputError: wrong shape, values outside [0, 1], NaN, or rows not summing to 1.
    """
    dist = as_array(action_dist, name, ndim=(2, 3))
    n, a = log.n_rounds, log.n_actions
    if dist.ndim == 2:
        check_shape(dist, name, (n, a), f"(n_rounds={n}, n_actions={a})")
    else:
        if log.position is None:
            raise OPEInputError(
                f"`{name}` is 3-D (per position) but the log has no `position`; pass shape (n_rounds={n}, "
                f"n_actions={a}) or add positions to the log"
            )
        k = int(log.n_positions or 0)
        check_shape(dist, name, (n, a, k), f"(n_rounds={n}, n_actions={a}, n_positions={k})")
    check_probabilities(dist, name, meaning="the evaluation policy's action probabilities")
    check_sums_to_one(dist, name, axis=1)
    return dist


def at_logged_position(arr: np.ndarray, log: BanditLog) -> np.ndarray:
    """(n, A, K) -> (n, A) taken at each round's logged position; (n, A) is returned unchanged."""
    if arr.ndim == 2:
        return arr
    assert log.position is not None  # checked by the callers' shape validation
    return arr[np.arange(log.n_rounds), :, log.position]


@dataclass(frozen=True)
class BanditInputs:
    r"""Validated, reduced inputs shared by all bandit estimators (build with :func:`prepare_bandit_inputs`).

    Attributes:
        reward: (n,) float64 logged rewards.
        pscore: (n,) float64 logging propensities, or None if the log has none.
        target_prob: (n,) float64 :math:`\pi_e(a_i|x_i)`, or None if no target was given.
        dm: (n,) float64 :math:`\hat q(x_i, \pi_e)`, or None without ``q_hat`` and ``action_dist``.
        q_logged: (n,) float64 :math:`\hat q(x_i, a_i)`, or None without ``q_hat``.
        has_action_dist: whether the full evaluation distribution was given.
    """

    reward: np.ndarray
    pscore: np.ndarray | None
    target_prob: np.ndarray | None
    dm: np.ndarray | None
    q_logged: np.ndarray | None
    has_action_dist: bool

    def weights(self, estimator: str) -> np.ndarray:
        """(n,) importance weights; raises a clear error naming ``estimator`` if they cannot be formed."""
        if self.pscore is None:
            raise MissingPropensityError(
                f"`pscore`: {estimator} needs the logging policy's propensities (the probability of each "
                "logged action), and this log has none (pscore=None). Estimators that do not weight by "
                "propensities (DM) still run; log the propensities to use the others"
            )
        if self.target_prob is None:
            raise OPEInputError(
                f"`action_dist`/`target_prob`: {estimator} needs the evaluation policy's probability of the "
                "logged actions; pass action_dist (n_rounds, n_actions[, n_positions]) or target_prob (n_rounds,)"
            )
        return self.target_prob / self.pscore

    def model_terms(self, estimator: str) -> tuple[np.ndarray, np.ndarray]:
        """(dm, q_logged), each (n,); raises a clear error naming ``estimator`` if missing."""
        if self.dm is None or self.q_logged is None:
            missing = "q_hat" if self.q_logged is None else "action_dist"
            raise OPEInputError(
                f"`{missing}`: {estimator} needs reward-model predictions q_hat (n_rounds, n_actions"
                "[, n_positions]) and the evaluation policy's full action_dist of the same layout "
                "(a target_prob of the logged action is not enough); fit q_hat with "
                "ope.cross_fit_q_hat or let ope.evaluate do it"
            )
        return self.dm, self.q_logged


def prepare_bandit_inputs(
    log: BanditLog,
    *,
    action_dist: np.ndarray | None = None,
    target_prob: np.ndarray | None = None,
    q_hat: np.ndarray | None = None,
) -> BanditInputs:
    """Validate the evaluation policy and reward model against ``log`` once, and reduce them per round.

    Args:
        log: the logged data.
        action_dist: (n_rounds, n_actions) or (n_rounds, n_actions, n_positions) evaluation
            probabilities, or None.
        target_prob: (n_rounds,) evaluation probability of each logged action (at its position), or
            None. If both are given they must agree.
        q_hat: (n_rounds, n_actions) or (n_rounds, n_actions, n_positions) predicted mean rewards, or None.

    Returns:
        The reduced inputs.

    Raises:
        OPEInputError: any argument is malformed or inconsistent with the log.
    """
    n = log.n_rounds
    rows = np.arange(n)
    dist_at_pos: np.ndarray | None = None
    prob: np.ndarray | None = None
    if action_dist is not None:
        dist = check_action_dist(log, action_dist)
        dist_at_pos = at_logged_position(dist, log)
        prob = dist_at_pos[rows, log.action]
    if target_prob is not None:
        given = as_array(target_prob, "target_prob", ndim=1)
        check_shape(given, "target_prob", (n,), f"(n_rounds={n},)")
        check_probabilities(given, "target_prob", meaning="the evaluation policy's probability of the logged action")
        if prob is not None:
            bad = ~np.isclose(given, prob, rtol=1e-6, atol=1e-9)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise OPEInputError(
                    "`target_prob` must equal `action_dist` at the logged actions when both are given; found "
                    f"{int(bad.sum())} rounds that differ, first round {i}: {given[i]:.6g} vs {prob[i]:.6g}"
                )
        prob = given
    dm = q_logged = None
    if q_hat is not None:
        q = as_array(q_hat, "q_hat", ndim=(2, 3))
        a = log.n_actions
        if q.ndim == 2:
            check_shape(q, "q_hat", (n, a), f"(n_rounds={n}, n_actions={a})")
        else:
            if log.position is None:
                raise OPEInputError(
                    f"`q_hat` is 3-D (per position) but the log has no `position`; pass shape (n_rounds={n}, "
                    f"n_actions={a})"
                )
            k = int(log.n_positions or 0)
            check_shape(q, "q_hat", (n, a, k), f"(n_rounds={n}, n_actions={a}, n_positions={k})")
        check_finite(q, "q_hat")
        q_at_pos = at_logged_position(q, log)
        q_logged = q_at_pos[rows, log.action]
        if dist_at_pos is not None:
            dm = np.einsum("ij,ij->i", dist_at_pos, q_at_pos)
    return BanditInputs(
        reward=log.reward, pscore=log.pscore, target_prob=prob, dm=dm, q_logged=q_logged,
        has_action_dist=dist_at_pos is not None,
    )


class BanditEstimator(ABC):
    """Interface of the bandit estimators (frozen dataclasses with a ``name`` field)."""

    name: str
    needs_pscore: ClassVar[bool] = True
    needs_reward_model: ClassVar[bool] = False

    @abstractmethod
    def terms(self, inputs: BanditInputs) -> RoundTerms:
        """Per-round pieces from prepared inputs (see :func:`prepare_bandit_inputs`)."""

    def round_terms(
        self,
        log: BanditLog,
        *,
        action_dist: np.ndarray | None = None,
        target_prob: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
    ) -> RoundTerms:
        """Per-round pieces of the estimate (what the bootstrap resamples).

        Args:
            log: the logged data.
            action_dist: (n_rounds, n_actions[, n_positions]) evaluation probabilities, or None.
            target_prob: (n_rounds,) evaluation probability of the logged action, or None.
            q_hat: (n_rounds, n_actions[, n_positions]) reward-model predictions, or None.

        Returns:
            The estimator's :class:`~ope.terms.RoundTerms`.

        Raises:
            OPEInputError: inputs are malformed, or something this estimator needs is missing
                (:class:`~ope.errors.MissingPropensityError` for propensities).
        """
        return self.terms(prepare_bandit_inputs(log, action_dist=action_dist, target_prob=target_prob, q_hat=q_hat))

    def estimate(
        self,
        log: BanditLog,
        *,
        action_dist: np.ndarray | None = None,
        target_prob: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
    ) -> float:
        """The estimated policy value (arguments as in :meth:`round_terms`)."""
        return self.round_terms(log, action_dist=action_dist, target_prob=target_prob, q_hat=q_hat).value

    def estimate_rounds(
        self,
        log: BanditLog,
        *,
        action_dist: np.ndarray | None = None,
        target_prob: np.ndarray | None = None,
        q_hat: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n_rounds,) per-round contributions whose mean is :meth:`estimate` (arguments as in :meth:`round_terms`)."""
        terms = self.round_terms(log, action_dist=action_dist, target_prob=target_prob, q_hat=q_hat)
        return terms.influence()


@dataclass(frozen=True)
class DirectMethod(BanditEstimator):
    r"""Direct method: average the reward model's prediction under the evaluation policy.

    Needs ``q_hat`` and ``action_dist``; does not need propensities. Biased when the reward model
    is wrong where the evaluation policy acts.

    Note:
        .. math:: \hat V_{\mathrm{DM}} = \frac{1}{n}\sum_{i=1}^n \sum_a \pi_e(a|x_i)\,\hat q(x_i, a)

    Args:
        name: label in reports.
    """

    name: str = "dm"
    needs_pscore: ClassVar[bool] = False
    needs_reward_model: ClassVar[bool] = True

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        r"""Per-round :math:`\hat q(x_i, \pi_e)`."""
        dm, _ = inputs.model_terms(self.name)
        return RoundTerms.plain(dm)


@dataclass(frozen=True)
class IPS(BanditEstimator):
    r"""Inverse propensity scoring (importance sampling): unbiased when :math:`\pi_b > 0` wherever :math:`\pi_e > 0`.

    Note:
        .. math:: \hat V_{\mathrm{IPS}} = \frac{1}{n}\sum_{i=1}^n w_i\, r_i,
            \qquad w_i = \frac{\pi_e(a_i|x_i)}{\pi_b(a_i|x_i)}

    Args:
        name: label in reports.
    """

    name: str = "ips"

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        """Per-round :math:`w_i r_i`."""
        return RoundTerms.plain(inputs.weights(self.name) * inputs.reward)


@dataclass(frozen=True)
class WorstCaseBound(BanditEstimator):
    r"""IPS completed by a constant reward where the logs have no support: one side of the worst-case bounds.

    Note:
        With exact propensities, :math:`E[w\,r]` is the value of the evaluation policy's choices the logging
        policy could make, and :math:`1 - E[w]` the probability mass of those it could not. Whatever the reward
        of the unsupported choices, inside :math:`[r_{\min}, r_{\max}]`, the value lies between

        .. math:: \frac{1}{n}\sum_i \big[w_i r_i + (1 - w_i)\, r_{\min}\big] \quad\text{and}\quad
            \frac{1}{n}\sum_i \big[w_i r_i + (1 - w_i)\, r_{\max}\big]

        in expectation (Manski's bounds; also DR with the constant reward model :math:`\hat q = r_{\min}` or
        :math:`r_{\max}`). The estimator with ``reward_bound`` = :math:`r_{\min}` (:math:`r_{\max}`) is the lower
        (upper) one; with full support both equal IPS.

    Args:
        reward_bound: the constant reward :math:`c` put on the unsupported mass.
        name: label in reports.
    """

    reward_bound: float = 0.0
    name: str = "bound"

    def __post_init__(self) -> None:
        check_scalar(self.reward_bound, "reward_bound", float)

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        r"""Per-round :math:`w_i r_i + (1 - w_i)\, c`."""
        w = inputs.weights(self.name)
        return RoundTerms.plain(w * inputs.reward + (1.0 - w) * float(self.reward_bound))


@dataclass(frozen=True)
class ClippedIPS(BanditEstimator):
    r"""IPS with importance weights clipped at ``max_weight``: less variance, bias towards lower values.

    Note:
        .. math:: \hat V_{\mathrm{cIPS}} = \frac{1}{n}\sum_{i=1}^n \min(w_i, \lambda)\, r_i

    Args:
        max_weight: clipping level :math:`\lambda`, > 0 (``inf`` gives IPS).
        name: label in reports.
    """

    max_weight: float = 100.0
    name: str = "clipped_ips"

    def __post_init__(self) -> None:
        check_scalar(self.max_weight, "max_weight", float, min_val=0.0, min_inclusive=False)

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        r"""Per-round :math:`\min(w_i, \lambda) r_i`."""
        return RoundTerms.plain(np.minimum(inputs.weights(self.name), self.max_weight) * inputs.reward)


@dataclass(frozen=True)
class SelfNormalizedIPS(BanditEstimator):
    r"""Self-normalised IPS: divides by the mean weight; bounded by the reward range, slightly biased.

    Note:
        .. math:: \hat V_{\mathrm{SNIPS}} = \frac{\sum_{i=1}^n w_i\, r_i}{\sum_{i=1}^n w_i}

    Args:
        name: label in reports.
    """

    name: str = "snips"

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        r"""Ratio terms :math:`(w_i r_i,\ w_i)`."""
        w = inputs.weights(self.name)
        return RoundTerms.ratio(w * inputs.reward, w)


@dataclass(frozen=True)
class DoublyRobust(BanditEstimator):
    r"""Doubly robust: DM plus an importance-weighted correction of the reward model's residual.

    Unbiased if the propensities are right (whatever the model), and low-variance when the model is good.

    Note:
        .. math:: \hat V_{\mathrm{DR}} = \frac{1}{n}\sum_{i=1}^n \Big[\hat q(x_i, \pi_e)
            + w_i\,\big(r_i - \hat q(x_i, a_i)\big)\Big]

    Args:
        name: label in reports.
    """

    name: str = "dr"
    needs_reward_model: ClassVar[bool] = True

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        """Per-round DR values."""
        w = inputs.weights(self.name)
        dm, q = inputs.model_terms(self.name)
        return RoundTerms.plain(dm + w * (inputs.reward - q))


@dataclass(frozen=True)
class SelfNormalizedDR(BanditEstimator):
    r"""Self-normalised doubly robust: the residual correction is divided by the mean weight.

    Note:
        .. math:: \hat V_{\mathrm{SNDR}} = \frac{1}{n}\sum_{i=1}^n \hat q(x_i, \pi_e)
            + \frac{\sum_i w_i\,(r_i - \hat q(x_i, a_i))}{\sum_i w_i}

    Args:
        name: label in reports.
    """

    name: str = "sndr"
    needs_reward_model: ClassVar[bool] = True

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        r"""DM term plus ratio terms :math:`(w_i (r_i - \hat q_i),\ w_i)`."""
        w = inputs.weights(self.name)
        dm, q = inputs.model_terms(self.name)
        return RoundTerms.ratio(w * (inputs.reward - q), w, additive=dm)


@dataclass(frozen=True)
class SwitchDR(BanditEstimator):
    r"""Switch doubly robust (Wang et al., 2017): DR where the weight is at most ``max_weight``, DM elsewhere.

    Note:
        .. math:: \hat V_{\mathrm{SwitchDR}} = \frac{1}{n}\sum_{i=1}^n \Big[\hat q(x_i, \pi_e)
            + \mathbb{1}\{w_i \le \tau\}\, w_i\,\big(r_i - \hat q(x_i, a_i)\big)\Big]

        :math:`\tau = \infty` gives DR and :math:`\tau = 0` gives DM (the obp convention).

    Args:
        max_weight: switching threshold :math:`\tau`, >= 0.
        name: label in reports.
    """

    max_weight: float = 100.0
    name: str = "switch_dr"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_scalar(self.max_weight, "max_weight", float, min_val=0.0)

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        """Per-round Switch-DR values."""
        w = inputs.weights(self.name)
        dm, q = inputs.model_terms(self.name)
        return RoundTerms.plain(dm + np.where(w <= self.max_weight, w, 0.0) * (inputs.reward - q))


@dataclass(frozen=True)
class DoublyRobustWithShrinkage(BanditEstimator):
    r"""DR with optimistic shrinkage (Su et al., 2020): weights shrunk as :math:`\lambda w / (w^2 + \lambda)`.

    Note:
        .. math:: \hat V_{\mathrm{DRos}} = \frac{1}{n}\sum_{i=1}^n \Big[\hat q(x_i, \pi_e)
            + \frac{\lambda\, w_i}{w_i^2 + \lambda}\,\big(r_i - \hat q(x_i, a_i)\big)\Big]

        :math:`\lambda = \infty` gives DR and :math:`\lambda = 0` gives DM. The shrunk weight peaks at
        :math:`\sqrt{\lambda}/2` for :math:`w = \sqrt{\lambda}`.

    Args:
        shrinkage: :math:`\lambda`, >= 0.
        name: label in reports.
    """

    shrinkage: float = 1000.0
    name: str = "dr_os"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_scalar(self.shrinkage, "shrinkage", float, min_val=0.0)

    def terms(self, inputs: BanditInputs) -> RoundTerms:
        """Per-round DRos values."""
        w = inputs.weights(self.name)
        dm, q = inputs.model_terms(self.name)
        lam = float(self.shrinkage)
        if np.isinf(lam):
            shrunk = w
        elif lam == 0.0:
            shrunk = np.zeros_like(w)
        else:
            shrunk = lam * w / (w * w + lam)
        return RoundTerms.plain(dm + shrunk * (inputs.reward - q))
