"""Slot-wise and whole-slate estimators of a ranking policy's value (:func:`evaluate_ranking`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ope.data import SlateLog, SlateTarget
from ope.diagnostics import DiagnosticThresholds, WeightDiagnostics, mean_weight_check, weight_diagnostics
from ope.errors import MissingPropensityError, OPEInputError, WeightMeanWarning
from ope.estimators import (
    IPS,
    BanditEstimator,
    BanditInputs,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    SelfNormalizedDR,
    SelfNormalizedIPS,
    SwitchDR,
)
from ope.evaluate import CI_METHODS, CIMethod, OPEReport, _check_common, results_from_terms
from ope.ranking.inputs import RankingInputs
from ope.slate import (
    SelfNormalizedSlateIndependentIPS,
    SelfNormalizedSlateRewardInteractionIPS,
    SelfNormalizedSlateStandardIPS,
    SlateCascadeDR,
    SlateEstimator,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateRewardPredictions,
    SlateStandardIPS,
)
from ope.terms import RoundTerms

RankingEstimator = BanditEstimator | SlateEstimator

#: every estimator :func:`evaluate_ranking` knows, by name (slot-wise bandit estimators, then slate ones)
RANKING_ESTIMATORS: dict[str, RankingEstimator] = {
    e.name: e
    for e in (
        DirectMethod(), IPS(), ClippedIPS(), SelfNormalizedIPS(), DoublyRobust(), SelfNormalizedDR(), SwitchDR(),
        DoublyRobustWithShrinkage(), SlateStandardIPS(), SelfNormalizedSlateStandardIPS(), SlateIndependentIPS(),
        SelfNormalizedSlateIndependentIPS(), SlateRewardInteractionIPS(), SelfNormalizedSlateRewardInteractionIPS(),
        SlateCascadeDR(),
    )
}

#: what :func:`evaluate_ranking` runs by default (``iips``/``sniips`` equal ``ips``/``snips`` here; ``rips``,
#: ``snrips`` and ``cascade_dr`` need the logging policy's prefix propensities, the ``prefix_propensity`` column)
DEFAULT_RANKING_ESTIMATORS: tuple[RankingEstimator, ...] = tuple(
    RANKING_ESTIMATORS[n] for n in ("dm", "ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dr_os",
                                    "sips", "snsips", "rips", "snrips", "cascade_dr")
)


def aggregate_slot_terms(terms: RoundTerms, n_requests: int, slate_size: int) -> RoundTerms:
    """Per-request terms from per-slot terms (request-major rows): sum the additive part, keep ratios per slot.

    The estimate becomes ``mean_i sum_k a_ik + sum_{k, j} mean_i b_ikj / mean_i c_ikj``: the value of a
    whole page, with each slot's self-normalised parts normalised by that slot's own mean weight.

    Args:
        terms: terms of ``n_requests * slate_size`` slot rounds.
        n_requests: n.
        slate_size: K.

    Returns:
        Terms of the n requests.
    """
    if terms.n_rounds != n_requests * slate_size:
        raise OPEInputError(f"`terms` must have n_requests * K = {n_requests * slate_size} rounds; "
                            f"found {terms.n_rounds}")
    n, k, j = n_requests, slate_size, terms.n_ratios
    additive = terms.additive.reshape(n, k).sum(axis=1)
    numer = terms.numer.reshape(n, k * j)
    denom = terms.denom.reshape(n, k * j)
    return RoundTerms(additive, numer, denom)


def _slot_terms(est: BanditEstimator, inputs: RankingInputs, bandit: BanditInputs) -> RoundTerms | str:
    if est.needs_pscore and inputs.pscore is None:
        return str(MissingPropensityError(
            f"`pscore`: {est.name} needs the logging policy's per-slot propensities (the probability of each "
            "logged item at its position: the `propensity` column) and this log has none; DM does not need them "
            "and still runs"))
    if inputs.target_prob is None and est.needs_pscore:
        return ("`target_prob`: " f"{est.name} needs the evaluation policy's probability of each logged item at "
                "its slot; none was given")
    if est.needs_reward_model and inputs.dm is None:
        return (f"`dm`/`q_logged`: {est.name} needs reward-model predictions for the evaluation policy's "
                "candidates at every slot; none were given (no reward model, or the evaluation policy's full "
                "distribution over candidates is unknown)")
    try:
        return aggregate_slot_terms(est.terms(bandit), inputs.n_requests, inputs.slate_size)
    except OPEInputError as exc:
        return str(exc)


def _slate_data(inputs: RankingInputs) -> tuple[SlateLog, SlateTarget] | str:
    n, k = inputs.n_requests, inputs.slate_size
    if inputs.target_slate_prob is None and inputs.target_prob is None:
        return "`target_slate_prob`/`target_prob`: the evaluation policy's probabilities of the logged rankings " \
               "are unknown"
    try:
        log = SlateLog(reward=inputs.reward, slate=np.broadcast_to(np.arange(k), (n, k)), n_actions=k,
                       slate_pscore=inputs.slate_pscore, marginal_pscore=inputs.pscore,
                       cascade_pscore=inputs.prefix_pscore)
        target = SlateTarget(slate_prob=inputs.target_slate_prob, marginal_prob=inputs.target_prob,
                             cascade_prob=inputs.target_prefix_prob)
    except OPEInputError as exc:
        return str(exc)
    return log, target


def evaluate_ranking(
    inputs: RankingInputs,
    *,
    estimators: Sequence[RankingEstimator] | None = None,
    ci: Sequence[CIMethod] | CIMethod = CI_METHODS,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    n_jobs: int | None = None,
    thresholds: DiagnosticThresholds | None = None,
    warn: bool = True,
    reward_model: str | None = None,
    notes: Sequence[str] = (),
) -> OPEReport:
    """Evaluate a ranking policy with slot-wise bandit estimators (DM, IPS, DR, ...) and slate estimators.

    Args:
        inputs: the per-slot quantities.
        estimators: bandit estimators (applied slot by slot) and/or slate estimators, with distinct names
            (default: :data:`DEFAULT_RANKING_ESTIMATORS`).
        ci: interval methods, from ``("bootstrap", "normal")``.
        alpha: 1 - nominal coverage, in (0, 1).
        n_resamples: bootstrap resamples (of requests; shared by all estimators).
        seed: seeds the bootstrap.
        n_jobs: bootstrap threads (does not change results).
        thresholds: when diagnostics warn.
        warn: whether to issue diagnostic warnings.
        reward_model: label of the reward model behind ``inputs.dm``, for the report.
        notes: remarks to print under the table.

    Returns:
        The report (``kind="ranking"``; values are per request: the expected sum of slot rewards). An
        estimator whose requirements are missing (propensities, reward model, slate probabilities) has
        its reason in the ``error`` field; the others run.

    Raises:
        OPEInputError: malformed arguments.
    """
    chosen = list(DEFAULT_RANKING_ESTIMATORS if estimators is None else estimators)
    for est in chosen:
        if not isinstance(est, BanditEstimator | SlateEstimator):
            raise OPEInputError(f"`estimators` must hold bandit or slate estimators; found {type(est).__name__}")
    names = [e.name for e in chosen]
    methods = _check_common(ci, alpha, n_resamples, names)
    bandit = inputs.slot_inputs()
    slate: tuple[SlateLog, SlateTarget] | str | None = None
    terms: list[RoundTerms | str] = []
    for est in chosen:
        if isinstance(est, BanditEstimator):
            terms.append(_slot_terms(est, inputs, bandit))
            continue
        if slate is None:
            slate = _slate_data(inputs)
        if isinstance(slate, str):
            terms.append(slate)
            continue
        try:
            if isinstance(est, SlateCascadeDR):
                if inputs.dm is None or inputs.q_logged is None:
                    terms.append(f"`dm`/`q_logged`: {est.name} needs reward-model predictions for the logged "
                                 "items and the evaluation policy at every slot; none were given")
                    continue
                q_target = inputs.dm if inputs.dm_prefix is None else inputs.dm_prefix
                terms.append(est.round_terms(*slate, SlateRewardPredictions(inputs.q_logged, q_target)))
            else:
                terms.append(est.round_terms(*slate))
        except OPEInputError as exc:
            message = str(exc)
            if message.startswith("`cascade_pscore`"):  # name the logged-data column
                message = (f"`prefix_pscore`: {est.name} needs the logging policy's probability of each logged "
                           "prefix (slots 1..k: the `prefix_propensity` column) and this log has none")
            terms.append(message)
    thresholds = thresholds or DiagnosticThresholds()
    w = inputs.weights()
    n = inputs.n_requests
    main = (weight_diagnostics(w[inputs.logged], thresholds=thresholds, warn=warn, label="per-slot")
            if w is not None else WeightDiagnostics.unavailable(int(inputs.logged.sum()), "per-slot"))
    mean_message = mean_weight_check(w) if w is not None else None
    if mean_message is not None:
        main = replace(main, messages=(*main.messages, mean_message))
        if warn:
            warnings.warn(mean_message, WeightMeanWarning, stacklevel=2)
    extra: list[WeightDiagnostics] = []
    if inputs.slate_pscore is not None and inputs.target_slate_prob is not None:
        extra.append(weight_diagnostics(inputs.target_slate_prob / inputs.slate_pscore, thresholds=thresholds,
                                        warn=warn, label="slate"))
    results = results_from_terms(names, terms, methods, alpha, n_resamples, seed, n_jobs)
    return OPEReport(results, main, n, inputs.logged_mean, float(alpha),
                     n_resamples if "bootstrap" in methods else 0, seed, reward_model, "ranking", tuple(extra),
                     tuple(notes))
