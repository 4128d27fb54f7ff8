r"""Off-policy evaluation of ranking policies, slot by slot (the item-position model), with DM and DR.

Request :math:`i` of :math:`n` shows :math:`K` slots; slot :math:`k` holds the logged item
:math:`a_{ik}` and reward :math:`r_{ik}`, logged with the per-slot marginal propensity
:math:`p_{ik} = \pi_b(a_{ik}\text{ at }k \mid x_i)`. The evaluation policy puts candidate :math:`j` at
slot :math:`k` with probability :math:`\pi_e(j\text{ at }k \mid x_i)`. Under the *item-position
model* (slot :math:`k`'s expected reward :math:`q(x, a, k)` depends only on the item at slot
:math:`k` and on :math:`k`, e.g. the position-based click model), the value of a ranking policy is

.. math:: V(\pi) = \mathbb{E}_x \sum_{k=1}^K \sum_j \pi(j\text{ at }k \mid x)\, q(x, j, k),

a sum of :math:`K` bandit problems, one per slot, with the slot in the context. Every bandit
estimator of :mod:`ope.estimators` then applies slot by slot with
:math:`w_{ik} = \pi_e(a_{ik}\text{ at }k \mid x_i) / p_{ik}` (IPS is exactly
:class:`~ope.slate.SlateIndependentIPS`), and DM and the DR family become available for rankings:

.. math::
    \hat V_{\mathrm{DM}} = \frac1n \sum_i \sum_k \hat q(x_i, \pi_e, k), \qquad
    \hat V_{\mathrm{DR}} = \hat V_{\mathrm{DM}}
        + \frac1n \sum_i \sum_k w_{ik}\,\big(r_{ik} - \hat q(x_i, a_{ik}, k)\big),

with :math:`\hat q(x, \pi_e, k) = \sum_j \pi_e(j\text{ at }k \mid x)\,\hat q(x, j, k)`.

Two choices make this a *ranking* evaluation rather than :math:`nK` independent bandit rounds:

* the per-slot terms of a request are summed before resampling, so the bootstrap and the normal
  interval treat **requests** as the independent units (the slots of one page share a user and a
  query and are correlated);
* self-normalised estimators normalise **each slot** by its own mean weight (as
  :class:`~ope.slate.SelfNormalizedSlateIndependentIPS` does), since each slot's weights have mean 1
  under the logging policy.

The whole-slate estimators (:class:`~ope.slate.SlateStandardIPS`, no model assumption) run on the
same requests when the log has slate propensities, so one report compares both.

The caller reduces the evaluation policy to per-slot quantities (``target_prob``, ``dm``,
``q_logged``: :class:`RankingInputs`, e.g. with :func:`reduce_ranking_target`), so that evaluating
a policy over a large candidate set never needs an (n, K, n_candidates) array in memory at once.

Modules: :mod:`ope.ranking.inputs` (:class:`RankingInputs` and the reductions that build it),
:mod:`ope.ranking.pair_model` (the cross-fitted DM/DR reward model, on the cross-fitting folds and
GLM of :mod:`ope.reward_model`) and :mod:`ope.ranking.evaluate` (:func:`evaluate_ranking`, with the
weight diagnostics of :mod:`ope.diagnostics`).
"""

from ope.diagnostics import mean_weight_check
from ope.ranking.evaluate import (
    DEFAULT_RANKING_ESTIMATORS,
    RANKING_ESTIMATORS,
    RankingEstimator,
    aggregate_slot_terms,
    evaluate_ranking,
)
from ope.ranking.inputs import RankingInputs, candidate_pool_size, reduce_ranking_target
from ope.ranking.pair_model import FittedPairModel, PairRewardModel, cross_fit_pair_models, cross_fit_pair_q_hat

__all__ = [
    "DEFAULT_RANKING_ESTIMATORS",
    "RANKING_ESTIMATORS",
    "FittedPairModel",
    "PairRewardModel",
    "RankingEstimator",
    "RankingInputs",
    "aggregate_slot_terms",
    "candidate_pool_size",
    "cross_fit_pair_models",
    "cross_fit_pair_q_hat",
    "evaluate_ranking",
    "mean_weight_check",
    "reduce_ranking_target",
]
