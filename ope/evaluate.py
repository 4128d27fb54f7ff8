"""One call from a log and an evaluation policy to a table of estimates, intervals and diagnostics.

:func:`evaluate` (or :func:`evaluate_bandit` / :func:`evaluate_slate`) runs every requested estimator
on the same prepared inputs, bootstraps all of them on the *same* resamples (so their intervals are
comparable and the cost is paid once), adds normal intervals, and diagnoses the importance weights.
An estimator whose requirements are missing (no propensities in the log, no full action
distribution for DM/DR) is reported with an error message instead of a value, while the others run;
malformed inputs raise :class:`~ope.errors.OPEInputError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ope.checks import check_scalar
from ope.data import BanditLog, SlateLog, SlateTarget
from ope.diagnostics import DiagnosticThresholds, WeightDiagnostics, diagnose, diagnose_slate
from ope.errors import OPEInputError
from ope.estimators import (
    IPS,
    BanditEstimator,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    SelfNormalizedDR,
    SelfNormalizedIPS,
    SwitchDR,
    prepare_bandit_inputs,
)
from ope.intervals import (
    ConfidenceInterval,
    bootstrap_replicates,
    normal_ci,
    percentile_interval,
    standard_error,
)
from ope.reward_model import RewardModel, cross_fit_q_hat, default_reward_model
from ope.slate import (
    SelfNormalizedSlateIndependentIPS,
    SelfNormalizedSlateRewardInteractionIPS,
    SelfNormalizedSlateStandardIPS,
    SlateEstimator,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)
from ope.terms import RoundTerms

__all__ = [
    "DEFAULT_BANDIT_ESTIMATORS",
    "DEFAULT_SLATE_ESTIMATORS",
    "EstimateResult",
    "OPEReport",
    "evaluate",
    "evaluate_bandit",
    "evaluate_slate",
]

CIMethod = Literal["bootstrap", "normal"]
CI_METHODS: tuple[CIMethod, ...] = ("bootstrap", "normal")

DEFAULT_BANDIT_ESTIMATORS: tuple[BanditEstimator, ...] = (
    DirectMethod(), IPS(), ClippedIPS(), SelfNormalizedIPS(), DoublyRobust(), SelfNormalizedDR(), SwitchDR(),
    DoublyRobustWithShrinkage(),
)
DEFAULT_SLATE_ESTIMATORS: tuple[SlateEstimator, ...] = (
    SlateStandardIPS(), SlateIndependentIPS(), SlateRewardInteractionIPS(), SelfNormalizedSlateStandardIPS(),
    SelfNormalizedSlateIndependentIPS(), SelfNormalizedSlateRewardInteractionIPS(),
)


@dataclass(frozen=True)
class EstimateResult:
    """One estimator's row of the report.

    Attributes:
        estimator: the estimator's name.
        value: the estimate (NaN when ``error`` is set).
        se: standard error from the per-round contributions (NaN when ``error`` is set).
        intervals: the requested confidence intervals.
        error: why the estimator could not run, or None.
    """

    estimator: str
    value: float
    se: float
    intervals: tuple[ConfidenceInterval, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the estimator ran."""
        return self.error is None

    def interval(self, method: CIMethod) -> ConfidenceInterval | None:
        """The interval of ``method``, or None if it was not computed."""
        for ci in self.intervals:
            if ci.method == method:
                return ci
        return None


def _none_if_nan(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass(frozen=True)
class OPEReport:
    """Estimates, intervals and diagnostics of one off-policy evaluation.

    Attributes:
        results: one row per estimator, in the order requested.
        diagnostics: importance-weight diagnostics.
        n_rounds: rounds in the log.
        logged_mean: the logging policy's on-policy value (mean logged reward per round).
        alpha: 1 - nominal coverage of the intervals.
        n_resamples: bootstrap resamples (0 if no bootstrap).
        seed: the seed of the bootstrap and of the cross-fitting folds.
        reward_model: name of the reward model used for DM/DR (None if none was needed or given
            as ``q_hat``).
        kind: ``"bandit"``, ``"slate"`` or ``"ranking"``.
        extra_diagnostics: further weight diagnostics (e.g. of the whole-slate weights when
            ``diagnostics`` describes the per-slot weights).
        notes: free-text remarks printed under the table (what was evaluated, caveats).
    """

    results: tuple[EstimateResult, ...]
    diagnostics: WeightDiagnostics
    n_rounds: int
    logged_mean: float
    alpha: float
    n_resamples: int
    seed: int | None
    reward_model: str | None
    kind: str
    extra_diagnostics: tuple[WeightDiagnostics, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def messages(self) -> tuple[str, ...]:
        """Every diagnostic warning message of the report (main and extra diagnostics)."""
        out = list(self.diagnostics.messages)
        for d in self.extra_diagnostics:
            out.extend(m for m in d.messages if m not in out)
        return tuple(out)

    def __getitem__(self, name: str) -> EstimateResult:
        """The row of estimator ``name``."""
        for row in self.results:
            if row.estimator == name:
                return row
        raise KeyError(f"no estimator named {name!r}; have {[r.estimator for r in self.results]}")

    def _methods(self) -> list[CIMethod]:
        present = {ci.method for r in self.results for ci in r.intervals}
        return [m for m in CI_METHODS if m in present]

    def to_frame(self) -> pd.DataFrame:
        """One row per estimator: estimate, se, ``{method}_low``/``{method}_high`` per interval, error."""
        rows: list[dict[str, Any]] = []
        methods = self._methods()
        for r in self.results:
            row: dict[str, Any] = {"estimator": r.estimator, "estimate": r.value, "se": r.se}
            for m in methods:
                ci = r.interval(m)
                row[f"{m}_low"] = ci.low if ci else float("nan")
                row[f"{m}_high"] = ci.high if ci else float("nan")
            row["error"] = r.error or ""
            rows.append(row)
        return pd.DataFrame(rows).set_index("estimator")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (NaN becomes None)."""
        return {
            "kind": self.kind, "n_rounds": self.n_rounds, "logged_mean": self.logged_mean,
            "alpha": self.alpha, "n_resamples": self.n_resamples, "seed": self.seed,
            "reward_model": self.reward_model,
            "results": [
                {"estimator": r.estimator, "estimate": _none_if_nan(r.value), "se": _none_if_nan(r.se),
                 "intervals": [{"method": c.method, "level": c.level, "low": c.low, "high": c.high}
                               for c in r.intervals],
                 "error": r.error}
                for r in self.results
            ],
            "diagnostics": _diagnostics_dict(self.diagnostics),
            "extra_diagnostics": [_diagnostics_dict(d) for d in self.extra_diagnostics],
            "notes": list(self.notes),
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The report as JSON; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table of the estimates and intervals, followed by the diagnostics and warnings."""
        level = f"{1 - self.alpha:.0%}"
        methods = self._methods()
        head = ["estimator", "estimate", "SE", *[f"{level} {m} CI" for m in methods], "note"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        fmt = f"{{:.{digits}g}}"
        for r in self.results:
            if not r.ok:
                cells = [r.estimator, "-", "-", *["-"] * len(methods), (r.error or "").replace("|", "/")]
            else:
                cis = []
                for m in methods:
                    ci = r.interval(m)
                    cis.append("-" if ci is None else f"[{fmt.format(ci.low)}, {fmt.format(ci.high)}]")
                cells = [r.estimator, fmt.format(r.value), fmt.format(r.se), *cis, ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"rounds: {self.n_rounds:,}; logging policy's mean reward: {fmt.format(self.logged_mean)}; "
            f"bootstrap resamples: {self.n_resamples:,}; seed: {self.seed}"
            + (f"; reward model: {self.reward_model}" if self.reward_model else ""),
        ]
        for d in (self.diagnostics, *self.extra_diagnostics):
            if not math.isnan(d.ess):
                share = "no weight" if math.isnan(d.max_weight_share) else f"{d.max_weight_share:.2%} of total"
                lines.append(
                    f"weights ({d.weights_label}): ESS {d.ess:,.1f} of {d.n_rounds:,} ({d.ess_fraction:.1%}); "
                    f"max {d.max_weight:.4g} ({share}); mean {d.mean_weight:.4g}"
                )
            if not math.isnan(d.support_deficiency):
                lines.append(
                    f"support deficiency ({d.support_method}): {d.support_deficiency:.2%} of the target mass")
        for note in self.notes:
            lines.append(f"- note: {note}")
        for message in self.messages:
            lines.append(f"- warning: {message}")
        return "\n".join(lines)


def _diagnostics_dict(d: WeightDiagnostics) -> dict[str, Any]:
    return {k: _none_if_nan(v) if isinstance(v, float) else v for k, v in d.to_dict().items()}


def _check_common(ci: Sequence[str], alpha: float, n_resamples: int, names: list[str]) -> tuple[CIMethod, ...]:
    check_scalar(alpha, "alpha", float, min_val=0.0, max_val=1.0, min_inclusive=False, max_inclusive=False)
    check_scalar(n_resamples, "n_resamples", int, min_val=1)
    methods = (ci,) if isinstance(ci, str) else tuple(ci)
    for m in methods:
        if m not in CI_METHODS:
            raise OPEInputError(f"`ci` must hold methods from {CI_METHODS}; found {m!r}")
    duplicated = sorted({x for x in names if names.count(x) > 1})
    if duplicated:
        raise OPEInputError(f"`estimators` must have distinct names; found duplicates {duplicated}")
    if not names:
        raise OPEInputError("`estimators` must hold at least one estimator; found none")
    return methods  # type: ignore[return-value]


def results_from_terms(
    names: list[str],
    terms: list[RoundTerms | str],
    methods: tuple[CIMethod, ...],
    alpha: float,
    n_resamples: int,
    seed: int | None,
    n_jobs: int | None,
) -> tuple[EstimateResult, ...]:
    """One result row per estimator: a value, SE and intervals from its terms, or its error message.

    Args:
        names: estimator names, in report order.
        terms: per estimator, its :class:`~ope.terms.RoundTerms` or the message saying why it could not run.
        methods: interval methods.
        alpha: 1 - nominal coverage.
        n_resamples: bootstrap resamples (shared by all estimators: paired).
        seed: bootstrap seed.
        n_jobs: bootstrap threads.

    Returns:
        The rows.
    """
    ran = [t for t in terms if isinstance(t, RoundTerms)]
    reps = None
    if "bootstrap" in methods and ran:
        reps = bootstrap_replicates(ran, n_resamples=n_resamples, seed=seed, n_jobs=n_jobs)
    out: list[EstimateResult] = []
    col = 0
    nan = float("nan")
    for name, t in zip(names, terms, strict=True):
        if isinstance(t, str):
            out.append(EstimateResult(name, nan, nan, (), t))
            continue
        intervals: list[ConfidenceInterval] = []
        for m in methods:
            if m == "bootstrap" and reps is not None:
                intervals.append(percentile_interval(reps[:, col], alpha))
            elif m == "normal":
                intervals.append(normal_ci(t, alpha=alpha))
        col += 1
        out.append(EstimateResult(name, t.value, standard_error(t), tuple(intervals)))
    return tuple(out)


def evaluate_bandit(
    log: BanditLog,
    *,
    action_dist: np.ndarray | None = None,
    target_prob: np.ndarray | None = None,
    estimators: Sequence[BanditEstimator] | None = None,
    q_hat: np.ndarray | None = None,
    reward_model: RewardModel | None = None,
    n_folds: int = 3,
    ci: Sequence[CIMethod] | CIMethod = CI_METHODS,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    n_jobs: int | None = None,
    logging_action_dist: np.ndarray | None = None,
    thresholds: DiagnosticThresholds | None = None,
    warn: bool = True,
) -> OPEReport:
    """Evaluate a policy on a bandit log with several estimators.

    Args:
        log: the logged data (propensities optional: without them only DM runs).
        action_dist: (n_rounds, n_actions[, n_positions]) evaluation probabilities (needed by DM/DR).
        target_prob: (n_rounds,) evaluation probability of each logged action (enough for the IPS family).
        estimators: the estimators (default: :data:`DEFAULT_BANDIT_ESTIMATORS`).
        q_hat: (n_rounds, n_actions[, n_positions]) reward-model predictions; fitted with
            :func:`~ope.reward_model.cross_fit_q_hat` when None and an estimator needs it.
        reward_model: the model to cross-fit (default: :func:`~ope.reward_model.default_reward_model`).
        n_folds: cross-fitting folds.
        ci: interval methods, from ``("bootstrap", "normal")``.
        alpha: 1 - nominal coverage, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seeds the bootstrap and the fold assignment.
        n_jobs: bootstrap worker threads (does not change results).
        logging_action_dist: the logging policy's full distribution, if known (exact support check).
        thresholds: when diagnostics warn.
        warn: whether to issue diagnostic warnings.

    Returns:
        The report.

    Raises:
        OPEInputError: malformed inputs (missing requirements of single estimators are reported in
            the table instead).
    """
    chosen = list(DEFAULT_BANDIT_ESTIMATORS if estimators is None else estimators)
    names = [e.name for e in chosen]
    methods = _check_common(ci, alpha, n_resamples, names)
    if action_dist is None and target_prob is None:
        raise OPEInputError("`action_dist`/`target_prob`: pass the evaluation policy as one of them; found neither")
    model_name = None
    if q_hat is None and action_dist is not None and any(e.needs_reward_model for e in chosen):
        model = reward_model if reward_model is not None else default_reward_model(log)
        q_hat = cross_fit_q_hat(log, model, n_folds=n_folds, seed=seed)
        model_name = f"{model.name} ({n_folds}-fold cross-fitted)"
    inputs = prepare_bandit_inputs(log, action_dist=action_dist, target_prob=target_prob, q_hat=q_hat)
    terms: list[RoundTerms | str] = []
    for est in chosen:
        try:
            terms.append(est.terms(inputs))
        except OPEInputError as exc:
            terms.append(str(exc))
    diagnostics = diagnose(log, action_dist=action_dist, target_prob=target_prob,
                           logging_action_dist=logging_action_dist, thresholds=thresholds, warn=warn)
    results = results_from_terms(names, terms, methods, alpha, n_resamples, seed, n_jobs)
    return OPEReport(results, diagnostics, log.n_rounds, log.logged_mean, float(alpha),
                     n_resamples if "bootstrap" in methods else 0, seed, model_name, "bandit")


def evaluate_slate(
    log: SlateLog,
    target: SlateTarget,
    *,
    estimators: Sequence[SlateEstimator] | None = None,
    ci: Sequence[CIMethod] | CIMethod = CI_METHODS,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    n_jobs: int | None = None,
    thresholds: DiagnosticThresholds | None = None,
    warn: bool = True,
) -> OPEReport:
    """Evaluate a ranking policy on a slate log with several estimators.

    Args:
        log: the logged slates.
        target: the evaluation policy's probabilities of the logged slates.
        estimators: the estimators (default: :data:`DEFAULT_SLATE_ESTIMATORS`).
        ci: interval methods, from ``("bootstrap", "normal")``.
        alpha: 1 - nominal coverage, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seeds the bootstrap.
        n_jobs: bootstrap worker threads (does not change results).
        thresholds: when diagnostics warn.
        warn: whether to issue diagnostic warnings.

    Returns:
        The report (an estimator whose propensities the log or target lacks is reported as an error).
    """
    chosen = list(DEFAULT_SLATE_ESTIMATORS if estimators is None else estimators)
    names = [e.name for e in chosen]
    methods = _check_common(ci, alpha, n_resamples, names)
    if target.n_rounds != log.n_rounds:
        raise OPEInputError(
            f"`target` must cover the log's {log.n_rounds} rounds; found {target.n_rounds}"
        )
    terms: list[RoundTerms | str] = []
    for est in chosen:
        try:
            terms.append(est.round_terms(log, target))
        except OPEInputError as exc:
            terms.append(str(exc))
    diagnostics = diagnose_slate(log, target, thresholds=thresholds, warn=warn)
    results = results_from_terms(names, terms, methods, alpha, n_resamples, seed, n_jobs)
    return OPEReport(results, diagnostics, log.n_rounds, log.logged_mean, float(alpha),
                     n_resamples if "bootstrap" in methods else 0, seed, None, "slate")


def evaluate(log: BanditLog | SlateLog, target: np.ndarray | SlateTarget, **kwargs: Any) -> OPEReport:
    """Evaluate a policy on a log: the entry point the ``shopgym ope`` command calls.

    Args:
        log: a :class:`~ope.data.BanditLog` or a :class:`~ope.data.SlateLog`.
        target: for a bandit log, ``action_dist`` (n_rounds, n_actions[, n_positions]) or
            ``target_prob`` (n_rounds,) (told apart by dimensionality); for a slate log, a
            :class:`~ope.data.SlateTarget`.
        **kwargs: passed to :func:`evaluate_bandit` or :func:`evaluate_slate`.

    Returns:
        The report.

    Raises:
        OPEInputError: the target does not fit the kind of log, or any other malformed input.
    """
    if isinstance(log, SlateLog):
        if not isinstance(target, SlateTarget):
            raise OPEInputError(f"`target` must be a SlateTarget for a SlateLog; found {type(target).__name__}")
        return evaluate_slate(log, target, **kwargs)
    if isinstance(target, SlateTarget):
        raise OPEInputError("`target` is a SlateTarget but `log` is a BanditLog; pass an action_dist array")
    arr = np.asarray(target)
    if arr.ndim == 1:
        return evaluate_bandit(log, target_prob=arr, **kwargs)
    return evaluate_bandit(log, action_dist=arr, **kwargs)
