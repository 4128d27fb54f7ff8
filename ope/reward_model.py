r"""Reward models for DM and the DR family, fitted with K-fold cross-fitting.

A reward model predicts :math:`\hat q(x, a[, k])`, the mean reward of action ``a`` (at position
``k``) in context ``x``. :func:`cross_fit_q_hat` splits the rounds into folds and predicts each fold
with a model fitted on the other folds, so no round's prediction has seen its own reward (this keeps
DR's correction term unbiased for a fixed model and avoids over-fitting bias in DM).

Two small, fast, well-regularised models are provided:

* :class:`CellMeanModel`: per-(action, position) mean rewards shrunk towards the position mean,
  which is shrunk towards the global mean (context-free; strong when actions are few and contexts
  weakly informative).
* :class:`LinearRewardModel`: ridge (identity link) or L2-regularised logistic regression (Newton's
  method) on ``[context, action features, position one-hot]`` and optionally context x action
  interactions. Action features are a one-hot of the action and/or ``log.action_context`` (e.g.
  BERT embeddings of item texts, or featurised items).

Any object with ``name`` and ``fit_predict(log, train, test)`` can be used (see :class:`RewardModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from scipy.special import expit

from ope._blas import single_threaded_blas
from ope.checks import check_scalar
from ope.data import BanditLog
from ope.errors import OPEInputError
from shopgym.numeric import logistic_newton

__all__ = [
    "CellMeanModel", "LinearRewardModel", "RewardModel", "cross_fit_q_hat", "default_reward_model", "fit_glm",
    "fold_assignment", "standardiser",
]


class RewardModel(Protocol):
    """What :func:`cross_fit_q_hat` needs from a reward model."""

    @property
    def name(self) -> str:
        """Label in reports."""
        ...

    def fit_predict(self, log: BanditLog, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """Fit on rounds ``train`` (m,) and predict all actions for rounds ``test`` (p,).

        Returns:
            (p, n_actions) float64, or (p, n_actions, n_positions) when the log has positions.
        """
        ...


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means (p,) and standard deviations (p,) of ``x`` (m, p), with 1 for constant columns.

    ``(x - mean) / scale`` then has mean 0 and unit spread in every non-constant column.
    """
    sd = x.std(axis=0)
    return x.mean(axis=0), np.where(sd > 0, sd, 1.0)


def fold_assignment(n: int, n_folds: int, seed: int | None) -> np.ndarray:
    """(n,) int64 fold of each round for cross-fitting: a seeded random permutation modulo ``n_folds``.

    Every fold gets ``n // n_folds`` or one more rounds; with one fold every round is in fold 0.

    Raises:
        OPEInputError: ``n_folds`` is not an int in [1, n].
    """
    check_scalar(n_folds, "n_folds", int, min_val=1, max_val=n)
    if n_folds == 1:
        return np.zeros(n, dtype=np.int64)
    return np.asarray(np.random.default_rng(seed).permutation(n) % n_folds, dtype=np.int64)


def _q_shape(log: BanditLog, n_rows: int) -> tuple[int, ...]:
    if log.position is None:
        return (n_rows, log.n_actions)
    return (n_rows, log.n_actions, int(log.n_positions or 0))


@dataclass(frozen=True)
class CellMeanModel:
    r"""Per-(action, position) mean rewards with hierarchical shrinkage.

    Note:
        .. math::
            \hat\mu_k = \frac{S_k + m\,\bar r}{N_k + m},\qquad
            \hat q(a, k) = \frac{S_{ak} + m\,\hat\mu_k}{N_{ak} + m}

        with :math:`S, N` the reward sums and counts of the training rounds and :math:`m` =
        ``prior_strength`` (pseudo-rounds at the parent mean). Without positions,
        :math:`\hat q(a) = (S_a + m \bar r)/(N_a + m)`.

    Args:
        prior_strength: :math:`m`, >= 0 (0: raw cell means, unseen cells get the parent mean).
        name: label in reports.
    """

    prior_strength: float = 10.0
    name: str = "cell_mean"

    def __post_init__(self) -> None:
        check_scalar(self.prior_strength, "prior_strength", float, min_val=0.0)

    def fit_predict(self, log: BanditLog, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """Fit on ``train`` rounds, predict every (action[, position]) for ``test`` rounds."""
        r = log.reward[train]
        a = log.action[train]
        m = float(self.prior_strength)
        mu = float(r.mean())
        n_a = log.n_actions

        def shrink(sums: np.ndarray, counts: np.ndarray, parent: np.ndarray | float) -> np.ndarray:
            denom = counts + m
            return np.where(denom > 0, (sums + m * np.asarray(parent)) / np.where(denom > 0, denom, 1.0),
                            np.asarray(parent) * np.ones_like(sums))

        if log.position is None:
            q = shrink(np.bincount(a, weights=r, minlength=n_a), np.bincount(a, minlength=n_a).astype(float), mu)
            return np.broadcast_to(q, (len(test), n_a)).copy()
        k = int(log.n_positions or 0)
        pos = log.position[train]
        mu_k = shrink(np.bincount(pos, weights=r, minlength=k), np.bincount(pos, minlength=k).astype(float), mu)
        cell = a * k + pos
        sums = np.bincount(cell, weights=r, minlength=n_a * k).reshape(n_a, k)
        counts = np.bincount(cell, minlength=n_a * k).reshape(n_a, k).astype(float)
        q = shrink(sums, counts, mu_k[None, :])
        return np.broadcast_to(q, (len(test), n_a, k)).copy()


@dataclass(frozen=True)
class LinearRewardModel:
    r"""Ridge or L2-regularised logistic regression on context, action and position features.

    Note:
        .. math::
            \hat q(x, a, k) = g\big(\beta_0 + \beta_x^\top \tilde x + \beta_a^\top \phi(a) + \beta_k
            + \tilde x^\top B\, \phi(a)\big)

        with :math:`\tilde x` the context standardised on the training rounds, :math:`\phi(a)` the
        action features (one-hot and/or ``action_context`` rows, standardised), :math:`B` present
        only with ``interactions=True``, and :math:`g` the identity or the logistic function. The
        penalty is :math:`\lambda \lVert\beta\rVert^2` on everything but :math:`\beta_0`; the logistic
        fit uses Newton's method. With one-hot items, a rarely logged item's effect is shrunk towards
        the *unweighted* average item on the link scale: with sparse clicks and many zero-click items
        that average can sit far below the overall CTR (see docs/notes/ope-validation.md, OBD study), where the
        per-cell means of :class:`CellMeanModel` shrink towards the overall mean instead.

    Args:
        l2: penalty :math:`\lambda`, > 0.
        link: ``"identity"`` (ridge) or ``"logistic"`` (rewards must lie in [0, 1]).
        one_hot_actions: include a one-hot encoding of the action.
        use_action_context: include ``log.action_context`` rows as action features when present.
        interactions: add context x action-feature interactions (per-action context effects with
            one-hot actions); the design then has ``dim_context * dim_action_features`` more columns.
        max_iter: Newton iterations (logistic), >= 1.
        tol: stop when the largest coefficient update is below this, > 0.
        name: label in reports.
    """

    l2: float = 1.0
    link: Literal["identity", "logistic"] = "identity"
    one_hot_actions: bool = True
    use_action_context: bool = True
    interactions: bool = False
    max_iter: int = 50
    tol: float = 1e-8
    name: str = "linear"

    def __post_init__(self) -> None:
        check_scalar(self.l2, "l2", float, min_val=0.0, min_inclusive=False)
        if self.link not in ("identity", "logistic"):
            raise OPEInputError(f"`link` must be 'identity' or 'logistic'; found {self.link!r}")
        check_scalar(self.max_iter, "max_iter", int, min_val=1)
        check_scalar(self.tol, "tol", float, min_val=0.0, min_inclusive=False)

    def _action_features(self, log: BanditLog) -> np.ndarray:
        parts = []
        if self.one_hot_actions:
            parts.append(np.eye(log.n_actions))
        if self.use_action_context and log.action_context is not None:
            mean, scale = standardiser(log.action_context)
            parts.append((log.action_context - mean) / scale)
        if not parts:
            raise OPEInputError(
                "`one_hot_actions`/`use_action_context`: LinearRewardModel needs action features; "
                "found one_hot_actions=False and no usable log.action_context"
            )
        return np.hstack(parts)

    def fit_predict(self, log: BanditLog, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """Fit on ``train`` rounds, predict every (action[, position]) for ``test`` rounds."""
        y = log.reward[train]
        if self.link == "logistic" and ((y < 0).any() or (y > 1).any()):
            raise OPEInputError(
                "`reward`: a logistic reward model needs rewards in [0, 1]; found values outside "
                f"(min {y.min():.4g}, max {y.max():.4g}); use link='identity'"
            )
        phi = self._action_features(log)  # (A, p_a)
        n_pos = int(log.n_positions or 0)
        if log.context is not None:
            ctx_train = log.context[train]
            mean, sd = standardiser(ctx_train)
            xs_train = (ctx_train - mean) / sd
            xs_test = (log.context[test] - mean) / sd
        else:
            xs_train = np.zeros((len(train), 0))
            xs_test = np.zeros((len(test), 0))
        d, p_a = xs_train.shape[1], phi.shape[1]
        use_inter = self.interactions and d > 0

        blocks = [np.ones((len(train), 1)), xs_train, phi[log.action[train]]]
        if n_pos:
            assert log.position is not None
            blocks.append(np.eye(n_pos)[log.position[train]])
        if use_inter:
            blocks.append(np.einsum("ij,ik->ijk", xs_train, phi[log.action[train]]).reshape(len(train), d * p_a))
        design = np.hstack(blocks)
        beta = self._solve(design, y)

        b0, beta_x = beta[0], beta[1 : 1 + d]
        beta_a = beta[1 + d : 1 + d + p_a]
        offset = 1 + d + p_a
        beta_k = beta[offset : offset + n_pos] if n_pos else np.zeros(0)
        offset += n_pos
        score = (b0 + xs_test @ beta_x)[:, None] + (phi @ beta_a)[None, :]  # (p, A)
        if use_inter:
            b_mat = beta[offset : offset + d * p_a].reshape(d, p_a)
            score = score + (xs_test @ b_mat) @ phi.T
        if n_pos:
            score = score[:, :, None] + beta_k[None, None, :]
        return expit(score) if self.link == "logistic" else score

    def _solve(self, design: np.ndarray, y: np.ndarray) -> np.ndarray:
        return fit_glm(design, y, l2=self.l2, link=self.link, max_iter=self.max_iter, tol=self.tol)


def fit_glm(
    design: np.ndarray,
    y: np.ndarray,
    *,
    l2: float,
    link: Literal["identity", "logistic"],
    max_iter: int = 50,
    tol: float = 1e-8,
) -> np.ndarray:
    r"""Ridge or L2-regularised logistic regression; column 0 of ``design`` is the unpenalised intercept.

    Note:
        .. math:: \hat\beta = \arg\min_\beta\ \ell(y, g(X\beta)) + \lambda \sum_{j \ge 1} \beta_j^2

        with squared loss for the identity link (solved exactly) and the Bernoulli log-loss for the
        logistic link (Newton's method from the intercept-only fit).

    Args:
        design: (m, p) float64 design matrix whose first column is all ones.
        y: (m,) float64 targets (in [0, 1] for the logistic link).
        l2: :math:`\lambda` > 0.
        link: ``"identity"`` or ``"logistic"``.
        max_iter: Newton iterations (logistic), >= 1.
        tol: stop when the largest coefficient update is below this.

    Returns:
        (p,) float64 coefficients.
    """
    p = design.shape[1]
    penalty = np.full(p, float(l2))
    penalty[0] = 0.0
    if link == "identity":
        gram = design.T @ design
        gram[np.diag_indices(p)] += penalty
        return np.linalg.solve(gram, design.T @ y)
    init = np.zeros(p)
    mean = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    init[0] = np.log(mean / (1 - mean))
    return logistic_newton(design, y, penalty, init=init, max_iter=max_iter, tol=tol, jitter=1e-10)


def default_reward_model(log: BanditLog) -> LinearRewardModel:
    """The reward model :func:`ope.evaluate` fits when none is given.

    Logistic regression when every reward is 0 or 1, ridge otherwise; one-hot actions (plus
    ``log.action_context`` if present) and positions; per-action context effects
    (``interactions=True``) only when the log has contexts and ``dim_context * n_actions <= 200``,
    which keeps the Newton fit fast.
    """
    binary = bool(np.all((log.reward == 0) | (log.reward == 1)))
    small = log.context is not None and log.context.shape[1] * log.n_actions <= 200
    return LinearRewardModel(link="logistic" if binary else "identity", interactions=small)


def cross_fit_q_hat(
    log: BanditLog,
    model: RewardModel | None = None,
    *,
    n_folds: int = 3,
    seed: int | None = 0,
) -> np.ndarray:
    r"""Predict :math:`\hat q` for every round with K-fold cross-fitting.

    Args:
        log: the logged data.
        model: the reward model (default: :func:`default_reward_model`).
        n_folds: number of folds, in [1, n_rounds]; 1 means fit and predict on all rounds
            (in-sample, not recommended for DR).
        seed: seeds the random fold assignment.

    Returns:
        (n_rounds, n_actions) float64 predictions, or (n_rounds, n_actions, n_positions) when the
        log has positions.

    Raises:
        OPEInputError: ``n_folds`` out of range, or the model returns a wrongly shaped array.
    """
    model = model if model is not None else default_reward_model(log)
    n = log.n_rounds
    fold_of = fold_assignment(n, n_folds, seed)
    rows = np.arange(n)
    q = np.empty(_q_shape(log, n))
    if n_folds == 1:
        folds = [(rows, rows)]
    else:
        folds = [(rows[fold_of != f], rows[fold_of == f]) for f in range(n_folds)]
    for train, test in folds:
        with single_threaded_blas():
            pred = np.asarray(model.fit_predict(log, train, test), dtype=np.float64)
        if pred.shape != _q_shape(log, len(test)):
            raise OPEInputError(
                f"`model.fit_predict` must return shape {_q_shape(log, len(test))} for {len(test)} rounds; "
                f"found {pred.shape} from {model.name!r}"
            )
        q[test] = pred
    return q
