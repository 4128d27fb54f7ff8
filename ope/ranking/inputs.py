"""What the ranking estimators consume: :class:`RankingInputs`, and reductions of a policy and a log to it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ope.checks import as_array, check_finite, check_int_range, check_probabilities, check_shape
from ope.errors import OPEInputError
from ope.estimators import (
    BanditInputs,
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
        prefix_pscore: (n_requests, K) float64 in (0, 1]: the logging policy's probability of the logged
            slots 1..k (the ``prefix_propensity`` column), for the cascade (reward-interaction) estimators, or
            None.
        target_prefix_prob: (n_requests, K) float64 in [0, 1]: the evaluation policy's probability of the same
            prefixes, or None.
        dm_prefix: (n_requests, K) float64 the reward model's expected reward of slot k under the evaluation
            policy *given the logged slots above k*, for the cascade doubly robust estimator, or None (then
            ``dm``, which is the same for a deterministic policy and an approximation for a stochastic one).

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
    prefix_pscore: np.ndarray | None = None
    target_prefix_prob: np.ndarray | None = None
    dm_prefix: np.ndarray | None = None

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
        prefix = _opt(self.prefix_pscore, "prefix_pscore", (n, k), per_slot)
        if prefix is not None:
            check_probabilities(prefix, "prefix_pscore", allow_zero=False,
                                meaning="the logging policy's probability of the logged slots 1..k")
        target_prefix = _opt(self.target_prefix_prob, "target_prefix_prob", (n, k), per_slot)
        if target_prefix is not None:
            check_probabilities(target_prefix, "target_prefix_prob",
                                meaning="the evaluation policy's probability of the logged slots 1..k")
        dm_prefix = _opt(self.dm_prefix, "dm_prefix", (n, k), per_slot)
        if dm_prefix is not None:
            check_finite(dm_prefix, "dm_prefix")
            if dm is None:
                raise OPEInputError("`dm_prefix` comes with `dm` and `q_logged` (the same reward model); found it "
                                    "alone")
        if mask is not None and (prefix is not None or target_prefix is not None):
            raise OPEInputError("`prefix_pscore`/`target_prefix_prob` need complete pages (a prefix needs every slot "
                                "above it); pass None with `mask`")
        for name, value in (("target_prob", target), ("pscore", pscore), ("dm", dm), ("q_logged", q_logged),
                            ("slate_pscore", slate_pscore), ("target_slate_prob", target_slate),
                            ("prefix_pscore", prefix), ("target_prefix_prob", target_prefix),
                            ("dm_prefix", dm_prefix)):
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
