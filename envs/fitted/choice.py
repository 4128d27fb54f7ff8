r"""Purchase-only logs: a multinomial-logit choice model with an outside option.

A log of purchases alone (UCI Online Retail: invoices, no impressions) cannot support a click model: every
logged row is a positive. What it does say is *which* item a shopper chose, with what history, at what price.
The simulator fitted from such a log tells this story:

* **One choice per page.** Shown a page :math:`S` of K items, the shopper buys at most one of them or none (the
  outside option, utility :math:`v_0`):

  .. math::
      P(\text{buy } j \mid S) = \frac{\theta_j e^{v_{uj}}}{e^{v_0} + \sum_{l \in S} \theta_l e^{v_{ul}}},
      \qquad P(\text{none} \mid S) = \frac{e^{v_0}}{e^{v_0} + \sum_{l \in S} \theta_l e^{v_{ul}}},

  with :math:`\theta_j = 1` (a purchase log cannot say how the slot's position matters, so it is assumed not to).
* **Utility** of item :math:`i` for shopper :math:`u`:

  .. math::
      v_{ui} = f(\tilde u, \tilde i) + b_i + e_u^\top P^\top i + \gamma \log(1 + n_{ui}) + \beta z_i,

  :math:`f` the response model's network over the shopper's purchase profile and the item's text vector
  (:mod:`envs.fitted.model`), :math:`b_i` an item bias, :math:`e_u` a taste vector per logged shopper,
  :math:`n_{ui}` how many times :math:`u` bought :math:`i` before (repeat behaviour) and :math:`z_i` the
  standardised log price.
* **Fitted with sampled negatives** (conditional logit): each logged purchase is a choice of the bought item
  against ``choice_negatives`` items drawn uniformly from the catalog, :math:`-\log\,\mathrm{softmax}` of the bought
  one. The exposure assumption: a shopper could have seen any catalog item, equally likely. Uniform sampling
  makes the sampled-set likelihood consistent for the utilities up to a constant (McFadden, 1978); profiles
  and repeat counts are time-respecting (earlier invoices only).
* **The outside option is an assumption.** Purchases cannot reveal how many pages ended without one, so
  :math:`v_0` is set so that a page of ten catalog items drawn at random converts with probability
  ``page_conversion`` for the training shoppers (:func:`outside_option`). Rankers that put wanted items on the
  page convert far more often than that reference.
* **Sessions.** After a purchase the shopper looks at another page with probability
  :math:`c = 1 - R / \sum_r N_r` (a geometric basket of the logged mean size: R invoices, :math:`N_r` lines);
  after a page without a purchase, with probability ``no_purchase_continuation``.

The model is a :class:`~envs.fitted.ResponseModel` with :attr:`~envs.fitted.ResponseModel.choice` set: its
attractiveness :math:`\alpha_{ui} = \sigma(v_{ui} - v_0)` is the item's chance of being bought were it shown
alone, so :math:`e^{v_{ui} - v_0} = \alpha / (1 - \alpha)`, and the env draws one choice per page from those odds.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.special import logit

from envs.fitted.config import FitConfig
from envs.fitted.model import ChoiceTerms, ResponseModel, _Net, items_digest
from envs.fitted.training import train_minibatches
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import DataFormatError
from shopgym.threads import torch_threads

#: items on the reference page that defines the outside option (:func:`outside_option`)
REFERENCE_PAGE = 10
#: training requests the outside option is calibrated on (a seeded sample)
CALIBRATION_REQUESTS = 4000
#: at most this many held-out purchases (a seeded sample of the latest requests) pick the checkpoint
VALID_EVENTS = 8192


def is_purchase_only(logs: LoggedData) -> bool:
    """Whether every logged row is a positive (clicked, and purchased where the column exists): no impressions."""
    inter = logs.interactions
    clicked = inter[S.CLICKED].to_numpy()
    if len(clicked) == 0 or clicked.min() < 1:
        return False
    return S.PURCHASED not in inter or bool(inter[S.PURCHASED].to_numpy().min() >= 1)


class PurchaseIndex:
    r"""The logged purchases sorted by (shopper, item, request): counts of earlier purchases in two binary searches.

    Args:
        user, item, request: (n,) int64 the purchases: shopper code, catalog index, request index (time order).
        n_items: catalog size.
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, request: np.ndarray, n_items: int) -> None:
        self.n_items = int(n_items)
        self.span = int(request.max(initial=0)) + 2
        key = (user.astype(np.int64) * self.n_items + item.astype(np.int64)) * self.span + request.astype(np.int64)
        key.sort()
        self.key = key

    def earlier(self, user: np.ndarray, item: np.ndarray, request: np.ndarray) -> np.ndarray:
        """(m,) int64 :math:`n_{ui}`: purchases of ``item`` by ``user`` in requests strictly before ``request``."""
        base = (user.astype(np.int64) * self.n_items + item.astype(np.int64)) * self.span
        top = base + np.minimum(request.astype(np.int64), self.span - 1)
        return np.searchsorted(self.key, top, "left") - np.searchsorted(self.key, base, "left")


def purchase_counts(logs: LoggedData, user_ids: pd.Index, item_ids: pd.Index) -> sp.csr_array:
    """(len(user_ids), n_items) how many times each known shopper bought each item in ``logs`` (all of it)."""
    inter = logs.interactions
    if not logs.has_users or len(user_ids) == 0:
        return sp.csr_array((max(len(user_ids), 1), len(item_ids)))
    user = user_ids.get_indexer(pd.Index(inter[S.USER_ID]))
    item = item_ids.get_indexer(pd.Index(inter[S.ITEM_ID]))
    keep = (user >= 0) & (item >= 0)
    return sp.csr_array((np.ones(int(keep.sum())), (user[keep], item[keep])), shape=(len(user_ids), len(item_ids)))


def price_scores(items: pd.DataFrame, item_ids: pd.Index) -> np.ndarray:
    """(n_items,) float32 standardised log price :math:`z_i` (0 for missing, non-positive or constant prices)."""
    out = np.zeros(len(item_ids), dtype=np.float32)
    if S.PRICE not in items:
        return out
    price = pd.Series(items[S.PRICE].to_numpy(dtype=np.float64), index=pd.Index(items[S.ITEM_ID].astype(str)))
    p = price.reindex(item_ids.astype(str)).to_numpy(dtype=np.float64)
    ok = np.isfinite(p) & (p > 0)
    if ok.sum() < 2:
        return out
    lp = np.log(p[ok])
    if lp.std() <= 0:
        return out
    out[ok] = ((lp - lp.mean()) / lp.std()).astype(np.float32)
    return out


@dataclass(frozen=True)
class _Events:
    """The logged purchases as choice events, time-ordered."""

    item: np.ndarray  # (n,) bought catalog index
    user: np.ndarray  # (n,) shopper code (user-table order); 0 without users
    request: np.ndarray  # (n,) request index
    profile: np.ndarray  # (R, d) float32 time-respecting profiles
    repeat: np.ndarray  # (n,) earlier purchases of the bought item by the shopper
    index: PurchaseIndex | None  # None without shopper ids


def fit_choice_model(train: LoggedData, space: ItemSpace, config: FitConfig | None = None, *,
                     progress: bool = False, sample_weight: np.ndarray | None = None) -> ResponseModel:
    """Fit the purchase-choice model (see the module docstring) on a purchase-only log.

    Args:
        train: the training log (every row a purchase).
        space: item vectors covering every logged item.
        config: fitting options (``hidden``, ``rank``, ``steps``, ``batch_size``, ``lr``, the L2 terms,
            ``valid_fraction``, ``choice_negatives``, ``page_conversion``, ``no_purchase_continuation``, ``seed``).
        progress: a progress bar over gradient steps.
        sample_weight: (n_rows,) weights of the purchases (a bootstrap's), None: all 1.

    Raises:
        DataFormatError: the log is not purchase-only, or has fewer than two purchases.
    """
    from envs.fitted.fitting import logged_items, row_shoppers, training_profiles

    started = time.perf_counter()
    cfg = config or FitConfig()
    if not is_purchase_only(train):
        raise DataFormatError(train.name, "the purchase-choice model is for logs whose every row is a purchase",
                              column=S.CLICKED, hint="logs with shown-and-not-clicked slots get the click model")
    inter = train.interactions
    if len(inter) < 2:
        raise DataFormatError(train.name, f"{len(inter)} purchase(s): too few to fit a choice model",
                              hint="fit on a longer period")
    item = logged_items(train, space)
    torch.manual_seed(cfg.seed)
    req, profile, default_profile = training_profiles(train, space, item)
    user_index, user = row_shoppers(train)
    request = req.row_request
    n_items = space.n_items
    index = PurchaseIndex(user, item, request, n_items) if train.has_users else None  # no shoppers: no repeats
    repeat = index.earlier(user, item, request) if index is not None else np.zeros(len(inter), dtype=np.int64)
    events = _Events(item.astype(np.int64), user, request, profile, repeat, index)
    price = price_scores(train.items, space.item_ids)

    net = _Net(space.dim, cfg.hidden, n_items, 1, min(cfg.rank, space.dim), len(user_index), 0)
    net.project_on(space.item_vecs)
    coef = torch.nn.Parameter(torch.zeros(2))  # gamma (repeat), beta (price)
    weights = np.ones(len(inter), dtype=np.float32) if sample_weight is None \
        else np.asarray(sample_weight, dtype=np.float32)

    with torch_threads(cfg.threads):
        history, steps = _train(net, coef, events, space, price, weights, cfg, progress)
        shift = outside_option(net, coef, events, space, price, cfg)
    gamma, beta = (float(v) for v in coef.detach())
    c_buy = float(np.clip(1.0 - len(req.first_row) / max(len(inter), 1), 0.0, 0.99))
    c_none = float(cfg.no_purchase_continuation)
    continuation = np.zeros(8)
    continuation[0] = float(logit(np.clip(c_none, 1e-6, 1 - 1e-6)))
    continuation[3] = float(logit(np.clip(c_buy, 1e-6, 1 - 1e-6))) - continuation[0]  # the any-purchase feature
    terms = ChoiceTerms(repeat_coef=gamma, price_coef=beta, price_score=price, page_conversion=cfg.page_conversion,
                        continuation_after_purchase=c_buy, continuation_without_purchase=c_none)
    model = ResponseModel(net, space.dim, n_items, items_digest(space.item_ids), np.ones(1), 0.0, continuation,
                          cfg.default_continuation, default_profile, cfg.hidden, has_cart=True, has_purchase=True,
                          attract_shift=shift, choice=terms)
    model.report = {
        "model": "purchase choice (multinomial logit with an outside option)", "rows": int(len(inter)),
        "requests": int(len(req.first_row)), "shoppers": int(len(user_index)), "steps": steps,
        "valid_choice_nll": history, "negatives": int(cfg.choice_negatives), "repeat_coef": gamma,
        "price_coef": beta, "outside_option": -shift, "page_conversion": cfg.page_conversion,
        "continuation_after_purchase": c_buy, "continuation_without_purchase": c_none,
        "repeat_share": float((repeat > 0).mean()), "fit_config": asdict(cfg),
        "fit_seconds": time.perf_counter() - started,
    }
    return model


def _utilities(net: _Net, coef: torch.Tensor, profile: torch.Tensor, items: torch.Tensor, users: torch.Tensor,
               repeat: torch.Tensor, item_vecs: torch.Tensor, price: torch.Tensor) -> torch.Tensor:
    """(B, M) utilities :math:`v_{ui}` of items (B, M) for profiles (B, d), shopper codes (B,), counts (B, M)."""
    b, m = items.shape
    zeros = torch.zeros(b, 1, profile.shape[1])
    logits = net(profile.unsqueeze(1), item_vecs[items], zeros, torch.zeros(b, 1), items,
                 users.unsqueeze(1).expand(b, m))[..., 0]
    return logits + coef[0] * torch.log1p(repeat) + coef[1] * price[items]


def _train(net: _Net, coef: torch.Tensor, events: _Events, space: ItemSpace, price: np.ndarray, weights: np.ndarray,
           cfg: FitConfig, progress: bool) -> tuple[list[float], int]:
    """Conditional-logit fit on sampled negatives; the best checkpoint on the latest requests is kept."""
    n_items, m = space.n_items, int(cfg.choice_negatives)
    n_req = int(events.request.max()) + 1
    cut = int(n_req * (1 - cfg.valid_fraction)) if cfg.valid_fraction > 0 else n_req
    train_rows = np.flatnonzero(events.request < cut)
    valid_rows = np.flatnonzero(events.request >= cut)
    if len(train_rows) == 0:
        train_rows = np.arange(len(events.item))
    eval_rows = valid_rows if len(valid_rows) else train_rows
    if len(eval_rows) > VALID_EVENTS:  # a fixed, seeded sample keeps the checks cheap
        eval_rows = np.sort(np.random.default_rng([cfg.seed, 3]).choice(eval_rows, VALID_EVENTS, replace=False))
    t_profile = torch.from_numpy(events.profile)
    t_vecs = torch.from_numpy(np.ascontiguousarray(space.item_vecs, dtype=np.float32))
    t_price = torch.from_numpy(price)
    t_weight = torch.from_numpy(weights)
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    def batch(rows: np.ndarray, negatives: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        items = np.concatenate([events.item[rows, None], negatives], axis=1)
        users = events.user[rows]
        req = events.request[rows]
        counts = np.zeros(items.shape, dtype=np.float32)
        counts[:, 0] = events.repeat[rows]
        if events.index is not None:
            counts[:, 1:] = events.index.earlier(np.repeat(users, m), negatives.reshape(-1),
                                                 np.repeat(req, m)).reshape(len(rows), m)
        v = _utilities(net, coef, t_profile[torch.from_numpy(req)], torch.from_numpy(items), torch.from_numpy(users),
                       torch.from_numpy(counts), t_vecs, t_price)
        nll = -torch.log_softmax(v, dim=1)[:, 0]
        return nll, t_weight[torch.from_numpy(rows)]

    valid_negatives = rng.integers(0, n_items, (len(eval_rows), m))
    optimiser = torch.optim.Adam([
        {"params": list(net.trunk.parameters()) + list(net.heads.parameters()), "weight_decay": cfg.weight_decay},
        {"params": list(net.item_bias.parameters()) + list(net.user_taste.parameters()) + [coef], "weight_decay": 0.0},
    ], lr=cfg.lr)
    batch_size = int(min(cfg.batch_size, max(64, len(train_rows) // 20)))  # small logs: at least ~20 steps an epoch
    steps = min(cfg.steps, max(1, math.ceil(cfg.max_epochs * len(train_rows) / batch_size)))

    def step_loss(rows: np.ndarray) -> torch.Tensor:
        nll, wt = batch(rows, rng.integers(0, n_items, (len(rows), m)))
        return (wt * nll).sum() / wt.sum().clamp(min=1e-12) + net.shrinkage(cfg.item_bias_l2, cfg.user_taste_l2)

    def validate() -> float:
        total, mass = 0.0, 0.0
        for i in range(0, len(eval_rows), 8192):
            nll, wt = batch(eval_rows[i:i + 8192], valid_negatives[i:i + 8192])
            total += float((wt * nll).sum())
            mass += float(wt.sum())
        return total / max(mass, 1e-12)

    history = train_minibatches(net, optimiser, train_rows, steps=steps, batch_size=batch_size, generator=generator,
                                step_loss=step_loss, validate=validate, extra=coef,
                                desc="fitting purchase-choice model", progress=progress)
    return history, steps


def outside_option(net: _Net, coef: torch.Tensor, events: _Events, space: ItemSpace, price: np.ndarray,
                   cfg: FitConfig) -> float:
    r"""The logit shift :math:`-v_0` making a random page of ten items convert at ``page_conversion``.

    For a seeded sample of training requests (their shopper, profile and repeat counts at the time), ten catalog
    items are drawn uniformly; :math:`\bar P(s) = \mathrm{mean}_r \sum_j o_{rj} / (1 + \sum_j o_{rj})` with
    :math:`o_{rj} = e^{v_{rj} + s}` increases in :math:`s`, and bisection solves :math:`\bar P(s) =`
    ``page_conversion``.
    """
    rng = np.random.default_rng([cfg.seed, 7])
    n_req = int(events.request.max()) + 1
    first = np.full(n_req, -1, dtype=np.int64)
    first[events.request[::-1]] = np.arange(len(events.request))[::-1]  # a purchase row of each request
    first = first[first >= 0]
    rows = rng.choice(first, size=min(CALIBRATION_REQUESTS, len(first)), replace=False)
    items = rng.integers(0, space.n_items, (len(rows), REFERENCE_PAGE))
    users, req = events.user[rows], events.request[rows]
    counts = np.zeros(items.size, dtype=np.int64) if events.index is None else \
        events.index.earlier(np.repeat(users, REFERENCE_PAGE), items.reshape(-1), np.repeat(req, REFERENCE_PAGE))
    with torch.no_grad():
        v = _utilities(net, coef, torch.from_numpy(events.profile[req]), torch.from_numpy(items),
                       torch.from_numpy(users), torch.from_numpy(counts.reshape(items.shape).astype(np.float32)),
                       torch.from_numpy(np.ascontiguousarray(space.item_vecs, dtype=np.float32)),
                       torch.from_numpy(price)).double().numpy()
    target = float(cfg.page_conversion)

    def conversion(shift: float) -> float:
        top = np.maximum((v + shift).max(axis=1, keepdims=True), 0.0)  # log-sum-exp with the outside option's 0
        odds = np.exp(v + shift - top).sum(axis=1)
        return float((odds / (np.exp(-top[:, 0]) + odds)).mean())

    lo, hi = -60.0 - float(v.max()), 60.0 - float(v.min())
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if conversion(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
