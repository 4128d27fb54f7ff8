"""Candidate generation: which N items a re-ranker gets to order on each page.

Sources, mixed per request by configurable shares (vectorised over the batch):

* ``popular``: uniform over the ``pool_size`` most popular items (smoothed logged CTR);
* ``cf``: collaborative-filtering neighbours of the user's history (items co-engaged by the same users
  in the logs; embedding neighbours for items without co-engagements);
* ``query``: for searches, the ``pool_size`` items closest to the query embedding (browse requests
  give this share to ``popular``);
* ``random``: uniform over the catalog;
* ``cold``: new items never shown in the training logs, known only by their text.

Draws are taken with replacement and the first ``N`` distinct items kept; rows that stay short are
filled uniformly at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from envs.neighbours import item_neighbours, similarities
from envs.space import ItemSpace, UserTable
from shopgym.errors import ConfigError
from shopgym.numeric import topk

SOURCES = ("popular", "cf", "query", "random", "cold")


@dataclass(frozen=True)
class CandidateConfig:
    """Shares of each candidate source (normalised to sum to 1) and pool sizes."""

    popular: float = 0.3
    cf: float = 0.3
    query: float = 0.3
    random: float = 0.1
    cold: float = 0.0
    pool_size: int = 200
    neighbours: int = 20

    def __post_init__(self) -> None:
        shares = [getattr(self, s) for s in SOURCES]
        if any(x < 0 for x in shares) or sum(shares) <= 0:
            got = dict(zip(SOURCES, shares, strict=True))
            raise ConfigError(f"candidate shares must be >= 0 with a positive sum, got {got}")
        if self.pool_size < 1 or self.neighbours < 1:
            raise ConfigError(f"`pool_size` and `neighbours` must be >= 1, got {self.pool_size}, {self.neighbours}")


class CandidateGenerator:
    """Precomputed pools for every source; :meth:`sample` draws (B, N) distinct candidates.

    Args:
        space: item and query vectors.
        users: user table (histories, popularity).
        co_engagement: (n_items, n_items) sparse co-engagement counts, or None (embedding neighbours only).
        cold_items: catalog indices of items never shown in training logs.
        config: source shares and pool sizes.
    """

    def __init__(self, space: ItemSpace, users: UserTable, co_engagement: sp.csr_matrix | None,
                 cold_items: np.ndarray, config: CandidateConfig | None = None) -> None:
        self.config = cfg = config or CandidateConfig()
        n = space.n_items
        pool = min(cfg.pool_size, n)
        self.n_items = n
        self.popular = topk(users.popularity[None, :], pool)[0]
        self.query_pools = _query_pools(space, pool)
        self.neighbours = item_neighbours(space.item_vecs, co_engagement, min(cfg.neighbours, n - 1))
        self.cold = np.asarray(cold_items, dtype=np.int64)
        self.shares = np.array([getattr(cfg, s) for s in SOURCES], dtype=np.float64)

    def sample(self, rng: np.random.Generator, n: int, query: np.ndarray, history: np.ndarray) -> np.ndarray:
        """(B, n) distinct catalog indices.

        Args:
            rng: the env's generator.
            n: candidates per request (<= catalog size).
            query: (B,) query index, -1 when browsing.
            history: (B, H) catalog indices of the user's engaged items, -1 padded.
        """
        b = len(query)
        if n > self.n_items:
            raise ConfigError(f"`n_candidates` ({n}) exceeds the catalog size ({self.n_items})")
        draws = 3 * n
        shares = np.broadcast_to(self.shares, (b, len(SOURCES))).copy()
        has_cold = len(self.cold) > 0
        if not has_cold:
            shares[:, 4] = 0.0
        browse = query < 0
        shares[browse, 0] += shares[browse, 2]
        shares[browse, 2] = 0.0
        has_history = (history >= 0).any(axis=1)
        shares[~has_history, 0] += shares[~has_history, 1]
        shares[~has_history, 1] = 0.0
        cdf = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)
        u_source = rng.random((b, draws))
        source = np.zeros((b, draws), dtype=np.int8)  # the number of cdf steps below each draw
        for j in range(len(SOURCES)):  # S passes over (B, draws), not one (B, draws, S) temporary
            source += u_source > cdf[:, j:j + 1]
        np.minimum(source, len(SOURCES) - 1, out=source)
        u = rng.random((b, draws))
        picks = rng.integers(0, self.n_items, (b, draws))  # random
        popular = self.popular[(u * len(self.popular)).astype(np.int64)]
        picks = np.where(source == 0, popular, picks)
        if (source == 1).any():
            # a random history item, then a random neighbour of it
            valid = history >= 0
            count = valid.sum(axis=1)
            order = np.argsort(~valid, axis=1, kind="stable")  # valid entries first
            pick_h = (rng.random((b, draws)) * np.maximum(count, 1)[:, None]).astype(np.int64)
            base = np.take_along_axis(np.take_along_axis(history, order, axis=1), pick_h, axis=1)
            neighbour = self.neighbours[np.maximum(base, 0), (u * self.neighbours.shape[1]).astype(np.int64)]
            picks = np.where(source == 1, neighbour, picks)
        if (source == 2).any():
            q = np.maximum(query, 0)[:, None]
            from_query = self.query_pools[q, (u * self.query_pools.shape[1]).astype(np.int64)]
            picks = np.where(source == 2, from_query, picks)
        if has_cold and (source == 4).any():
            picks = np.where(source == 4, self.cold[(u * len(self.cold)).astype(np.int64)], picks)
        return first_distinct(rng, picks, n, self.n_items)


def first_distinct(rng: np.random.Generator, picks: np.ndarray, n: int, n_items: int) -> np.ndarray:
    """(B, n): the first ``n`` distinct entries of each row of ``picks`` (B, M), short rows filled at random."""
    out, distinct = first_distinct_no_fill(picks, n)
    short = np.flatnonzero(distinct < n)
    for _ in range(50):  # refill rounds over the (rare) short rows only
        if len(short) == 0:
            break
        have = distinct[short]
        extra = rng.integers(0, n_items, (len(short), 2 * n))
        merged = np.concatenate([np.where(np.arange(n)[None, :] < have[:, None], out[short], extra[:, :n]),
                                 extra], axis=1)
        # keep the distinct items already chosen in front, then fresh draws
        refill = first_distinct_no_fill(merged, n)
        out[short], distinct[short] = refill
        short = short[refill[1] < n]
    if len(short):
        raise ConfigError("could not draw enough distinct candidates; lower `n_candidates`")
    return out


def first_distinct_no_fill(picks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` distinct entries per row of ``picks`` (B, M) >= 0, and how many distinct entries each row has.

    Returns:
        (B, n) the first occurrences in column order (a row with fewer than ``n`` distinct entries is -1
        padded after them) and (B,) the distinct counts. One sort per row of the unique keys
        ``pick * M + column`` (equal picks end up adjacent, in column order), no second sort: the first
        occurrences are marked, ranked by a cumulative sum and gathered with one ``nonzero``.
    """
    b, m = picks.shape
    # int32 keys when they fit (NumPy sorts them ~4x faster than int64); the keys are unique either way
    key_type = np.int32 if (int(picks.max(initial=0)) + 1) * m < 2**31 else np.int64
    key = picks.astype(key_type) * m + np.arange(m, dtype=key_type)[None, :]
    key.sort(axis=1)
    first_sorted = np.empty((b, m), dtype=bool)
    first_sorted[:, 0] = True
    np.not_equal(key[:, 1:] // m, key[:, :-1] // m, out=first_sorted[:, 1:])
    first = np.empty((b, m), dtype=bool)
    flat = key % m + (np.arange(b, dtype=np.int64) * m)[:, None]  # int64: b * m may pass 2^31
    first.reshape(-1)[flat.reshape(-1)] = first_sorted.reshape(-1)  # back to column order
    distinct = first.sum(axis=1)
    rank = np.cumsum(first, axis=1, dtype=np.int64)
    rows, cols = np.nonzero(first & (rank <= n))  # row-major: column order within a row
    counts = np.minimum(distinct, n)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.full((b, n), -1, dtype=picks.dtype)
    out[rows, slot] = picks[rows, cols]
    return out, distinct


def _query_pools(space: ItemSpace, pool: int) -> np.ndarray:
    """(Q, pool) the items nearest each query (blocks of queries: at most ~256 MB of scores at a time)."""
    if not len(space.query_texts):
        return np.zeros((0, pool), dtype=np.int64)
    block = max(1, (64 << 20) // max(space.n_items, 1))
    out = np.empty((len(space.query_vecs), pool), dtype=np.int64)
    for start in range(0, len(out), block):
        sims = similarities(space.query_vecs[start:start + block], space.item_vecs)
        out[start:start + block] = topk(sims, pool)
    return out
