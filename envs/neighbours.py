r"""Item neighbour lists for the candidate generator: co-engaged items first, then nearest by embedding.

The score of item :math:`j` as a neighbour of item :math:`i` is

.. math:: s_{ij} = \cos(v_i, v_j) + 10 \log(1 + c_{ij}),

with :math:`c_{ij}` the number of shoppers who engaged with both (0 without co-engagement). Any co-engaged
item outranks every embedding-only one (:math:`10 \log 2 > 2`), so a list is: co-engaged items by count
(cosine within equal counts), then the nearest items by cosine.

Two searches, chosen by catalog size:

* up to :data:`EXACT_MAX_ITEMS` items, exact: blocks of 1,024 rows scored against the whole catalog
  (:math:`O(n^2 d)`; the lists every earlier simulation was drawn from);
* above it, **inverted lists** (IVF): spherical k-means with :math:`\sqrt n` centroids (trained on a seeded
  sample), each item filed under its nearest centroid; the items of one list search exactly, as one block,
  the items of the ``probes`` lists whose centroids are nearest to their own centroid. Cost
  :math:`O(n \cdot \text{probes} \cdot \sqrt n \cdot d)` instead of :math:`O(n^2 d)`; recall against the
  exact lists is measured by ``benchmarks/bench_scale.py``. The co-engaged part stays exact and sparse:
  only the nonzero pairs of the co-engagement matrix are scored.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: catalogs up to this size get exact neighbour lists (beyond it, IVF)
EXACT_MAX_ITEMS = 20_000
#: lists probed per inverted list in the approximate search
DEFAULT_PROBES = 8
#: the co-engagement term's weight (any co-engaged item outranks every embedding-only one)
CO_WEIGHT = 10.0
_BLOCK = 1024


def item_neighbours(item_vecs: np.ndarray, co: sp.csr_matrix | None, k: int, *, probes: int = DEFAULT_PROBES,
                    exact_max: int = EXACT_MAX_ITEMS, seed: int = 0) -> np.ndarray:
    """(n_items, k) int64 neighbour lists, best first (see the module docstring for the score and the search).

    Args:
        item_vecs: (n_items, d) unit item vectors (float16 or float32; scored in float32).
        co: (n_items, n_items) sparse co-engagement counts, or None.
        k: neighbours per item, 1 <= k < n_items.
        probes: inverted lists each list searches (approximate search only).
        exact_max: the largest catalog searched exactly.
        seed: seeds the k-means sample and initialisation (approximate search only).
    """
    n = len(item_vecs)
    if n <= exact_max:
        return _exact(item_vecs, co, k)
    return _merge_co(item_vecs, co, _ivf(item_vecs, k, probes, seed), k)


def similarities(rows: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """(m, n_items) float32 inner products of ``rows`` (m, d) with every item vector.

    One product for a float32 table; a float16 table is read in float32 slices of 65,536 items, never as one
    whole float32 copy.
    """
    rows = np.asarray(rows, dtype=np.float32)
    if item_vecs.dtype == np.float32:
        return rows @ item_vecs.T
    return np.concatenate([rows @ np.asarray(item_vecs[i:i + 65536], np.float32).T
                           for i in range(0, len(item_vecs), 65536)], axis=1)


def _exact(item_vecs: np.ndarray, co: sp.csr_matrix | None, k: int) -> np.ndarray:
    n = len(item_vecs)
    vecs = np.asarray(item_vecs, dtype=np.float32)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _BLOCK):  # blocks of rows keep the (block, n) score matrix small
        stop = min(start + _BLOCK, n)
        score = (vecs[start:stop] @ vecs.T).astype(np.float64)  # in [-1, 1]
        if co is not None:
            score = score + CO_WEIGHT * np.log1p(co[start:stop].toarray())
        score[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        # not numeric.topk: ties inside and at the edge of the top k keep the partition's order, so the
        # neighbour lists (and every simulation drawn from them) stay as they were
        part = np.argpartition(-score, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(score, part, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def spherical_kmeans(vecs: np.ndarray, n_lists: int, rng: np.random.Generator, iterations: int = 10,
                     sample: int = 64) -> np.ndarray:
    """(n_lists, d) float32 unit centroids from ``iterations`` Lloyd steps on ``sample`` x n_lists seeded rows."""
    n = len(vecs)
    rows = np.sort(rng.choice(n, size=min(n, sample * n_lists), replace=False))
    x = np.asarray(vecs[rows], dtype=np.float32)
    centroids = x[rng.choice(len(x), size=n_lists, replace=False)].copy()
    for _ in range(iterations):
        assign = nearest_centroid(x, centroids)
        members = sp.csr_matrix((np.ones(len(x), dtype=np.float32), (assign, np.arange(len(x)))),
                                shape=(n_lists, len(x)))
        sums = np.asarray(members @ x, dtype=np.float32)
        norm = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norm[:, 0] < 1e-12  # an empty list keeps its centroid
        centroids = np.where(empty[:, None], centroids, sums / np.maximum(norm, 1e-12)).astype(np.float32)
    return centroids


def nearest_centroid(vecs: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n,) index of each row's most similar centroid (inner product), in blocks of rows."""
    out = np.empty(len(vecs), dtype=np.int64)
    for start in range(0, len(vecs), 8 * _BLOCK):
        block = np.asarray(vecs[start:start + 8 * _BLOCK], dtype=np.float32)
        out[start:start + len(block)] = np.argmax(block @ centroids.T, axis=1)
    return out


def _ivf(item_vecs: np.ndarray, k: int, probes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) approximate embedding neighbours and their cosines (self excluded), by inverted lists.

    Each list's block is one float32 GEMM and one ``torch.topk`` (a partial selection; NumPy's argpartition
    on the same block costs several times more).
    """
    import torch

    n = len(item_vecs)
    n_lists = max(1, int(np.sqrt(n)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, 7]))
    centroids = spherical_kmeans(item_vecs, n_lists, rng)
    assign = nearest_centroid(item_vecs, centroids)
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(n_lists + 1))
    similar = centroids @ centroids.T
    similar[np.arange(n_lists), np.arange(n_lists)] = np.inf  # a list always searches itself, first
    probe_lists = np.argsort(-similar, axis=1, kind="stable")[:, :min(probes, n_lists)]
    ids = np.full((n, k), -1, dtype=np.int64)
    cos = np.full((n, k), -np.inf, dtype=np.float32)
    for c in range(n_lists):
        members = order[bounds[c]:bounds[c + 1]]
        if len(members) == 0:
            continue
        pool = np.concatenate([order[bounds[p]:bounds[p + 1]] for p in probe_lists[c]])
        take = min(k, len(pool) - 1)
        if take < 1:
            continue
        pool_vecs = torch.from_numpy(np.asarray(item_vecs[pool], dtype=np.float32))
        for start in range(0, len(members), _BLOCK):
            rows = members[start:start + _BLOCK]
            score = torch.from_numpy(np.asarray(item_vecs[rows], dtype=np.float32)) @ pool_vecs.T
            own = np.arange(start, start + len(rows))  # members open the pool (their own list is probed first)
            score[np.arange(len(rows)), own] = -torch.inf  # not its own neighbour
            best, where = torch.topk(score, take, dim=1)  # sorted, best first
            ids[rows, :take] = pool[where.numpy()]
            cos[rows, :take] = best.numpy()
    return ids, cos


def _merge_co(item_vecs: np.ndarray, co: sp.csr_matrix | None, found: tuple[np.ndarray, np.ndarray],
              k: int) -> np.ndarray:
    """Top ``k`` per item of the co-engaged items (exact, sparse) and the embedding neighbours ``found``."""
    ids, cos = found
    n = len(ids)
    rows = np.repeat(np.arange(n), k)
    items, scores = ids.ravel(), cos.ravel().astype(np.float64)
    if co is not None and co.nnz:
        co = co.tocoo()
        co_rows, co_cols = co.row.astype(np.int64), co.col.astype(np.int64)
        co_cos = np.empty(len(co_rows), dtype=np.float64)
        step = 1 << 20
        for s in range(0, len(co_rows), step):  # row-wise dot products of the nonzero pairs only
            a = np.asarray(item_vecs[co_rows[s:s + step]], dtype=np.float32)
            b = np.asarray(item_vecs[co_cols[s:s + step]], dtype=np.float32)
            co_cos[s:s + step] = np.einsum("ij,ij->i", a, b)
        rows = np.concatenate([co_rows, rows])
        items = np.concatenate([co_cols, items])
        scores = np.concatenate([co_cos + CO_WEIGHT * np.log1p(co.data.astype(np.float64)), scores])
    keep = items >= 0
    rows, items, scores = rows[keep], items[keep], scores[keep]
    order = np.lexsort((-scores, rows))  # by row, best first
    rows, items = rows[order], items[order]
    pair = rows * n + items  # drop an embedding neighbour already listed (higher) as co-engaged
    seen_order = np.argsort(pair, kind="stable")
    dup = np.zeros(len(pair), dtype=bool)
    dup[seen_order[1:]] = pair[seen_order[1:]] == pair[seen_order[:-1]]
    rows, items = rows[~dup], items[~dup]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - start[rows]
    top = rank < k
    out = np.full((n, k), -1, dtype=np.int64)
    out[rows[top], rank[top]] = items[top]
    short = (out < 0).any(axis=1)
    if short.any():  # a tiny inverted-list pool: pad with the row's first neighbour (or itself's successor)
        fill = np.where(out[:, :1] >= 0, out[:, :1], (np.arange(n)[:, None] + 1) % n)
        out = np.where(out < 0, fill, out)
    return out
