r"""Diagnostics of importance weights: effective sample size, largest weight, support deficiency.

Each diagnostic that crosses its threshold adds a message to :attr:`WeightDiagnostics.messages`
and, with ``warn=True``, issues a warning of its own :class:`~ope.errors.OPEWarning` subclass
saying what the condition means for the estimates.

Note:
    .. math::
        \mathrm{ESS} = \frac{(\sum_i w_i)^2}{\sum_i w_i^2}, \qquad
        \mathrm{deficiency} = \frac{1}{n}\sum_i \sum_a \pi_e(a|x_i)\,\mathbb{1}\{\pi_b(a|x_i) = 0\}

    With the logging policy's full distribution (``logging_action_dist``) the deficiency is exact.
    Without it, :math:`\pi_b(a|x) = 0` is estimated as "action ``a`` never appears in the log (at
    that position)", which catches context-free gaps (and may flag actions that are merely rare in
    a small log) but cannot see context-dependent ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ope.checks import check_scalar
from ope.data import BanditLog, SlateLog, SlateTarget
from ope.errors import (
    LargeImportanceWeightWarning,
    LowEffectiveSampleSizeWarning,
    OPEInputError,
    OPEWarning,
    SupportDeficiencyWarning,
)
from ope.estimators import at_logged_position, check_action_dist, prepare_bandit_inputs

__all__ = ["DiagnosticThresholds", "WeightDiagnostics", "diagnose", "diagnose_slate", "mean_weight_check",
           "weight_diagnostics"]

SupportMethod = Literal["exact", "empirical", "unavailable"]


@dataclass(frozen=True)
class DiagnosticThresholds:
    """When a diagnostic becomes a warning.

    Args:
        min_ess_fraction: warn when ESS / n_rounds is below this, in [0, 1].
        max_weight_share: warn when the largest weight exceeds this share of the summed weights, in [0, 1].
        max_support_deficiency: warn when the target mass on unsupported actions exceeds this, in [0, 1].
    """

    min_ess_fraction: float = 0.05
    max_weight_share: float = 0.01
    max_support_deficiency: float = 0.001

    def __post_init__(self) -> None:
        for name in ("min_ess_fraction", "max_weight_share", "max_support_deficiency"):
            check_scalar(getattr(self, name), name, float, min_val=0.0, max_val=1.0)


@dataclass(frozen=True)
class WeightDiagnostics:
    """Importance-weight diagnostics of one (log, evaluation policy) pair.

    Attributes:
        n_rounds: rounds in the log.
        ess: effective sample size of the weights (NaN without weights).
        ess_fraction: ``ess / n_rounds``.
        max_weight: the largest importance weight.
        max_weight_share: ``max_weight / sum(weights)``.
        mean_weight: mean importance weight; about 1 when the logging policy covers the target
            (much below 1 signals missing support, far from 1 a small-sample or propensity problem).
        support_deficiency: target probability mass on actions the logging policy never takes,
            averaged over rounds (NaN when it cannot be assessed).
        support_method: ``"exact"`` (from the logging distribution), ``"empirical"`` (actions never
            logged) or ``"unavailable"`` (no full target distribution).
        messages: one sentence per crossed threshold (what it means for the estimate).
        weights_label: which weights were assessed (``"w"`` for bandits, e.g. ``"slate"`` for slates).
    """

    n_rounds: int
    ess: float
    ess_fraction: float
    max_weight: float
    max_weight_share: float
    mean_weight: float
    support_deficiency: float
    support_method: SupportMethod
    messages: tuple[str, ...] = field(default=())
    weights_label: str = "w"

    @classmethod
    def unavailable(cls, n_rounds: int, label: str) -> WeightDiagnostics:
        """Diagnostics of ``n_rounds`` rounds whose weights cannot be formed (every number NaN)."""
        nan = float("nan")
        return cls(n_rounds, nan, nan, nan, nan, nan, nan, "unavailable", (), label)

    def to_dict(self) -> dict[str, float | int | str | list[str]]:
        """Plain-JSON form."""
        return {
            "n_rounds": self.n_rounds, "ess": self.ess, "ess_fraction": self.ess_fraction,
            "max_weight": self.max_weight, "max_weight_share": self.max_weight_share,
            "mean_weight": self.mean_weight, "support_deficiency": self.support_deficiency,
            "support_method": self.support_method, "messages": list(self.messages),
            "weights_label": self.weights_label,
        }


def _weight_messages(
    w: np.ndarray, thresholds: DiagnosticThresholds, label: str
) -> tuple[float, float, float, float, float, list[tuple[type[OPEWarning], str]]]:
    n = w.shape[0]
    total = float(w.sum())
    sq = float(np.dot(w, w))
    ess = total * total / sq if sq > 0 else 0.0
    max_w = float(w.max())
    share = max_w / total if total > 0 else float("nan")
    out: list[tuple[type[OPEWarning], str]] = []
    prefix = "" if label == "w" else f"{label} weights: "
    if ess / n < thresholds.min_ess_fraction:
        out.append((LowEffectiveSampleSizeWarning,
                    f"{prefix}effective sample size {ess:,.0f} of {n:,} rounds ({ess / n:.1%}): the "
                    f"importance-weighted estimates (IPS, DR and their variants) rest on about {ess:,.0f} "
                    "rounds' worth of data, so expect wide intervals and distrust the normal interval; "
                    "clipped, switched, shrunk or self-normalised estimators trade this variance for bias"))
    if total > 0 and share > thresholds.max_weight_share:
        out.append((LargeImportanceWeightWarning,
                    f"{prefix}largest importance weight {max_w:.3g} is {share:.1%} of the total weight: one "
                    f"round can move IPS by {max_w / n:.3g} times its reward, so the estimate and its "
                    "bootstrap interval hinge on a few rounds; compare with clipped IPS, Switch-DR or DR-os"))
    return ess, ess / n, max_w, share, float(w.mean()), out


def _issue(messages: list[tuple[type[OPEWarning], str]], warn: bool) -> tuple[str, ...]:
    if warn:
        for category, text in messages:
            warnings.warn(text, category, stacklevel=3)
    return tuple(text for _, text in messages)


def weight_diagnostics(
    weights: np.ndarray, *, thresholds: DiagnosticThresholds | None = None, warn: bool = True,
    label: str = "w",
) -> WeightDiagnostics:
    """ESS and largest-weight diagnostics of raw importance weights (support not assessed).

    Args:
        weights: (n_rounds,) non-negative importance weights.
        thresholds: when to warn (defaults: :class:`DiagnosticThresholds`).
        warn: whether to issue warnings for crossed thresholds.
        label: which weights these are, for messages.

    Returns:
        The diagnostics.

    Raises:
        OPEInputError: weights not 1-D, empty, negative or non-finite.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] == 0:
        raise OPEInputError(f"`weights` must be a non-empty 1-D array; found shape {w.shape}")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise OPEInputError("`weights` must be finite and >= 0; found negative or non-finite values")
    ess, frac, max_w, share, mean_w, msgs = _weight_messages(w, thresholds or DiagnosticThresholds(), label)
    return WeightDiagnostics(w.shape[0], ess, frac, max_w, share, mean_w, float("nan"), "unavailable",
                             _issue(msgs, warn), label)


def _empirical_support(log: BanditLog, dist: np.ndarray) -> np.ndarray:
    """(n,) target mass on actions never seen in the log (at the round's position, if the log has positions)."""
    at_pos = at_logged_position(dist, log)
    if log.position is not None:
        seen = np.zeros((log.n_actions, int(log.n_positions or 0)), dtype=bool)
        seen[log.action, log.position] = True
        unseen = ~seen[:, log.position].T  # (n, A): cells unseen at each round's position
        return np.where(unseen, at_pos, 0.0).sum(axis=1)
    seen_a = np.zeros(log.n_actions, dtype=bool)
    seen_a[log.action] = True
    return at_pos[:, ~seen_a].sum(axis=1)


def diagnose(
    log: BanditLog,
    *,
    action_dist: np.ndarray | None = None,
    target_prob: np.ndarray | None = None,
    logging_action_dist: np.ndarray | None = None,
    thresholds: DiagnosticThresholds | None = None,
    warn: bool = True,
) -> WeightDiagnostics:
    """Diagnose the importance weights of evaluating a policy on a bandit log.

    Args:
        log: the logged data (with propensities, else only support can be assessed).
        action_dist: (n_rounds, n_actions[, n_positions]) evaluation probabilities, or None.
        target_prob: (n_rounds,) evaluation probability of the logged action, or None.
        logging_action_dist: (n_rounds, n_actions[, n_positions]) the logging policy's full
            distribution, if known: makes the support check exact.
        thresholds: when to warn (defaults: :class:`DiagnosticThresholds`).
        warn: whether to issue warnings for crossed thresholds.

    Returns:
        The diagnostics (weight fields are NaN when the log has no propensities).

    Raises:
        OPEInputError: malformed inputs.
    """
    thresholds = thresholds or DiagnosticThresholds()
    inputs = prepare_bandit_inputs(log, action_dist=action_dist, target_prob=target_prob)
    msgs: list[tuple[type[OPEWarning], str]] = []
    nan = float("nan")
    ess = frac = max_w = share = mean_w = nan
    if inputs.pscore is not None and inputs.target_prob is not None:
        ess, frac, max_w, share, mean_w, msgs = _weight_messages(
            inputs.target_prob / inputs.pscore, thresholds, "w")
    deficiency, method = nan, "unavailable"
    if action_dist is not None:
        dist = check_action_dist(log, action_dist)
        if logging_action_dist is not None:
            behaviour = check_action_dist(log, logging_action_dist, "logging_action_dist")
            b_at, d_at = at_logged_position(behaviour, log), at_logged_position(dist, log)
            mass = np.where(b_at == 0.0, d_at, 0.0).sum(axis=1)
            deficiency, method = float(mass.mean()), "exact"
        else:
            deficiency, method = float(_empirical_support(log, dist).mean()), "empirical"
        if deficiency > thresholds.max_support_deficiency:
            how = ("where the logging policy's probability is zero" if method == "exact"
                   else "on actions never seen in this log (at their position), i.e. logging propensity "
                   "zero or unknown")
            msgs.append((SupportDeficiencyWarning,
                         f"support deficiency: the evaluated policy puts {deficiency:.2%} of its probability "
                         f"mass {how}: IPS-type estimators (IPS, SNIPS, clipped IPS) never see rewards there "
                         "and are biased towards zero by up to that share of the reward scale, while DM and "
                         "the DR family extrapolate there with the reward model"))
    return WeightDiagnostics(log.n_rounds, ess, frac, max_w, share, mean_w, deficiency, method,  # type: ignore[arg-type]
                             _issue(msgs, warn))


def diagnose_slate(
    log: SlateLog,
    target: SlateTarget,
    *,
    thresholds: DiagnosticThresholds | None = None,
    warn: bool = True,
) -> WeightDiagnostics:
    """Diagnose the most variable slate weights available: whole-slate, else the last-slot cascade, else marginal.

    Args:
        log: the logged slates.
        target: the evaluation policy's probabilities of the logged slates.
        thresholds: when to warn.
        warn: whether to issue warnings.

    Returns:
        The diagnostics of the chosen weights (support is not assessed for slates).
    """
    thresholds = thresholds or DiagnosticThresholds()
    for kind, log_field, target_field in (
        ("slate", "slate_pscore", "slate_prob"),
        ("cascade", "cascade_pscore", "cascade_prob"),
        ("marginal", "marginal_pscore", "marginal_prob"),
    ):
        p, t = getattr(log, log_field), getattr(target, target_field)
        if p is None or t is None:
            continue
        if t.shape != p.shape:
            raise OPEInputError(f"`target.{target_field}` must have shape {p.shape}; found {t.shape}")
        w = t / p
        if kind == "slate":
            return weight_diagnostics(w, thresholds=thresholds, warn=warn, label="slate")
        if kind == "cascade":  # the full-prefix ratio is the whole-slate ratio
            return weight_diagnostics(w[:, -1], thresholds=thresholds, warn=warn, label="slate (cascade)")
        per_slot = [weight_diagnostics(w[:, k], thresholds=thresholds, warn=False) for k in range(w.shape[1])]
        worst = int(np.argmin([d.ess for d in per_slot]))
        return weight_diagnostics(w[:, worst], thresholds=thresholds, warn=warn, label=f"marginal (slot {worst})")
    return WeightDiagnostics.unavailable(log.n_rounds, "none")


def mean_weight_check(weights: np.ndarray, *, z: float = 3.0, tolerance: float = 0.05) -> str | None:
    r"""A message when the mean per-slot importance weight is significantly and materially away from 1.

    Note:
        .. math:: \mathbb{E}_{\pi_b}[w_k] = \sum_{a:\ \pi_b(a\text{ at }k) > 0} \pi_e(a\text{ at }k) \le 1,

        with equality when the logging policy can show everything the evaluated policy shows. The mean
        over requests of :math:`\bar w_i = \frac1K\sum_k w_{ik}` estimates it with standard error
        :math:`\mathrm{sd}(\bar w_i)/\sqrt n`. Below 1, about :math:`1 - \bar w` of the evaluated
        policy's mass is never logged (IPS-type estimates are biased towards 0 by that share, DM and
        DR extrapolate); above 1, the evaluated policy's probabilities are not on the logging
        policy's action space (e.g. it chooses among fewer candidates than the logging policy did).

    Args:
        weights: (n, K) per-slot weights (NaN at unlogged slots).
        z: how many standard errors away from 1 count as significant.
        tolerance: smallest distance from 1 worth a message.

    Returns:
        The message, or None.
    """
    w = np.asarray(weights, dtype=np.float64)
    per_request = np.nanmean(w, axis=1)
    n = per_request.shape[0]
    m = float(per_request.mean())
    se = float(per_request.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    if abs(m - 1.0) <= max(z * se, tolerance):
        return None
    if m < 1.0:
        return (f"per-slot weights average {m:.3g} (SE {se:.2g}), well below 1, their mean when the logging policy "
                f"can show everything the evaluated policy shows: about {1 - m:.0%} of the evaluated policy's "
                "probability mass falls on (item, slot) pairs the logging policy never shows. IPS-type estimates "
                "are biased towards 0 by about that share; DM and the DR family extrapolate there with the reward "
                "model")
    return (f"per-slot weights average {m:.3g} (SE {se:.2g}), well above 1, which is impossible when both policies "
            "choose from the same candidates: the evaluated policy's probabilities are not comparable with the "
            "logged propensities (e.g. it chooses among fewer candidates than the logging policy did), and every "
            "propensity-weighted estimate is biased")
