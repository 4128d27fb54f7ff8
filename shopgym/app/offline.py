r"""Evaluate a ranking policy (:class:`agents.RankingPolicy`) off-policy on a logged dataset.

This is what ``shopgym ope`` runs. It is application code (it needs the agents, the encoders and the
simulator's embedding space), so it lives in :mod:`shopgym.app`, not in :mod:`ope`, whose estimators
import none of :mod:`agents`, :mod:`envs` or :mod:`encoders`.

Steps:

1. **Split by time.** The earlier ``1 - test_fraction`` of requests is used to fit policies that learn
   from logs (popularity, item-kNN, ALS), user histories and profiles, and item popularity; the
   later part is evaluated (``test_fraction=1``: evaluate everything, fit nothing).
2. **Requests.** One evaluation round per logged request. With ``candidates="shown"`` only requests
   whose slots are exactly positions 1..K (K = the most common page size; others are dropped and
   counted); with ``"catalog"`` every request, K = the largest position, and partial pages (e.g. the
   Open Bandit Dataset's one row per request) are masked (:class:`ope.ranking.RankingInputs`).
3. **Context.** Each request becomes one row of a :class:`agents.RankingContext`, built as the
   simulator builds it (:class:`envs.space.ItemSpace` item and query vectors, user profile pooled
   from the user's earlier engagements, history, extra features ``[shown_before=0, popularity]``).
4. **Candidates** (what the evaluated policy chooses from; the logs do not record the logging
   policy's candidate sets):

   * ``"shown"``: the request's shown items; the policy *re-ranks the logged page*. This is exact
     when the logging policy chose among exactly these items (a re-ranking log). When it chose
     among more candidates than it showed, the evaluated policy is not defined on the logging
     policy's action space, and IPS-type estimates are biased (a uniformly random re-ranking's
     per-slot weights average about :math:`\hat N/K` instead of 1). The logs reveal this:
     :func:`ope.ranking.candidate_pool_size` estimates the logging policy's candidates per slot
     :math:`\hat N_k` from the propensities, and a warning is issued when it exceeds K.
   * ``"catalog"``: every item of the catalog; the policy ranks the whole catalog. Always
     well-defined, but the logging policy may never show the policy's favourite items (e.g. when a
     retrieval stage limited it): the per-slot weights' mean (about 1 with full support) then
     falls below 1, IPS is biased towards 0 by the missing share, and DM/DR extrapolate.

5. **Policy probabilities** of the logged item at its slot, per slot and for the whole page:
   deterministic policies (their :class:`agents.Ranking` propensities are all 1) are exact 0/1
   (IPS then is *replay*: only slots where the policy agrees with the log count);
   :class:`agents.RandomPolicy` and :class:`agents.EpsilonGreedyRanker` use their closed forms;
   any other stochastic policy is estimated by Monte Carlo from ``n_policy_samples`` draws of
   ``rank`` (unbiased for the marginals, so IPS and DR stay unbiased; a rare event's probability
   may come out 0). The pseudo-policy ``"logging"`` evaluates the logging policy itself (weights 1:
   a sanity check that IPS reproduces the logged mean); its probabilities of other candidates are
   unknown, so DM and DR do not run for it.
6. **Reward model** (DM/DR): :class:`ope.ranking.PairRewardModel` on per-(request, candidate)
   features ``[cos(user, item), cos(query, item) if searching, logit popularity, log(1 + views)]``
   plus the slot, cross-fitted over 3 folds of the evaluated requests.
7. **Estimates**: :func:`ope.ranking.evaluate_ranking` (values are per request: the expected sum
   of the slot rewards of a page).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from agents.base import RankingContext, RankingPolicy, deterministic_topk
from agents.baselines import LogFittedPolicy, RandomPolicy
from agents.linear import EpsilonGreedyRanker
from encoders.base import ItemEncoder, TextEncoder, l2_normalize
from encoders.hashing import HashingEncoder
from encoders.profiles import population_default, vector
from envs.space import ItemSpace, UserTable
from ope.errors import OPEWarning
from ope.estimators import WorstCaseBound
from ope.evaluate import OPEReport
from ope.ranking import (
    DEFAULT_RANKING_ESTIMATORS,
    PairRewardModel,
    RankingEstimator,
    RankingInputs,
    candidate_pool_size,
    cross_fit_pair_models,
    evaluate_ranking,
    reduce_ranking_target,
)
from shopgym.checks import check_choice, check_float, check_int
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError

__all__ = [
    "CANDIDATE_SETS",
    "CandidateSetWarning",
    "LoggedRequests",
    "PolicyEvaluation",
    "evaluate_policy_on_logs",
    "logged_requests",
    "policy_probabilities",
]

CandidateSet = Literal["shown", "catalog"]
CANDIDATE_SETS: tuple[str, ...] = ("shown", "catalog")
LOGGING = "logging"
#: elements of the largest per-batch array (candidate vectors or per-slot distributions)
_BATCH_BUDGET = 1 << 23


class CandidateSetWarning(OPEWarning):
    """The evaluated policy chooses from other candidates than the logging policy did (estimates are biased)."""


@dataclass(frozen=True)
class LoggedRequests:
    """The complete requests (slots exactly 1..K) of a log, as arrays.

    Attributes:
        request_ids: (n,) request ids.
        items: (n, K) int64 catalog rows (``data.items`` order) of the shown items, top slot first.
        reward: (n, K) float64 per-slot rewards.
        pscore: (n, K) float64 logged per-slot propensities, or None.
        slate_pscore: (n,) float64 logged page propensities, or None.
        user_ids: (n,) user ids (None entries for unknown), or None when the log has no users.
        queries: (n,) query strings ("" when browsing).
        n_dropped: requests left out because their slots are not exactly 1..K.
        problems: why a propensity field is None although its column exists (one sentence each).
        mask: (n, K) bool logged slots when pages may be partial (``complete_only=False``), else None;
            ``items`` is -1, ``reward`` 0 and ``pscore`` 1 at unlogged slots.
        prefix_pscore: (n, K) float64 the logging policy's probability of the logged slots 1..k (the
            ``prefix_propensity`` column: cascade estimators), or None.
    """

    request_ids: np.ndarray
    items: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray | None
    slate_pscore: np.ndarray | None
    user_ids: np.ndarray | None
    queries: np.ndarray
    n_dropped: int
    problems: tuple[str, ...] = ()
    mask: np.ndarray | None = None
    prefix_pscore: np.ndarray | None = None

    @property
    def n_requests(self) -> int:
        """Number of requests n."""
        return int(self.items.shape[0])

    @property
    def slate_size(self) -> int:
        """Slots per request K."""
        return int(self.items.shape[1])


def logged_requests(
    data: LoggedData, reward: str = S.CLICKED, slate_size: int | None = None, *, complete_only: bool = True,
) -> LoggedRequests:
    """Gather the requests of ``data`` as (n, K) arrays.

    Args:
        data: the validated log.
        reward: the reward column (numeric; missing values count as 0).
        slate_size: K (default: the most common number of slots per request with ``complete_only``, the
            largest position otherwise).
        complete_only: keep only requests whose slots are exactly positions 1..K; otherwise keep every
            request with positions <= K and mark the logged slots in ``mask``.

    Returns:
        The requests, in the log's time order.

    Raises:
        ConfigError: ``reward`` is not a numeric interactions column, or no request qualifies.
    """
    inter = data.interactions
    if reward not in inter.columns:
        raise ConfigError(f"`reward`: the interactions of {data.name!r} have no column {reward!r} "
                          f"(columns: {list(inter.columns)[:20]})")
    if not pd.api.types.is_numeric_dtype(inter[reward]):
        raise ConfigError(f"`reward`: column {reward!r} of {data.name!r} must be numeric; found {inter[reward].dtype}")
    codes, uniques = pd.factorize(inter[S.REQUEST_ID], sort=False)
    size = np.bincount(codes)
    pos = inter[S.POSITION].to_numpy(dtype=np.int64)
    max_pos = np.zeros(len(uniques), dtype=np.int64)
    np.maximum.at(max_pos, codes, pos)
    if complete_only:
        k = int(np.bincount(size).argmax()) if slate_size is None else int(slate_size)
        keep_request = (size == k) & (max_pos == k)  # positions are unique within a request (validated)
    else:
        k = int(max_pos.max()) if slate_size is None else int(slate_size)
        keep_request = max_pos <= k
    n = int(keep_request.sum())
    if n == 0:
        raise ConfigError(f"{data.name!r}: no request has " + (f"exactly the slots 1..{k}" if complete_only
                                                               else f"positions within 1..{k}"))
    keep = keep_request[codes]
    rows = inter[keep]
    request_of = np.cumsum(keep_request) - 1  # request code -> row of the output
    out_row = request_of[codes[keep]]
    slot = pos[keep] - 1
    index = data.item_index().get_indexer(pd.Index(rows[S.ITEM_ID])).astype(np.int64)

    def scatter(values: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((n, k), fill, dtype=np.float64)
        out[out_row, slot] = values
        return out

    logged = np.zeros((n, k), dtype=bool)
    logged[out_row, slot] = True
    items = np.full((n, k), -1, dtype=np.int64)
    items[out_row, slot] = index
    values = rows[reward].to_numpy(dtype=np.float64, na_value=np.nan)
    values = scatter(np.where(np.isnan(values), 0.0, values), 0.0)
    problems: list[str] = []
    pscore = slate_pscore = None
    if S.PROPENSITY in rows.columns:
        p = scatter(rows[S.PROPENSITY].to_numpy(dtype=np.float64, na_value=np.nan), 1.0)
        missing = int(np.isnan(p).sum())
        if missing:
            problems.append(f"the `{S.PROPENSITY}` column is empty for {missing:,} of {int(logged.sum()):,} "
                            "evaluated slots, so per-slot propensity estimators do not run")
        else:
            pscore = p
    if S.SLATE_PROPENSITY in rows.columns:
        sp = scatter(rows[S.SLATE_PROPENSITY].to_numpy(dtype=np.float64, na_value=np.nan), np.nan)
        first_value = sp[np.arange(n), np.argmax(logged, axis=1)]
        if np.isnan(sp[logged]).any():
            problems.append(f"the `{S.SLATE_PROPENSITY}` column has empty values, so whole-page estimators do not run")
        elif np.any(logged & ~np.isclose(sp, first_value[:, None], rtol=1e-9, atol=0)):
            problems.append(f"the `{S.SLATE_PROPENSITY}` column varies within a request, so whole-page estimators "
                            "do not run")
        else:
            slate_pscore = first_value
    prefix_pscore = None
    if S.PREFIX_PROPENSITY in rows.columns:
        pp = scatter(rows[S.PREFIX_PROPENSITY].to_numpy(dtype=np.float64, na_value=np.nan), np.nan)
        if not logged.all():
            problems.append(f"pages are partial, so the `{S.PREFIX_PROPENSITY}` column (a prefix needs every slot "
                            "above it) is not used")
        elif np.isnan(pp).any():
            problems.append(f"the `{S.PREFIX_PROPENSITY}` column has empty values, so cascade estimators do not run")
        else:
            prefix_pscore = pp
    first_rows = np.zeros(n, dtype=np.int64)
    first_rows[out_row[::-1]] = np.arange(len(out_row))[::-1]  # first interaction row of each request
    first = rows.iloc[first_rows]
    users = first[S.USER_ID].to_numpy(dtype=object) if S.USER_ID in first.columns else None
    queries = (first[S.QUERY].fillna("").astype(str).to_numpy(dtype=object) if S.QUERY in first.columns
               else np.full(n, "", dtype=object))
    return LoggedRequests(first[S.REQUEST_ID].to_numpy(dtype=object), items, values, pscore, slate_pscore, users,
                          queries, int((~keep_request).sum()), tuple(problems),
                          None if logged.all() else logged, prefix_pscore)


def policy_probabilities(
    policy: RankingPolicy, ctx: RankingContext, k: int, shown: np.ndarray, rng: np.random.Generator,
    n_samples: int = 100, mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The policy's per-slot marginals over the candidates and its probability of each logged page and prefix.

    Args:
        policy: the evaluated policy.
        ctx: B requests with J candidates.
        k: slots K.
        shown: (B, K) int64 candidate columns of the logged page (any value at unlogged slots).
        rng: drives stochastic policies.
        n_samples: draws per request for policies without a closed form, >= 1.
        mask: (B, K) bool logged slots (None: all); page and prefix probabilities are those of the logged slots.

    Returns:
        dist (B, K, J) float64, page_prob (B,) float64, prefix_prob (B, K) float64 (the probability that the
        policy's slots 1..k agree with the logged ones, for every k), and the method: "deterministic", "exact"
        or "monte carlo".
    """
    b, j = ctx.candidates.shape
    rows = np.arange(b)[:, None]
    slots = np.arange(k)[None, :]
    logged = np.ones((b, k), dtype=bool) if mask is None else mask
    depth = np.cumsum(logged, axis=1)  # logged slots among the first k
    lgamma = np.vectorize(math.lgamma)
    uniform_prefix = np.exp(lgamma(j - depth + 1.0) - lgamma(j + 1.0))  # (J - m)! / J!
    uniform_page = uniform_prefix[:, -1]

    def agrees(slots_drawn: np.ndarray) -> np.ndarray:
        """(B, K) whether the drawn slots 1..k agree with the logged ones (unlogged slots ignored)."""
        return np.cumprod((slots_drawn == shown) | ~logged, axis=1).astype(bool)

    if isinstance(policy, RandomPolicy):
        dist = np.full((b, k, j), 1.0 / j)
        return dist, uniform_page, uniform_prefix, "exact"
    if isinstance(policy, EpsilonGreedyRanker):
        top = deterministic_topk(policy.score(ctx), k).slots  # the greedy branch of its `rank`
        eps = float(policy.epsilon)
        dist = np.full((b, k, j), eps / j)
        dist[rows, slots, top] += 1.0 - eps
        prefix = np.where(agrees(top), 1.0 - eps, 0.0) + eps * uniform_prefix
        return dist, prefix[:, -1], prefix, "exact"
    first = policy.rank(ctx, k, rng)
    if np.all(first.propensity == 1.0) and np.all(first.slate_propensity == 1.0):
        dist = np.zeros((b, k, j))
        dist[rows, slots, first.slots] = 1.0
        prefix = agrees(first.slots).astype(np.float64)
        return dist, prefix[:, -1], prefix, "deterministic"
    counts = np.zeros(b * k * j)
    prefix = np.zeros((b, k))
    base = (np.arange(b)[:, None] * k + np.arange(k)[None, :]) * j
    draw = first
    for s in range(n_samples):
        if s:
            draw = policy.rank(ctx, k, rng)
        counts += np.bincount((base + draw.slots).ravel(), minlength=b * k * j)
        prefix += agrees(draw.slots)
    prefix /= n_samples
    return counts.reshape(b, k, j) / n_samples, prefix[:, -1], prefix, "monte carlo"


@dataclass(frozen=True)
class PolicyEvaluation:
    """The result of :func:`evaluate_policy_on_logs`.

    Attributes:
        report: estimates, intervals and weight diagnostics (values per request).
        policy: the evaluated policy's name.
        reward: the reward column.
        candidates: ``"shown"`` or ``"catalog"``.
        probability_method: how the policy's probabilities were obtained.
        n_requests: requests evaluated.
        n_dropped: requests of the evaluated part left out (slots not exactly 1..K).
        n_fit_requests: requests of the earlier part (0 when nothing was split off).
        split_time: start of the evaluated part (None without a split).
        encoder: identity of the text/item encoder.
        pool_size: (K,) estimated candidates per slot of the logging policy, or None without propensities.
        warnings: what makes the estimates questionable (one sentence each).
    """

    report: OPEReport
    policy: str
    reward: str
    candidates: str
    probability_method: str
    n_requests: int
    n_dropped: int
    n_fit_requests: int
    split_time: str | None
    encoder: str
    pool_size: np.ndarray | None
    warnings: tuple[str, ...] = ()
    headline: tuple[str, str] | None = None
    choices: tuple[str, ...] = ()

    def headline_text(self) -> str | None:
        """One line: the estimate reported first, its interval, why it was chosen and what it assumes."""
        if self.headline is None:
            return None
        name, why = self.headline
        value, low, high = self.headline_interval()
        if name == "bounds":
            return (f"**between {low:.4g} and {high:.4g}** {self.reward} per page (worst-case "
                    f"bounds, {1 - self.report.alpha:.0%} interval): {why}. Assumes {ASSUMPTIONS['bounds']}.")
        span = f" [{low:.4g}, {high:.4g}]" if np.isfinite(low) else ""
        family = "cascade_dr" if name == "cascade_dr" else "rips" if "rips" in name else "sips" if "sips" in name \
            else "dr" if "dr" in name else "dm" if name == "dm" else "ips"
        return (f"**{name.upper()} = {value:.4g}{span}** {self.reward} per page ({1 - self.report.alpha:.0%} "
                f"interval): {why}. Assumes {ASSUMPTIONS[family]}.")

    def headline_interval(self) -> tuple[float, float, float]:
        """The headline's (estimate, interval low, interval high).

        The bootstrap interval, else the first one; for the worst-case bounds, NaN and the low bound's lower end
        and the high bound's upper end.
        """
        nan = float("nan")
        if self.headline is None:
            return nan, nan, nan

        def ends(name: str) -> tuple[float, float, float]:
            row = next(r for r in self.report.results if r.estimator == name)
            interval = next((i for i in row.intervals if i.method == "bootstrap"),
                            row.intervals[0] if row.intervals else None)
            return (row.value, nan, nan) if interval is None else (row.value, interval.low, interval.high)

        if self.headline[0] == "bounds":
            return nan, ends(BOUNDS[0])[1], ends(BOUNDS[1])[2]
        return ends(self.headline[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: the report's fields plus the run's settings."""
        return self.report.to_dict() | {
            "policy": self.policy, "reward": self.reward, "candidates": self.candidates,
            "probability_method": self.probability_method, "n_requests": self.n_requests,
            "n_dropped": self.n_dropped, "n_fit_requests": self.n_fit_requests, "split_time": self.split_time,
            "encoder": self.encoder, "pool_size": None if self.pool_size is None else self.pool_size.tolist(),
            "warnings": list(self.warnings),
            "headline": None if self.headline is None else dict(zip(
                ("estimator", "reason", "estimate", "low", "high"), (*self.headline, *self.headline_interval()),
                strict=True)),
            "choices": list(self.choices),
        }

    def to_markdown(self, digits: int = 4) -> str:
        """A heading, the report's table and diagnostics, then the warnings."""
        head = (f"## Off-policy evaluation of `{self.policy}` ({self.reward} per page, candidates: "
                f"{self.candidates})")
        body = self.report.to_markdown(digits)
        extra = [f"- warning: {w}" for w in self.warnings]
        top = [line for line in (self.headline_text(),) if line]
        chosen = [f"- chosen: {c}" for c in self.choices]
        return "\n".join([head, "", *top, *([""] if top else []), body, *chosen, *extra])


def auto_candidates(data: LoggedData) -> tuple[str, str]:
    """``"shown"`` or ``"catalog"`` for ``data``, and why (one sentence).

    ``"shown"`` only when every request's slots are positions 1..K of one page size and the logged
    propensities say the logging policy chose among about the items it showed (estimated candidates per slot,
    the mean of 1/propensity, at most 1.5 K); otherwise re-ranking the shown items is not a policy the logging
    policy could have run, and the whole catalog is the well-defined choice.
    """
    inter = data.interactions
    per_request = inter.groupby(S.REQUEST_ID, sort=False)[S.POSITION].agg(["max", "count"])
    k = int(per_request["max"].max())
    if not ((per_request["max"] == k) & (per_request["count"] == k)).all():
        return "catalog", "pages of different sizes or with missing positions (not every request shows 1..K)"
    if S.PROPENSITY in inter.columns:
        pool = float(candidate_pool_size(inter[S.PROPENSITY].to_numpy(dtype=np.float64)[:, None])[0])
        if pool > 1.5 * k:
            return "catalog", (f"the propensities say the logging policy chose each slot among about {pool:.3g} "
                               f"items but showed {k}")
        return "shown", f"the logging policy chose among about the {k} items it showed (mean 1/propensity {pool:.3g})"
    return "shown", "no propensities to tell how many items the logging policy chose from"


def auto_encoder(data: LoggedData) -> tuple[str, str]:
    """``"hashing"`` for items with text, ``"features"`` for items without, and why."""
    text = data.items[S.TEXT].fillna("").astype(str).str.strip()
    share = float((text != "").mean()) if len(text) else 0.0
    if share >= 0.5:
        return "hashing", f"{share:.0%} of the items have text"
    return "features", f"only {share:.0%} of the items have text: their feature columns"


#: the estimators of the worst-case bounds (:class:`ope.WorstCaseBound`) that join the defaults, low then high
BOUNDS = ("bound_low", "bound_high")

#: how each estimator family reads the log (the assumption behind a headline)
ASSUMPTIONS = {
    "ips": "per-slot weights: a slot's reward depends only on the item at that slot (independent/position-based "
           "clicks)",
    "sips": "whole-page weights: no click model, but the page must match exactly",
    "dr": "per-slot weights plus a reward model: unbiased if either the propensities or the model are right, under "
          "independent/position-based clicks",
    "dm": "the reward model alone: right only as far as the model is",
    "rips": "prefix weights: cascade clicks (a slot's reward depends on the items above it)",
    "cascade_dr": "prefix weights plus a reward model: cascade clicks, unbiased if either the prefix propensities "
                  "or the model are right",
    "bounds": "nothing but the logged propensities and the reward's range: the policy's choices the logging policy "
              "could not make are given the smallest and the largest possible reward",
}


def value_range(req: LoggedRequests, k: int) -> tuple[float, float, float, float, float]:
    """The range a page's value can take: (slots per page, smallest and largest slot reward, low, high).

    A page sums ``slots`` slot rewards (K, or the mean number of logged positions of partial pages), each
    between min(0, the smallest logged reward) and the largest: ``low = slots * r_low``, ``high = slots * r_high``.
    """
    slots = float(req.mask.sum(axis=1).mean()) if req.mask is not None else float(k)
    r_low, r_high = min(float(req.reward.min()), 0.0), float(req.reward.max())
    return slots, r_low, r_high, slots * r_low, slots * r_high


def choose_headline(report: OPEReport, req: LoggedRequests, k: int, is_logging: bool) -> tuple[str, str] | None:
    """The estimator to report first and why, from the diagnostics (None when nothing ran).

    The logging policy itself: IPS (weights 1: the logged mean). Otherwise DR when it ran and its value is
    possible (inside the reward's range) with enough weight information (effective sample >= 1%); else
    self-normalised IPS when the weights carry that information; else, the weights carrying almost nothing, the
    worst-case bounds (``"bounds"``: :class:`ope.WorstCaseBound`, low and high), which hold whatever the policy's
    unlogged choices are worth; DM only when the bounds did not run.
    """
    ran = {r.estimator: r for r in report.results if r.error is None and np.isfinite(r.value)}
    if not ran:
        return None
    if is_logging and "ips" in ran:
        return "ips", "the logging policy itself: importance weights are 1, so IPS is the logged mean"
    low, high = value_range(req, k)[3:]
    ess = report.diagnostics.ess_fraction if np.isfinite(report.diagnostics.ess_fraction) else 0.0
    possible = {name: r for name, r in ran.items() if low - 1e-9 <= r.value <= high + 1e-9}
    if "dr" in possible and ess >= 0.01:
        return "dr", f"doubly robust, in range, effective sample {ess:.1%} of the pages"
    if "snips" in possible and ess >= 0.01:
        why = "DR did not run" if "dr" not in ran else "DR is outside the possible range"
        return "snips", f"{why}; self-normalised IPS with an effective sample of {ess:.1%} of the pages"
    if all(b in ran for b in BOUNDS):
        dm = f" (DM says {ran['dm'].value:.4g}, but its interval covers sampling noise only)" if "dm" in ran else ""
        return "bounds", (f"the importance weights keep {ess:.1%} effective pages: the log cannot pin this policy "
                          f"down, only bound it{dm}; prefer the simulator for a policy the logs never tried")
    if "dm" in possible:
        return "dm", (f"the importance weights keep {ess:.1%} effective pages: too few to trust; the reward "
                      "model's estimate instead, whose interval covers sampling noise only, not the model's bias "
                      "(prefer the simulator for a policy the logs never tried)")
    name = next(iter(possible or ran))
    return name, "the only estimate available"


def refuse_uninformative(data: LoggedData, reward: str) -> None:
    """Stop when no estimate on ``data`` can mean anything.

    Raises:
        ConfigError: the ``reward`` column is constant (every policy would get the same value), or the log
            holds positive events only (every row clicked: no impressions, so nothing says what a ranking
            changes), naming what to do instead.
    """
    inter = data.interactions
    if S.CLICKED in inter.columns and len(inter) and bool((inter[S.CLICKED] == 1).all()):
        raise ConfigError(
            f"{data.name}: every one of the {len(inter):,} rows is clicked: the log holds positive events only "
            "(e.g. purchases without the pages they were bought from), so it cannot say how a different ranking "
            "would have done; off-policy evaluation needs impressions. Use `shopgym evaluate` for offline "
            "ranking metrics (HR/NDCG of later purchases) on such a log")
    values = inter[reward].fillna(0).to_numpy(dtype=np.float64)
    if len(values) and float(values.min()) == float(values.max()):
        raise ConfigError(
            f"{data.name}: --reward {reward} is {values[0]:g} on every one of the {len(values):,} rows, so every "
            "policy has the same value and no estimator can tell them apart; choose a --reward that varies "
            f"({', '.join(c for c in (S.CLICKED, S.CARTED, S.PURCHASED, S.REVENUE) if c in inter.columns)})")


def implausible_estimates(report: OPEReport, req: LoggedRequests, k: int) -> list[str]:
    """Warnings for estimates outside the reward's range and for importance weights with almost no data.

    A page's value lies between K times the smallest and K times the largest logged reward per slot (the
    logged positions for partial pages); an estimate outside is extrapolation (DM, DR) or variance (IPS).
    """
    found: list[str] = []
    slots, r_low, r_high, low, high = value_range(req, k)
    for row in report.results:
        if row.estimator in BOUNDS:  # bounds, not estimates
            continue
        if row.error is None and np.isfinite(row.value) and not low - 1e-9 <= row.value <= high + 1e-9:
            found.append(f"{row.estimator} = {row.value:.4g} is outside the range a page's value can take "
                         f"([{low:.4g}, {high:.4g}]: {slots:.3g} slots of rewards in [{r_low:.4g}, {r_high:.4g}]); "
                         + ("its reward model extrapolates: trust IPS-type estimates or improve the model"
                            if "dr" in row.estimator or row.estimator == "dm" else
                            "its weights are too variable for this sample"))
    diagnostics = [report.diagnostics, *report.extra_diagnostics]
    fractions = [d.ess_fraction for d in diagnostics if np.isfinite(d.ess_fraction)]
    if fractions and max(fractions) < 0.01:
        best = max(d.ess for d in diagnostics if np.isfinite(d.ess))
        found.append(f"every importance weighting leaves an effective sample of at most {best:.0f} of "
                     f"{report.n_rounds:,} pages (< 1%): the IPS-type estimates and their intervals rest on a handful "
                     "of pages; the logging policy rarely did what this policy does")
    return found


def _check_options(candidates: str, test_fraction: float, n_policy_samples: int, n_folds: int) -> None:
    check_choice(candidates, "candidates", CANDIDATE_SETS)
    check_float(test_fraction, "test_fraction", min_value=0.0, min_inclusive=False, max_value=1.0)
    check_int(n_policy_samples, "n_policy_samples", min_value=1)
    check_int(n_folds, "n_folds", min_value=2)  # cross-fitting needs two folds


def _item_views(train: LoggedData | None, item_index: pd.Index) -> np.ndarray:
    if train is None:
        return np.zeros(len(item_index))
    rows = item_index.get_indexer(pd.Index(train.interactions[S.ITEM_ID]))
    return np.bincount(rows[rows >= 0], minlength=len(item_index)).astype(np.float64)


@dataclass(frozen=True)
class _Context:
    """Everything needed to build a RankingContext and the reward-model features of any request."""

    item_vecs: np.ndarray  # (n_items, d) float32
    profile: np.ndarray  # (n, d) float32
    query: np.ndarray  # (n, d) float32
    is_search: np.ndarray  # (n,) bool
    user_rows: np.ndarray  # (n,) int64 rows in the fit-time user table, -1 unknown
    history: np.ndarray  # (n, H) int64
    popularity: np.ndarray  # (n_items,) float64 smoothed CTR
    item_features: np.ndarray  # (n_items, 2) [logit popularity, log1p views]

    def ranking_context(self, rows: np.ndarray, candidates: np.ndarray, *, pass_user_ids: bool) -> RankingContext:
        b, j = candidates.shape
        pop = self.popularity / max(float(self.popularity.max(initial=0.0)), 1e-12)
        extra = np.stack([np.zeros((b, j), dtype=np.float32), pop[candidates].astype(np.float32)], axis=2)
        user_ids = self.user_rows[rows] if pass_user_ids else np.full(b, -1, dtype=np.int64)
        return RankingContext(
            user=self.profile[rows], query=self.query[rows], is_search=self.is_search[rows],
            candidates=candidates.astype(np.int64), candidate_vecs=self.item_vecs[candidates],
            user_ids=user_ids.astype(np.int64), history=self.history[rows], extra=extra)

    def pair_features(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, M, 4) reward-model features of the catalog items ``items`` (B, M) in requests ``rows``."""
        vecs = self.item_vecs[items].astype(np.float64)  # (B, M, d)
        cos_user = np.einsum("bmd,bd->bm", vecs, self.profile[rows].astype(np.float64))
        cos_query = np.einsum("bmd,bd->bm", vecs, self.query[rows].astype(np.float64))
        cos_query = np.where(self.is_search[rows][:, None], cos_query, 0.0)
        return np.concatenate([cos_user[..., None], cos_query[..., None], self.item_features[items]], axis=2)


def _build_context(
    data: LoggedData, train: LoggedData | None, req: LoggedRequests, encoder: TextEncoder | ItemEncoder,
    attribute_weight: float,
) -> _Context:
    queries = sorted({q for q in data.interactions[S.QUERY].fillna("").astype(str)} - {""}) \
        if S.QUERY in data.interactions.columns else []
    space = ItemSpace.build(data.items, encoder, queries, attribute_weight=attribute_weight)
    item_vecs = space.item_vecs.astype(np.float32)
    n, d = req.n_requests, item_vecs.shape[1]
    is_search = np.asarray([bool(q) for q in req.queries], dtype=bool)
    query = np.zeros((n, d), dtype=np.float32)
    if is_search.any():
        query[is_search] = space.query_vecs[space.query_index(req.queries[is_search])]
    item_index = data.item_index()
    views = _item_views(train, item_index)
    if train is None:
        table = None
        popularity = np.zeros(len(item_index))
    else:
        table = UserTable.from_logs(train, item_index)
        popularity = np.asarray(table.popularity, dtype=np.float64)
    p = np.clip(popularity, 1e-6, 1 - 1e-6)
    item_features = np.stack([np.log(p / (1 - p)) if train is not None else np.zeros(len(p)), np.log1p(views)], axis=1)
    if table is not None and len(table.user_ids) and req.user_ids is not None:
        rows = table.user_ids.get_indexer(pd.Index(pd.Series(req.user_ids, dtype="object").astype(str)))
        everyone = table.profiles(np.arange(len(table.user_ids)), item_vecs)
        default = population_default(l2_normalize(everyone.sum), everyone.is_cold, item_vecs)
        profile = vector(table.profiles(rows, item_vecs), default)
        history = np.where(rows[:, None] >= 0, table.history[np.maximum(rows, 0)], -1).astype(np.int64)
    else:
        rows = np.full(n, -1, dtype=np.int64)
        profile = np.zeros((n, d), dtype=np.float32)
        history = np.full((n, 1), -1, dtype=np.int64)
    return _Context(item_vecs, profile.astype(np.float32), query, is_search, rows.astype(np.int64), history,
                    popularity, item_features)


def evaluate_policy_on_logs(
    data: LoggedData,
    policy: RankingPolicy | Literal["logging"],
    *,
    reward: str = S.CLICKED,
    candidates: CandidateSet = "shown",
    encoder: TextEncoder | ItemEncoder | None = None,
    attribute_weight: float = 0.0,
    test_fraction: float = 0.3,
    estimators: Sequence[RankingEstimator] | None = None,
    reward_model: PairRewardModel | None = None,
    use_reward_model: bool = True,
    n_folds: int = 3,
    n_policy_samples: int = 100,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
    n_jobs: int | None = None,
    policy_name: str | None = None,
) -> PolicyEvaluation:
    """Evaluate ``policy`` on the later part of ``data`` (see the module docstring for every step).

    Args:
        data: the log.
        policy: a ranking policy (fitted here on the earlier part if it learns from logs and is not
            fitted yet), or ``"logging"`` for the logging policy itself.
        reward: the per-slot reward column (``clicked``, ``carted``, ``purchased``, ``revenue``).
        candidates: ``"shown"`` (re-rank the logged page) or ``"catalog"`` (rank the whole catalog).
        encoder: text or item encoder for item and query vectors (default: ``HashingEncoder(256)``).
        attribute_weight: weight of the item-attribute block appended to the text vectors (as in the
            simulator's :class:`~envs.space.ItemSpace`), >= 0.
        test_fraction: share of the requests (latest first) evaluated, in (0, 1].
        estimators: the estimators (default: :data:`ope.ranking.DEFAULT_RANKING_ESTIMATORS`).
        reward_model: the DM/DR reward model (default :class:`~ope.ranking.PairRewardModel`).
        use_reward_model: False skips the reward model (DM and the DR family then report why they did not run).
        n_folds: cross-fitting folds, >= 2.
        n_policy_samples: draws per request for stochastic policies without a closed form, >= 1.
        n_resamples: bootstrap resamples.
        alpha: 1 - nominal coverage.
        seed: seeds the policy draws, the folds and the bootstrap.
        n_jobs: bootstrap threads.
        policy_name: label in the report (default: the policy's ``name``).

    Returns:
        The evaluation.

    Raises:
        ConfigError: a bad option, a policy that must be fitted without an earlier part, or
            ``"logging"`` on a log without propensities.
        ShopgymError: the policy or the encoder rejects the data (their messages say why).
    """
    _check_options(candidates, test_fraction, n_policy_samples, n_folds)
    refuse_uninformative(data, reward)
    is_logging = isinstance(policy, str)
    if is_logging and policy != LOGGING:
        raise ConfigError(f"`policy` must be a RankingPolicy or {LOGGING!r}; got {policy!r}")
    name = policy_name or (LOGGING if isinstance(policy, str) else policy.name)
    train: LoggedData | None = None
    test = data
    split_time: str | None = None
    if float(test_fraction) < 1.0:
        train, test = data.split_by_time(float(test_fraction))
        split_time = str(test.meta.get("split_time"))
    fitted_here = False
    if isinstance(policy, LogFittedPolicy) and not policy.is_fitted:
        if train is None:
            raise ConfigError(f"policy {name!r} learns from logs and is not fitted: pass a test fraction below 1 so "
                              "that it is fitted on the earlier part of the log")
        user_index = UserTable.from_logs(train, data.item_index()).user_ids
        policy.fit(train, data.item_index(), user_index)
        fitted_here = True
    req = logged_requests(test, reward, complete_only=candidates == "shown")
    if is_logging and req.pscore is None:
        raise ConfigError(f"policy {LOGGING!r} is evaluated through the logged propensities, and "
                          f"{data.name!r} has none: " + ("; ".join(req.problems) or
                                                        f"no `{S.PROPENSITY}` column"))
    encoder = encoder if encoder is not None else HashingEncoder(dim=256, seed=0)
    ctx_all = _build_context(data, train, req, encoder, attribute_weight)
    n, k = req.n_requests, req.slate_size
    n_items = len(data.items)
    j = k if candidates == "shown" else n_items
    items = np.where(req.items >= 0, req.items, 0)  # any valid row at unlogged slots (masked out below)
    shown_cols = np.broadcast_to(np.arange(k), (n, k)).astype(np.int64) if candidates == "shown" else items

    model = reward_model if reward_model is not None else PairRewardModel()
    logged_features = ctx_all.pair_features(np.arange(n), items)  # (n, K, 4)
    use_model = use_reward_model and not is_logging and n >= n_folds
    fold_of, fits = (cross_fit_pair_models(model, logged_features, req.reward, n_folds=n_folds, seed=seed,
                                           mask=req.mask)
                     if use_model else (np.zeros(n, dtype=np.int64), ()))

    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    target_prob = np.empty((n, k))
    page_prob = np.empty(n)
    prefix_prob = np.empty((n, k))
    dm = np.empty((n, k)) if use_model else None
    q_logged = np.empty((n, k)) if use_model else None
    method = "logged propensities" if is_logging else ""
    if is_logging:
        assert req.pscore is not None
        target_prob = req.pscore.copy()
        page_prob = req.slate_pscore.copy() if req.slate_pscore is not None else np.full(n, np.nan)
        prefix_prob = req.prefix_pscore.copy() if req.prefix_pscore is not None else np.full((n, k), np.nan)
    else:
        assert not isinstance(policy, str)
        batch = max(1, _BATCH_BUDGET // (j * max(ctx_all.item_vecs.shape[1], 2 * k)))
        methods: set[str] = set()
        for start in range(0, n, batch):
            rows = np.arange(start, min(n, start + batch))
            cands = req.items[rows] if candidates == "shown" else np.broadcast_to(np.arange(n_items), (len(rows), j))
            ctx = ctx_all.ranking_context(rows, np.ascontiguousarray(cands), pass_user_ids=fitted_here)
            dist, page, prefix, how = policy_probabilities(policy, ctx, k, shown_cols[rows], rng, n_policy_samples,
                                                   None if req.mask is None else req.mask[rows])
            methods.add(how)
            q = None
            if use_model:
                feats = ctx_all.pair_features(rows, np.ascontiguousarray(cands))
                q = np.empty((len(rows), k, j))
                for f, fit in enumerate(fits):
                    mine = fold_of[rows] == f
                    if mine.any():
                        q[mine] = fit.predict(feats[mine])
            tp, d_m, q_l = reduce_ranking_target(shown_cols[rows], dist, q)
            target_prob[rows] = tp
            page_prob[rows] = page
            prefix_prob[rows] = prefix
            if dm is not None and q_logged is not None and d_m is not None and q_l is not None:
                dm[rows], q_logged[rows] = d_m, q_l
        method = "/".join(sorted(methods))

    slate_target = None if np.isnan(page_prob).any() else page_prob
    pool = candidate_pool_size(req.pscore, req.mask) if req.pscore is not None else None
    found: list[str] = []
    if pool is not None and candidates == "shown" and float(pool.mean()) > 1.5 * k:
        per_slot = ", ".join(f"{x:.3g}" for x in pool)
        found.append(
            f"candidate sets: the logging policy chose each slot among about {pool.mean():.3g} candidates "
            f"(estimated as the mean of 1/propensity; per slot {per_slot}) "
            f"but showed only K = {k}. Re-ranking the shown items (candidates=shown) is then a policy the logging "
            "policy could not have run, and the per-slot IPS-type estimates are biased (for a uniformly random "
            f"re-ranking by a factor of about {pool.mean() / k:.3g}). Use candidates=catalog, or logs that record "
            "every candidate")
    if req.mask is None:
        what = f"value = expected sum of `{reward}` over the {k} slots of a page"
    else:
        what = (f"pages are partial ({req.mask.sum() / n:.2f} of positions 1..{k} logged per request on average): "
                f"value = expected sum of `{reward}` over the logged positions of a request")
    dropped = (f"{req.n_dropped:,} with other slots than 1..{k} left out" if candidates == "shown"
               else f"{req.n_dropped:,} with positions beyond {k} left out")
    notes = [
        f"evaluated: {n:,} requests ({'the later ' + format(test_fraction, '.0%') if train is not None else 'all'}"
        f"{', from ' + split_time if split_time else ''}; {dropped}); {what}",
        f"candidates: {candidates} ({j:,} per request); policy probabilities: {method}"
        + (f" ({n_policy_samples} draws per request)" if "monte carlo" in method else ""),
    ]
    if method == "deterministic":
        agree = float((target_prob > 0)[req.mask if req.mask is not None else slice(None)].mean())
        notes.append(f"the policy is deterministic: IPS-type estimators only use the slots where it agrees with the "
                     f"log (replay): {agree:.1%} of the evaluated slots")
    if train is not None:
        notes.append(f"earlier part ({train.n_requests:,} requests) used for: user profiles, histories, item "
                     "popularity" + (", fitting the policy" if fitted_here else ""))
    notes.extend(req.problems)
    if is_logging:
        notes.append("the logging policy's probabilities of candidates it did not show are not in the log, so DM "
                     "and the DR family do not run for it")
    elif not use_reward_model:
        notes.append("no reward model (switched off)")
    elif not use_model:
        notes.append(f"no reward model: fewer requests ({n}) than folds ({n_folds})")
    inputs = RankingInputs(reward=req.reward, target_prob=target_prob, pscore=req.pscore, dm=dm, q_logged=q_logged,
                           slate_pscore=req.slate_pscore, target_slate_prob=slate_target, mask=req.mask,
                           prefix_pscore=req.prefix_pscore,
                           target_prefix_prob=None if req.mask is not None or np.isnan(prefix_prob).any()
                           else prefix_prob)
    model_label = f"{model.name} ({n_folds}-fold cross-fitted over requests)" if use_model else None
    chosen = tuple(DEFAULT_RANKING_ESTIMATORS if estimators is None else estimators)
    if not is_logging and req.pscore is not None and not {e.name for e in chosen} & set(BOUNDS):
        r_low, r_high = value_range(req, k)[1:3]  # the worst-case bounds are always reported (the headline's last say)
        chosen = (*chosen, WorstCaseBound(r_low, name=BOUNDS[0]), WorstCaseBound(r_high, name=BOUNDS[1]))
    estimators = chosen
    report = evaluate_ranking(inputs, estimators=estimators, n_resamples=n_resamples, alpha=alpha, seed=seed,
                              n_jobs=n_jobs, warn=False, reward_model=model_label, notes=notes)
    n_test = test.n_requests
    if n < 0.5 * n_test:
        found.append(
            f"evaluated pages: only {n:,} of the {n_test:,} requests of the evaluated part ({n / n_test:.0%}); "
            + (f"{req.n_dropped:,} were left out because their slots are not exactly positions 1..{k} (the most "
               "common page size); --candidates catalog evaluates every request" if candidates == "shown" else
               f"{req.n_dropped:,} were left out for positions beyond {k}")
            + ". The estimate describes those pages only")
    found.extend(implausible_estimates(report, req, k))
    for message in found:
        warnings.warn(message, CandidateSetWarning, stacklevel=2)
    encoder_id = str(getattr(encoder, "identity", type(encoder).__name__))
    return PolicyEvaluation(report, name, reward, candidates, method, n, req.n_dropped,
                            train.n_requests if train is not None else 0, split_time, encoder_id, pool, tuple(found),
                            choose_headline(report, req, k, is_logging))
