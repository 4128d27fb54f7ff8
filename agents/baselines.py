r"""Non-learning baselines: uniformly random, popularity from the logs, and embedding cosine.

* :class:`RandomPolicy`: a uniformly random ranking, with exact propensities :math:`1/N` per slot and
  :math:`(N-K)!/N!` per slate.
* :class:`PopularityPolicy`: a smoothed, optionally position-debiased rate per item fitted on logs;
  items never shown fall back to the prior (the global rate).
* :class:`CosinePolicy`: :math:`\cos(a\,u + b\,q,\ v)`: the user profile, plus the query in search mode.

Logs-fitted policies (here :class:`PopularityPolicy`; also the collaborative-filtering ones in
:mod:`agents.cf`) derive from :class:`LogFittedPolicy` and are fitted with
``fit(logs, item_index, user_index)`` before use: ``item_index`` maps item ids to the catalog indices
found in ``ctx.candidates`` and ``ctx.history``, ``user_index`` maps user ids to the indices in
``ctx.user_ids`` (-1 = unknown).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from agents._checks import (
    NotFittedError,
    check_candidates,
    check_choice,
    check_examination,
    check_float,
    check_int,
    check_k,
)
from agents.base import Ranking, RankingContext, RankingPolicy
from agents.exploration import uniform_ranking
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError

#: signal columns a logs-fitted policy can learn from
SIGNALS: dict[str, str] = {"click": S.CLICKED, "cart": S.CARTED, "purchase": S.PURCHASED}


class RandomPolicy(RankingPolicy):
    r"""Uniformly random rankings with exact propensities.

    Note:
        .. math:: P(\text{item } n \text{ at slot } k) = \frac{1}{N}, \qquad P(\sigma) = \frac{(N-K)!}{N!}.

    Args:
        seed: seeds :meth:`score` (``rank`` uses the generator it is given).
    """

    name: ClassVar[str] = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = check_int(seed, "seed", min_value=0)
        self._rng = np.random.default_rng(self.seed)

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 i.i.d. uniform scores (so their top-K is also a uniformly random ranking)."""
        return self._rng.random((ctx.batch_size, ctx.n_candidates))

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """A uniformly random ranking of ``k`` of the N candidates per request."""
        k = check_k(k, ctx.n_candidates)
        return uniform_ranking(rng, ctx.batch_size, ctx.n_candidates, k)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return {"seed": self.seed}


def cosine_scores(ctx: RankingContext, user_weight: float = 1.0, query_weight: float = 1.0) -> np.ndarray:
    r"""(B, N) float64 :math:`\cos(a\,u + b\,q,\ v_n)`; 0 for every candidate when :math:`a u + b q = 0`.

    Args:
        ctx: the batch (``query`` rows are zero when browsing, ``user`` rows zero for unknown users).
        user_weight: a >= 0.
        query_weight: b >= 0.
    """
    profile = user_weight * np.asarray(ctx.user, dtype=np.float64) + query_weight * np.asarray(ctx.query, np.float64)
    norm = np.linalg.norm(profile, axis=1, keepdims=True)
    profile = np.where(norm > 1e-12, profile / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
    vecs = np.asarray(ctx.candidate_vecs, dtype=np.float32)  # float32 products: cosines need no more digits
    dots = np.matmul(vecs, profile[:, :, None])[..., 0]
    vnorm = np.sqrt(np.einsum("bnd,bnd->bn", vecs, vecs))
    return (dots / np.maximum(vnorm, 1e-12)).astype(np.float64)


class CosinePolicy(RankingPolicy):
    r"""Content baseline: cosine between the (query-augmented) user profile and each item embedding.

    Note:
        .. math:: s(u, q, v) = \cos(a\,u + b\,q,\ v),

        where :math:`q = 0` when browsing. A cold user (zero profile) is served by the query alone in
        search mode; a cold user browsing gets all-zero scores (the candidate order is kept).

    Args:
        user_weight: a >= 0.
        query_weight: b >= 0; a + b > 0.
    """

    name: ClassVar[str] = "cosine"

    def __init__(self, user_weight: float = 1.0, query_weight: float = 1.0) -> None:
        self.user_weight = check_float(user_weight, "user_weight", min_value=0.0)
        self.query_weight = check_float(query_weight, "query_weight", min_value=0.0)
        if self.user_weight + self.query_weight == 0.0:
            raise ConfigError("`user_weight` and `query_weight` must not both be 0, got 0 and 0")

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 cosine scores."""
        return cosine_scores(ctx, self.user_weight, self.query_weight)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return {"user_weight": self.user_weight, "query_weight": self.query_weight}


def logged_item_rows(logs: LoggedData, item_index: pd.Index, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Catalog index of every logged interaction row; rows whose item is not in ``item_index`` are dropped.

    Returns:
        keep: (n_rows,) bool, rows whose item is in the catalog; rows: (n_kept,) int64 their catalog indices.

    Raises:
        ConfigError: ``item_index`` is not a pandas Index of unique ids, or no logged item is in it.
    """
    if not isinstance(item_index, pd.Index) or not item_index.is_unique:
        raise ConfigError(f"`item_index` must be a pandas Index of unique item ids, got {type(item_index).__name__}")
    rows = item_index.get_indexer(pd.Index(logs.interactions[S.ITEM_ID]))
    keep = rows >= 0
    if not keep.any():
        raise ConfigError(f"{owner}: none of the {len(rows)} logged items is in `item_index` "
                          f"(e.g. {logs.interactions[S.ITEM_ID].iloc[0]!r}); pass the catalog's item ids")
    if not keep.all():
        warnings.warn(f"{owner}: {int((~keep).sum())} of {len(rows)} logged rows name items outside `item_index`; "
                      f"they are ignored", stacklevel=3)
    return keep, rows[keep].astype(np.int64)


def signal_column(logs: LoggedData, target: str) -> np.ndarray:
    """(n_rows,) float64 the 0/1 ``target`` signal ("click", "cart" or "purchase") of every logged row."""
    column = SIGNALS[target]
    if column not in logs.interactions.columns:
        raise DataFormatError(logs.name, f"no '{column}' column to learn `target`={target!r} from", column=column,
                              hint="use target='click'")
    return logs.interactions[column].fillna(0).to_numpy(dtype=np.float64)


class LogFittedPolicy(RankingPolicy):
    """A policy fitted on logged data before use (popularity, item-kNN, matrix factorisation)."""

    @abstractmethod
    def fit(self, logs: LoggedData, item_index: pd.Index, user_index: pd.Index | None = None) -> LogFittedPolicy:
        """Fit on ``logs``; catalog indices come from ``item_index``, user indices from ``user_index``.

        Returns:
            self.
        """

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or loading a fitted state) has happened."""

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} must be fitted first: call .fit(logs, item_index)")


class PopularityPolicy(LogFittedPolicy):
    r"""Items by their smoothed (and optionally position-debiased) rate in the logs.

    Note:
        With :math:`c_i` the item's signal count (e.g. clicks) and :math:`n_i = \sum e_{k}` its exposure
        (impressions, or expected examinations when ``examination`` is given, summing :math:`e_k` over
        the positions it was shown at), the global rate :math:`p_0 = \sum_i c_i / \sum_i n_i` and the
        prior strength :math:`m`,

        .. math:: s_i = \frac{c_i + m\, p_0}{n_i + m} \quad(\text{"rate"}), \qquad s_i = c_i \quad(\text{"count"}).

        Items never shown get :math:`p_0` (rate) or 0 (count). Positions beyond ``examination`` use its
        last value. On a positives-only log (every row has the signal: purchases alone) every rate would be 1,
        so the count is used whatever ``metric`` says.

    Args:
        metric: "rate" (smoothed rate) or "count" (raw signal count).
        target: "click", "cart" or "purchase".
        prior_strength: m >= 0, in pseudo-impressions.
        examination: per-position examination probabilities e_1, e_2, ... in (0, 1], or None (all 1).
    """

    name: ClassVar[str] = "popularity"

    def __init__(
        self, metric: str = "rate", target: str = "click", prior_strength: float = 20.0,
        examination: Sequence[float] | None = None,
    ) -> None:
        self.metric = check_choice(metric, "metric", ("rate", "count"))
        self.target = check_choice(target, "target", tuple(SIGNALS))
        self.prior_strength = check_float(prior_strength, "prior_strength", min_value=0.0)
        self.examination = check_examination(examination)
        self.item_scores: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether the per-item scores are known."""
        return self.item_scores is not None

    def fit(self, logs: LoggedData, item_index: pd.Index, user_index: pd.Index | None = None) -> PopularityPolicy:
        """Count signals and exposures per catalog item (``user_index`` is not used)."""
        del user_index
        keep, rows = logged_item_rows(logs, item_index, type(self).__name__)
        signal = signal_column(logs, self.target)[keep]
        positions = logs.interactions[S.POSITION].to_numpy()[keep].astype(np.int64)
        if self.examination is None:
            exposure = np.ones(len(rows))
        else:
            exposure = self.examination[np.clip(positions - 1, 0, self.examination.size - 1)]
        n = len(item_index)
        counts = np.bincount(rows, weights=signal, minlength=n)
        if self.metric == "count" or (len(signal) and float(np.min(signal)) >= 1):  # positives only: rates are all 1
            self.item_scores = counts
            return self
        exposures = np.bincount(rows, weights=exposure, minlength=n)
        prior = counts.sum() / exposures.sum()
        m = self.prior_strength
        with np.errstate(invalid="ignore", divide="ignore"):
            self.item_scores = np.where(exposures + m > 0, (counts + m * prior) / (exposures + m), prior)
        return self

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 the candidates' fitted scores."""
        self._require_fitted()
        assert self.item_scores is not None
        check_candidates(ctx, len(self.item_scores), type(self).__name__)
        return self.item_scores[ctx.candidates]

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return {"metric": self.metric, "target": self.target, "prior_strength": self.prior_strength,
                "examination": None if self.examination is None else self.examination.tolist()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The per-item scores (empty before fitting)."""
        return {} if self.item_scores is None else {"item_scores": self.item_scores}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the per-item scores."""
        unknown = set(state) - {"item_scores"}
        if unknown:
            raise ConfigError(f"PopularityPolicy state has unexpected keys {sorted(unknown)}")
        if "item_scores" in state:
            scores = np.asarray(state["item_scores"], dtype=np.float64)
            if scores.ndim != 1:
                raise ConfigError(f"saved item_scores must be 1-d, got shape {scores.shape}")
            self.item_scores = scores


class BuyAgainPolicy(LogFittedPolicy):
    r"""Repeat-purchase baseline: what the shopper bought before, by recency- and frequency-weighted count.

    Note:
        With :math:`t_e` the time of each of user :math:`u`'s logged ``target`` events on item :math:`i`,
        :math:`T` the latest time in the fit logs and :math:`h` the half-life in days,

        .. math::
            r_{ui} = \sum_{e} 2^{-(T - t_e) / h}, \qquad
            s(u, i) = \begin{cases} 1 + r_{ui} & r_{ui} > 0 \\ \tfrac{1}{2}\, p_i & \text{otherwise} \end{cases}

        where :math:`p_i \in [0, 1]` is the item's ``target`` count over the largest count: every item the
        shopper bought ranks above every item they did not, which are ranked by popularity (as are all items
        for a shopper the fit did not see). ``half_life_days = inf`` counts events without decay.

    Args:
        target: the signal that counts as buying: "purchase", "cart", "click", or "auto" (default: the strongest
            signal the fit logs have: purchases, else carts, else clicks).
        half_life_days: > 0, the recency half-life (days).
    """

    name: ClassVar[str] = "buy_again"

    def __init__(self, target: str = "auto", half_life_days: float = 90.0) -> None:
        self.target = check_choice(target, "target", ("auto", *SIGNALS))
        self.half_life_days = check_float(half_life_days, "half_life_days", min_value=0.0, min_inclusive=False)
        self.repeat: Any = None  # (n_users, n_items) scipy CSR of r_ui
        self.popularity: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether the repeat scores are known."""
        return self.repeat is not None

    def fit(self, logs: LoggedData, item_index: pd.Index, user_index: pd.Index | None = None) -> BuyAgainPolicy:
        """Per (user, item) decayed counts of the ``target`` events.

        Rows follow ``user_index`` (default: the logs' users in sorted order), columns ``item_index``.
        """
        import scipy.sparse as sp

        keep, cols = logged_item_rows(logs, item_index, type(self).__name__)
        inter = logs.interactions
        target = self.target
        if target == "auto":
            target = next(t for t in ("purchase", "cart", "click") if SIGNALS[t] in inter.columns)
        signal = signal_column(logs, target)[keep]
        counts = np.bincount(cols, weights=signal, minlength=len(item_index))
        self.popularity = counts / max(float(counts.max(initial=0.0)), 1.0)
        if S.USER_ID not in inter.columns:  # no shoppers to remember: popularity alone
            self.repeat = sp.csr_array((0, len(item_index)))
            return self
        users = inter[S.USER_ID].to_numpy()[keep]
        index = pd.Index(sorted(pd.unique(users[pd.notna(users)]))) if user_index is None else user_index
        rows = index.get_indexer(pd.Index(users))
        times = pd.to_datetime(inter[S.TIMESTAMP]).to_numpy()[keep]
        age_days = (times.max() - times) / np.timedelta64(1, "D")
        weight = signal * np.exp2(-age_days.astype(np.float64) / self.half_life_days)
        hit = (rows >= 0) & (signal > 0)
        self.repeat = sp.csr_array((weight[hit], (rows[hit], cols[hit])), shape=(len(index), len(item_index)))
        self.repeat.sum_duplicates()
        return self

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 scores of the candidates for the context's users (``ctx.user_ids``, -1 unknown)."""
        self._require_fitted()
        assert self.popularity is not None
        check_candidates(ctx, len(self.popularity), type(self).__name__)
        scores = 0.5 * self.popularity[ctx.candidates]
        rows = np.asarray(ctx.user_ids, dtype=np.int64)
        known = (rows >= 0) & (rows < self.repeat.shape[0])
        if known.any():
            dense = self.repeat[rows[known]].toarray()  # (B_known, n_items)
            r = np.take_along_axis(dense, ctx.candidates[known], axis=1)
            scores[known] = np.where(r > 0, 1.0 + r, scores[known])
        return scores

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return {"target": self.target, "half_life_days": self.half_life_days}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The repeat scores (CSR parts) and the popularity (empty before fitting)."""
        if self.repeat is None or self.popularity is None:
            return {}
        return {"data": self.repeat.data, "indices": self.repeat.indices.astype(np.int64),
                "indptr": self.repeat.indptr.astype(np.int64),
                "shape": np.asarray(self.repeat.shape, dtype=np.int64), "popularity": self.popularity}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the fitted scores."""
        import scipy.sparse as sp

        if not state:
            return
        expected = {"data", "indices", "indptr", "shape", "popularity"}
        if set(state) != expected:
            raise ConfigError(f"BuyAgainPolicy state must hold {sorted(expected)}, got {sorted(state)}")
        shape = tuple(int(x) for x in state["shape"])
        self.repeat = sp.csr_array((state["data"], state["indices"], state["indptr"]), shape=shape)
        self.popularity = np.asarray(state["popularity"], dtype=np.float64)
