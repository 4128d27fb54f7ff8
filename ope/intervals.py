r"""Confidence intervals: a vectorised, seeded nonparametric bootstrap and the normal approximation.

**Bootstrap.** A resample is stored as a weight vector :math:`c` over the :math:`n` rounds, and the resampled
mean of every per-round column :math:`m` is :math:`\bar m + c^\top (m - \bar m) / \sum_j c_j` (one product
per block of resamples; centring keeps float32 products exact to well below the intervals' width):

* below :data:`POISSON_MIN_ROUNDS` rounds, Efron's multinomial bootstrap: :math:`c` counts how often each round
  was drawn in :math:`n` uniform draws with replacement (``np.bincount`` of uniform indices; :math:`\sum c = n`);
* from :data:`POISSON_MIN_ROUNDS` rounds, the Poisson bootstrap (Hanley & MacGibbon, 2006; Chamandy et al.,
  2012): independent Poisson(1) weights, read from a 65,536-entry table of the Poisson(1) quantile function at
  16-bit uniform draws (four per raw 64-bit generator output); a compiled kernel (:mod:`ope._kernels`) looks
  each weight up once and adds its products with the float32 columns and with a column of ones (the total
  weight) in float64, never storing the weights. Its replicates have the multinomial bootstrap's distribution up
  to :math:`O(1/n)`; the draws cost 2 bytes per (resample, round) instead of the 8-byte index and the scatter
  of ``bincount``.

Resamples are processed in chunks of bounded size (about a million weights below the Poisson threshold, eight
million above), so memory stays bounded whatever ``n_resamples``; chunks run on a small thread pool (NumPy and
BLAS release the GIL). Chunk :math:`c` draws from its own stream ``SeedSequence(seed).spawn(...)[c]`` and the
chunk layout depends only on ``n``, so the replicates depend only on ``(seed, n, n_resamples)``, not on
``n_jobs``. Self-normalised estimators are re-normalised inside each resample: the replicate is
:meth:`RoundTerms.combine` of the resampled column means. The reward model is held fixed (not refitted per
resample), as in obp.

**Normal.** :math:`\hat V \pm z_{1-\alpha/2}\, \hat\sigma / \sqrt n`, with :math:`\hat\sigma` the
sample standard deviation of the per-round contributions (:meth:`RoundTerms.influence`, the
delta method for self-normalised estimators).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ope._blas import single_threaded_blas
from ope._kernels import compile_kernel, padded_columns, table_weighted_sums
from ope.checks import check_scalar
from ope.errors import OPEInputError
from ope.terms import RoundTerms

__all__ = [
    "ConfidenceInterval",
    "bootstrap_ci",
    "bootstrap_replicates",
    "normal_ci",
    "resample_counts",
    "POISSON_MIN_ROUNDS",
    "standard_error",
]

CHUNK_ELEMENTS = 1 << 20  # ~1M drawn indices per chunk: the count vector (8 MiB) stays cache-friendly
POISSON_CHUNK_ELEMENTS = 1 << 23  # ~8M Poisson weights per chunk: 16 MiB of draws and 32 MiB of float32 weights
MAX_CHUNK_RESAMPLES = 1024
#: from this many rounds the bootstrap draws Poisson(1) weights; below it, multinomial counts
POISSON_MIN_ROUNDS = 10_000


def _poisson_table() -> np.ndarray:
    r"""(65536,) uint8: the Poisson(1) quantile function at (u + 0.5) / 65536 for every 16-bit u.

    The smallest k with :math:`F(k) = e^{-1} \sum_{j \le k} 1 / j! \ge q` (k <= 19 covers every q < 1 here).
    """
    cdf = np.cumsum(np.exp(-1.0) / np.cumprod(np.r_[1.0, np.arange(1.0, 20.0)]))
    return np.searchsorted(cdf, (np.arange(1 << 16) + 0.5) / (1 << 16), side="left").astype(np.uint8)


_POISSON = _poisson_table()
_POISSON_F32 = _POISSON.astype(np.float32)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A two-sided confidence interval.

    Attributes:
        low: lower bound.
        high: upper bound.
        level: nominal coverage, e.g. 0.95.
        method: ``"bootstrap"`` (percentile) or ``"normal"``.
    """

    low: float
    high: float
    level: float
    method: str

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low


def _as_terms(values: RoundTerms | np.ndarray) -> RoundTerms:
    if isinstance(values, RoundTerms):
        return values
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise OPEInputError(f"`values` must be per-round values of shape (n_rounds,); found shape {arr.shape}")
    return RoundTerms.plain(arr)


def _check_alpha(alpha: float) -> None:
    check_scalar(alpha, "alpha", float, min_val=0.0, max_val=1.0, min_inclusive=False, max_inclusive=False)


def standard_error(values: RoundTerms | np.ndarray) -> float:
    """Standard error of the estimate: ``std(contributions, ddof=1) / sqrt(n)``.

    Args:
        values: the estimator's :class:`RoundTerms`, or (n_rounds,) per-round values of a plain mean.

    Returns:
        The standard error (NaN for a single round).
    """
    psi = _as_terms(values).influence()
    if psi.shape[0] < 2:
        return float("nan")
    return float(psi.std(ddof=1) / np.sqrt(psi.shape[0]))


def normal_ci(values: RoundTerms | np.ndarray, *, alpha: float = 0.05) -> ConfidenceInterval:
    """Normal-approximation interval: estimate +- z * standard error.

    Args:
        values: the estimator's :class:`RoundTerms`, or (n_rounds,) per-round values of a plain mean.
        alpha: 1 - nominal coverage, in (0, 1).

    Returns:
        The interval.

    Raises:
        OPEInputError: ``alpha`` out of range, or fewer than two rounds.
    """
    _check_alpha(alpha)
    terms = _as_terms(values)
    if terms.n_rounds < 2:
        raise OPEInputError(f"a confidence interval needs at least 2 rounds; found {terms.n_rounds}")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    centre, se = terms.value, standard_error(terms)
    return ConfidenceInterval(centre - z * se, centre + z * se, 1.0 - alpha, "normal")


def chunk_resamples(n: int) -> int:
    """Resamples per chunk for ``n`` rounds (a function of ``n`` only, which keeps results seed-stable)."""
    elements = POISSON_CHUNK_ELEMENTS if n >= POISSON_MIN_ROUNDS else CHUNK_ELEMENTS
    return int(max(1, min(MAX_CHUNK_RESAMPLES, elements // max(n, 1))))


def uniform_uint16(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size,) independent uniform 16-bit draws from ``rng``.

    Each raw 64-bit PCG64 output is split in four (about twice as fast as ``rng.integers(..., dtype=np.uint16)``;
    the split follows the platform's byte order).
    """
    raw = rng.bit_generator.random_raw(-(-size // 4))
    return np.asarray(raw, dtype=np.uint64).view(np.uint16)[:size]


def _poisson_draws(n: int, size: int, seed: np.random.SeedSequence) -> np.ndarray:
    """(size, n) uint16 draws; Poisson(1) weights are ``_POISSON[draws]``."""
    return uniform_uint16(np.random.Generator(np.random.PCG64(seed)), size * n).reshape(size, n)


def _chunk_counts(n: int, size: int, seed: np.random.SeedSequence) -> np.ndarray:
    """(size, n) resample weights: multinomial counts (int64) below :data:`POISSON_MIN_ROUNDS`, else Poisson(1)."""
    if n >= POISSON_MIN_ROUNDS:
        return _POISSON[_poisson_draws(n, size, seed)]
    rng = np.random.Generator(np.random.PCG64(seed))
    idx = rng.integers(0, n, size=(size, n))
    idx += (np.arange(size, dtype=np.int64) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)


def resample_counts(n: int, n_resamples: int, seed: int | None = 0) -> Iterator[tuple[int, np.ndarray]]:
    """The bootstrap's resamples, chunk by chunk, exactly as :func:`bootstrap_replicates` draws them.

    Args:
        n: number of rounds, >= 1.
        n_resamples: number of resamples, >= 1.
        seed: seed of the resampling streams.

    Yields:
        ``(first, counts)``: the index of the chunk's first resample, and its (size, n) weights: below
        :data:`POISSON_MIN_ROUNDS` rounds, int64 counts of how often each round was drawn in each resample
        (each row sums to ``n``); from it, uint8 Poisson(1) weights.
    """
    check_scalar(n, "n", int, min_val=1)
    check_scalar(n_resamples, "n_resamples", int, min_val=1)
    size = chunk_resamples(n)
    starts = range(0, n_resamples, size)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    for start, child in zip(starts, seeds, strict=True):
        yield start, _chunk_counts(n, min(size, n_resamples - start), child)


def bootstrap_replicates(
    terms: RoundTerms | np.ndarray | Sequence[RoundTerms],
    *,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Bootstrap replicates of one or several estimates, all on the same resamples (paired).

    Args:
        terms: one estimator's :class:`RoundTerms` (or (n_rounds,) per-round values of a plain mean),
            or a sequence of RoundTerms over the same rounds.
        n_resamples: number of resamples, >= 1.
        seed: seed of the resampling streams (None: fresh entropy, not reproducible).
        n_jobs: worker threads (default: ``min(4, os.cpu_count())``); does not change the result.

    Returns:
        (n_resamples,) replicates for a single estimate, or (n_resamples, n_estimates) for a sequence.

    Raises:
        OPEInputError: invalid ``n_resamples``/``n_jobs``, or terms over different numbers of rounds.
    """
    single = isinstance(terms, RoundTerms | np.ndarray)
    seq = [_as_terms(terms)] if isinstance(terms, RoundTerms | np.ndarray) else [_as_terms(t) for t in terms]
    if not seq:
        raise OPEInputError("`terms` must hold at least one estimator's RoundTerms; found an empty sequence")
    n = seq[0].n_rounds
    if any(t.n_rounds != n for t in seq):
        raise OPEInputError(f"`terms` must all cover the same rounds; found lengths {[t.n_rounds for t in seq]}")
    check_scalar(n_resamples, "n_resamples", int, min_val=1)
    jobs = min(4, os.cpu_count() or 1) if n_jobs is None else n_jobs
    check_scalar(jobs, "n_jobs", int, min_val=1)

    matrix = np.column_stack([t.matrix() for t in seq])  # (n, C)
    centre = matrix.mean(axis=0)
    width = matrix.shape[1]
    poisson = n >= POISSON_MIN_ROUNDS
    if poisson:  # float32 centred columns (their sums stay far below float32's relative error) and a column of
        # ones, whose sum is the resample's total weight; the fused kernel accumulates in float64
        stacked = np.empty((n, width + 1), dtype=np.float32)
        stacked[:, :width] = matrix - centre
        stacked[:, width] = 1.0
        columns = padded_columns(stacked)
        del stacked
        compile_kernel()  # once, here, not concurrently in the chunk threads
    else:
        columns = np.ascontiguousarray((matrix - centre).T)  # (C, n)
    means = np.empty((n_resamples, width))
    size = chunk_resamples(n)
    starts = list(range(0, n_resamples, size))
    seeds = np.random.SeedSequence(seed).spawn(len(starts))

    def run(c: int) -> None:
        start = starts[c]
        rows = min(size, n_resamples - start)
        block = means[start : start + rows]
        if poisson:
            product = table_weighted_sums(_poisson_draws(n, rows, seeds[c]), _POISSON_F32, columns)  # (rows, C+1+)
            block[:] = product[:, :width]
            total = product[:, width]
        else:
            counts = _chunk_counts(n, rows, seeds[c])
            # one matrix-vector product per column: for the few columns of an OPE run this was measured
            # faster than one (size, n) @ (n, C) product, whose OpenBLAS path is slow for small C
            counts = counts.astype(np.float64)
            for j in range(width):
                block[:, j] = counts @ columns[j]
            total = np.full(counts.shape[0], float(n))
        block /= np.maximum(total, 1.0)[:, None]
        block += centre

    with single_threaded_blas():  # parallelism comes from the chunk threads, not from BLAS
        if jobs == 1 or len(starts) == 1:
            for c in range(len(starts)):
                run(c)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(run, range(len(starts))))

    out = np.empty((n_resamples, len(seq)))
    col = 0
    for e, t in enumerate(seq):
        out[:, e] = t.combine(means[:, col : col + t.n_columns])
        col += t.n_columns
    return out[:, 0] if single else out


def bootstrap_ci(
    terms: RoundTerms | np.ndarray,
    *,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    n_jobs: int | None = None,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of one estimate.

    Args:
        terms: the estimator's :class:`RoundTerms`, or (n_rounds,) per-round values of a plain mean.
        alpha: 1 - nominal coverage, in (0, 1).
        n_resamples: number of resamples, >= 1.
        seed: seed of the resampling streams.
        n_jobs: worker threads; does not change the result.

    Returns:
        The interval between the ``alpha/2`` and ``1 - alpha/2`` quantiles of the replicates.
    """
    _check_alpha(alpha)
    reps = bootstrap_replicates(terms, n_resamples=n_resamples, seed=seed, n_jobs=n_jobs)
    return percentile_interval(reps, alpha)


def percentile_interval(replicates: np.ndarray, alpha: float) -> ConfidenceInterval:
    """Percentile interval from (n_resamples,) bootstrap replicates."""
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ConfidenceInterval(float(low), float(high), 1.0 - alpha, "bootstrap")
