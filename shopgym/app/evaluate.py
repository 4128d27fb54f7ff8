r"""Offline ranking evaluation on any log: next-purchase targets, HR/recall/NDCG/MRR@K with intervals.

Next-purchase (or next-click) targets, bootstrap intervals over shoppers, for every policy that can be fitted
from the earlier part of the log.

This is what ``shopgym evaluate`` runs; it needs no impressions and no propensities, so it works on
purchase-only logs (UCI Online Retail) as on impression logs.

Protocol:

1. **Split.** By time (the earliest ``1 - test_fraction`` of requests train, as
   :meth:`~shopgym.data.LoggedData.split_by_time`), or train on the whole log and test on another log
   (``test=``: a later period).
2. **Targets.** For every shopper of the test part, the set :math:`T_u` of items with a ``target`` event
   (purchase, cart or click) there. Shoppers with no event in the training part cannot be personalised and are
   left out (counted); shoppers without a target event in the test part have nothing to find.
3. **Rankings.** Each policy is fitted on the training part (popularity, buy-again, item-kNN, ALS; cosine
   uses the item vectors and the shopper's profile; random is the floor) and ranks the **whole catalog** for
   every evaluated shopper, from the shopper's training history (the context the simulator would build:
   profile, last engaged items, user id), in batches of shoppers: no loop over items.
4. **Metrics** per shopper, with :math:`h_j = [\text{item at rank } j \in T_u]`:

   .. math::
       \mathrm{HR@K} = [\textstyle\sum_{j \le K} h_j > 0], \quad
       \mathrm{recall@K} = \frac{\sum_{j \le K} h_j}{|T_u|}, \quad
       \mathrm{NDCG@K} = \frac{\sum_{j \le K} h_j / \log_2(j + 1)}{\sum_{j \le \min(K, |T_u|)} 1 / \log_2(j + 1)},
       \quad \mathrm{MRR@K} = 1 / \min\{j \le K : h_j = 1\} \ (0 \text{ if none}).

5. **Intervals.** Percentile bootstrap over shoppers (the same resamples for every policy and metric), so the
   difference between two policies gets a paired interval too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from encoders.base import ItemEncoder, TextEncoder, l2_normalize
from encoders.profiles import population_default, vector
from shopgym.checks import check_choice, check_int
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError
from shopgym.numeric import topk

if TYPE_CHECKING:  # the command line reads this module's constants without loading the agents (PyTorch)
    from agents.base import RankingPolicy
    from envs.space import UserTable

#: policies ``shopgym evaluate`` can fit from a log, in report order
POLICIES: tuple[str, ...] = ("buy_again", "popularity", "item_knn", "als", "cosine", "random")
METRICS: tuple[str, ...] = ("hr", "recall", "ndcg", "mrr")
TARGETS: dict[str, str] = {"purchase": S.PURCHASED, "cart": S.CARTED, "click": S.CLICKED}


@dataclass(frozen=True)
class NextItemSplit:
    """A training log and, per evaluated shopper, the items to find.

    Attributes:
        train: the training part.
        users: (n_eval,) the evaluated shoppers' rows in ``table.user_ids``.
        targets: (n_eval, n_items) CSR, 1 where the shopper has a ``target`` event in the test part.
        table: histories and profiles of the training part's shoppers.
        left_out: shoppers of the test part left out, by reason.
        split: how the log was split (text).
    """

    train: LoggedData
    users: np.ndarray
    targets: sp.csr_array
    table: UserTable
    left_out: dict[str, int]
    split: str


def _target_column(logs: LoggedData, target: str) -> str:
    column = TARGETS[target]
    if column not in logs.interactions.columns:
        present = ", ".join(t for t, c in TARGETS.items() if c in logs.interactions.columns)
        raise DataFormatError(logs.name, f"no '{column}' column for --target {target}", column=column,
                              hint=f"choose a --target the log has ({present})")
    return column


def next_item_split(logs: LoggedData, *, target: str = "purchase", test_fraction: float = 0.2,
                    test: LoggedData | None = None) -> NextItemSplit:
    """Split ``logs`` (or train on it and test on ``test``) into a training log and next-item targets.

    Raises:
        DataFormatError: the log has no ``user_id`` column or no ``target`` column.
        ConfigError: no shopper of the test part has both a training history and a target event.
    """
    from envs.space import UserTable

    check_choice(target, "target", tuple(TARGETS))
    for part in (logs, test):
        if part is not None and S.USER_ID not in part.interactions.columns:
            raise DataFormatError(part.name, "offline next-item evaluation needs shoppers: the log has no "
                                  "'user_id' column", column=S.USER_ID,
                                  hint="logs without user ids (e.g. OBD) can be evaluated with `shopgym ope`")
    if test is None:
        train, held_out = logs.split_by_time(test_fraction)
        split = f"by time: the later {test_fraction:.0%} of requests (from {train.meta.get('split_time')})"
    else:
        train, held_out = logs, test
        split = f"train on {logs.name}, test on {test.name}"
    column = _target_column(held_out, target)
    item_index = train.item_index()
    table = UserTable.from_logs(train, item_index)
    inter = held_out.interactions
    positive = inter[column].fillna(0).to_numpy(dtype=np.float64) > 0
    items = item_index.get_indexer(pd.Index(inter[S.ITEM_ID]))
    users = inter[S.USER_ID].astype(str).to_numpy()
    test_users = pd.Index(pd.unique(users[positive]))
    rows = table.user_ids.astype(str).get_indexer(test_users) if len(table.user_ids) else np.full(len(test_users), -1)
    known = rows >= 0
    left_out = {"no history before the split": int((~known).sum()),
                "target items outside the training catalog": int((positive & (items < 0)).sum())}
    if not known.any():
        raise ConfigError(f"{logs.name}: none of the {len(test_users)} shoppers with a {target} in the test part "
                          "has a history in the training part; use a larger training part (--test-fraction)")
    eval_index = pd.Index(test_users[known])
    keep = positive & (items >= 0)
    r = eval_index.get_indexer(pd.Index(users[keep]))
    ok = r >= 0
    targets = sp.csr_array((np.ones(int(ok.sum())), (r[ok], items[keep][ok])),
                           shape=(len(eval_index), len(item_index)))
    targets.sum_duplicates()
    targets.data[:] = 1.0
    return NextItemSplit(train, rows[known].astype(np.int64), targets, table, left_out, split)


def build_policy(name: str, target: str) -> RankingPolicy:
    """A fresh policy by its report name (fitted later on the training part)."""
    from agents import ALSPolicy, BuyAgainPolicy, CosinePolicy, ItemKNNPolicy, PopularityPolicy, RandomPolicy

    signal = {"purchase": "purchase", "cart": "cart", "click": "click"}[target]
    makers = {"buy_again": lambda: BuyAgainPolicy(target=signal),
              "popularity": lambda: PopularityPolicy(metric="count", target=signal),
              "item_knn": lambda: ItemKNNPolicy(), "als": lambda: ALSPolicy(),
              "cosine": lambda: CosinePolicy(), "random": lambda: RandomPolicy(seed=0)}
    if name not in makers:
        raise ConfigError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return makers[name]()


def ranking_metrics(ranked: np.ndarray, targets: sp.csr_array, k: int) -> dict[str, np.ndarray]:
    """Per-shopper HR, recall, NDCG and MRR at ``k`` (module docstring) of (B, K') ranked item indices."""
    dense = targets.toarray() > 0  # (B, n_items)
    hits = np.take_along_axis(dense, ranked[:, :k], axis=1).astype(np.float64)  # (B, k)
    size = dense.sum(axis=1).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(size, k).astype(np.int64) - 1]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {"hr": hits.any(axis=1).astype(np.float64), "recall": hits.sum(axis=1) / size,
            "ndcg": (hits * discount).sum(axis=1) / ideal, "mrr": 1.0 / first}


@dataclass
class OfflineResult:
    """Per policy and metric: the per-shopper values; plus fit and ranking times and the bootstrap."""

    k: int
    per_user: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def table(self, resamples: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
        """Mean and percentile-bootstrap interval of every metric per policy, best NDCG first.

        Also the paired NDCG difference against the best policy; every interval on the same resamples of
        shoppers.
        """
        names = list(self.per_user)
        if not names:
            return pd.DataFrame()
        n = len(next(iter(self.per_user.values()))["hr"])
        idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
        rows = []
        best = max(names, key=lambda p: self.per_user[p]["ndcg"].mean())
        for name in names:
            row: dict[str, Any] = {"policy": name}
            for metric in METRICS:
                values = self.per_user[name][metric]
                boot = values[idx].mean(axis=1)
                row[metric] = values.mean()
                row[f"{metric}_low"], row[f"{metric}_high"] = np.percentile(boot, [lo, hi])
            diff = self.per_user[name]["ndcg"] - self.per_user[best]["ndcg"]
            boot = diff[idx].mean(axis=1)
            row["ndcg_vs_best"] = diff.mean()
            row["ndcg_vs_best_low"], row["ndcg_vs_best_high"] = np.percentile(boot, [lo, hi])
            row["seconds"] = self.seconds.get(name, np.nan)
            rows.append(row)
        return pd.DataFrame(rows).sort_values("ndcg", ascending=False, kind="stable").reset_index(drop=True)


def _contexts(split: NextItemSplit, item_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_eval, d) profiles and (n_eval, H) histories of the evaluated shoppers."""
    table = split.table
    everyone = table.profiles(np.arange(len(table.user_ids)), item_vecs)
    default = population_default(l2_normalize(everyone.sum), everyone.is_cold, item_vecs)
    profile = vector(table.profiles(split.users, item_vecs), default)
    return profile.astype(np.float32), table.history[split.users].astype(np.int64)


def evaluate_offline(split: NextItemSplit, encoder: TextEncoder | ItemEncoder, *, policies: Sequence[str] = POLICIES,
                     target: str = "purchase", k: int = 10, batch_size: int | None = None, seed: int = 0,
                     progress: bool | None = None) -> OfflineResult:
    """Fit every policy on ``split.train`` and measure its ranking of the whole catalog (module docstring).

    A policy that cannot be fitted on this log (e.g. too few interactions) gets an error entry, not a crash.
    """
    from agents.base import RankingContext
    from envs.space import ItemSpace

    check_int(k, "k", min_value=1)
    item_index = split.train.item_index()
    n_items = len(item_index)
    if k > n_items:
        raise ConfigError(f"--k {k} is larger than the catalog ({n_items} items)")
    space = ItemSpace.build(split.train.items, encoder, show_progress=progress)
    item_vecs = space.item_vecs.astype(np.float32)
    profile, history = _contexts(split, item_vecs)
    n, d = len(split.users), item_vecs.shape[1]
    size = batch_size or max(1, min(n, int(64e6 // max(n_items * max(d, 8), 1))))
    result = OfflineResult(k)
    pop = np.zeros(n_items, dtype=np.float32)
    rng = np.random.default_rng(seed)
    for name in policies:
        started = time.perf_counter()
        policy = build_policy(name, target)
        fit = getattr(policy, "fit", None)
        try:
            if callable(fit):
                fit(split.train, item_index, split.table.user_ids)
        except (ConfigError, DataFormatError, ValueError) as exc:
            result.errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        values: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
        for start in tqdm(range(0, n, size), disable=not progress, desc=name, unit="batch", leave=False):
            rows = np.arange(start, min(start + size, n))
            b = len(rows)
            cands = np.broadcast_to(np.arange(n_items, dtype=np.int64), (b, n_items))
            ctx = RankingContext(
                user=profile[rows], query=np.zeros((b, d), np.float32), is_search=np.zeros(b, bool),
                candidates=cands, candidate_vecs=np.broadcast_to(item_vecs, (b, n_items, d)),
                user_ids=split.users[rows], history=history[rows],
                extra=np.broadcast_to(np.stack([np.zeros(n_items, np.float32), pop], axis=1), (b, n_items, 2)))
            if name == "random":
                ranked = policy.rank(ctx, k, rng).slots
            else:
                ranked = topk(np.asarray(policy.score(ctx), dtype=np.float64), k)
            for metric, value in ranking_metrics(ranked, split.targets[rows], k).items():
                values[metric].append(value)
        result.per_user[name] = {m: np.concatenate(v) for m, v in values.items()}
        result.seconds[name] = time.perf_counter() - started
    return result


__all__ = ["METRICS", "POLICIES", "TARGETS", "NextItemSplit", "OfflineResult", "build_policy", "evaluate_offline",
           "next_item_split", "ranking_metrics"]
