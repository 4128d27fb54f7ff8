r"""Off-policy estimators for rankings (slates) of K slots.

Round :math:`i` shows the slate :math:`s_i = (a_{i1}, \dots, a_{iK})` and observes per-slot rewards
:math:`r_{ik}`; the value of a policy is the expected *sum* of slot rewards per slate
(:attr:`~ope.data.SlateLog.logged_mean` for the logging policy). The three estimators differ in which
probability ratio they put in front of :math:`r_{ik}`, i.e. in what they assume about how a slot's
reward depends on the rest of the slate:

* standard slate IPS: the whole slate's ratio :math:`w_i = \pi_e(s_i|x_i)/\pi_b(s_i|x_i)`; no assumption,
  highest variance;
* independent (position-based) IPS: the slot's marginal ratio
  :math:`w_{ik} = \pi_e(a_{ik}\text{ at }k|x_i)/\pi_b(a_{ik}\text{ at }k|x_i)`; unbiased if slot k's
  reward depends only on the item at slot k (item-position model);
* reward-interaction (cascade) IPS: the prefix ratio
  :math:`w_{i,1:k} = \pi_e(a_{i1..k}|x_i)/\pi_b(a_{i1..k}|x_i)`; unbiased if slot k's reward depends
  only on the slots above it (cascade model).

Each has a self-normalised version. All take a :class:`~ope.data.SlateLog` and a
:class:`~ope.data.SlateTarget`. The cascade one also has a doubly robust form (:class:`SlateCascadeDR`),
which adds a reward model's predictions (:class:`SlateRewardPredictions`) as a control variate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ope.data import SlateLog, SlateTarget
from ope.errors import MissingPropensityError, OPEInputError
from ope.terms import RoundTerms

__all__ = [
    "SelfNormalizedSlateIndependentIPS",
    "SlateCascadeDR",
    "SlateRewardPredictions",
    "SelfNormalizedSlateRewardInteractionIPS",
    "SelfNormalizedSlateStandardIPS",
    "SlateEstimator",
    "SlateIndependentIPS",
    "SlateRewardInteractionIPS",
    "SlateStandardIPS",
    "slate_weights",
]

SlateKind = Literal["slate", "marginal", "cascade"]
_LOG_FIELD = {"slate": "slate_pscore", "marginal": "marginal_pscore", "cascade": "cascade_pscore"}
_TARGET_FIELD = {"slate": "slate_prob", "marginal": "marginal_prob", "cascade": "cascade_prob"}


def slate_weights(log: SlateLog, target: SlateTarget, kind: SlateKind, estimator: str) -> np.ndarray:
    """Importance weights of one kind.

    Args:
        log: the logged slates.
        target: the evaluation policy's probabilities of the logged slates.
        kind: ``"slate"`` -> (n_rounds,) whole-slate ratios; ``"marginal"`` or ``"cascade"`` ->
            (n_rounds, slate_size) ratios per slot.
        estimator: the estimator's name, for messages.

    Returns:
        The weights, float64.

    Raises:
        MissingPropensityError: the log lacks the propensities of this kind.
        OPEInputError: the target lacks this kind, or its shape does not match the log.
    """
    pscore = getattr(log, _LOG_FIELD[kind])
    if pscore is None:
        raise MissingPropensityError(
            f"`{_LOG_FIELD[kind]}`: {estimator} needs the logging policy's {kind} propensities and this "
            f"log has none ({_LOG_FIELD[kind]}=None); log them or use an estimator whose propensities "
            "the log has"
        )
    prob = getattr(target, _TARGET_FIELD[kind])
    if prob is None:
        raise OPEInputError(
            f"`target.{_TARGET_FIELD[kind]}`: {estimator} needs the evaluation policy's {kind} "
            f"probabilities of the logged slates; found None"
        )
    if prob.shape != pscore.shape:
        raise OPEInputError(
            f"`target.{_TARGET_FIELD[kind]}` must have shape {pscore.shape} (the log's "
            f"{_LOG_FIELD[kind]}); found shape {prob.shape}"
        )
    return prob / pscore


@dataclass(frozen=True)
class SlateRewardPredictions:
    r"""A reward model's predictions for the doubly robust slate estimators.

    Attributes:
        q_logged: (n_rounds, slate_size) :math:`\hat q(x_i, a_{ik}, k)`, the predicted reward of each logged item
            at its slot.
        q_target: (n_rounds, slate_size) :math:`\hat q(x_i, \pi_e, k)`, the predicted reward of slot k under the
            evaluation policy, :math:`\sum_a \pi_e(a \text{ at } k \mid x_i)\, \hat q(x_i, a, k)`.

    Raises:
        OPEInputError: the shapes differ or a value is not finite.
    """

    q_logged: np.ndarray
    q_target: np.ndarray

    def __post_init__(self) -> None:
        for name in ("q_logged", "q_target"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim != 2:
                raise OPEInputError(f"`{name}` must be (n_rounds, slate_size); found shape {value.shape}")
            if not np.isfinite(value).all():
                raise OPEInputError(f"`{name}` must be finite; found NaN or inf at round "
                                    f"{int(np.argwhere(~np.isfinite(value))[0][0])}")
            object.__setattr__(self, name, value)
        if self.q_logged.shape != self.q_target.shape:
            raise OPEInputError(f"`q_logged` {self.q_logged.shape} and `q_target` {self.q_target.shape} must have "
                                "the same shape")


class SlateEstimator(ABC):
    """Interface of the slate estimators (frozen dataclasses with a ``name`` field)."""

    name: str
    kind: ClassVar[SlateKind]

    @abstractmethod
    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        """Per-round pieces of the estimate (what the bootstrap resamples).

        Args:
            log: the logged slates.
            target: the evaluation policy's probabilities of the logged slates.

        Returns:
            The estimator's :class:`~ope.terms.RoundTerms`.
        """

    def estimate(self, log: SlateLog, target: SlateTarget) -> float:
        """The estimated expected sum of slot rewards per slate under the evaluation policy."""
        return self.round_terms(log, target).value

    def estimate_rounds(self, log: SlateLog, target: SlateTarget) -> np.ndarray:
        """(n_rounds,) per-round contributions whose mean is :meth:`estimate`."""
        return self.round_terms(log, target).influence()


@dataclass(frozen=True)
class SlateStandardIPS(SlateEstimator):
    r"""Standard slate IPS: the whole slate's importance weight on the summed slot rewards.

    Note:
        .. math:: \hat V_{\mathrm{SIPS}} = \frac{1}{n}\sum_{i=1}^n
            \frac{\pi_e(s_i|x_i)}{\pi_b(s_i|x_i)} \sum_{k=1}^K r_{ik}

    Args:
        name: label in reports.
    """

    name: str = "sips"
    kind: ClassVar[SlateKind] = "slate"

    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        r"""Per-round :math:`w_i \sum_k r_{ik}`."""
        w = slate_weights(log, target, self.kind, self.name)
        return RoundTerms.plain(w * log.reward.sum(axis=1))


@dataclass(frozen=True)
class SlateIndependentIPS(SlateEstimator):
    r"""Independent (position-based) IPS: each slot's reward weighted by its item-at-slot marginal ratio.

    Note:
        .. math:: \hat V_{\mathrm{IIPS}} = \frac{1}{n}\sum_{i=1}^n \sum_{k=1}^K
            \frac{\pi_e(a_{ik}\ \mathrm{at}\ k|x_i)}{\pi_b(a_{ik}\ \mathrm{at}\ k|x_i)}\, r_{ik}

    Args:
        name: label in reports.
    """

    name: str = "iips"
    kind: ClassVar[SlateKind] = "marginal"

    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        r"""Per-round :math:`\sum_k w_{ik} r_{ik}`."""
        w = slate_weights(log, target, self.kind, self.name)
        return RoundTerms.plain((w * log.reward).sum(axis=1))


@dataclass(frozen=True)
class SlateRewardInteractionIPS(SlateEstimator):
    r"""Reward-interaction (cascade) IPS: each slot's reward weighted by the ratio of the prefix above it.

    Note:
        .. math:: \hat V_{\mathrm{RIPS}} = \frac{1}{n}\sum_{i=1}^n \sum_{k=1}^K
            \frac{\pi_e(a_{i1}, \dots, a_{ik}|x_i)}{\pi_b(a_{i1}, \dots, a_{ik}|x_i)}\, r_{ik}

    Args:
        name: label in reports.
    """

    name: str = "rips"
    kind: ClassVar[SlateKind] = "cascade"

    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        r"""Per-round :math:`\sum_k w_{i,1:k} r_{ik}`."""
        w = slate_weights(log, target, self.kind, self.name)
        return RoundTerms.plain((w * log.reward).sum(axis=1))


@dataclass(frozen=True)
class SlateCascadeDR(SlateEstimator):
    r"""Cascade doubly robust (Kiyohara et al., 2022): RIPS with a reward model as a control variate.

    Note:
        .. math:: \hat V_{\mathrm{CDR}} = \frac{1}{n}\sum_{i=1}^n \sum_{k=1}^K \Big[
            w_{i,1:k}\,\big(r_{ik} - \hat q(x_i, a_{ik}, k)\big) + w_{i,1:k-1}\, \hat q(x_i, \pi_e, k)\Big],
            \qquad w_{i,1:0} = 1,

        with :math:`w_{i,1:k}` the prefix ratios of :class:`SlateRewardInteractionIPS`. Unbiased under cascade
        clicks when either the prefix propensities or the reward model are right, provided
        :math:`\hat q(x_i, \pi_e, k)` is the model's expectation under the evaluation policy *given the logged
        prefix above k*. A slot-wise reward model's expectation under the policy's per-slot marginal (what
        :class:`SlateRewardPredictions` holds) is exactly that for a deterministic policy (a positive prefix
        weight means the policy ranks that prefix) and an approximation for a stochastic one.

    Args:
        name: label in reports.
    """

    name: str = "cascade_dr"
    kind: ClassVar[SlateKind] = "cascade"

    def round_terms(self, log: SlateLog, target: SlateTarget,
                    q: SlateRewardPredictions | None = None) -> RoundTerms:
        r"""Per-round :math:`\sum_k w_{i,1:k}(r_{ik} - \hat q_{ik}) + w_{i,1:k-1} \hat q^{\pi_e}_{ik}`."""
        w = slate_weights(log, target, self.kind, self.name)
        if q is None:
            raise OPEInputError(f"`q_target`: {self.name} needs a reward model's predictions for the logged items "
                                "and for the evaluation policy at every slot; none were given")
        if q.q_logged.shape != w.shape:
            raise OPEInputError(f"`q_logged` must have shape {w.shape} (rounds x slots); found {q.q_logged.shape}")
        above = np.concatenate([np.ones((w.shape[0], 1)), w[:, :-1]], axis=1)
        return RoundTerms.plain((w * (log.reward - q.q_logged) + above * q.q_target).sum(axis=1))


@dataclass(frozen=True)
class SelfNormalizedSlateStandardIPS(SlateEstimator):
    r"""Self-normalised standard slate IPS.

    Note:
        .. math:: \hat V_{\mathrm{SNSIPS}} = \frac{\sum_i w_i \sum_k r_{ik}}{\sum_i w_i}

    Args:
        name: label in reports.
    """

    name: str = "snsips"
    kind: ClassVar[SlateKind] = "slate"

    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        r"""Ratio terms :math:`(w_i \sum_k r_{ik},\ w_i)`."""
        w = slate_weights(log, target, self.kind, self.name)
        return RoundTerms.ratio(w * log.reward.sum(axis=1), w)


@dataclass(frozen=True)
class SelfNormalizedSlateIndependentIPS(SlateEstimator):
    r"""Self-normalised independent IPS: each slot normalised by its own mean weight.

    Note:
        .. math:: \hat V_{\mathrm{SNIIPS}} = \sum_{k=1}^K \frac{\sum_i w_{ik}\, r_{ik}}{\sum_i w_{ik}}

    Args:
        name: label in reports.
    """

    name: str = "sniips"
    kind: ClassVar[SlateKind] = "marginal"

    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        r"""K ratio terms :math:`(w_{ik} r_{ik},\ w_{ik})`."""
        w = slate_weights(log, target, self.kind, self.name)
        return RoundTerms.ratio(w * log.reward, w)


@dataclass(frozen=True)
class SelfNormalizedSlateRewardInteractionIPS(SlateEstimator):
    r"""Self-normalised reward-interaction IPS: each slot normalised by the mean of its prefix weights.

    Note:
        .. math:: \hat V_{\mathrm{SNRIPS}} = \sum_{k=1}^K \frac{\sum_i w_{i,1:k}\, r_{ik}}{\sum_i w_{i,1:k}}

    Args:
        name: label in reports.
    """

    name: str = "snrips"
    kind: ClassVar[SlateKind] = "cascade"

    def round_terms(self, log: SlateLog, target: SlateTarget) -> RoundTerms:
        r"""K ratio terms :math:`(w_{i,1:k} r_{ik},\ w_{i,1:k})`."""
        w = slate_weights(log, target, self.kind, self.name)
        return RoundTerms.ratio(w * log.reward, w)
