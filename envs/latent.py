r"""Latent shopper classes: a mixture of logistic click models informed by what the logging policy showed.

Shoppers differ in taste far more than a few clicks reveal, but a personalised logging policy's choices
reveal what it believed each shopper likes. This module models attractiveness as a mixture over ``C``
latent classes of shoppers:

.. math::
    P(c = 1 \mid k, u, i, q) = \theta_k \sum_{c=1}^{C} r_{uc}\,
        \sigma\big(a_0 + b_i + \omega^\top (q \odot v_i) + \kappa\, q^\top v_i + \beta s + s\, f(q^\top v_i)
        + \omega_p^\top (p \odot v_i) + \kappa_p\, p^\top v_i + (\tau_c + \gamma \rho_c)^\top v_i
        + \gamma_\delta\, \delta_u^\top B v_i\big),

where :math:`v_i` is the item vector, :math:`q` the query vector (zero when browsing), :math:`s` the search
flag, :math:`p` the shopper's profile at the request (their earlier engagements, the current session's
included: it carries a session's intent and individual taste, which no class can), :math:`b_i` a per-item
bias, :math:`\tau_c` the taste of class ``c`` and :math:`\theta_k` the position bias (fixed: it comes from
the response model).

:math:`f` is the *query-relevance curve* of search pages: piecewise linear in the query-item cosine, with
knots at quantiles of the cosines of the logged search rows and one learned value per knot (constant
beyond the end knots). Relevance in a shop is close to a step (an item of the query's category or not), and
a logit linear in the cosine can only approximate a step by a gentle slope: on the built-in worlds it
predicted items far from the query 4-7x too often, which matters when the env's candidates hold many such
items (its popular, CF and random sources on a search page). The curve lets the logged explored searches
set the step's height.

:math:`\rho_c` is class ``c``'s taste *as the logging policy saw it*, learned from the order of the pages
the logging policy ranked itself (not its exploration): a Plackett-Luce model of each such page's shown
order :math:`(i_1, \dots, i_K)`,

.. math::
    L_c(\text{page}) = \prod_{k=1}^{K} \frac{\exp(\rho_c^\top v_{i_k})}{\sum_{j \ge k} \exp(\rho_c^\top v_{i_j})}.

A page carries ``K - 1`` comparisons of what the logging policy believed the shopper prefers; clicks are
rare, so across a class these orders say far more about its taste than its clicks do. The gain
:math:`\gamma` is learned from clicks (with the same inverse-propensity weights as everything else), so a
logging policy whose beliefs do not predict clicks gets :math:`\gamma \approx 0`; :math:`\rho_c` itself is
learned from the orders only.

:math:`\delta_u` is shopper ``u``'s own deviation from their class's logger taste, in the top ``r``
principal directions :math:`B` (r, d) of the item vectors, learned from the shopper's own ranked pages
(the page likelihood uses :math:`\rho_c + B^\top \delta_u`) under a Gaussian prior
:math:`\delta_u \sim N(0, s^2 I)`, with :math:`s^2` the between-class variance of :math:`B \rho_c` (an
empirical-Bayes choice: a shopper differs from their class about as much as classes differ from each
other). Its gain :math:`\gamma_\delta` is fitted on clicks, so a log with too few ranked pages per shopper
to say anything individual gets :math:`\gamma_\delta \approx 0`; unknown users have :math:`\delta = 0`.

:math:`r_u` is user ``u``'s posterior over classes given their training rows :math:`R_u`, their ranked
pages :math:`G_u` and a prior computed from their *exposure profile* :math:`x_u` (the unit,
propensity-weighted sum of the items the logs showed them):

.. math::
    \pi_u = \mathrm{softmax}(W x_u + w_0), \qquad
    r_{uc} \propto \pi_{uc} \prod_{r \in R_u} P(y_r \mid c) \prod_{g \in G_u} L_c(g).

(Both use the shopper's current :math:`\delta_u`.)

Users unknown to the logs get :math:`\mathrm{softmax}(w_0)`. Fitting is expectation-maximisation: the
E-step computes every :math:`r_u` exactly; the M-step takes Adam steps on the inverse-propensity-weighted
expected complete-data log-likelihood :math:`\sum_r w_r \sum_c r_{u_r c} \log P(y_r \mid c)`, the expected
log-likelihood of the ranked pages :math:`\sum_g \sum_c r_{u_g c} \log L_c(g)` (each a mean over its
minibatch), the deviations' Gaussian log-prior and the cross-entropy of the prior against the posteriors.
The number of epochs is fixed (no early stopping). Without ranked pages (uniformly random logs, or
``ranked_pages=None``) :math:`\rho = 0` and there are no deviations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from encoders.base import l2_normalize
from shopgym.checks import check_float, check_int
from shopgym.numeric import principal_directions


@dataclass(frozen=True)
class LatentClassConfig:
    """How the latent-class click model is fitted.

    Args:
        n_classes: number of latent classes C (>= 2).
        epochs: EM rounds (one E-step, then the M-step's Adam updates).
        passes_per_epoch: rows visited per M-step, in passes over the training rows (the M-step takes
            ``ceil(passes_per_epoch * n / batch_size)`` Adam steps, at most ``max_steps_per_epoch``).
        max_steps_per_epoch: cap on the Adam steps per M-step.
        batch_size: rows per Adam step.
        lr: Adam learning rate.
        l2: L2 penalty on the class tastes, the item biases, the query weights and the profile weights.
        deviation_rank: rank r of each shopper's own deviation from their class's logger taste (0: none;
            capped at the item dimension and the catalog size). Learned only from ranked pages.
        relevance_knots: knots of the query-relevance curve of search pages (0 or 1: none; the curve also
            needs search rows in the logs).
        restarts: EM runs from different initialisations (torch seeds ``seed + 1000 * j``); the one with the
            highest observed-data log-likelihood is kept. 1 runs EM once, with ``seed``.
        seed: torch seed (class initialisation and minibatches).
    """

    n_classes: int = 16
    epochs: int = 30
    passes_per_epoch: float = 1.5
    max_steps_per_epoch: int = 60
    batch_size: int = 4096
    lr: float = 0.02
    l2: float = 1e-6
    deviation_rank: int = 32
    relevance_knots: int = 12
    restarts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.n_classes, "n_classes", min_value=2)
        for name in ("epochs", "max_steps_per_epoch", "batch_size"):
            check_int(getattr(self, name), name, min_value=1)
        for name in ("passes_per_epoch", "lr"):
            check_float(getattr(self, name), name, min_value=0.0, min_inclusive=False)
        check_float(self.l2, "l2", min_value=0.0)
        check_int(self.deviation_rank, "deviation_rank", min_value=0)
        check_int(self.relevance_knots, "relevance_knots", min_value=0)
        check_int(self.restarts, "restarts", min_value=1)
        check_int(self.seed, "seed")


class LatentClasses(nn.Module):
    """The latent-class attractiveness model (see the module docstring).

    Args:
        dim: item/query vector dimension d.
        n_items: catalog size.
        n_users: logged users U (their posteriors are rows 0..U-1; row U holds the prior of unknown users).
        n_classes: C.
        deviation_rank: r, the rank of the shoppers' own deviations (0: none).
        relevance_knots: knots of the query-relevance curve f (fewer than 2: no curve).
    """

    def __init__(self, dim: int, n_items: int, n_users: int, n_classes: int, deviation_rank: int = 0,
                 relevance_knots: int = 0) -> None:
        super().__init__()
        self.knots: torch.Tensor
        self.register_buffer("knots", torch.zeros(relevance_knots))  # set when fitting (ascending cosines)
        self.relevance = nn.Parameter(torch.zeros(relevance_knots))  # f at each knot
        self.taste = nn.Parameter(torch.zeros(n_classes, dim))
        self.query_weight = nn.Parameter(torch.zeros(dim))
        self.query_cos = nn.Parameter(torch.zeros(1))
        self.search = nn.Parameter(torch.zeros(1))
        self.profile_weight = nn.Parameter(torch.zeros(dim))
        self.profile_cos = nn.Parameter(torch.zeros(1))
        self.intercept = nn.Parameter(torch.full((1,), -3.0))
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.logger_taste = nn.Parameter(torch.zeros(n_classes, dim))
        self.logger_gain = nn.Parameter(torch.zeros(1))
        self.basis: torch.Tensor
        self.register_buffer("basis", torch.zeros(deviation_rank, dim))  # B: set when fitting
        self.deviation = nn.Parameter(torch.zeros(n_users + 1, deviation_rank))  # row U: unknown users (zero)
        self.deviation_gain = nn.Parameter(torch.zeros(1))
        self.prior = nn.Linear(dim, n_classes)
        nn.init.zeros_(self.prior.weight)
        nn.init.zeros_(self.prior.bias)
        self.posterior: torch.Tensor
        self.register_buffer("posterior", torch.full((n_users + 1, n_classes), 1.0 / n_classes))

    @property
    def n_users(self) -> int:
        """Number of logged users U."""
        return int(self.posterior.shape[0]) - 1

    @property
    def deviation_rank(self) -> int:
        """Rank r of the shoppers' own deviations (0: none)."""
        return int(self.basis.shape[0])

    def logits(self, v: torch.Tensor, q: torch.Tensor, s: torch.Tensor, items: torch.Tensor,
               p: torch.Tensor | None = None, users: torch.Tensor | None = None) -> torch.Tensor:
        """(..., C) class logits of items ``v`` (..., d).

        Under queries ``q`` (..., d), search flags ``s`` (...), shopper profiles ``p`` (..., d) (None: no
        profile terms) and user rows ``users`` (...) into the deviation table (None: no deviation term).
        """
        qv = q * v
        profile = None
        if p is not None:
            pv = p * v
            profile = (pv @ self.profile_weight, pv.sum(-1))
        own = None
        if users is not None and self.deviation_rank:  # like rho, the deviations are learned from orders only
            delta = self.deviation.detach()[users]  # (..., r)
            if v.dim() == 3 and delta.shape[-2] == 1:  # (B, K, d) items of (B, 1) shoppers (the env's step)
                # (B' delta_u) . v_i: one (r, d) product per shopper and one batched matmul, 5x faster than
                # projecting every item on B at K = 10 and 100
                own = (v @ (delta @ self.basis).transpose(-1, -2)).squeeze(-1)
            else:  # one shopper per row (training)
                own = ((v @ self.basis.T) * delta).sum(-1)
        shared = self.shared_logit(items, s, qv.sum(-1), qv @ self.query_weight, profile, own)
        return shared.unsqueeze(-1) + v @ self.class_taste().T

    def shared_logit(self, items: torch.Tensor, s: torch.Tensor, cos: torch.Tensor, query_term: torch.Tensor,
                     profile: tuple[torch.Tensor, torch.Tensor] | None = None,
                     own: torch.Tensor | None = None) -> torch.Tensor:
        r"""(...,) the part of the class logits that no class changes (the one formula of :meth:`logits`).

        Args:
            items: (...) catalog indices.
            s: (...) search flags.
            cos: (...) query-item cosines.
            query_term: (...) :math:`(q \odot v)^\top w_q`.
            profile: :math:`((p \odot v)^\top w_p,\ \sum_j p_j v_j)`, each (...), or None (no profile terms).
            own: (...) the shopper's deviation along the item, :math:`(B v)^\top \delta_u`, or None.
        """
        shared = (self.intercept + self.item_bias(items).squeeze(-1) + query_term
                  + self.query_cos * cos + self.search * s)
        if len(self.knots) >= 2:
            shared = shared + s * self.relevance_curve(cos)
        if profile is not None:
            shared = shared + profile[0] + self.profile_cos * profile[1]
        if own is not None:
            shared = shared + self.deviation_gain * own
        return shared

    def class_taste(self) -> torch.Tensor:
        """(C, d) the tastes clicks see: each class's own plus the gain times its logger taste.

        The logger tastes (rho) are learned from the logged orders only; clicks fit their gain.
        """
        return self.taste + self.logger_gain * self.logger_taste.detach()

    def relevance_curve(self, cos: torch.Tensor) -> torch.Tensor:
        """f(cos): linear interpolation of the knot values, constant beyond the end knots (same shape as ``cos``)."""
        k = len(self.knots)
        right = torch.searchsorted(self.knots, cos.contiguous()).clamp(1, k - 1)
        low, high = self.knots[right - 1], self.knots[right]
        share = ((cos - low) / (high - low)).clamp(0.0, 1.0)  # knots are distinct
        return self.relevance[right - 1] * (1 - share) + self.relevance[right] * share

    @torch.inference_mode()
    def attractiveness(self, item_vecs: np.ndarray, query: np.ndarray, is_search: np.ndarray, items: np.ndarray,
                       user_rows: np.ndarray | None, profile: np.ndarray | None = None) -> np.ndarray:
        """(B, K) float64 P(click | examined) of items (B, K, d) for users ``user_rows`` (B,) (-1: unknown).

        ``profile`` (B, d) holds the users' profiles (None: the profile terms are left out).
        """
        b, k, _ = item_vecs.shape
        v = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32))
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).unsqueeze(1)
        s = torch.from_numpy(np.asarray(is_search, dtype=np.float32)).unsqueeze(1)
        p = None if profile is None else torch.from_numpy(np.ascontiguousarray(profile, dtype=np.float32)).unsqueeze(1)
        rows = table_rows(user_rows, self.n_users, b)
        logits = self.logits(v, q, s, torch.from_numpy(np.asarray(items, dtype=np.int64)), p,
                             torch.from_numpy(rows).unsqueeze(1))  # (B, K, C)
        posterior = self.posterior[torch.from_numpy(rows)].unsqueeze(1)  # (B, 1, C)
        return (torch.sigmoid(logits) * posterior).sum(-1).double().numpy()


def search_cosine_knots(item_vecs: np.ndarray, row_item: np.ndarray, row_request: np.ndarray, query: np.ndarray,
                        is_search: np.ndarray, n_knots: int) -> np.ndarray:
    """(k,) float32 ascending knots of the query-relevance curve: distinct quantiles of the search rows' cosines.

    The quantiles are evenly spaced from 0 to 1 (so the first and last knots are the smallest and largest
    cosine). Fewer than 2 distinct values (no search rows, or ``n_knots`` < 2) give no knots, and no curve.
    """
    search = np.asarray(is_search)[row_request] > 0
    if n_knots < 2 or not search.any():
        return np.zeros(0, np.float32)
    rows = np.flatnonzero(search)
    cos = np.einsum("nd,nd->n", np.asarray(query)[np.asarray(row_request)[rows]],
                    np.asarray(item_vecs)[np.asarray(row_item)[rows]])
    knots = np.unique(np.quantile(cos, np.linspace(0.0, 1.0, n_knots)).astype(np.float32))
    return knots if len(knots) >= 2 else np.zeros(0, np.float32)


def table_rows(user_rows: np.ndarray | None, n_users: int, size: int) -> np.ndarray:
    """(size,) int64 rows of a per-user table: logged users 0..n_users-1, then one row for everyone else.

    ``user_rows`` as given, with -1, out-of-range rows or None (everyone unknown) mapped to row ``n_users``.
    """
    rows = np.full(size, -1) if user_rows is None else np.asarray(user_rows)
    return np.where((rows >= 0) & (rows < n_users), rows, n_users).astype(np.int64)


def exposure_profiles(item_vecs: np.ndarray, row_item: np.ndarray, row_user: np.ndarray, n_users: int,
                      weight: np.ndarray | None = None) -> np.ndarray:
    r"""(U, d) float32 unit exposure profiles :math:`x_u \propto \sum_{r \in R_u} w_r v_{i_r}` (zero if none).

    Args:
        item_vecs: (n_items, d) item vectors.
        row_item: (n,) catalog index of each logged row.
        row_user: (n,) user index of each row, in 0..U-1.
        n_users: U.
        weight: (n,) row weights (the logged propensities), or None for 1.
    """
    w = np.ones(len(row_item)) if weight is None else np.asarray(weight, dtype=np.float64)
    by_user = sp.csr_matrix((w, (row_user, np.arange(len(row_item)))), shape=(n_users, len(row_item)))
    return l2_normalize(np.asarray(by_user @ item_vecs[row_item].astype(np.float64))).astype(np.float32)


def logged_rankings(row_request: np.ndarray, position: np.ndarray, propensity: np.ndarray | None) -> np.ndarray:
    """(P, K) int64 rows of the pages the logging policy ranked itself, in position order; -1 pads short pages.

    A page is a request's shown rows (at least two). With propensities, a page counts only if every one of
    its slots was shown with at least half the log's median propensity: pages drawn by the logging policy's
    exploration (e.g. uniformly random rankings, whose slots have low propensities) say nothing about what
    it believed the shopper likes. A log whose propensities are all one value below 1 comes from a uniformly
    random logging policy (such as the Open Bandit Dataset's "random" logs): no page counts. Logs without
    propensities count every page.

    Args:
        row_request: (n,) request index of each row, in 0..R-1.
        position: (n,) 1-based position of each row.
        propensity: (n,) logged propensity of each row, or None.
    """
    order = np.lexsort((np.asarray(position), np.asarray(row_request)))
    by_request = np.asarray(row_request)[order]
    if len(order) == 0:
        return np.zeros((0, 0), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, by_request[1:] != by_request[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    keep = lengths >= 2
    if propensity is not None:
        p = np.asarray(propensity, dtype=np.float64)
        keep &= np.minimum.reduceat(p[order], starts) >= 0.5 * np.median(p)
        if np.ptp(p) == 0.0 and p[0] < 1.0:  # uniformly random rankings: no beliefs to learn from
            keep[:] = False
    column = np.arange(len(order)) - np.repeat(starts, lengths)
    pages = np.full((len(starts), int(lengths.max())), -1, dtype=np.int64)
    pages[np.repeat(np.arange(len(starts)), lengths), column] = order
    return pages[keep]


@dataclass(frozen=True)
class _RowTerms:
    r"""What :meth:`LatentClasses.logits` computes per training row that no parameter changes, computed once.

    Per row :math:`r` (item :math:`v`, query :math:`q`, profile :math:`p`): the cosine :math:`q^\top v`, the
    search flag, :math:`q \odot v` (search rows only; zero otherwise), :math:`p \odot v` and its sum, and the
    item's coordinates along the deviations' directions. The class scores :math:`v^\top T_c` come from one
    (n_items, d) x (d, C) product per call, gathered by item, when the catalog is no larger than the rows
    (else from the rows' own item vectors). EM evaluates every row ``epochs + 1`` times and minibatches many
    more: gathering three (rows, d) arrays and multiplying them each time was most of a fit's time.
    """

    item: torch.Tensor  # (n,) catalog index
    cos: torch.Tensor  # (n,)
    search: torch.Tensor  # (n,) 0/1
    search_row: torch.Tensor  # (n,) row into qv, -1 for browse rows
    qv: torch.Tensor  # (n_search, d)
    pv: torch.Tensor | None  # (n, d)
    pv_sum: torch.Tensor | None  # (n,)
    coords: torch.Tensor  # (n_items, r)
    items: torch.Tensor  # (n_items, d)

    @classmethod
    def of(cls, items: torch.Tensor, row_item: torch.Tensor, row_request: torch.Tensor, query: torch.Tensor,
           is_search: torch.Tensor, profile: torch.Tensor | None, coords: torch.Tensor) -> _RowTerms:
        n, d = len(row_item), items.shape[1]
        search = is_search[row_request]
        searched = torch.nonzero(search > 0).squeeze(-1)
        search_row = torch.full((n,), -1, dtype=torch.int64)
        search_row[searched] = torch.arange(len(searched))
        cos = torch.zeros(n)
        qv = torch.empty((len(searched), d))
        pv = None if profile is None else torch.empty((n, d))
        block = 65536
        for start in range(0, n, block):  # blocks bound the (block, d) temporaries
            rows = slice(start, min(start + block, n))
            v = items.index_select(0, row_item[rows])
            req = row_request[rows]
            cos[rows] = (query.index_select(0, req) * v).sum(-1)
            if pv is not None and profile is not None:
                pv[rows] = profile.index_select(0, req) * v
        for start in range(0, len(searched), block):
            hit = searched[start:start + block]
            qv[start:start + len(hit)] = query.index_select(0, row_request[hit]) * items.index_select(0, row_item[hit])
        return cls(row_item, cos, search, search_row, qv, pv, None if pv is None else pv.sum(-1), coords, items)

    def logits(self, model: LatentClasses, rows: torch.Tensor | slice, users: torch.Tensor) -> torch.Tensor:
        """(m, C) the class logits of training rows ``rows`` (= :meth:`LatentClasses.logits` of their inputs).

        ``rows``: indices (gathered with ``index_select``, 2-3x faster than fancy indexing) or a slice (views).
        """
        def take(x: torch.Tensor) -> torch.Tensor:
            return x[rows] if isinstance(rows, slice) else x.index_select(0, rows)

        item, s, cos = take(self.item), take(self.search), take(self.cos)
        at = take(self.search_row)
        hit = torch.nonzero(at >= 0).squeeze(-1)
        query_term = torch.zeros(len(item))
        if len(hit):
            query_term = query_term.index_put((hit,), self.qv.index_select(0, at[hit]) @ model.query_weight)
        profile = None if self.pv is None or self.pv_sum is None \
            else (take(self.pv) @ model.profile_weight, take(self.pv_sum))
        own = None if not model.deviation_rank \
            else (self.coords.index_select(0, item) * model.deviation.detach().index_select(0, users)).sum(-1)
        shared = model.shared_logit(item, s, cos, query_term, profile, own)
        taste = model.class_taste()  # (C, d)
        if len(self.items) <= len(item):  # score the catalog once, gather by item
            class_scores = (self.items @ taste.T).index_select(0, item)
        else:  # a catalog larger than the batch: score the rows' own items
            class_scores = self.items.index_select(0, item) @ taste.T
        return shared.unsqueeze(-1) + class_scores


def fit_latent_classes(item_vecs: np.ndarray, row_item: np.ndarray, row_user: np.ndarray, n_users: int,
                       clicked: np.ndarray, log_theta: np.ndarray, row_request: np.ndarray, query: np.ndarray,
                       is_search: np.ndarray, row_weight: np.ndarray, exposure: np.ndarray,
                       config: LatentClassConfig | None = None,
                       profile: np.ndarray | None = None,
                       ranked_pages: np.ndarray | None = None,
                       progress: bool = False) -> tuple[LatentClasses, dict[str, Any]]:
    r"""Fit :class:`LatentClasses` by EM (see the module docstring).

    Args:
        item_vecs: (n_items, d) item vectors.
        row_item: (n,) catalog index of each training row.
        row_user: (n,) user index of each row, in 0..U-1.
        n_users: U.
        clicked: (n,) 0/1 clicks.
        log_theta: (n,) log position bias of each row's position (fixed).
        row_request: (n,) request index of each row, in 0..R-1.
        query: (R, d) query vector of each request (zeros when browsing).
        is_search: (R,) search flag of each request.
        row_weight: (n,) inverse-propensity weights (ones without propensities), mean 1.
        exposure: (U, d) exposure profiles (:func:`exposure_profiles`).
        config: fitting options.
        profile: (R, d) the shopper's profile at each request (time-respecting: earlier engagements only),
            or None to fit without the profile terms.
        ranked_pages: (P, K) rows of the pages the logging policy ranked (:func:`logged_rankings`), or None
            to learn nothing from the logged orders (then rho = 0).
        progress: show a progress bar over the EM rounds of every restart.

    Returns:
        The fitted model (eval mode, posteriors set) and a small report: final loss, posterior sharpness and
        the observed-data log-likelihood :math:`\sum_u \log \sum_c \pi_{uc} \prod_{r} P(y_r \mid c)
        \prod_g L_c(g)` (unweighted rows), which tells a better EM optimum from a worse one between refits
        of the same logs, and its value at every E-step of the kept run (``log_likelihood_by_round``: how far
        EM had converged); with ``config.restarts > 1`` also every restart's log-likelihood and the one kept.
    """
    cfg = config or LatentClassConfig()
    no_pages = ranked_pages is None or len(ranked_pages) == 0
    # the deviations' directions B: the same for every restart
    vecs = np.asarray(item_vecs)  # float64 rows minus their own-dtype mean, as the basis has always been built
    basis = (np.zeros((0, vecs.shape[1]), np.float32) if no_pages
             else principal_directions(vecs.astype(np.float64), cfg.deviation_rank, centre=vecs.mean(axis=0))
             .astype(np.float32))
    knots = search_cosine_knots(item_vecs, row_item, row_request, query, is_search, cfg.relevance_knots)
    best: tuple[LatentClasses, dict[str, Any]] | None = None
    evidence = []
    with tqdm(total=cfg.restarts * cfg.epochs, desc="fitting shopper classes", unit="EM round",
              disable=not progress) as bar:
        for restart in range(cfg.restarts):
            bar.set_postfix(run=f"{restart + 1}/{cfg.restarts}")
            fitted = _fit_once(item_vecs, row_item, row_user, n_users, clicked, log_theta, row_request, query,
                               is_search, row_weight, exposure, cfg, cfg.seed + 1000 * restart, profile,
                               None if no_pages else ranked_pages, basis, knots, bar.update)
            evidence.append(fitted[1]["log_likelihood"])
            if best is None or fitted[1]["log_likelihood"] > best[1]["log_likelihood"]:
                best = fitted
    assert best is not None
    model, report = best
    report.update(restart_log_likelihoods=evidence, chosen_restart=int(np.argmax(evidence)))
    return model, report


def _fit_once(item_vecs: np.ndarray, row_item: np.ndarray, row_user: np.ndarray, n_users: int,
              clicked: np.ndarray, log_theta: np.ndarray, row_request: np.ndarray, query: np.ndarray,
              is_search: np.ndarray, row_weight: np.ndarray, exposure: np.ndarray, cfg: LatentClassConfig,
              seed: int, profile: np.ndarray | None, ranked_pages: np.ndarray | None, basis: np.ndarray,
              knots: np.ndarray, on_round: Callable[[], object]) -> tuple[LatentClasses, dict[str, Any]]:
    """One EM run of :func:`fit_latent_classes` from the initialisation and minibatches of torch ``seed``.

    ``ranked_pages`` is None or non-empty; ``basis`` (r, d) holds the deviations' directions (r = 0: none);
    ``knots`` (k,) those of the query-relevance curve (:func:`search_cosine_knots`; k < 2: none);
    ``on_round`` is called after every EM round (a progress bar's update).
    """
    generator = torch.Generator().manual_seed(seed)
    n, dim = len(row_item), item_vecs.shape[1]
    model = LatentClasses(dim, len(item_vecs), n_users, cfg.n_classes, len(basis), len(knots))
    with torch.no_grad():  # small random tastes break the symmetry between classes
        model.taste.normal_(0.0, 0.01, generator=generator)
        model.basis.copy_(torch.from_numpy(basis))
        model.knots.copy_(torch.from_numpy(knots))
    t_items = torch.from_numpy(np.asarray(item_vecs, dtype=np.float32))
    t_item = torch.from_numpy(np.asarray(row_item, dtype=np.int64))
    t_user = torch.from_numpy(np.asarray(row_user, dtype=np.int64))
    t_y = torch.from_numpy(np.asarray(clicked, dtype=np.float32))
    t_log_theta = torch.from_numpy(np.asarray(log_theta, dtype=np.float32))
    t_request = torch.from_numpy(np.asarray(row_request, dtype=np.int64))
    t_query = torch.from_numpy(np.asarray(query, dtype=np.float32))
    t_search = torch.from_numpy(np.asarray(is_search, dtype=np.float32))
    t_weight = torch.from_numpy(np.asarray(row_weight, dtype=np.float32))
    t_exposure = torch.from_numpy(np.asarray(exposure, dtype=np.float32))
    t_profile = None if profile is None else torch.from_numpy(np.asarray(profile, dtype=np.float32))
    pages = np.zeros((0, 2), np.int64) if ranked_pages is None else np.asarray(ranked_pages, dtype=np.int64)
    n_pages = len(pages)
    t_page_user = torch.from_numpy(np.asarray(row_user, dtype=np.int64)[pages[:, 0]])
    t_page_item = torch.from_numpy(np.where(pages >= 0, np.asarray(row_item, dtype=np.int64)[pages], 0))
    t_page_valid = torch.from_numpy(pages >= 0)
    t_coords = t_items @ model.basis.T  # (n_items, r): item coordinates along the deviations' directions

    terms = _RowTerms.of(t_items, t_item, t_request, t_query, t_search, t_profile, t_coords)

    def row_loglik(rows: torch.Tensor | slice) -> torch.Tensor:
        """(m, C) log P(y_r | class c) of rows ``rows`` (indices or a slice)."""
        logits = terms.logits(model, rows, t_user[rows])
        log_p = t_log_theta[rows].unsqueeze(-1) + nn.functional.logsigmoid(logits)
        y = t_y[rows].unsqueeze(-1)
        return y * log_p + (1 - y) * torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))

    def page_loglik(idx: torch.Tensor) -> torch.Tensor:
        """(m, C) Plackett-Luce log L_c of ranked pages ``idx`` under each class's logger taste (+ the shopper's)."""
        valid = t_page_valid[idx].unsqueeze(-1)  # (m, K, 1)
        item_scores = t_items @ model.logger_taste.T  # (n_items, C): cheaper than gathering (m, K, d) vectors
        scores = item_scores[t_page_item[idx]]  # (m, K, C)
        if model.deviation_rank:
            own = (t_coords[t_page_item[idx]] * model.deviation[t_page_user[idx]].unsqueeze(1)).sum(-1)  # (m, K)
            scores = scores + own.unsqueeze(-1)
        # log sum_{j >= k} exp(score_j) by a reversed cumulative sum, shifted by each page's largest score
        # (3-4x faster than torch.logcumsumexp with its backward on CPU)
        top = scores.masked_fill(~valid, -1e4).amax(1, keepdim=True).detach()
        tail = torch.log((torch.exp(scores - top) * valid).flip(1).cumsum(1).flip(1).clamp_min(1e-30)) + top
        return ((scores - tail) * valid).sum(1)

    evidence: list[float] = []  # observed-data log-likelihood at every E-step

    def e_step() -> torch.Tensor:
        with torch.no_grad():
            total = torch.zeros(n_users, cfg.n_classes)
            for start in range(0, n, 65536):
                rows = slice(start, min(start + 65536, n))
                total.index_add_(0, t_user[rows], row_loglik(rows))
            for start in range(0, n_pages, 65536):
                idx = torch.arange(start, min(start + 65536, n_pages))
                total.index_add_(0, t_page_user[idx], page_loglik(idx))
            joint = total + torch.log_softmax(model.prior(t_exposure), -1)  # (U, C) log P(data_u, c)
            evidence.append(float(torch.logsumexp(joint, -1).sum()))
            posterior = torch.softmax(joint, -1)
            model.posterior[:n_users] = posterior
            model.posterior[n_users] = torch.softmax(model.prior.bias, -1)  # users unknown to the logs
        return posterior

    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss = torch.zeros(())
    batch = min(cfg.batch_size, n)
    steps = min(cfg.max_steps_per_epoch, max(1, int(np.ceil(cfg.passes_per_epoch * n / batch))))
    for _ in range(cfg.epochs):
        posterior = e_step()
        for _ in range(steps):
            rows = torch.randint(0, n, (batch,), generator=generator)
            loss = -(t_weight[rows].unsqueeze(-1) * posterior[t_user[rows]] * row_loglik(rows)).sum(-1).mean()
            users = torch.randint(0, n_users, (min(1024, n_users),), generator=generator)
            prior_loss = -(posterior[users] * torch.log_softmax(model.prior(t_exposure[users]), -1)).sum(-1).mean()
            penalty = cfg.l2 * (model.taste.pow(2).sum() + model.item_bias.weight.pow(2).sum()
                                + model.query_weight.pow(2).sum() + model.profile_weight.pow(2).sum())
            rank_loss = torch.zeros(())
            if n_pages:
                idx = torch.randint(0, n_pages, (min(2048, n_pages),), generator=generator)
                rank_loss = -(posterior[t_page_user[idx]] * page_loglik(idx)).sum(-1).mean()
                if model.deviation_rank:  # Gaussian prior, as a share of the mean over pages
                    spread = (model.logger_taste.detach() @ model.basis.T).var(0).mean().clamp_min(1e-4)
                    rank_loss = rank_loss + model.deviation.pow(2).sum() / (2 * spread * n_pages)
            optimiser.zero_grad()
            (loss + prior_loss + penalty + rank_loss).backward()
            optimiser.step()
        on_round()
    posterior = e_step()
    with torch.no_grad():
        model.deviation[n_users] = 0.0  # unknown users: no deviation
    model.eval()
    report = {"final_loss": float(loss.detach()), "mean_max_posterior": float(posterior.max(-1).values.mean()),
              "log_likelihood": evidence[-1], "log_likelihood_by_round": evidence,
              "ranked_pages": n_pages, "logger_gain": float(model.logger_gain.detach()),
              "deviation_rank": model.deviation_rank, "deviation_gain": float(model.deviation_gain.detach()),
              "relevance_knots": len(knots),
              "config": asdict(cfg)}
    return model, report
