"""The DM/DR reward model of rankings: a GLM on (request, candidate) features plus the slot, cross-fitted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit

from ope.checks import as_array, check_int_range, check_scalar, check_shape
from ope.errors import OPEInputError
from ope.reward_model import fit_glm, fold_assignment, standardiser


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
        mean, scale = standardiser(x)
        onehot = np.eye(n_positions)[pos][:, 1:]
        design = np.hstack([np.ones((m, 1)), (x - mean) / scale, onehot])
        beta = fit_glm(design, y, l2=self.l2, link=link)
        return FittedPairModel(float(beta[0]), beta[1 : 1 + p], np.r_[0.0, beta[1 + p :]], mean, scale, link)


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
    fold_of = fold_assignment(n, n_folds, seed)
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
