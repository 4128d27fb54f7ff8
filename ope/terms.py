r"""Per-round pieces of an estimate, shared by the point estimate, the bootstrap and the normal CI.

Every estimator in this library has the form

.. math::

    \hat V = \bar a + \sum_{j=1}^{J} \frac{\bar b_j}{\bar c_j},
    \qquad \bar a = \frac{1}{n}\sum_i a_i,\ \bar b_j = \frac{1}{n}\sum_i b_{ij},\
    \bar c_j = \frac{1}{n}\sum_i c_{ij},

with per-round values :math:`a_i` (the *additive* part), and :math:`b_{ij}, c_{ij}` (numerators and
denominators of the self-normalised parts; :math:`J = 0` for the plain estimators). Keeping the
pieces apart lets the bootstrap re-normalise inside every resample (a self-normalised estimator's
bootstrap replicate is a ratio of *resampled* means, not the mean of fixed ratios) and lets the normal
interval use the delta method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ope.errors import OPEInputError


def safe_ratio(numer: np.ndarray, denom: np.ndarray) -> np.ndarray:
    """``numer / denom`` elementwise, with 0/0 (and x/0) defined as 0.

    A self-normalised estimator whose importance weights are all zero has seen no round the evaluated
    policy would play; its estimate is then 0, as the unnormalised estimator's.
    """
    numer, denom = np.broadcast_arrays(np.asarray(numer, dtype=np.float64), np.asarray(denom, dtype=np.float64))
    out = np.zeros(numer.shape, dtype=np.float64)
    np.divide(numer, denom, out=out, where=denom != 0)
    return out


@dataclass(frozen=True)
class RoundTerms:
    """The per-round pieces of one estimate (see the module docstring for the formula).

    Attributes:
        additive: (n_rounds,) float64 values :math:`a_i`.
        numer: (n_rounds, J) float64 numerators :math:`b_{ij}` (J may be 0).
        denom: (n_rounds, J) float64 denominators :math:`c_{ij}`.
    """

    additive: np.ndarray
    numer: np.ndarray
    denom: np.ndarray

    def __post_init__(self) -> None:
        if self.additive.ndim != 1:
            raise OPEInputError(f"`additive` must be 1-D (n_rounds,); found shape {self.additive.shape}")
        n = self.additive.shape[0]
        if self.numer.ndim != 2 or self.numer.shape[0] != n or self.numer.shape != self.denom.shape:
            raise OPEInputError(
                f"`numer` and `denom` must both have shape (n_rounds={n}, J); found {self.numer.shape} "
                f"and {self.denom.shape}"
            )

    @classmethod
    def plain(cls, values: np.ndarray) -> RoundTerms:
        """Terms of an estimator that is a plain mean of per-round ``values`` (n_rounds,)."""
        values = np.asarray(values, dtype=np.float64)
        empty = np.zeros((values.shape[0], 0))
        return cls(values, empty, empty)

    @classmethod
    def ratio(cls, numer: np.ndarray, denom: np.ndarray, additive: np.ndarray | None = None) -> RoundTerms:
        """Terms with self-normalised parts; ``numer``/``denom`` (n,) or (n, J), ``additive`` (n,) or None."""
        numer = np.asarray(numer, dtype=np.float64)
        denom = np.asarray(denom, dtype=np.float64)
        if numer.ndim == 1:
            numer, denom = numer[:, None], denom[:, None]
        add = np.zeros(numer.shape[0]) if additive is None else np.asarray(additive, dtype=np.float64)
        return cls(add, numer, denom)

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        return int(self.additive.shape[0])

    @property
    def n_ratios(self) -> int:
        """Number J of self-normalised parts."""
        return int(self.numer.shape[1])

    @property
    def n_columns(self) -> int:
        """Columns of :meth:`matrix`: 1 + 2J."""
        return 1 + 2 * self.n_ratios

    def matrix(self) -> np.ndarray:
        """(n_rounds, 1 + 2J) float64: the additive column, then the J numerators, then the J denominators."""
        return np.column_stack([self.additive, self.numer, self.denom])

    def combine(self, means: np.ndarray) -> np.ndarray:
        """Estimate(s) from column means: ``means`` (..., 1 + 2J) -> (...)."""
        means = np.asarray(means, dtype=np.float64)
        j = self.n_ratios
        value = means[..., 0].copy()
        if j:
            value += safe_ratio(means[..., 1 : 1 + j], means[..., 1 + j :]).sum(axis=-1)
        return value

    @property
    def value(self) -> float:
        """The point estimate."""
        return float(self.combine(self.matrix().mean(axis=0)))

    def influence(self) -> np.ndarray:
        r"""(n_rounds,) linearised per-round contributions whose mean is the estimate.

        For a ratio part :math:`R_j = \bar b_j / \bar c_j` the contribution of round i is
        :math:`R_j + (b_{ij} - R_j c_{ij}) / \bar c_j` (first-order delta method), so the sample
        variance of these values over :math:`n` is the delta-method variance of the estimate.
        """
        psi = self.additive.copy()
        if self.n_ratios:
            b_bar = self.numer.mean(axis=0)
            c_bar = self.denom.mean(axis=0)
            r = safe_ratio(b_bar, c_bar)
            psi += (r[None, :] + safe_ratio(self.numer - r[None, :] * self.denom, c_bar[None, :])).sum(axis=1)
        return psi
