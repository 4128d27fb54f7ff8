r"""Candidate features for the online learners, and the position-aware credit of each shown slot.

Features (:class:`CandidateFeatures`). With :math:`u` the user profile, :math:`q` the query (zero when
browsing), :math:`v` a candidate's embedding (all unit vectors in :math:`\mathbb{R}^d`), :math:`P \in
\mathbb{R}^{d \times p}` a fixed, seeded random projection with orthonormal columns (identity when
``proj_dim`` is None or >= d) and :math:`\tilde a = P^\top a / \lVert P^\top a \rVert` (zero stays zero),
and :math:`s \in \{0, 1\}` the search flag, the feature vector of a candidate is the concatenation of
the selected blocks:

========  ======================================================  =========
block     value                                                   size
========  ======================================================  =========
``cos``   :math:`[u^\top v,\ q^\top v,\ s\, u^\top v]` (exact)     3
``ui``    :math:`\sqrt{p}\,\tilde u \odot \tilde v`                  p
``i``     :math:`\tilde v`                                         p
``qi``    :math:`\sqrt{p}\,\tilde q \odot \tilde v`                  p
``extra`` the env's per-candidate features ``ctx.extra``          F
``bias``  1                                                       1
========  ======================================================  =========

A shared linear model on these features scores :math:`\theta^\top x = \tilde u^\top \mathrm{diag}(w)
\tilde v + \ldots`: a learned re-weighting of the user-item and query-item cosines in the projected
space (``ui``/``qi``; all-equal weights give back the cosine), an item prior in embedding space (``i``)
and the env's extra signals. The :math:`\sqrt{p}` keeps each block's norm near 1 so that one ridge
penalty suits all blocks.

Credit (:func:`slot_credit`). Under the position-based model a shown slot ``k`` is examined with
probability :math:`e_k` and :math:`E[r_k] = e_k\, v(u, i_k)`. The learners estimate the examined value
:math:`v` with, per slot, the weight :math:`w_k = m_k e_k` and the target :math:`y_k = r_k / e_k`,
where :math:`m_k \in \{0, 1\}` is the cascade mask (1 up to the last click of the page, or everywhere
when ``cascade`` is off or nothing was clicked). A weighted least-squares fit then uses

.. math:: A = \lambda I + \sum m_k e_k\, x_k x_k^\top, \qquad b = \sum m_k r_k\, x_k,

which is unbiased for :math:`v` (:math:`E[b] = \sum m_k e_k v_k x_k`) and trusts low slots less, in
proportion to how rarely they are examined. Without ``examination`` every :math:`e_k = 1`
(position-unaware: a bottom slot's miss then counts as much as a top slot's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agents._checks import check_choice, check_int, examination_for
from agents.base import Feedback, PolicyInputError, RankingContext
from shopgym.errors import ConfigError

BLOCKS: tuple[str, ...] = ("cos", "ui", "i", "qi", "extra", "bias")
TARGETS: tuple[str, ...] = ("reward", "click", "cart", "purchase")
Target = Literal["reward", "click", "cart", "purchase"]
_TINY = 1e-12


#: requests featurised and scored at a time: (64, N, p) float32 temporaries (~5 MB at N=100, p=198) stay in
#: cache, so a batch of 1,024 requests costs 16 chunks, not one pass over (1024, N, p) arrays in main memory
ROW_CHUNK = 64


def by_row_chunks(ctx: RankingContext, fn: Callable[[RankingContext, slice], np.ndarray],
                  chunk: int | None = None) -> np.ndarray:
    """``fn`` over sub-batches of at most ``chunk`` requests, concatenated along the batch axis.

    ``fn(sub, rows)`` maps the sub-context ``sub`` (the requests ``rows`` of ``ctx``) to an array with a
    leading axis of their number ((b, N) scores); rows are independent, so the result equals
    ``fn(ctx, slice(0, B))``, with temporaries ``chunk / B`` the size. ``chunk`` None: :data:`ROW_CHUNK`.
    """
    chunk = ROW_CHUNK if chunk is None else chunk
    b = ctx.batch_size
    if b <= chunk:
        return fn(ctx, slice(0, b))
    return np.concatenate([fn(ctx.take(np.arange(start, min(start + chunk, b))), slice(start, start + chunk))
                           for start in range(0, b, chunk)])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm along the last axis; (near-)zero rows stay zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > _TINY, x / np.maximum(norm, _TINY), 0.0).astype(np.float32)


class CandidateFeatures:
    """The feature map shared by the bandits (see the module docstring for the blocks).

    Dimensions are inferred on the first call: ``d`` from ``ctx.candidate_vecs`` and ``F`` from
    ``ctx.extra``; later calls must match them.

    Args:
        blocks: which blocks to use, a non-empty subset of ``("cos", "ui", "i", "qi", "extra", "bias")``
            (kept in that order).
        proj_dim: dimension ``p`` of the random projection, >= 1; None (or >= d) keeps the full embedding.
        seed: seeds the projection (the same seed and ``d`` give the same projection).
    """

    def __init__(self, blocks: Sequence[str] = BLOCKS, proj_dim: int | None = 64, seed: int = 0) -> None:
        if isinstance(blocks, str) or not len(blocks):
            raise ConfigError(f"`blocks` must be a non-empty list of block names from {list(BLOCKS)}, got {blocks!r}")
        for block in blocks:
            check_choice(block, "blocks", BLOCKS)
        self.blocks = tuple(b for b in BLOCKS if b in blocks)
        self.proj_dim = None if proj_dim is None else check_int(proj_dim, "proj_dim", min_value=1)
        self.seed = check_int(seed, "seed")
        self._projection: np.ndarray | None = None
        self._dim = 0
        self._n_extra = 0

    # ------------------------------------------------------------------ dimensions
    @property
    def built(self) -> bool:
        """Whether the dimensions are known (after the first call or :meth:`build`)."""
        return self._projection is not None

    @property
    def dim(self) -> int:
        """Embedding dimension d (0 before the first call)."""
        return self._dim

    @property
    def n_extra(self) -> int:
        """Number F of extra per-candidate features (0 before the first call)."""
        return self._n_extra

    @property
    def proj(self) -> int:
        """Projected dimension p actually used (min(proj_dim, d))."""
        return 0 if self._projection is None else int(self._projection.shape[1])

    @property
    def sizes(self) -> dict[str, int]:
        """Size of each used block, in feature order."""
        p = self.proj
        full = {"cos": 3, "ui": p, "i": p, "qi": p, "extra": self._n_extra, "bias": 1}
        return {b: full[b] for b in self.blocks}

    @property
    def n_features(self) -> int:
        """Total feature dimension (0 before the first call)."""
        return sum(self.sizes.values()) if self.built else 0

    def build(self, dim: int, n_extra: int, projection: np.ndarray | None = None) -> None:
        """Fix ``d`` and ``F`` and draw (or restore) the projection.

        Args:
            dim: embedding dimension d >= 1.
            n_extra: number of extra features F >= 0.
            projection: (d, p) float32 saved projection to restore; None draws it from ``seed``.
        """
        dim = check_int(dim, "dim", min_value=1)
        n_extra = check_int(n_extra, "n_extra", min_value=0)
        if projection is None:
            p = dim if self.proj_dim is None else min(self.proj_dim, dim)
            if p == dim:
                projection = np.eye(dim, dtype=np.float32)
            else:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, dim, p]))
                q, r = np.linalg.qr(rng.standard_normal((dim, p)))
                projection = (q * np.sign(np.diag(r))[None, :]).astype(np.float32)  # unique (Haar) orthonormal basis
        elif projection.ndim != 2 or projection.shape[0] != dim:
            raise ConfigError(f"saved projection must have shape ({dim}, p), got {projection.shape}")
        self._projection = np.ascontiguousarray(projection, dtype=np.float32)
        self._dim, self._n_extra = dim, n_extra

    def _check(self, ctx: RankingContext) -> None:
        if not self.built:
            self.build(ctx.dim, int(ctx.extra.shape[2]))
        if ctx.dim != self._dim or ctx.extra.shape[2] != self._n_extra:
            raise PolicyInputError(
                f"this policy was built for embeddings of dim {self._dim} and {self._n_extra} extra features, "
                f"got dim {ctx.dim} and {ctx.extra.shape[2]} extra features"
            )

    # ------------------------------------------------------------------ the map
    def __call__(self, ctx: RankingContext, cols: np.ndarray | None = None) -> np.ndarray:
        """Features of all candidates, or of the columns ``cols``.

        Args:
            ctx: the batch of requests.
            cols: (B, M) int64 column indices into the candidates (e.g. ``ranking.slots``); None: all N.

        Returns:
            (B, M, n_features) float32 (M = N when ``cols`` is None).
        """
        self._check(ctx)
        assert self._projection is not None
        vecs = np.asarray(ctx.candidate_vecs, dtype=np.float32)
        extra = np.asarray(ctx.extra, dtype=np.float32)
        if cols is not None:
            vecs = np.take_along_axis(vecs, cols[:, :, None], axis=1)
            extra = np.take_along_axis(extra, cols[:, :, None], axis=1)
        user = np.asarray(ctx.user, dtype=np.float32)
        query = np.asarray(ctx.query, dtype=np.float32)
        proj = self._projection
        p = proj.shape[1]
        parts: list[np.ndarray] = []
        need_items = any(b in self.blocks for b in ("ui", "i", "qi"))
        pv = _unit_rows(vecs @ proj) if need_items else vecs
        scale = np.float32(np.sqrt(p))
        for block in self.blocks:
            if block == "cos":
                cos_u = np.einsum("bmd,bd->bm", vecs, user)
                search = np.asarray(ctx.is_search, dtype=np.float32)[:, None]
                parts += [cos_u[..., None], np.einsum("bmd,bd->bm", vecs, query)[..., None],
                          (search * cos_u)[..., None]]
            elif block == "ui":
                parts.append(scale * _unit_rows(user @ proj)[:, None, :] * pv)
            elif block == "i":
                parts.append(pv)
            elif block == "qi":
                parts.append(scale * _unit_rows(query @ proj)[:, None, :] * pv)
            elif block == "extra":
                parts.append(extra)
            else:
                parts.append(np.ones(vecs.shape[:2] + (1,), dtype=np.float32))
        return np.concatenate(parts, axis=2).astype(np.float32, copy=False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The projection and the dimensions (empty before the first call)."""
        if self._projection is None:
            return {}
        return {"features.projection": self._projection,
                "features.dims": np.array([self._dim, self._n_extra], dtype=np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` saved (a missing projection leaves the map unbuilt)."""
        if "features.projection" not in state:
            return
        dim, n_extra = (int(x) for x in state["features.dims"])
        self.build(dim, n_extra, np.asarray(state["features.projection"]))


@dataclass(frozen=True)
class SlotCredit:
    """Position-aware credit of each shown slot (see the module docstring).

    Attributes:
        mask: (B, K) bool, slots that count (the cascade mask; all True without cascade).
        examination: (B, K) float64 examination probability e_k of each slot.
        weight: (B, K) float64 m_k e_k, the least-squares weight.
        reward: (B, K) float64 m_k r_k, the masked target.
        target: (B, K) float64 r_k / e_k where counted, else 0.
    """

    mask: np.ndarray
    examination: np.ndarray
    weight: np.ndarray
    reward: np.ndarray
    target: np.ndarray


def feedback_target(feedback: Feedback, target: str) -> np.ndarray:
    """(B, K) float64 per-slot learning target: the env's reward, or one of the 0/1 signals."""
    source = {"reward": feedback.reward, "click": feedback.clicked, "cart": feedback.carted,
              "purchase": feedback.purchased}[target]
    return np.asarray(source, dtype=np.float64)


def slot_credit(feedback: Feedback, examination: np.ndarray | None, cascade: bool, target: str) -> SlotCredit:
    """Weights and targets of each shown slot for the learners.

    Args:
        feedback: the shopper's response, arrays (B, K).
        examination: (K_max,) examination probabilities of slots 1..K_max, or None (all 1).
        cascade: count only slots up to the last click of each page (all slots if nothing was clicked).
        target: "reward", "click", "cart" or "purchase".

    Returns:
        The per-slot credit.
    """
    reward = feedback_target(feedback, target)
    b, k = reward.shape
    exam = np.broadcast_to(examination_for(examination, k), (b, k)).astype(np.float64)
    if cascade:
        clicked = np.asarray(feedback.clicked).astype(bool)
        last = k - 1 - np.argmax(clicked[:, ::-1], axis=1)
        last = np.where(clicked.any(axis=1), last, k - 1)
        mask = np.arange(k)[None, :] <= last[:, None]
    else:
        mask = np.ones((b, k), dtype=bool)
    weight = np.where(mask, exam, 0.0)
    masked = np.where(mask, reward, 0.0)
    return SlotCredit(mask, exam, weight, masked, np.where(mask, reward / exam, 0.0))
