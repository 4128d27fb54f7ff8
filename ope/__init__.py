"""Off-policy evaluation estimators.

Estimate how a new policy would have done from logs collected by another (the logging policy):

* data: :class:`BanditLog` (one action per round) and :class:`SlateLog` (rankings), built directly,
  from a :class:`~shopgym.data.LoggedData` (:func:`bandit_log_from_logged`) or from obp's dicts
  (:func:`bandit_log_from_obp`);
* rankings evaluated slot by slot with DM, IPS and DR (:func:`evaluate_ranking`, :mod:`ope.ranking`);
  a ranking policy of :mod:`agents` on a logged dataset: :mod:`shopgym.app.offline` (application code);
* estimators: :class:`DirectMethod`, :class:`IPS`, :class:`ClippedIPS`, :class:`SelfNormalizedIPS`,
  :class:`DoublyRobust`, :class:`SelfNormalizedDR`, :class:`SwitchDR`,
  :class:`DoublyRobustWithShrinkage`; for slates :class:`SlateStandardIPS`,
  :class:`SlateIndependentIPS`, :class:`SlateRewardInteractionIPS` and their self-normalised versions, and the
  cascade doubly robust :class:`SlateCascadeDR` (with :class:`SlateRewardPredictions`);
* reward models for DM/DR with cross-fitting (:func:`cross_fit_q_hat`);
* intervals (:func:`bootstrap_ci`, :func:`normal_ci`) and weight diagnostics (:func:`diagnose`);
* :func:`evaluate`: all of it in one call, returning an :class:`OPEReport`.

See ``docs/ope.md``.
"""

from ope.data import BanditLog, SlateLog, SlateTarget
from ope.diagnostics import DiagnosticThresholds, WeightDiagnostics, diagnose, diagnose_slate, weight_diagnostics
from ope.errors import (
    LargeImportanceWeightWarning,
    LowEffectiveSampleSizeWarning,
    MissingPropensityError,
    OPEDataWarning,
    OPEInputError,
    OPEWarning,
    SupportDeficiencyWarning,
    WeightMeanWarning,
)
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
    WorstCaseBound,
    prepare_bandit_inputs,
)
from ope.evaluate import (
    DEFAULT_BANDIT_ESTIMATORS,
    DEFAULT_SLATE_ESTIMATORS,
    EstimateResult,
    OPEReport,
    evaluate,
    evaluate_bandit,
    evaluate_slate,
)
from ope.interop import bandit_log_from_obp, bandit_log_to_obp, slate_log_from_obp, slate_log_to_obp
from ope.intervals import (
    ConfidenceInterval,
    bootstrap_ci,
    bootstrap_replicates,
    normal_ci,
    resample_counts,
    standard_error,
)
from ope.logged import bandit_log_from_logged, slate_log_from_logged
from ope.ranking import (
    DEFAULT_RANKING_ESTIMATORS,
    RANKING_ESTIMATORS,
    FittedPairModel,
    PairRewardModel,
    RankingInputs,
    aggregate_slot_terms,
    candidate_pool_size,
    cross_fit_pair_models,
    cross_fit_pair_q_hat,
    evaluate_ranking,
    mean_weight_check,
    reduce_ranking_target,
)
from ope.reward_model import CellMeanModel, LinearRewardModel, RewardModel, cross_fit_q_hat, default_reward_model
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
from ope.synthetic import BanditSample, SlateSample, SyntheticBandit, SyntheticSlates
from ope.targets import (
    epsilon_greedy_action_dist,
    plackett_luce_prefix_prob,
    sample_plackett_luce,
    slate_target_from_position_dist,
    slate_target_plackett_luce,
    softmax_action_dist,
    target_prob_of_logged,
    uniform_action_dist,
)
from ope.terms import RoundTerms

__all__ = [
    "DEFAULT_BANDIT_ESTIMATORS",
    "DEFAULT_RANKING_ESTIMATORS",
    "DEFAULT_SLATE_ESTIMATORS",
    "IPS",
    "BanditEstimator",
    "BanditInputs",
    "BanditLog",
    "BanditSample",
    "CellMeanModel",
    "ClippedIPS",
    "ConfidenceInterval",
    "DiagnosticThresholds",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustWithShrinkage",
    "EstimateResult",
    "FittedPairModel",
    "LargeImportanceWeightWarning",
    "LinearRewardModel",
    "LowEffectiveSampleSizeWarning",
    "MissingPropensityError",
    "OPEDataWarning",
    "OPEInputError",
    "OPEReport",
    "OPEWarning",
    "PairRewardModel",
    "RANKING_ESTIMATORS",
    "RankingInputs",
    "RewardModel",
    "RoundTerms",
    "SelfNormalizedDR",
    "SelfNormalizedIPS",
    "SelfNormalizedSlateIndependentIPS",
    "SelfNormalizedSlateRewardInteractionIPS",
    "SelfNormalizedSlateStandardIPS",
    "SlateEstimator",
    "SlateIndependentIPS",
    "SlateLog",
    "SlateRewardInteractionIPS",
    "SlateCascadeDR",
    "SlateRewardPredictions",
    "SlateSample",
    "SlateStandardIPS",
    "SlateTarget",
    "SupportDeficiencyWarning",
    "SwitchDR",
    "WorstCaseBound",
    "SyntheticBandit",
    "SyntheticSlates",
    "WeightDiagnostics",
    "WeightMeanWarning",
    "aggregate_slot_terms",
    "bandit_log_from_logged",
    "bandit_log_from_obp",
    "bandit_log_to_obp",
    "bootstrap_ci",
    "bootstrap_replicates",
    "candidate_pool_size",
    "cross_fit_pair_models",
    "cross_fit_pair_q_hat",
    "cross_fit_q_hat",
    "default_reward_model",
    "diagnose",
    "diagnose_slate",
    "epsilon_greedy_action_dist",
    "evaluate",
    "evaluate_bandit",
    "evaluate_ranking",
    "evaluate_slate",
    "mean_weight_check",
    "normal_ci",
    "plackett_luce_prefix_prob",
    "prepare_bandit_inputs",
    "reduce_ranking_target",
    "resample_counts",
    "sample_plackett_luce",
    "slate_log_from_logged",
    "slate_log_from_obp",
    "slate_log_to_obp",
    "slate_target_from_position_dist",
    "slate_target_plackett_luce",
    "softmax_action_dist",
    "standard_error",
    "target_prob_of_logged",
    "uniform_action_dist",
    "weight_diagnostics",
]
