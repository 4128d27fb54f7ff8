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
        if len(space.query_texts):
            sims = space.query_vecs @ space.item_vecs.T
            self.query_pools = topk(sims, pool)
        else:
            self.query_pools = np.zeros((0, pool), dtype=np.int64)
        self.neighbours = _neighbours(space.item_vecs, co_engagement, min(cfg.neighbours, n - 1))
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
        source = (rng.random((b, draws, 1)) > cdf[:, None, :]).sum(axis=2)
        source = np.minimum(source, len(SOURCES) - 1)
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
    """First ``n`` distinct entries per row and how many distinct entries each row has."""
    b, m = picks.shape
    order = np.argsort(picks, axis=1, kind="stable")
    sorted_picks = np.take_along_axis(picks, order, axis=1)
    dup_sorted = np.concatenate([np.zeros((b, 1), bool), sorted_picks[:, 1:] == sorted_picks[:, :-1]], axis=1)
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    key = np.where(dup, m, 0) + np.arange(m)[None, :]
    first = np.argsort(key, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(picks, first, axis=1), (~dup).sum(axis=1)


def _neighbours(item_vecs: np.ndarray, co: sp.csr_matrix | None, k: int) -> np.ndarray:
    """(n_items, k) neighbours: top co-engaged items first, then nearest by embedding."""
    n = len(item_vecs)
    out = np.empty((n, k), dtype=np.int64)
    block = 1024
    for start in range(0, n, block):  # blocks of rows keep the (block, n) score matrix small
        stop = min(start + block, n)
        score = (item_vecs[start:stop] @ item_vecs.T).astype(np.float64)  # in [-1, 1]
        if co is not None:
            score = score + 10.0 * np.log1p(co[start:stop].toarray())
        score[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        # not numeric.topk: ties inside and at the edge of the top k keep the partition's order, so the
        # neighbour lists (and every simulation drawn from them) stay as they were
        part = np.argpartition(-score, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(score, part, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out
