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
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.special import expit

from ope.checks import as_array, check_finite, check_int_range, check_probabilities, check_scalar, check_shape
from ope.data import SlateLog, SlateTarget
from ope.diagnostics import DiagnosticThresholds, WeightDiagnostics, weight_diagnostics
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
from ope.reward_model import fit_glm
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

RankingEstimator = BanditEstimator | SlateEstimator

#: every estimator :func:`evaluate_ranking` knows, by name (slot-wise bandit estimators, then slate ones)
RANKING_ESTIMATORS: dict[str, RankingEstimator] = {
    e.name: e
    for e in (
        DirectMethod(), IPS(), ClippedIPS(), SelfNormalizedIPS(), DoublyRobust(), SelfNormalizedDR(), SwitchDR(),
        DoublyRobustWithShrinkage(), SlateStandardIPS(), SelfNormalizedSlateStandardIPS(), SlateIndependentIPS(),
        SelfNormalizedSlateIndependentIPS(), SlateRewardInteractionIPS(), SelfNormalizedSlateRewardInteractionIPS(),
    )
}

#: what :func:`evaluate_ranking` runs by default (``iips``/``sniips`` equal ``ips``/``snips`` here and
#: ``rips`` needs cascade propensities, which the logged-data format does not carry)
DEFAULT_RANKING_ESTIMATORS: tuple[RankingEstimator, ...] = tuple(
    RANKING_ESTIMATORS[n] for n in ("dm", "ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dr_os",
                                    "sips", "snsips")
)


def _opt(value: object, name: str, shape: tuple[int, ...], description: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = as_array(value, name, ndim=len(shape))
    check_shape(arr, name, shape, description)
    return arr


@dataclass(frozen=True)
class RankingInputs:
    r"""Per-slot quantities of one (log, evaluation policy, reward model) triple.

    Attributes:
        reward: (n_requests, K) float64 per-slot rewards, finite.
        target_prob: (n_requests, K) float64 in [0, 1]: the evaluation policy's probability of putting
            the logged item of slot k at slot k, or None.
        pscore: (n_requests, K) float64 in (0, 1]: the logging policy's probability of the same event
            (the ``propensity`` column), or None when the log has none.
        dm: (n_requests, K) float64 :math:`\hat q(x_i, \pi_e, k)`, the reward model's expected reward
            of slot k under the evaluation policy, or None.
        q_logged: (n_requests, K) float64 :math:`\hat q(x_i, a_{ik}, k)`, or None (given with ``dm``).
        slate_pscore: (n_requests,) float64 in (0, 1]: the logging probability of the whole logged
            ranking, or None.
        target_slate_prob: (n_requests,) float64 in [0, 1]: the evaluation policy's probability of the
            whole logged ranking, or None.
        mask: (n_requests, K) bool, which slots each request logged (None: all). For logs whose
            requests show only some positions (e.g. the Open Bandit Dataset: one row per request at
            position 1, 2 or 3). The value is then the expected reward summed over the *logged*
            positions; unlogged slots contribute nothing: their fields are set to reward 0,
            ``target_prob`` = ``pscore`` = 1 and ``dm`` = ``q_logged`` = 0 (whatever was passed), so
            that every estimator's slot term vanishes and a self-normalised slot's normaliser counts
            them at their expected weight, 1 (keeping SNIPS on IPS's scale).

    Raises:
        OPEInputError: a field has the wrong shape or values outside its range.
    """

    reward: np.ndarray
    target_prob: np.ndarray | None = None
    pscore: np.ndarray | None = None
    dm: np.ndarray | None = None
    q_logged: np.ndarray | None = None
    slate_pscore: np.ndarray | None = None
    target_slate_prob: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        reward = as_array(self.reward, "reward", ndim=2)
        n, k = reward.shape
        if n == 0 or k == 0:
            raise OPEInputError(f"`reward` must have shape (n_requests >= 1, K >= 1); found {reward.shape}")
        per_slot = f"(n_requests={n}, K={k}), like `reward`"
        per_request = f"(n_requests={n},)"
        mask: np.ndarray | None = None
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.dtype != bool:
                raise OPEInputError(f"`mask` must be a boolean array; found dtype {mask.dtype}")
            check_shape(mask, "mask", (n, k), per_slot)
            if not mask.any(axis=1).all():
                i = int(np.flatnonzero(~mask.any(axis=1))[0])
                raise OPEInputError(f"`mask` must mark at least one logged slot per request; request {i} has none")
            if mask.all():
                mask = None
        fills = {"reward": 0.0, "target_prob": 1.0, "pscore": 1.0, "dm": 0.0, "q_logged": 0.0}
        if mask is not None:
            for name, fill in fills.items():
                value = getattr(self, name)
                if value is not None:
                    given = as_array(value, name, ndim=2)
                    check_shape(given, name, (n, k), per_slot)
                    object.__setattr__(self, name, np.where(mask, given, fill))
            reward = as_array(self.reward, "reward", ndim=2)
        check_finite(reward, "reward")
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "mask", mask)
        target = _opt(self.target_prob, "target_prob", (n, k), per_slot)
        if target is not None:
            check_probabilities(target, "target_prob", meaning="the evaluation policy's probability of the logged "
                                "item at its slot")
        pscore = _opt(self.pscore, "pscore", (n, k), per_slot)
        if pscore is not None:
            check_probabilities(pscore, "pscore", allow_zero=False,
                                meaning="the logging policy's probability of the logged item at its slot; pass "
                                "pscore=None if the log has none")
        if (self.dm is None) != (self.q_logged is None):
            raise OPEInputError("`dm` and `q_logged` come from the same reward model: pass both or neither; "
                                f"found dm={'None' if self.dm is None else 'array'}, "
                                f"q_logged={'None' if self.q_logged is None else 'array'}")
        dm = _opt(self.dm, "dm", (n, k), per_slot)
        q_logged = _opt(self.q_logged, "q_logged", (n, k), per_slot)
        for name, arr in (("dm", dm), ("q_logged", q_logged)):
            if arr is not None:
                check_finite(arr, name)
        slate_pscore = _opt(self.slate_pscore, "slate_pscore", (n,), per_request)
        if slate_pscore is not None:
            check_probabilities(slate_pscore, "slate_pscore", allow_zero=False,
                                meaning="the logging policy's probability of the logged ranking")
        target_slate = _opt(self.target_slate_prob, "target_slate_prob", (n,), per_request)
        if target_slate is not None:
            check_probabilities(target_slate, "target_slate_prob",
                                meaning="the evaluation policy's probability of the logged ranking")
        for name, value in (("target_prob", target), ("pscore", pscore), ("dm", dm), ("q_logged", q_logged),
                            ("slate_pscore", slate_pscore), ("target_slate_prob", target_slate)):
            object.__setattr__(self, name, value)

    @property
    def n_requests(self) -> int:
        """Number of requests n."""
        return int(self.reward.shape[0])

    @property
    def slate_size(self) -> int:
        """Slots per request K."""
        return int(self.reward.shape[1])

    @property
    def logged_mean(self) -> float:
        """Mean over requests of the summed slot rewards: the logging policy's on-policy value."""
        return float(self.reward.sum(axis=1).mean())

    def slot_inputs(self) -> BanditInputs:
        """The (n_requests * K,) per-slot rounds as bandit-estimator inputs (request-major order)."""

        def flat(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr.reshape(-1)

        return BanditInputs(reward=self.reward.reshape(-1), pscore=flat(self.pscore),
                            target_prob=flat(self.target_prob), dm=flat(self.dm), q_logged=flat(self.q_logged),
                            has_action_dist=self.dm is not None)

    @property
    def logged(self) -> np.ndarray:
        """(n_requests, K) bool: the logged slots (all True without a mask)."""
        return np.ones(self.reward.shape, dtype=bool) if self.mask is None else self.mask

    def weights(self) -> np.ndarray | None:
        """(n_requests, K) per-slot importance weights (NaN at unlogged slots), or None without them."""
        if self.pscore is None or self.target_prob is None:
            return None
        w = self.target_prob / self.pscore
        return w if self.mask is None else np.where(self.mask, w, np.nan)


def reduce_ranking_target(
    shown: np.ndarray, target_dist: np.ndarray, q_hat: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    r"""Reduce an evaluation policy's per-slot distribution over candidates to what the estimators need.

    Note:
        .. math:: \text{target\_prob}_{ik} = \pi_e(s_{ik}\text{ at }k),\quad
            \text{dm}_{ik} = \sum_j \pi_e(j\text{ at }k)\,\hat q_{ikj},\quad
            \text{q\_logged}_{ik} = \hat q_{i k s_{ik}}

    Args:
        shown: (n, K) int64 column (in [0, J)) of the candidate logged at each slot.
        target_dist: (n, K, J) float64 per-slot marginals of the evaluation policy over the J candidates;
            each (i, k) row sums to 1 (a policy ranking K of J candidates without repeats also has
            column sums <= 1, which is not required here).
        q_hat: (n, K, J) float64 reward-model predictions for every candidate at every slot, or None.

    Returns:
        (target_prob (n, K), dm (n, K) or None, q_logged (n, K) or None).

    Raises:
        OPEInputError: inconsistent shapes, columns out of range, or rows not summing to 1.
    """
    dist = as_array(target_dist, "target_dist", ndim=3)
    n, k, j = dist.shape
    cols = as_array(shown, "shown", ndim=2, kind="int")
    check_shape(cols, "shown", (n, k), f"(n={n}, K={k}), like `target_dist`'s first two axes")
    check_int_range(cols, "shown", 0, j, "candidate columns")
    check_probabilities(dist, "target_dist", meaning="per-slot probabilities of the evaluation policy")
    sums = dist.sum(axis=2)
    bad = np.abs(sums - 1.0) > 1e-6
    if bad.any():
        i, s = np.argwhere(bad)[0]
        raise OPEInputError(f"`target_dist` must sum to 1 over candidates at every (request, slot); found "
                            f"{int(bad.sum())} that do not, first (request {i}, slot {s}) sums to {sums[i, s]:.6g}")
    target_prob = np.take_along_axis(dist, cols[:, :, None], axis=2)[:, :, 0]
    if q_hat is None:
        return target_prob, None, None
    q = as_array(q_hat, "q_hat", ndim=3)
    check_shape(q, "q_hat", (n, k, j), "like `target_dist`")
    check_finite(q, "q_hat")
    dm = np.einsum("ikj,ikj->ik", dist, q)
    q_logged = np.take_along_axis(q, cols[:, :, None], axis=2)[:, :, 0]
    return target_prob, dm, q_logged


def candidate_pool_size(pscore: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    r"""Estimated number of candidates the logging policy chose from at each slot.

    Note:
        .. math:: \hat N_k = \frac1n \sum_i \frac{1}{p_{ik}}, \qquad
            \mathbb{E}\Big[\frac{1}{\pi_b(A_k\text{ at }k)}\Big] = \sum_{a:\ \pi_b(a\text{ at }k) > 0} 1

        is unbiased for the size of the logging policy's support at slot k (averaged over contexts).
        When it is well above K, the logging policy chose the shown items among more candidates than
        it showed, and an evaluation policy that only re-orders the *shown* items is not defined on
        the logging policy's action space: its per-slot IPS weights then have mean about
        :math:`\hat N_k / K` instead of 1.

    Args:
        pscore: (n, K) logged per-slot propensities in (0, 1] (any value at unlogged slots).
        mask: (n, K) bool logged slots, or None (all).

    Returns:
        (K,) float64 estimates (NaN for a slot never logged).
    """
    p = as_array(pscore, "pscore", ndim=2)
    logged = np.ones(p.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    check_shape(logged, "mask", p.shape, "like `pscore`")
    check_probabilities(p[logged], "pscore", allow_zero=False, meaning="logged per-slot propensities")
    inv = np.where(logged, 1.0 / np.where(logged, p, 1.0), 0.0)
    counts = logged.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(inv.sum(axis=0) / counts, dtype=np.float64)


# ---------------------------------------------------------------------- reward model on (request, candidate) features
@dataclass(frozen=True)
class FittedPairModel:
    """A fitted :class:`PairRewardModel`: predicts every candidate at every slot.

    Attributes:
        intercept: the intercept on the link scale.
        coef: (p,) coefficients of the standardised features.
        position_effect: (K,) per-slot effects (slot 0 is the reference, 0).
        mean: (p,) feature means used for standardising.
        scale: (p,) feature standard deviations used for standardising (1 where constant).
        link: ``"identity"`` or ``"logistic"``.
    """

    intercept: float
    coef: np.ndarray
    position_effect: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    link: Literal["identity", "logistic"]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(..., K, J) predictions from candidate features (..., J, p), for every slot."""
        z = ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        score = z[..., None, :] + self.position_effect[:, None]
        return expit(score) if self.link == "logistic" else score


@dataclass(frozen=True)
class PairRewardModel:
    r"""Ridge or L2-logistic regression of a slot's reward on (request, candidate) features plus the slot.

    Note:
        .. math:: \hat q(x, j, k) = g\big(\beta_0 + \beta^\top \tilde\phi(x, j) + \gamma_k\big)

        with :math:`\tilde\phi` the standardised features of candidate :math:`j` in request :math:`x`
        (e.g. user-item and query-item cosines, the item's popularity, the logging policy's score),
        :math:`\gamma_k` a per-slot effect (:math:`\gamma_1 = 0`) and :math:`g` the identity or the
        logistic function; the penalty :math:`\lambda\lVert(\beta, \gamma)\rVert^2` spares
        :math:`\beta_0`. The slot effect is additive on the link scale, which approximates a
        position-based model's multiplicative examination (DR corrects what DM gets wrong).

    Args:
        l2: penalty :math:`\lambda`, > 0.
        link: ``"identity"``, ``"logistic"`` (rewards in [0, 1]), or ``"auto"`` (logistic when every
            training reward is 0 or 1).
        name: label in reports.
    """

    l2: float = 1.0
    link: Literal["identity", "logistic", "auto"] = "auto"
    name: str = "pair_linear"

    def __post_init__(self) -> None:
        check_scalar(self.l2, "l2", float, min_val=0.0, min_inclusive=False)
        if self.link not in ("identity", "logistic", "auto"):
            raise OPEInputError(f"`link` must be 'identity', 'logistic' or 'auto'; found {self.link!r}")

    def fit(self, features: np.ndarray, position: np.ndarray, reward: np.ndarray, n_positions: int) -> FittedPairModel:
        """Fit on logged slots.

        Args:
            features: (m, p) features of the logged (request, item) pairs.
            position: (m,) int64 0-based slots, in [0, n_positions).
            reward: (m,) rewards.
            n_positions: K.

        Returns:
            The fitted model.
        """
        x = as_array(features, "features", ndim=2)
        m, p = x.shape
        pos = as_array(position, "position", ndim=1, kind="int")
        y = as_array(reward, "reward", ndim=1)
        check_shape(pos, "position", (m,), "(m,), like `features`")
        check_shape(y, "reward", (m,), "(m,), like `features`")
        check_int_range(pos, "position", 0, n_positions, "0-based slots")
        binary = bool(np.all((y == 0) | (y == 1)))
        link: Literal["identity", "logistic"] = (
            ("logistic" if binary else "identity") if self.link == "auto" else self.link)
        if link == "logistic" and ((y < 0).any() or (y > 1).any()):
            raise OPEInputError("`reward`: a logistic reward model needs rewards in [0, 1]; found values outside "
                                f"(min {y.min():.4g}, max {y.max():.4g}); use link='identity'")
        mean = x.mean(axis=0)
        sd = x.std(axis=0)
        scale = np.where(sd > 0, sd, 1.0)
        onehot = np.eye(n_positions)[pos][:, 1:]
        design = np.hstack([np.ones((m, 1)), (x - mean) / scale, onehot])
        beta = fit_glm(design, y, l2=self.l2, link=link)
        return FittedPairModel(float(beta[0]), beta[1 : 1 + p], np.r_[0.0, beta[1 + p :]], mean, scale, link)


def _folds(n: int, n_folds: int, seed: int | None) -> np.ndarray:
    check_scalar(n_folds, "n_folds", int, min_val=1, max_val=n)
    if n_folds == 1:
        return np.zeros(n, dtype=np.int64)
    return np.asarray(np.random.default_rng(seed).permutation(n) % n_folds, dtype=np.int64)


def cross_fit_pair_models(
    model: PairRewardModel,
    logged_features: np.ndarray,
    reward: np.ndarray,
    *,
    n_folds: int = 3,
    seed: int | None = 0,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[FittedPairModel, ...]]:
    """Fit one model per fold of *requests*, each on the other folds' logged slots.

    Predict request ``i`` with ``fits[fold_of[i]]``: no request's prediction has seen its own rewards.

    Args:
        model: the reward model.
        logged_features: (n, K, p) features of each logged (request, item) pair.
        reward: (n, K) rewards.
        n_folds: folds, in [1, n]; 1 fits and predicts on all requests (in-sample, not for DR).
        seed: seeds the fold assignment.
        mask: (n, K) bool logged slots (None: all); only those are fitted on.

    Returns:
        (fold_of (n,) int64, fits: one fitted model per fold).
    """
    x = as_array(logged_features, "logged_features", ndim=3)
    r = as_array(reward, "reward", ndim=2)
    n, k, p = x.shape
    check_shape(r, "reward", (n, k), f"(n={n}, K={k}), like `logged_features`")
    logged = np.ones((n, k), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    check_shape(logged, "mask", (n, k), f"(n={n}, K={k}), like `reward`")
    fold_of = _folds(n, n_folds, seed)
    position = np.broadcast_to(np.arange(k), (n, k))
    fits = []
    for f in range(n_folds):
        train = fold_of != f if n_folds > 1 else np.ones(n, dtype=bool)
        use = logged & train[:, None]
        fits.append(model.fit(x[use], position[use], r[use], k))
    return fold_of, tuple(fits)


def cross_fit_pair_q_hat(
    model: PairRewardModel,
    features: np.ndarray,
    shown: np.ndarray,
    reward: np.ndarray,
    *,
    n_folds: int = 3,
    seed: int | None = 0,
) -> np.ndarray:
    r"""Cross-fitted predictions for every candidate at every slot (dense; for moderate n * K * J).

    Args:
        model: the reward model.
        features: (n, J, p) features of every candidate of every request.
        shown: (n, K) int64 column of the logged candidate at each slot.
        reward: (n, K) rewards.
        n_folds: folds of requests.
        seed: seeds the fold assignment.

    Returns:
        (n, K, J) float64 :math:`\hat q`.
    """
    x = as_array(features, "features", ndim=3)
    cols = as_array(shown, "shown", ndim=2, kind="int")
    n, j, p = x.shape
    check_shape(cols, "shown", (n, cols.shape[1]), f"(n={n}, K)")
    check_int_range(cols, "shown", 0, j, "candidate columns")
    logged = np.take_along_axis(x, cols[:, :, None], axis=1)  # (n, K, p)
    fold_of, fits = cross_fit_pair_models(model, logged, reward, n_folds=n_folds, seed=seed)
    q = np.empty((n, cols.shape[1], j))
    for f, fit in enumerate(fits):
        rows = fold_of == f
        q[rows] = fit.predict(x[rows])
    return q


# ---------------------------------------------------------------------- evaluation
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
                       slate_pscore=inputs.slate_pscore, marginal_pscore=inputs.pscore)
        target = SlateTarget(slate_prob=inputs.target_slate_prob, marginal_prob=inputs.target_prob)
    except OPEInputError as exc:
        return str(exc)
    return log, target


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


def _nan_diagnostics(n: int, label: str) -> WeightDiagnostics:
    nan = float("nan")
    return WeightDiagnostics(n, nan, nan, nan, nan, nan, nan, "unavailable", (), label)


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
            terms.append(est.round_terms(*slate))
        except OPEInputError as exc:
            terms.append(str(exc))
    thresholds = thresholds or DiagnosticThresholds()
    w = inputs.weights()
    n = inputs.n_requests
    main = (weight_diagnostics(w[inputs.logged], thresholds=thresholds, warn=warn, label="per-slot")
            if w is not None else _nan_diagnostics(int(inputs.logged.sum()), "per-slot"))
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
