r"""Weighted ridge regression with incremental inverse updates: the shared model of the linear bandits.

Note:
    The model keeps :math:`A = \lambda I + \sum_t w_t x_t x_t^\top`, :math:`b = \sum_t r_t x_t`, the
    inverse :math:`A^{-1}` and :math:`\hat\theta = A^{-1} b`. One observation is added with the
    Sherman-Morrison identity, :math:`O(p^2)` and no inverse:

    .. math::
        A^{-1} \leftarrow A^{-1} - \frac{w\, (A^{-1}x)(A^{-1}x)^\top}{1 + w\, x^\top A^{-1} x}.

    A batch of :math:`m` observations costs :math:`O(m p^2)` that way, in a Python loop over the
    observations. The batched path instead adds the batch to :math:`A` with one matrix product and
    recomputes :math:`A^{-1}` from a Cholesky factorisation, :math:`O(m p^2 + p^3)` in BLAS calls;
    ``update_method="auto"`` picks Sherman-Morrison when :math:`m \le` ``sm_max_obs`` (default
    :math:`\max(8, p/4)`: the measured break-even point, see ``benchmarks/bench_agents.py``). Rounding
    errors of many Sherman-Morrison steps are reset by a Cholesky refresh every ``refresh_every``
    observations.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg as sla
from scipy.linalg.blas import dger

from agents._checks import check_choice, check_float, check_int
from shopgym.errors import ConfigError

UPDATE_METHODS: tuple[str, ...] = ("auto", "sherman_morrison", "cholesky")
UpdateMethod = Literal["auto", "sherman_morrison", "cholesky"]


class RidgeModel:
    """Weighted ridge regression over ``n_features`` features (see the module docstring).

    Args:
        n_features: feature dimension p >= 1.
        reg: ridge penalty lambda > 0 (the prior precision).
        update_method: "sherman_morrison" (per observation), "cholesky" (per batch) or "auto".
        sm_max_obs: with "auto", the largest batch updated by Sherman-Morrison; None: max(8, p // 4).
        refresh_every: recompute the inverse by Cholesky after this many Sherman-Morrison steps, >= 1.
        prior_mean: (p,) prior mean theta_0 of the weights (default 0): the penalty is
            lambda ||theta - theta_0||^2, i.e. b starts at lambda theta_0.
    """

    def __init__(
        self, n_features: int, reg: float = 1.0, update_method: UpdateMethod | str = "auto",
        sm_max_obs: int | None = None, refresh_every: int = 20_000, prior_mean: np.ndarray | None = None,
    ) -> None:
        self.n_features = check_int(n_features, "n_features", min_value=1)
        self.reg = check_float(reg, "reg", min_value=0.0, min_inclusive=False)
        self.update_method = check_choice(update_method, "update_method", UPDATE_METHODS)
        p = self.n_features
        self.sm_max_obs = max(8, p // 4) if sm_max_obs is None else check_int(sm_max_obs, "sm_max_obs", min_value=0)
        self.refresh_every = check_int(refresh_every, "refresh_every", min_value=1)
        self.A = np.eye(p) * self.reg
        self.A_inv = np.eye(p) / self.reg
        self.b = np.zeros(p)
        if prior_mean is not None:
            prior = np.asarray(prior_mean, dtype=np.float64)
            if prior.shape != (p,):
                raise ConfigError(f"`prior_mean` must have shape ({p},), got {prior.shape}")
            self.b = self.reg * prior
        self.theta = self.A_inv @ self.b
        self.n_obs = 0
        self._since_refresh = 0
        self._chol: np.ndarray | None = None  # upper Cholesky factor U of A (A = U^T U), cached for sampling
        self._a_inv32: np.ndarray | None = None  # float32 copy of A_inv, cached for variances

    # ------------------------------------------------------------------ learning
    def add(self, x: np.ndarray, weight: np.ndarray, reward: np.ndarray) -> None:
        """Add observations: ``A += sum w x x^T``, ``b += sum r x``.

        Args:
            x: (m, p) float features.
            weight: (m,) float64 weights w >= 0 (rows with w = 0 only add ``r x`` to b, which is then 0 too).
            reward: (m,) float64 rewards r.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.n_features)
        weight = np.asarray(weight, dtype=np.float64).reshape(-1)
        reward = np.asarray(reward, dtype=np.float64).reshape(-1)
        keep = weight > 0
        x, weight, reward = x[keep], weight[keep], reward[keep]
        m = len(x)
        if m == 0:
            return
        scaled = x * np.sqrt(weight)[:, None]
        self.A += scaled.T @ scaled  # one operand seen twice: NumPy calls the symmetric rank-k BLAS kernel
        self.b += reward @ x
        self.n_obs += m
        self._chol = None
        self._a_inv32 = None
        method = self.update_method
        if method == "auto":
            method = "sherman_morrison" if m <= self.sm_max_obs else "cholesky"
        if method == "sherman_morrison" and self._since_refresh + m < self.refresh_every:
            self._sherman_morrison(x, weight)
            self._since_refresh += m
        else:
            self.refresh()
        self.theta = self.A_inv @ self.b

    def _sherman_morrison(self, x: np.ndarray, weight: np.ndarray) -> None:
        """One O(p^2) rank-1 update of the inverse per observation, in place (BLAS ``dger``)."""
        a_inv_f = self.A_inv.T  # A_inv is symmetric: its transpose is the same matrix, Fortran-ordered
        for row, w in zip(x, weight, strict=True):  # sequential by nature: each step needs the previous inverse
            v = a_inv_f @ row
            coef = -w / (1.0 + w * float(row @ v))
            a_inv_f = dger(coef, v, v, a=a_inv_f, overwrite_a=True)
        self.A_inv = a_inv_f.T

    def refresh(self) -> None:
        """Recompute ``A_inv`` from ``A`` by Cholesky (and cache the factor for sampling)."""
        upper = sla.cholesky(self.A, lower=False)
        self._chol = upper
        eye = np.eye(self.n_features)
        self.A_inv = sla.cho_solve((upper, False), eye)
        self.A_inv = 0.5 * (self.A_inv + self.A_inv.T)
        self._a_inv32 = None
        self._since_refresh = 0

    # ------------------------------------------------------------------ prediction
    def mean(self, x: np.ndarray) -> np.ndarray:
        """(...,) float64 predictions theta^T x for features (..., p)."""
        return np.asarray(x, dtype=np.float64) @ self.theta

    def variance(self, x: np.ndarray) -> np.ndarray:
        """(...,) float64 ``x^T A^{-1} x`` (>= 0) for features (..., p).

        Computed in float32 (a cached copy of the inverse): the bonus needs ~3 significant digits, and this
        product, O(B N p^2), is the most expensive part of a LinUCB decision.
        """
        if self._a_inv32 is None:
            self._a_inv32 = self.A_inv.astype(np.float32)
        flat = np.asarray(x, dtype=np.float32).reshape(-1, self.n_features)
        var = ((flat @ self._a_inv32) * flat).sum(axis=1, dtype=np.float64)
        return np.maximum(var, 0.0).reshape(np.shape(x)[:-1])

    def sample_theta(self, rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
        r"""(n, p) draws of :math:`\theta \sim N(\hat\theta, s^2 A^{-1})`.

        With :math:`A = U^\top U` (Cholesky, cached until the next :meth:`add`), :math:`\theta = \hat\theta
        + s\, U^{-1} z` for :math:`z \sim N(0, I)`: one triangular solve, no inverse.
        """
        if self._chol is None:
            self._chol = sla.cholesky(self.A, lower=False)
        z = rng.standard_normal((self.n_features, n))
        return self.theta[None, :] + scale * sla.solve_triangular(self._chol, z, lower=False).T

    # ------------------------------------------------------------------ persistence
    def state_dict(self, prefix: str = "ridge.") -> dict[str, np.ndarray]:
        """A, A_inv, b and the observation count."""
        return {f"{prefix}A": self.A, f"{prefix}A_inv": self.A_inv, f"{prefix}b": self.b,
                f"{prefix}n_obs": np.array([self.n_obs, self._since_refresh], dtype=np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str = "ridge.") -> None:
        """Restore what :meth:`state_dict` saved."""
        p = self.n_features
        for key in ("A", "A_inv", "b"):
            shape = (p,) if key == "b" else (p, p)
            if f"{prefix}{key}" not in state or state[f"{prefix}{key}"].shape != shape:
                got = state.get(f"{prefix}{key}")
                raise ConfigError(f"saved ridge state `{prefix}{key}` must have shape {shape}, "
                                  f"got {None if got is None else got.shape}")
        self.A = np.array(state[f"{prefix}A"], dtype=np.float64)
        self.A_inv = np.array(state[f"{prefix}A_inv"], dtype=np.float64)
        self.b = np.array(state[f"{prefix}b"], dtype=np.float64)
        self.n_obs, self._since_refresh = (int(v) for v in state[f"{prefix}n_obs"])
        self.theta = self.A_inv @ self.b
        self._chol = None
        self._a_inv32 = None


class ItemBias:
    r"""Per-item effects on top of the shared model (the item part of a hybrid linear bandit).

    Note:
        The value of item :math:`i` is :math:`\theta^\top x + \beta_i`. Each observation of item :math:`i`
        (weight :math:`w`, reward :math:`r`, target :math:`y = r/w`) adds its weighted residual under the
        shared model to the item's sums, and :math:`\beta_i` is their shrunk mean (a Gaussian random
        effect with prior :math:`N(0, 1/\lambda_\beta)`):

        .. math::
            S_i \mathrel{+}= r - w\,\theta^\top x, \quad W_i \mathrel{+}= w, \qquad
            \hat\beta_i = \frac{S_i}{W_i + \lambda_\beta}, \quad \mathrm{Var}(\beta_i) = \frac{1}{W_i + \lambda_\beta}.

        The shared model and the item effects are fitted alternately, one batch at a time
        (backfitting): the shared model learns from :math:`r - w \hat\beta_i`. Learns what the
        embeddings cannot see, such as an item's latent quality; items never observed have
        :math:`\hat\beta = 0`. O(1) per observation; arrays grow with the largest catalog index seen.

    Args:
        reg: prior precision lambda_beta > 0 (in units of weighted observations).
    """

    def __init__(self, reg: float = 20.0) -> None:
        self.reg = check_float(reg, "item_reg", min_value=0.0, min_inclusive=False)
        self.sums = np.zeros(0)
        self.weights = np.zeros(0)

    def _grow(self, n: int) -> None:
        if n > len(self.sums):
            self.sums = np.concatenate([self.sums, np.zeros(n - len(self.sums))])
            self.weights = np.concatenate([self.weights, np.zeros(n - len(self.weights))])

    def _lookup(self, array: np.ndarray, items: np.ndarray) -> np.ndarray:
        inside = items < len(array)
        return np.where(inside, array[np.where(inside, items, 0)] if len(array) else 0.0, 0.0)

    def mean(self, items: np.ndarray) -> np.ndarray:
        """Shrunk item effects of catalog indices ``items`` (any shape), float64 (0 for unseen items)."""
        return self._lookup(self.sums, items) / (self._lookup(self.weights, items) + self.reg)

    def variance(self, items: np.ndarray) -> np.ndarray:
        """Posterior variance 1 / (W_i + lambda_beta) of the item effects, float64."""
        return 1.0 / (self._lookup(self.weights, items) + self.reg)

    def add(self, items: np.ndarray, weight: np.ndarray, residual: np.ndarray) -> None:
        """Add observations: ``S[item] += residual``, ``W[item] += weight`` (items (m,) int64 catalog indices)."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if items.size == 0:
            return
        self._grow(int(items.max()) + 1)
        n = len(self.sums)
        self.sums += np.bincount(items, weights=np.asarray(residual, dtype=np.float64).reshape(-1), minlength=n)
        self.weights += np.bincount(items, weights=np.asarray(weight, dtype=np.float64).reshape(-1), minlength=n)

    def state_dict(self, prefix: str = "item_bias.") -> dict[str, np.ndarray]:
        """The sums and weights."""
        return {f"{prefix}sums": self.sums, f"{prefix}weights": self.weights}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str = "item_bias.") -> None:
        """Restore what :meth:`state_dict` saved."""
        sums = np.array(state.get(f"{prefix}sums", np.zeros(0)), dtype=np.float64)
        weights = np.array(state.get(f"{prefix}weights", np.zeros(0)), dtype=np.float64)
        if sums.shape != weights.shape or sums.ndim != 1:
            raise ConfigError(f"saved item effects must be two 1-d arrays of one length, got {sums.shape} and "
                              f"{weights.shape}")
        self.sums, self.weights = sums, weights
