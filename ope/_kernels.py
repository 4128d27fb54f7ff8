r"""The Poisson bootstrap's fused kernel: table lookup of every weight and its products, in one pass (Numba).

For a block of resamples with 16-bit draws :math:`u_{ri}`, the Poisson(1) quantile table :math:`T` and the
columns :math:`x_{\cdot j}` (float32, padded with zero columns to a multiple of 4),

.. math:: s_{rj} = \sum_i T[u_{ri}]\, x_{ij},

accumulated in float64, four columns per pass over the draws: each weight is looked up once per four
columns and never stored. NumPy needs a gather (which converts the 16-bit indices to 64-bit ones) into a
float32 buffer and then a GEMM: about three times the memory traffic. Compiled on first use (cached on disk
next to this module when the folder is writable), so importing :mod:`ope` does not import Numba.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

#: columns summed per pass over the draws (the kernel's accumulators)
GROUP = 4


@cache
def _compiled() -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]:
    from numba import njit

    @njit(nogil=True, fastmath=True, cache=True)
    def weighted_sums(draws: np.ndarray, table: np.ndarray, columns_t: np.ndarray, out: np.ndarray) -> None:
        rows, n = draws.shape
        for r in range(rows):
            row = draws[r]
            for g in range(columns_t.shape[0] // 4):
                c0, c1, c2, c3 = columns_t[4 * g], columns_t[4 * g + 1], columns_t[4 * g + 2], columns_t[4 * g + 3]
                a0 = a1 = a2 = a3 = 0.0
                for i in range(n):
                    w = table[row[i]]
                    a0 += w * c0[i]
                    a1 += w * c1[i]
                    a2 += w * c2[i]
                    a3 += w * c3[i]
                out[r, 4 * g] = a0
                out[r, 4 * g + 1] = a1
                out[r, 4 * g + 2] = a2
                out[r, 4 * g + 3] = a3

    return weighted_sums


def compile_kernel() -> None:
    """Compile (or load from the disk cache) the kernel now, in this thread, before worker threads call it."""
    _compiled()


def padded_columns(columns: np.ndarray) -> np.ndarray:
    """(W', n) float32 C-contiguous transpose of ``columns`` (n, W), zero rows added up to a multiple of 4."""
    n, width = columns.shape
    out = np.zeros((-(-width // GROUP) * GROUP, n), dtype=np.float32)
    out[:width] = columns.T
    return out


def table_weighted_sums(draws: np.ndarray, table: np.ndarray, columns_t: np.ndarray) -> np.ndarray:
    r"""(R, W') float64 :math:`s_{rj} = \sum_i` ``table[draws[r, i]] * columns_t[j, i]``.

    Args:
        draws: (R, n) uint16 draws.
        table: (65536,) float32 weight of every draw.
        columns_t: (W', n) float32 from :func:`padded_columns`.
    """
    out = np.empty((draws.shape[0], columns_t.shape[0]), dtype=np.float64)
    _compiled()(np.ascontiguousarray(draws), table, columns_t, out)
    return out
