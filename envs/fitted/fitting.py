"""Fitting the response model from logs: request arrays, the network, examination and continuation."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from encoders.base import l2_normalize
from encoders.profiles import BehaviourWeights
from envs.fitted.config import FitConfig
from envs.fitted.context import ContextEncoding
from envs.fitted.model import ResponseModel, _Net, items_digest, page_features
from envs.fitted.training import train_minibatches
from envs.latent import (
    LatentClassConfig,
    exposure_profiles,
    fit_latent_classes,
    logged_rankings,
)
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError
from shopgym.numeric import logistic_newton
from shopgym.threads import torch_threads

SESSION_GAP_SECONDS = 30 * 60
#: how much tighter the prior on the context tastes is than on the context main effects
TASTE_PRIOR = 100.0
#: the context is kept when it lowers the held-out click log-loss by more than this many standard errors
CONTEXT_Z = 2.0


def _epoch_ns(timestamps: pd.Series) -> np.ndarray:
    """(n,) int64 nanoseconds since the epoch of a UTC timestamp column."""
    return timestamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)


@dataclass(frozen=True)
class _Requests:
    """Request-level arrays of a log (R requests), in time order."""

    first_row: np.ndarray  # (R,) row of the request's first slot
    row_request: np.ndarray  # (n_rows,) request index of each row
    profile: np.ndarray  # (R, d) time-respecting profiles
    query: np.ndarray  # (R, d)
    is_search: np.ndarray  # (R,)


def _request_arrays(logs: LoggedData, space: ItemSpace, item: np.ndarray,
                    weights: BehaviourWeights) -> tuple[_Requests, np.ndarray]:
    inter = logs.interactions
    codes, request_ids = pd.factorize(inter[S.REQUEST_ID], sort=False)
    n_req = len(request_ids)
    first_row = np.full(n_req, len(inter), dtype=np.int64)
    np.minimum.at(first_row, codes, np.arange(len(inter)))
    ts = _epoch_ns(inter[S.TIMESTAMP])
    req_time = ts[first_row]
    dim = space.dim
    profile_sum = np.zeros((n_req, dim))
    cold = np.ones(n_req, dtype=bool)
    if logs.has_users:
        w = weights.of(inter[S.CLICKED].to_numpy(),
                       inter[S.CARTED].to_numpy() if S.CARTED in inter else None,
                       inter[S.PURCHASED].to_numpy() if S.PURCHASED in inter else None)
        user_codes, _ = pd.factorize(inter[S.USER_ID])
        engaged = np.flatnonzero(w > 0)
        # time rank shared by engagements and requests (ties: an engagement at the request's own time is not "earlier")
        e_key = user_codes[engaged].astype(np.int64), ts[engaged]
        order = np.lexsort((e_key[1], e_key[0]))
        e_user, e_time = e_key[0][order], e_key[1][order]
        vec = space.item_vecs[item[engaged[order]]].astype(np.float64) * w[engaged[order]][:, None]
        cum = np.vstack([np.zeros((1, dim)), np.cumsum(vec, axis=0)])
        cum_w = np.r_[0.0, np.cumsum(w[engaged[order]])]
        r_user = user_codes[first_row].astype(np.int64)
        # position of (user, time) in the sorted engagements: count of engagements strictly before
        both_user = np.r_[e_user, r_user]
        both_time = np.r_[e_time, req_time]
        is_req = np.r_[np.zeros(len(e_user), bool), np.ones(n_req, bool)]
        o = np.lexsort((~is_req, both_time, both_user))  # requests sort before engagements at equal time
        before = np.cumsum(~is_req[o])  # engagements seen up to and including each position
        req_positions = np.flatnonzero(is_req[o])
        pos_in_sorted = np.empty(n_req, dtype=np.int64)
        pos_in_sorted[o[req_positions] - len(e_user)] = before[req_positions]
        user_start = np.searchsorted(e_user, r_user, side="left")
        profile_sum = cum[pos_in_sorted] - cum[user_start]
        weight = cum_w[pos_in_sorted] - cum_w[user_start]
        cold = (weight <= 0) | (np.linalg.norm(profile_sum, axis=1) < 1e-12)
    profile = l2_normalize(profile_sum).astype(np.float32)
    queries = np.zeros((n_req, dim), dtype=np.float32)
    is_search = np.zeros(n_req, dtype=bool)
    if S.QUERY in inter:
        texts = inter[S.QUERY].to_numpy(dtype=object)[first_row]
        qi = space.query_index(texts)
        is_search = qi >= 0
        queries[is_search] = space.query_vecs[qi[is_search]]
    return _Requests(first_row, codes.astype(np.int64), profile, queries, is_search), cold


def logged_items(train: LoggedData, space: ItemSpace) -> np.ndarray:
    """(n_rows,) catalog index of every logged row's item.

    Raises:
        ConfigError: an item is missing from the item space.
    """
    item = space.item_ids.get_indexer(pd.Index(train.interactions[S.ITEM_ID]))
    if (item < 0).any():
        raise ConfigError("the item space does not cover every logged item; build it from the same items table")
    return item


def training_profiles(train: LoggedData, space: ItemSpace, item: np.ndarray) -> tuple[_Requests, np.ndarray,
                                                                                        np.ndarray]:
    """The request arrays, (R, d) float32 time-respecting profiles and the (d,) default profile.

    Cold requests (no earlier engagement) get the default: the normalised mean of the warm profiles (zeros when
    every request is cold).
    """
    req, cold = _request_arrays(train, space, item, BehaviourWeights())
    default_profile = l2_normalize(req.profile[~cold].mean(axis=0, keepdims=True))[0] if (~cold).any() \
        else np.zeros(space.dim, dtype=np.float32)
    profile = np.where(cold[:, None], default_profile[None, :], req.profile).astype(np.float32)
    return req, profile, default_profile


def row_shoppers(train: LoggedData) -> tuple[pd.Index, np.ndarray]:
    """The logged shoppers in :meth:`UserTable.from_logs` order, and each row's (int64; all 0 without user ids)."""
    inter = train.interactions
    if not train.has_users:
        return pd.Index([]), np.zeros(len(inter), dtype=np.int64)
    user_index = pd.Index(pd.unique(inter[S.USER_ID]))
    return user_index, user_index.get_indexer(pd.Index(inter[S.USER_ID])).astype(np.int64)


def fit_response_model(train: LoggedData, space: ItemSpace, config: FitConfig | None = None, *,
                       progress: bool = False, sample_weight: np.ndarray | None = None) -> ResponseModel:
    """Fit the user-response model on ``train`` (see :mod:`envs.fitted`), with its context only where it helps.

    When the logs have context columns and ``config.context`` is on, the model is fitted with and without
    them, and the context is kept only when it lowers the click log-loss of the validation tail (the latest
    ``valid_fraction`` of the requests) by more than :data:`CONTEXT_Z` standard errors of the per-row
    difference: context inputs are many parameters, and on small logs (the OBD sample) they add variance
    and nothing measurable. ``report["context_choice"]`` holds the figures.

    Args:
        train: training logs (use :meth:`LoggedData.split_by_time` to hold out the later part).
        space: item/query vectors; must cover every item and query of ``train``.
        config: fitting options.
        progress: show a progress bar over epochs.
        sample_weight: (n_rows,) weights of the rows (e.g. a bootstrap's, :mod:`envs.fitted.ensemble`),
            multiplying the inverse-propensity weights in the likelihood and the calibration; None: all 1.

    A purchase-only log (every row clicked and purchased: UCI Online Retail) has no impressions to learn clicks
    from; it gets the purchase-choice model instead (:mod:`envs.fitted.choice`).

    Raises:
        DataFormatError: the logs cannot support a click model (no clicks at all, or every row clicked
            without being a purchase-only log).
    """
    from dataclasses import replace

    from envs.fitted.choice import fit_choice_model, is_purchase_only
    from envs.fitted.context import context_columns

    cfg = config or FitConfig()
    if is_purchase_only(train):
        return fit_choice_model(train, space, cfg, progress=progress, sample_weight=sample_weight)
    started = time.perf_counter()
    with_context = _fit_one(train, space, cfg, progress=progress, sample_weight=sample_weight)
    if not with_context.context.width:
        return with_context
    without = _fit_one(train, space, replace(cfg, context=False), progress=progress, sample_weight=sample_weight)
    gain, se = _validation_gain(train, space, cfg, with_context, without)
    keep = gain > CONTEXT_Z * se
    model = with_context if keep else without
    model.report["context_choice"] = {"columns": context_columns(train.interactions), "inputs":
                                      with_context.context.width, "kept": bool(keep),
                                      "valid_logloss_gain": gain, "valid_logloss_gain_se": se}
    model.report["fit_seconds"] = time.perf_counter() - started
    return model


def _validation_gain(train: LoggedData, space: ItemSpace, cfg: FitConfig, with_context: ResponseModel,
                     without: ResponseModel) -> tuple[float, float]:
    """Mean per-row click log-loss of ``without`` minus ``with_context`` on the validation tail, and its SE."""
    from envs.fidelity import replay_predictions

    inter = train.interactions
    codes, _ = pd.factorize(inter[S.REQUEST_ID], sort=False)
    n_req = int(codes.max()) + 1
    cut = int(n_req * (1 - cfg.valid_fraction)) if cfg.valid_fraction > 0 else 0
    mask = codes >= cut
    y = inter[S.CLICKED].to_numpy(dtype=np.float64)[mask]

    def loss(model: ResponseModel) -> np.ndarray:
        p = np.clip(replay_predictions(train, mask, space, model)[0], 1e-7, 1 - 1e-7)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p))

    diff = loss(without) - loss(with_context)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(max(len(diff), 2)))


def _fit_one(train: LoggedData, space: ItemSpace, cfg: FitConfig, *, progress: bool = False,
             sample_weight: np.ndarray | None = None) -> ResponseModel:
    """One fit of the response model with ``cfg`` as it is (see :func:`fit_response_model`)."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    inter = train.interactions
    clicked = inter[S.CLICKED].to_numpy(dtype=np.float32)
    if clicked.sum() == 0 or clicked.min() == 1:
        raise DataFormatError(
            train.name, "the clicked column is constant: a click model needs shown-and-clicked and "
            "shown-and-not-clicked slots", column=S.CLICKED,
            hint="positives-only logs (e.g. UCI Online Retail) have no impressions; fit on logs of shown slots",
        )
    item = logged_items(train, space)
    req, profile, default_profile = training_profiles(train, space, item)
    position = inter[S.POSITION].to_numpy().astype(np.int64)
    n_positions = int(position.max())
    carted = inter[S.CARTED].to_numpy(dtype=np.float32) if S.CARTED in inter else None
    purchased = inter[S.PURCHASED].to_numpy(dtype=np.float32) if S.PURCHASED in inter else None
    if carted is None and purchased is not None:
        carted = purchased.copy()  # no cart events logged: a purchase is its own cart (P(buy | cart) -> 1)

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    user_index, row_user = row_shoppers(train)
    n_users = len(user_index)
    encoding = ContextEncoding.fit(inter.iloc[req.first_row]) if cfg.context else ContextEncoding()
    context = encoding.transform(inter.iloc[req.first_row])  # (R, m)
    net = _Net(space.dim, cfg.hidden, space.n_items, n_positions, min(cfg.rank, space.dim), n_users, encoding.width)
    net.project_on(space.item_vecs)
    theta_ips = examination_from_propensities(train) if train.has_propensities else None
    if theta_ips is not None:
        # propensity-randomised logs identify position bias directly; freeze it so that the
        # logging policy's ranking (better items on top) cannot leak into theta
        phi = np.log(np.clip(theta_ips[1:], 1e-4, 1 - 1e-4) / (1 - np.clip(theta_ips[1:], 1e-4, 1 - 1e-4)))
        with torch.no_grad():
            net.position_logit.copy_(torch.from_numpy(phi.astype(np.float32)))
        net.position_logit.requires_grad_(False)
    t_profile = torch.from_numpy(profile)
    t_query = torch.from_numpy(req.query)
    t_search = torch.from_numpy(req.is_search.astype(np.float32))
    t_items = torch.from_numpy(space.item_vecs)
    rows_request = torch.from_numpy(req.row_request)
    t_item = torch.from_numpy(item.astype(np.int64))
    t_user = torch.from_numpy(row_user)
    t_pos = torch.from_numpy(position)
    t_click = torch.from_numpy(clicked)
    row_weight = np.ones(len(inter), dtype=np.float32)
    weighting = None
    if cfg.debias and train.has_propensities:
        row_weight, weighting = debias_weights(inter[S.PROPENSITY].to_numpy(dtype=np.float64), cfg.max_weight,
                                               cfg.min_effective_share, train.name)
    if sample_weight is not None:
        row_weight = (row_weight * np.asarray(sample_weight, dtype=np.float32)).astype(np.float32)
    t_weight = torch.from_numpy(row_weight)
    t_context = torch.from_numpy(context)
    t_cart = torch.from_numpy(carted) if carted is not None else None
    t_buy = torch.from_numpy(purchased) if purchased is not None else None

    n_req = len(req.first_row)
    cut = int(n_req * (1 - cfg.valid_fraction)) if cfg.valid_fraction > 0 else n_req
    # requests are numbered by first appearance in time-sorted rows, so the tail is the latest
    train_rows = torch.from_numpy(np.flatnonzero(req.row_request < cut))
    valid_rows = torch.from_numpy(np.flatnonzero(req.row_request >= cut))

    def batch_loss(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = rows_request[rows]
        item = t_item[rows]
        # index_select: the same rows as fancy indexing, 2-3x faster on (rows, d) gathers
        logits = net(t_profile.index_select(0, r), t_items.index_select(0, item), t_query.index_select(0, r),
                     t_search[r], item, t_user[rows], t_context.index_select(0, r))
        log_p = net.log_theta(t_pos[rows]) + torch.nn.functional.logsigmoid(logits[:, 0])
        p = log_p.exp().clamp(1e-7, 1 - 1e-7)
        y = t_click[rows]
        click_nll = -(y * log_p + (1 - y) * torch.log1p(-p))
        wt = t_weight[rows]
        loss = (wt * click_nll).mean()
        if t_cart is not None:
            mask = y > 0
            if mask.any():
                loss = loss + nn.functional.binary_cross_entropy_with_logits(
                    logits[mask, 1], t_cart[rows][mask], weight=wt[mask], reduction="sum") / len(rows)
            if t_buy is not None:
                mask = t_cart[rows] > 0
                if mask.any():
                    loss = loss + nn.functional.binary_cross_entropy_with_logits(
                        logits[mask, 2], t_buy[rows][mask], weight=wt[mask], reduction="sum") / len(rows)
        return loss, (wt * click_nll).sum() / wt.sum()

    optimiser = torch.optim.Adam([
        {"params": list(net.trunk.parameters()) + list(net.heads.parameters()), "weight_decay": cfg.weight_decay},
        {"params": [net.position_logit], "weight_decay": 0.0},
        {"params": list(net.item_bias.parameters()) + list(net.user_taste.parameters()), "weight_decay": 0.0},
        *([{"params": list(net.context_main.parameters()) + list(net.context_taste.parameters()),
            "weight_decay": 0.0}] if net.n_context else []),
    ], lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    eval_rows = valid_rows if len(valid_rows) else train_rows
    steps = min(cfg.steps, max(1, math.ceil(cfg.max_epochs * len(train_rows) / cfg.batch_size)))

    def step_loss(rows: np.ndarray) -> torch.Tensor:
        loss, _ = batch_loss(torch.from_numpy(rows))
        loss = loss + net.shrinkage(cfg.item_bias_l2, cfg.user_taste_l2)
        if net.n_context:  # a Gaussian prior on the weights: its precision is spread over the training rows
            loss = loss + cfg.context_l2 / len(train_rows) * (net.context_main.weight.pow(2).sum()
                                                              + TASTE_PRIOR * net.context_taste.weight.pow(2).sum())
        return loss

    def validate() -> float:
        total = sum(float(batch_loss(eval_rows[i:i + 65536])[1]) * len(eval_rows[i:i + 65536])
                    for i in range(0, len(eval_rows), 65536))
        return total / len(eval_rows)

    history = train_minibatches(net, optimiser, train_rows.numpy(), steps=steps, batch_size=cfg.batch_size,
                                generator=generator, step_loss=step_loss, validate=validate,
                                desc="fitting response model", progress=progress)
    torch.set_num_threads(threads)

    theta = torch.cat([torch.ones(1), torch.sigmoid(net.position_logit.detach())]).numpy().astype(np.float64)
    theta_source = "propensity-weighted ratio" if theta_ips is not None else "joint maximum likelihood"
    eta = _power_law(theta)
    model = ResponseModel(net, space.dim, space.n_items, items_digest(space.item_ids), theta, eta, None,
                          cfg.default_continuation, default_profile, cfg.hidden,
                          has_cart=carted is not None, has_purchase=purchased is not None, context=encoding,
                          context_mean=context.mean(axis=0) if encoding.width else None)
    class_report = None
    if cfg.latent_classes >= 2 and train.has_users:
        propensity = inter[S.PROPENSITY].to_numpy(dtype=np.float64) if train.has_propensities else None
        log_theta = np.log(np.maximum(theta[np.minimum(position, len(theta)) - 1], 1e-6))
        pages = logged_rankings(req.row_request, position, propensity) if cfg.logged_rankings else None
        with torch_threads(cfg.threads):
            model.classes, class_report = fit_latent_classes(
                space.item_vecs, item, row_user, n_users, clicked, log_theta, req.row_request, req.query,
                req.is_search, row_weight,
                exposure_profiles(space.item_vecs, item, row_user, n_users, propensity),
                LatentClassConfig(n_classes=cfg.latent_classes, epochs=cfg.class_epochs,
                                  deviation_rank=cfg.shopper_deviation, relevance_knots=cfg.relevance_knots,
                                  restarts=cfg.class_restarts,
                                  seed=cfg.seed), profile,
                pages, progress=progress)
    alpha = row_probabilities(model, req, profile, item, space, space_user_rows(train), context,
                              np.arange(len(inter)), chunk=32768)[:, 0]
    # on the logged rows as they are (the default), or as-if-randomised by the inverse-propensity weights
    calibration_weight = row_weight.astype(np.float64) if cfg.calibrate_on == "weighted" else sample_weight
    calibration = calibrate_examination(alpha, position, clicked, prior_clicks=cfg.prior_clicks,
                                        weight=calibration_weight)
    model.attract_shift = calibration.shift
    model.examination_logged = calibration.theta.astype(np.float64)
    model.eta = _power_law(calibration.theta)
    coef, n_sessions = _fit_continuation(train, model, req, profile, item, space, context)
    model.continuation_coef = coef
    model.report = {"rows": int(len(inter)), "requests": int(n_req), "valid_click_nll": history, "steps": steps,
                    "sessions": n_sessions, "examination": calibration.theta.tolist(),
                    "examination_low": calibration.theta_low.tolist(),
                    "examination_high": calibration.theta_high.tolist(),
                    "examination_before_calibration": theta.tolist(), "examination_source": theta_source,
                    "calibration": {"shift": calibration.shift, "clicks": calibration.clicks.tolist(),
                                    "expected_clicks": calibration.expected.tolist()},
                    "weighting": weighting, "context_inputs": encoding.width, "eta": model.eta,
                    "latent_classes": class_report,
                    "fit_config": asdict(cfg), "fit_seconds": time.perf_counter() - started}
    return model


def row_probabilities(model: ResponseModel, req: _Requests, profile: np.ndarray, item: np.ndarray,
                      space: ItemSpace, row_user: np.ndarray | None, context: np.ndarray | None, rows: np.ndarray,
                      chunk: int | None = None) -> np.ndarray:
    """(len(rows), 3) the model's probabilities of logged rows ``rows``, each in its request's context.

    ``req``, ``profile`` (R, d) and ``context`` (R, m) are per request, ``item`` and ``row_user`` per row of the
    logs (catalog index, user-table row); the row is predicted alone (K = 1) with its request's profile, query,
    search flag and context. ``chunk`` bounds the rows predicted at once (None: all).
    """
    out = np.empty((len(rows), 3))
    step = chunk or max(len(rows), 1)
    for start in range(0, len(rows), step):
        sel = rows[start:start + step]
        r = req.row_request[sel]
        out[start:start + step] = model.predict(
            profile[r], space.item_vecs[item[sel]][:, None, :], req.query[r], req.is_search[r], item[sel][:, None],
            None if row_user is None else row_user[sel], None if context is None else context[r])[:, 0, :]
    return out


def debias_weights(propensity: np.ndarray, max_weight: float, min_effective_share: float,
                   source: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Inverse-propensity row weights clipped so that they keep an effective sample, with their diagnostics.

    The clipping level is ``max_weight`` (relative to the mean inverse propensity), lowered (bisection on a
    log scale) until the effective sample is at least ``min_effective_share`` of the rows: heavier weights
    would make a handful of rows the whole fit. A :class:`UserWarning` says so when the level had to be
    lowered.

    Returns:
        (n,) float32 weights (mean 1) and a report: ``rows``, ``effective_rows`` before and after clipping,
        ``max_weight`` used, ``lowered``.
    """
    n = len(propensity)
    _, raw_ess = ips_row_weights(propensity, np.inf)
    level = float(max_weight)
    weight, ess = ips_row_weights(propensity, level)
    lowered = ess < min_effective_share * n
    if lowered:
        low, high = 1e-9, level  # a level near 0 clips every weight to the same value: n_eff -> n
        for _ in range(60):
            mid = math.sqrt(low * high)
            if ips_row_weights(propensity, mid)[1] >= min_effective_share * n:
                low = mid
            else:
                high = mid
        level = low
        weight, ess = ips_row_weights(propensity, level)
        warnings.warn(f"{source}: the inverse-propensity weights leave an effective sample of {raw_ess:,.0f} of "
                      f"{n:,} rows (propensities down to {float(np.min(propensity)):.2g}); clipped at {level:.3g}x "
                      f"their mean to keep {ess:,.0f} (fit.min_effective_share={min_effective_share}); "
                      "fit.debias=false fits without weights", UserWarning, stacklevel=3)
    return weight, {"rows": n, "effective_rows_unclipped": raw_ess, "effective_rows": ess, "max_weight": level,
                    "lowered": bool(lowered)}


@dataclass(frozen=True)
class Calibration:
    """The calibration of a fitted model on its training log (see :func:`calibrate_examination`).

    Attributes:
        shift: logit shift ``a`` of the attractiveness.
        theta: (P,) examination of positions 1..P, the largest 1.
        theta_low / theta_high: (P,) 95% interval of each theta (Gamma posterior of its click rate, at the
            fitted normaliser).
        clicks: (P,) logged clicks by position.
        expected: (P,) the calibrated model's expected clicks by position on the training rows.
    """

    shift: float
    theta: np.ndarray
    theta_low: np.ndarray
    theta_high: np.ndarray
    clicks: np.ndarray
    expected: np.ndarray


def calibrate_examination(alpha: np.ndarray, position: np.ndarray, clicked: np.ndarray, *,
                          prior_clicks: float = 5.0, weight: np.ndarray | None = None) -> Calibration:
    r"""Calibrate a position-based click model on its own training rows: a logit shift and the examination.

    With :math:`\alpha_r(a) = \sigma(\mathrm{logit}\,\alpha_r + a)` the shifted attractiveness of row ``r``,
    :math:`A_k(a) = \sum_{r \text{ at } k} \alpha_r(a)` the attractiveness shown at position ``k`` and
    :math:`C_k` its clicks, the examination is the Gamma-Poisson posterior mean of the click rate per unit of
    attractiveness, shrunk towards the pooled rate :math:`\rho = \sum C / \sum A` by ``prior_clicks``
    pseudo-clicks, and scaled so that the most examined position has :math:`\theta = 1`:

    .. math::
        \theta_k \propto \frac{C_k + m}{A_k(a) + m / \rho(a)}, \qquad \max_k \theta_k = 1,

    and the shift ``a`` solves :math:`\sum_k \theta_k A_k(a) = \sum_k C_k` (bisection). Without shrinkage
    (:math:`m = 0`) the expected clicks equal the logged clicks at every position, which is the Poisson maximum
    likelihood of :math:`\theta` given the attractiveness; with it they lie within a few pseudo-clicks of them.
    On a uniformly randomised log every position shows the same attractiveness on average, so
    :math:`\theta_k` is the (regularised) ratio of the positions' CTRs, the examination ratio.

    Args:
        alpha: (n,) model attractiveness (P(click | examined)) of each training row, in (0, 1).
        position: (n,) 1-based positions.
        clicked: (n,) 0/1 clicks.
        prior_clicks: ``m``, the pseudo-clicks of the shrinkage (0: none).
        weight: (n,) row weights (sums become weighted sums; e.g. a bootstrap's), or None.

    Returns:
        The shift, theta with its intervals, and the logged and expected clicks per position.
    """
    from scipy import stats
    from scipy.special import expit, logit

    n_positions = int(position.max())
    base = logit(np.clip(alpha, 1e-9, 1 - 1e-9))
    k = position.astype(np.int64) - 1
    w = np.ones(len(k)) if weight is None else np.asarray(weight, dtype=np.float64)
    clicks = np.bincount(k, weights=w * clicked.astype(np.float64), minlength=n_positions)
    total = clicks.sum()

    def state(a: float) -> tuple[np.ndarray, np.ndarray]:
        shown = np.bincount(k, weights=w * expit(base + a), minlength=n_positions)
        rate = total / max(shown.sum(), 1e-300)
        raw = (clicks + prior_clicks) / (shown + prior_clicks / max(rate, 1e-300))
        return shown, raw / raw.max()

    low, high = -30.0, 30.0
    for _ in range(100):  # the expected total grows with the shift: bisection to float precision
        mid = 0.5 * (low + high)
        shown, theta = state(mid)
        if (theta * shown).sum() < total:
            low = mid
        else:
            high = mid
    shift = 0.5 * (low + high)
    shown, theta = state(shift)
    rate = total / max(shown.sum(), 1e-300)
    shape, scale = clicks + prior_clicks, 1.0 / (shown + prior_clicks / max(rate, 1e-300))
    norm = ((clicks + prior_clicks) * scale).max()
    theta_low = stats.gamma.ppf(0.025, np.maximum(shape, 1e-9), scale=scale) / norm
    theta_high = stats.gamma.ppf(0.975, np.maximum(shape, 1e-9), scale=scale) / norm
    return Calibration(float(shift), theta, theta_low, theta_high, clicks, theta * shown)


def ips_row_weights(propensity: np.ndarray, max_weight: float) -> tuple[np.ndarray, float]:
    r"""Clipped, self-normalised inverse-propensity row weights and their effective sample size.

    :math:`w_r = \min(\frac{1/p_r}{\overline{1/p}}, M)`, rescaled to mean 1; the effective sample is
    Kish's :math:`n_{eff} = (\sum w)^2 / \sum w^2` (n when every weight is equal).

    Returns:
        (n,) float32 weights and :math:`n_{eff}`.
    """
    inv = 1.0 / np.asarray(propensity, dtype=np.float64)
    inv = np.minimum(inv / inv.mean(), max_weight)
    weight = inv / inv.mean()
    return weight.astype(np.float32), float(weight.sum() ** 2 / (weight**2).sum())


def examination_from_propensities(logs: LoggedData) -> np.ndarray | None:
    r"""Position bias from logged propensities: a self-normalised inverse-propensity ratio.

    Note:
        Under the position-based model, with :math:`p_{ik}` the logging probability of showing item
        :math:`i` at slot :math:`k` from the request's candidate set :math:`C`,

        .. math::
            E\Big[\sum_{\text{rows at } k} \frac{c}{p}\Big] = \theta_k \sum_{x} \sum_{i \in C_x} \alpha(x, i),
            \qquad \hat\theta_k = \frac{\sum_{\text{rows at } k} c / p}{\sum_{\text{rows at } 1} c / p},

        so the ratio is unbiased for :math:`\theta_k / \theta_1` whenever every candidate has positive
        probability at every slot (e.g. uniformly randomised or epsilon-mixed logging policies).

    Returns:
        (P,) estimates for positions 1..P, clipped to [1e-3, 1] and made non-increasing, or None when
        there are no clicks at position 1.
    """
    inter = logs.interactions
    position = inter[S.POSITION].to_numpy().astype(np.int64)
    weight = inter[S.CLICKED].to_numpy(dtype=np.float64) / inter[S.PROPENSITY].to_numpy(dtype=np.float64)
    total = np.bincount(position - 1, weights=weight)
    if total[0] <= 0:
        return None
    theta = np.clip(total / total[0], 1e-3, 1.0)
    return np.minimum.accumulate(theta)


def space_user_rows(logs: LoggedData) -> np.ndarray | None:
    """(n_rows,) user row of each interaction in the table order of ``UserTable.from_logs``, or None."""
    if not logs.has_users:
        return None
    users = logs.interactions[S.USER_ID]
    return pd.Index(pd.unique(users)).get_indexer(pd.Index(users)).astype(np.int64)


def _power_law(theta: np.ndarray) -> float:
    """Least-squares eta of theta_k = k^-eta through the logged positions (default 1.0 with one position)."""
    if len(theta) < 2:
        return 1.0
    k = np.log(np.arange(1, len(theta) + 1))
    return float(max(-(k @ np.log(np.maximum(theta, 1e-6))) / (k @ k), 0.0))


def session_codes(logs: LoggedData, first_row: np.ndarray) -> np.ndarray | None:
    """(R,) session index of each request (requests in time order), or None when sessions are unknowable."""
    inter = logs.interactions
    if S.SESSION_ID in inter:
        codes, _ = pd.factorize(inter[S.SESSION_ID].to_numpy()[first_row])
        return codes.astype(np.int64)
    if not logs.has_users:
        return None
    users = inter[S.USER_ID].to_numpy()[first_row]
    ts = _epoch_ns(inter[S.TIMESTAMP])[first_row] / 1e9
    user_codes, _ = pd.factorize(users)
    order = np.lexsort((ts, user_codes))
    new = np.ones(len(order), dtype=bool)
    same_user = user_codes[order][1:] == user_codes[order][:-1]
    new[1:] = ~same_user | (np.diff(ts[order]) > SESSION_GAP_SECONDS)
    codes = np.empty(len(order), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes


def _fit_continuation(train: LoggedData, model: ResponseModel, req: _Requests, profile: np.ndarray,
                      item: np.ndarray, space: ItemSpace, context: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Logistic regression of 'another request follows in the session' on page features."""
    session = session_codes(train, req.first_row)
    if session is None:
        return None, 0
    inter = train.interactions
    n_req = len(req.first_row)
    r = req.row_request
    clicked = inter[S.CLICKED].to_numpy(dtype=np.float64)
    n_clicks = np.bincount(r, weights=clicked, minlength=n_req)
    purchased = inter[S.PURCHASED].to_numpy(dtype=np.float64) if S.PURCHASED in inter else np.zeros(len(inter))
    any_purchase = np.bincount(r, weights=purchased, minlength=n_req) > 0
    row_session = session[r]
    repeated = pd.DataFrame({"s": row_session, "i": item}).duplicated(keep="first").to_numpy()
    shown = np.bincount(r, minlength=n_req)
    repeat_share = np.bincount(r, weights=repeated.astype(float), minlength=n_req) / np.maximum(shown, 1)
    top_rows = np.flatnonzero(inter[S.POSITION].to_numpy() <= 3)
    row_user = space_user_rows(train)
    probs = row_probabilities(model, req, profile, item, space, row_user, context, top_rows)[:, 0]
    top_attract = np.bincount(r[top_rows], weights=probs, minlength=n_req) / np.maximum(
        np.bincount(r[top_rows], minlength=n_req), 1)
    # page index within session and whether a later request of the same session exists
    order = np.lexsort((req.first_row, session))
    s_sorted = session[order]
    start = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    page = np.empty(n_req, dtype=np.int64)
    page[order] = np.arange(n_req) - np.repeat(start, np.diff(np.r_[start, n_req]))
    is_last = np.ones(n_req, dtype=bool)
    is_last[order[:-1]] = s_sorted[1:] != s_sorted[:-1]
    y = (~is_last).astype(np.float64)
    x = page_features(n_clicks > 0, n_clicks, any_purchase, repeat_share, top_attract, req.is_search, page)
    design = np.concatenate([np.ones((len(x), 1)), x], axis=1)  # intercept first, penalised like the rest
    return logistic_newton(design, y, 1e-3, max_iter=30, tol=1e-8), int(session.max() + 1)
