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
:class:`~ope.data.SlateTarget`.
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
