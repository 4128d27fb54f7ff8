r"""Collaborative-filtering baselines fitted on logs: item-kNN and implicit-feedback ALS matrix factorisation.

Both learn from positive interactions only (implicit feedback). The strength of a logged row is its
strongest signal, :math:`w = \max(w_{click} c, w_{cart} a, w_{buy} p)` (rows with :math:`w = 0`, i.e.
impressions without a click, are not interactions), summed per (user, item).

Cold start. Both add a small content term to the collaborative score,

.. math:: s(b, n) = s_{CF}(b, n) + \lambda_{cos}\, \cos(a\,u_b + b\,q_b,\ v_n)

(:func:`~agents.baselines.cosine_scores`, BERT embeddings). For a warm user and a warm item the CF term
dominates (``cosine_weight`` is small); a cold item has :math:`s_{CF} = 0` and is placed by cosine
among the items without collaborative evidence; a cold user (no usable history / unknown id and no
fold-in) has :math:`s_{CF} = 0` everywhere, so the whole request is ranked by cosine.

Neither library nor pickle: ALS is written here in NumPy/SciPy (conjugate-gradient ALS, vectorised
over all users at once), and fitted state is saved as plain arrays.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from agents._checks import check_candidates, check_choice, check_float, check_int
from agents.base import PolicyInputError, RankingContext
from agents.baselines import SIGNALS, LogFittedPolicy, cosine_scores, logged_item_rows, signal_column
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError

GROUPS: tuple[str, ...] = ("auto", "user", "session", "request")
_GROUP_COLUMNS = {"user": S.USER_ID, "session": S.SESSION_ID, "request": S.REQUEST_ID}


def interaction_strength(logs: LoggedData, click: float, cart: float, purchase: float) -> np.ndarray:
    """(n_rows,) float64 strongest-signal weight of every logged row (0: not an interaction)."""
    strength = click * signal_column(logs, "click")
    for name, weight in (("cart", cart), ("purchase", purchase)):
        if SIGNALS[name] in logs.interactions.columns and weight > 0:
            strength = np.maximum(strength, weight * signal_column(logs, name))
    return strength


def interaction_matrix(
    logs: LoggedData, item_index: pd.Index, group_column: str, weights: tuple[float, float, float], owner: str,
) -> tuple[sp.csr_array, pd.Index]:
    """Summed interaction strengths per (group, catalog item).

    Args:
        logs: the logged data.
        item_index: catalog item ids (column j = catalog index j).
        group_column: the interaction column whose values are the rows (user, session or request ids).
        weights: (click, cart, purchase) strength weights.
        owner: the calling policy's name, for messages.

    Returns:
        matrix: (n_groups, n_items) float64 CSR; groups: the group ids, in row order.
    """
    inter = logs.interactions
    if group_column not in inter.columns:
        raise DataFormatError(logs.name, f"{owner} needs a '{group_column}' column", column=group_column,
                              hint="logs such as OBD have no user ids; use group='request' or a content baseline")
    keep, rows = logged_item_rows(logs, item_index, owner)
    strength = interaction_strength(logs, *weights)[keep]
    groups = inter[group_column].to_numpy()[keep]
    positive = (strength > 0) & pd.notna(groups)
    codes, uniques = pd.factorize(groups[positive], sort=True)
    matrix = sp.csr_array((strength[positive], (codes, rows[positive])), shape=(len(uniques), len(item_index)))
    matrix.sum_duplicates()
    return matrix, pd.Index(uniques)


def _history_matrix(history: np.ndarray, n_items: int) -> sp.csr_array:
    """(B, n_items) counts of each catalog item in each row of ``history`` (B, H) (-1 and out-of-range ignored)."""
    b = history.shape[0]
    valid = (history >= 0) & (history < n_items)
    rows = np.broadcast_to(np.arange(b)[:, None], history.shape)[valid]
    return sp.csr_array((np.ones(int(valid.sum())), (rows, history[valid])), shape=(b, n_items))


def _check_history(ctx: RankingContext, n_items: int, owner: str) -> None:
    hist = ctx.history
    bad = (hist < -1) | (hist >= n_items)
    if bad.any():
        where = np.argwhere(bad)[0]
        raise PolicyInputError(f"ctx.history must hold catalog indices in [0, {n_items}) or -1 (padding) for "
                               f"{owner}; got {hist[tuple(where)]} at (request {where[0]}, entry {where[1]})")


class _CFBase(LogFittedPolicy):
    """Shared arguments of the CF policies: signal weights and the cosine fallback."""

    def __init__(
        self, cosine_weight: float, user_weight: float, query_weight: float,
        click_weight: float, cart_weight: float, purchase_weight: float,
    ) -> None:
        self.cosine_weight = check_float(cosine_weight, "cosine_weight", min_value=0.0)
        self.user_weight = check_float(user_weight, "user_weight", min_value=0.0)
        self.query_weight = check_float(query_weight, "query_weight", min_value=0.0)
        self.click_weight = check_float(click_weight, "click_weight", min_value=0.0, min_inclusive=False)
        self.cart_weight = check_float(cart_weight, "cart_weight", min_value=0.0)
        self.purchase_weight = check_float(purchase_weight, "purchase_weight", min_value=0.0)

    @property
    def _weights(self) -> tuple[float, float, float]:
        return self.click_weight, self.cart_weight, self.purchase_weight

    def _fallback(self, ctx: RankingContext) -> np.ndarray:
        if self.cosine_weight == 0.0:
            return np.zeros((ctx.batch_size, ctx.n_candidates))
        return self.cosine_weight * cosine_scores(ctx, self.user_weight, self.query_weight)

    def _base_config(self) -> dict[str, Any]:
        return {"cosine_weight": self.cosine_weight, "user_weight": self.user_weight,
                "query_weight": self.query_weight, "click_weight": self.click_weight,
                "cart_weight": self.cart_weight, "purchase_weight": self.purchase_weight}


class ItemKNNPolicy(_CFBase):
    r"""Item-based k-nearest neighbours (Sarwar et al., 2001) over co-interactions, history from ``ctx.history``.

    Note:
        With :math:`R` the (group x item) interaction matrix (binarised if ``binary``), the similarity
        of items :math:`j` and :math:`i` is the shrunk cosine of their columns, keeping for each item
        :math:`j` only its ``n_neighbors`` most similar items:

        .. math::
            S_{ji} = \frac{(R^\top R)_{ji}}{\lVert R_{:j}\rVert\,\lVert R_{:i}\rVert + \beta}, \qquad
            s_{CF}(b, i) = r_b^\top S f_i = \sum_{h \in \text{history}_b} S_{h i},

        where :math:`r_b` counts the catalog items in the request's history and :math:`f_i` is the
        one-hot vector of candidate :math:`i`. Then :math:`s = s_{CF} + \lambda_{cos} \cos(\cdot)` (see
        :mod:`agents.cf`).

    Args:
        n_neighbors: neighbours kept per item, >= 1.
        shrinkage: beta >= 0, damps similarities supported by few co-interactions.
        group: what counts as co-interaction: "user", "session", "request", or "auto" (the first present).
        binary: count each (group, item) pair once, whatever its strength.
        cosine_weight: lambda_cos >= 0, weight of the content fallback.
        user_weight: a >= 0, user-profile weight in the cosine.
        query_weight: b >= 0, query weight in the cosine.
        click_weight: strength of a click, > 0.
        cart_weight: strength of an add-to-cart, >= 0.
        purchase_weight: strength of a purchase, >= 0.
    """

    name: ClassVar[str] = "item_knn"

    def __init__(
        self, n_neighbors: int = 100, shrinkage: float = 10.0, group: str = "auto", binary: bool = True,
        cosine_weight: float = 0.1, user_weight: float = 1.0, query_weight: float = 1.0,
        click_weight: float = 1.0, cart_weight: float = 2.0, purchase_weight: float = 4.0,
    ) -> None:
        super().__init__(cosine_weight, user_weight, query_weight, click_weight, cart_weight, purchase_weight)
        self.n_neighbors = check_int(n_neighbors, "n_neighbors", min_value=1)
        self.shrinkage = check_float(shrinkage, "shrinkage", min_value=0.0)
        self.group = check_choice(group, "group", GROUPS)
        if not isinstance(binary, bool):
            raise ConfigError(f"`binary` must be true or false, got {binary!r}")
        self.binary = binary
        self.similarity: sp.csr_array | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether the similarity matrix is known."""
        return self.similarity is not None

    def _group_column(self, logs: LoggedData) -> str:
        if self.group != "auto":
            return _GROUP_COLUMNS[self.group]
        return next(c for c in (S.USER_ID, S.SESSION_ID, S.REQUEST_ID) if c in logs.interactions.columns)

    def fit(self, logs: LoggedData, item_index: pd.Index, user_index: pd.Index | None = None) -> ItemKNNPolicy:
        """Build the pruned item-item similarity from the logs (``user_index`` is not used)."""
        del user_index
        matrix, _ = interaction_matrix(logs, item_index, self._group_column(logs), self._weights, "ItemKNNPolicy")
        if self.binary:
            matrix.data[:] = 1.0
        co = (matrix.T @ matrix).tocsr()
        co.setdiag(0.0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray((matrix * matrix).sum(axis=0)).ravel())
        row_of = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
        data = co.data / (norms[row_of] * norms[co.indices] + self.shrinkage)
        # keep each row's n_neighbors largest similarities (vectorised: rank within row after sorting)
        order = np.lexsort((-data, row_of))
        rank = np.arange(len(order)) - co.indptr[row_of[order]]
        keep = order[rank < self.n_neighbors]
        n = len(item_index)
        self.similarity = sp.csr_array((data[keep], (row_of[keep], co.indices[keep])), shape=(n, n))
        return self

    def cf_scores(self, ctx: RankingContext) -> np.ndarray:
        r"""(B, N) float64 :math:`\sum_{h \in \text{history}} S_{h,i}` for every candidate i."""
        self._require_fitted()
        assert self.similarity is not None
        n_items = self.similarity.shape[0]
        check_candidates(ctx, n_items, "ItemKNNPolicy")
        _check_history(ctx, n_items, "ItemKNNPolicy")
        propagated = (_history_matrix(ctx.history, n_items) @ self.similarity).tocsr()
        rows = np.broadcast_to(np.arange(ctx.batch_size)[:, None], ctx.candidates.shape)
        return np.asarray(propagated[rows.ravel(), ctx.candidates.ravel()], dtype=np.float64).reshape(
            ctx.candidates.shape)

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 item-kNN score plus the cosine fallback term."""
        return self.cf_scores(ctx) + self._fallback(ctx)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return self._base_config() | {"n_neighbors": self.n_neighbors, "shrinkage": self.shrinkage,
                                      "group": self.group, "binary": self.binary}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The similarity matrix in CSR arrays (empty before fitting)."""
        if self.similarity is None:
            return {}
        sim = self.similarity
        return {"similarity.data": sim.data.astype(np.float64), "similarity.indices": sim.indices.astype(np.int64),
                "similarity.indptr": sim.indptr.astype(np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the similarity matrix."""
        if not state:
            return
        try:
            indptr = state["similarity.indptr"]
            n = len(indptr) - 1
            self.similarity = sp.csr_array((state["similarity.data"], state["similarity.indices"], indptr),
                                           shape=(n, n))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"ItemKNNPolicy state is not a saved similarity matrix ({exc})") from exc


def _cg_half_step(
    confidence: sp.csr_array, fixed: np.ndarray, solve: np.ndarray, reg: float, cg_steps: int
) -> np.ndarray:
    r"""One ALS half-step for all rows of ``solve`` at once, by ``cg_steps`` of conjugate gradient.

    Solves, for every row u, :math:`(Y^\top C_u Y + \lambda I)\, x_u = Y^\top C_u p_u` with
    :math:`Y` = ``fixed``, :math:`C_u = I + \mathrm{diag}(c_{u\cdot} - 1)` and :math:`p_u` the 0/1
    preference (1 where ``confidence`` is stored), warm-started at the current ``solve`` (Takacs et al.,
    2011). The matrix-vector products are batched over rows with one sparse product each.

    Args:
        confidence: (U, I) CSR, data :math:`c_{ui} - 1 = \alpha w_{ui} > 0` on the interactions.
        fixed: (I, f) float64 factors held fixed.
        solve: (U, f) float64 factors to update (warm start).
        reg: lambda > 0.
        cg_steps: CG iterations, >= 1.

    Returns:
        (U, f) float64 updated factors.
    """
    n_rows, f = solve.shape
    rows = np.repeat(np.arange(n_rows), np.diff(confidence.indptr))
    cols = confidence.indices
    cm1 = confidence.data
    gram = fixed.T @ fixed + reg * np.eye(f)
    shape = confidence.shape

    def matvec(p: np.ndarray) -> np.ndarray:
        dots = np.einsum("nf,nf->n", p[rows], fixed[cols])
        return p @ gram + sp.csr_array((cm1 * dots, cols, confidence.indptr), shape=shape) @ fixed

    rhs = sp.csr_array((cm1 + 1.0, cols, confidence.indptr), shape=shape) @ fixed
    x = solve.copy()
    r = rhs - matvec(x)
    p = r.copy()
    rs = np.einsum("uf,uf->u", r, r)
    for _ in range(cg_steps):  # a few iterations, each vectorised over all rows
        ap = matvec(p)
        pap = np.einsum("uf,uf->u", p, ap)
        step = np.divide(rs, pap, out=np.zeros_like(rs), where=pap > 1e-30)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = np.einsum("uf,uf->u", r, r)
        beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 1e-30)
        p = r + beta[:, None] * p
        rs = rs_new
    return x


def als_factors(
    interactions: sp.csr_array, factors: int, reg: float, alpha: float, iterations: int, cg_steps: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Implicit-feedback ALS (Hu, Koren and Volinsky, 2008) with conjugate-gradient half-steps.

    Note:
        Minimises over user factors :math:`X` and item factors :math:`Y`

        .. math:: \sum_{u,i} c_{ui} (p_{ui} - x_u^\top y_i)^2 + \lambda (\lVert X\rVert_F^2 + \lVert Y\rVert_F^2),
            \qquad c_{ui} = 1 + \alpha w_{ui},\ p_{ui} = [w_{ui} > 0].

    Args:
        interactions: (U, I) CSR interaction strengths w >= 0.
        factors: f >= 1.
        reg: lambda > 0.
        alpha: confidence scale > 0.
        iterations: alternating sweeps >= 1.
        cg_steps: CG iterations per half-step >= 1.
        rng: draws the initial factors (N(0, 0.01^2)).

    Returns:
        (U, f) user factors and (I, f) item factors, float64; rows without interactions are 0.
    """
    conf = sp.csr_array(interactions, dtype=np.float64)
    conf.eliminate_zeros()
    conf.data = alpha * conf.data
    conf_t = sp.csr_array(conf.T)
    n_users, n_items = conf.shape
    x = rng.normal(0.0, 0.01, (n_users, factors))
    y = rng.normal(0.0, 0.01, (n_items, factors))
    for _ in range(iterations):  # a few sweeps, each vectorised over all users / items
        x = _cg_half_step(conf, y, x, reg, cg_steps)
        y = _cg_half_step(conf_t, x, y, reg, cg_steps)
    x[np.diff(conf.indptr) == 0] = 0.0
    y[np.diff(conf_t.indptr) == 0] = 0.0
    return x, y


class ALSPolicy(_CFBase):
    r"""Matrix factorisation for implicit feedback (ALS), scored :math:`x_u^\top y_i` plus the cosine fallback.

    Note:
        Factors from :func:`als_factors`. A user known to the fit is scored with its factor :math:`x_u`.
        Otherwise, with ``fold_in``, a user whose ``ctx.history`` holds fitted items gets the exact ALS
        solution for a new row given the item factors (:math:`H` = history items, :math:`Y_H` their
        factors):

        .. math:: x = (Y^\top Y + \lambda I + \alpha Y_H^\top Y_H)^{-1} (1 + \alpha) Y_H^\top \mathbf{1}.

        Any other user has :math:`s_{CF} = 0` (cosine only); items unseen in the logs have
        :math:`y_i = 0` (cosine only). See :mod:`agents.cf`.

    Args:
        factors: latent dimension f >= 1.
        regularization: lambda > 0.
        alpha: confidence scale > 0 (:math:`c = 1 + \alpha w`).
        iterations: ALS sweeps >= 1.
        cg_steps: conjugate-gradient steps per half-step >= 1.
        fold_in: infer factors of users unknown to the fit from ``ctx.history``.
        cosine_weight: lambda_cos >= 0, weight of the content fallback.
        user_weight: a >= 0, user-profile weight in the cosine.
        query_weight: b >= 0, query weight in the cosine.
        click_weight: strength of a click, > 0.
        cart_weight: strength of an add-to-cart, >= 0.
        purchase_weight: strength of a purchase, >= 0.
        seed: seeds the initial factors.
    """

    name: ClassVar[str] = "als"

    def __init__(
        self, factors: int = 32, regularization: float = 0.1, alpha: float = 10.0, iterations: int = 15,
        cg_steps: int = 3, fold_in: bool = True, cosine_weight: float = 0.1, user_weight: float = 1.0,
        query_weight: float = 1.0, click_weight: float = 1.0, cart_weight: float = 2.0,
        purchase_weight: float = 4.0, seed: int = 0,
    ) -> None:
        super().__init__(cosine_weight, user_weight, query_weight, click_weight, cart_weight, purchase_weight)
        self.factors = check_int(factors, "factors", min_value=1)
        self.regularization = check_float(regularization, "regularization", min_value=0.0, min_inclusive=False)
        self.alpha = check_float(alpha, "alpha", min_value=0.0, min_inclusive=False)
        self.iterations = check_int(iterations, "iterations", min_value=1)
        self.cg_steps = check_int(cg_steps, "cg_steps", min_value=1)
        if not isinstance(fold_in, bool):
            raise ConfigError(f"`fold_in` must be true or false, got {fold_in!r}")
        self.fold_in = fold_in
        self.seed = check_int(seed, "seed", min_value=0)
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether the factors are known."""
        return self.user_factors is not None and self.item_factors is not None

    def fit(self, logs: LoggedData, item_index: pd.Index, user_index: pd.Index | None = None) -> ALSPolicy:
        """Fit the factors; user rows follow ``user_index`` (default: the logs' user ids, sorted).

        Users of the logs missing from ``user_index`` still inform the item factors; users of
        ``user_index`` without logged interactions get a zero factor (cold).
        """
        matrix, log_users = interaction_matrix(logs, item_index, S.USER_ID, self._weights, "ALSPolicy")
        if user_index is None:
            user_index = log_users
        elif not isinstance(user_index, pd.Index) or not user_index.is_unique:
            raise ConfigError(
                f"`user_index` must be a pandas Index of unique user ids, got {type(user_index).__name__}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 5]))
        x, y = als_factors(matrix, self.factors, self.regularization, self.alpha, self.iterations, self.cg_steps,
                           rng)
        users = np.zeros((len(user_index), self.factors))
        pos = user_index.get_indexer(log_users)
        users[pos[pos >= 0]] = x[pos >= 0]
        self.user_factors, self.item_factors = users, y
        return self

    def user_vectors(self, ctx: RankingContext) -> np.ndarray:
        """(B, f) float64 user factors: fitted, folded in from history, or 0 (cold)."""
        self._require_fitted()
        assert self.user_factors is not None and self.item_factors is not None
        uid = ctx.user_ids
        n_users = len(self.user_factors)
        if uid.size and (int(uid.min()) < -1 or int(uid.max()) >= n_users):
            bad = int(np.argmax((uid < -1) | (uid >= n_users)))
            raise PolicyInputError(f"ctx.user_ids must be in [-1, {n_users}) (positions in the user_index ALSPolicy "
                                   f"was fitted with), got {uid[bad]} at request {bad}")
        vectors = np.where((uid >= 0)[:, None], self.user_factors[np.maximum(uid, 0)], 0.0)
        cold = ~np.any(vectors != 0.0, axis=1)
        if self.fold_in and cold.any():
            y = self.item_factors
            _check_history(ctx, len(y), "ALSPolicy")
            hist = ctx.history[cold]
            valid = hist >= 0
            yh = np.where(valid[..., None], y[np.maximum(hist, 0)], 0.0)  # (b, H, f); unseen items are 0 rows
            gram = y.T @ y + self.regularization * np.eye(self.factors)
            lhs = gram[None] + self.alpha * np.einsum("bhf,bhg->bfg", yh, yh)
            rhs = (1.0 + self.alpha) * yh.sum(axis=1)
            vectors[cold] = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        return vectors

    def cf_scores(self, ctx: RankingContext) -> np.ndarray:
        r"""(B, N) float64 :math:`x_u^\top y_i` for every candidate (0 for cold users or items)."""
        vectors = self.user_vectors(ctx)
        assert self.item_factors is not None
        check_candidates(ctx, len(self.item_factors), "ALSPolicy")
        return np.einsum("bf,bnf->bn", vectors, self.item_factors[ctx.candidates])

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 factor score plus the cosine fallback term."""
        return self.cf_scores(ctx) + self._fallback(ctx)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return self._base_config() | {
            "factors": self.factors, "regularization": self.regularization, "alpha": self.alpha,
            "iterations": self.iterations, "cg_steps": self.cg_steps, "fold_in": self.fold_in, "seed": self.seed}

    def state_dict(self) -> dict[str, np.ndarray]:
        """User and item factors (empty before fitting)."""
        if self.user_factors is None or self.item_factors is None:
            return {}
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the factors."""
        if not state:
            return
        if set(state) != {"user_factors", "item_factors"}:
            raise ConfigError(f"ALSPolicy state must hold user_factors and item_factors, got {sorted(state)}")
        users, items = (np.asarray(state[k], dtype=np.float64) for k in ("user_factors", "item_factors"))
        if users.ndim != 2 or items.ndim != 2 or users.shape[1] != self.factors or items.shape[1] != self.factors:
            raise ConfigError(f"saved factors must be (n, {self.factors}), got {users.shape} and {items.shape}")
        self.user_factors, self.item_factors = users, items
