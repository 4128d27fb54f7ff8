"""Offline ranking evaluation over the whole catalog: every policy's time against the bare full-catalog floor.

A purchase-only log is generated with U shoppers and I items (each shopper buys from a few favourite
categories, re-buying half the time; 30 purchases each on average, the last 20% of requests held out), and
``shopgym.app.evaluate`` ranks the whole catalog for every held-out shopper with every policy (HR/recall/NDCG/MRR
@10 with 1,000 bootstrap resamples). The reference, measured in the same run, is the floor of any such
evaluation: one dense float32 score matrix (shoppers x items, from a GEMM of random 64-d factors) and its top 10
per shopper, in the same batches.

Reported per policy: seconds and the ratio to the floor; and the whole evaluation's wall time.

Usage:
    python benchmarks/bench_evaluate.py [--users 4000] [--items 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shopgym.data import LoggedData  # noqa: E402


def purchase_log(n_users: int, n_items: int, per_user: int, seed: int) -> LoggedData:
    """A purchase-only log (vectorised; see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_categories = 40
    category = rng.integers(0, n_categories, n_items)
    by_category = [np.flatnonzero(category == c) for c in range(n_categories)]
    words = np.array(["mug", "lamp", "candle", "basket", "bag", "card", "frame", "clock"])
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)],
                          "text": [f"{words[c % 8]} set {c} style {j % 17}" for j, c in enumerate(category)],
                          "price": np.round(rng.lognormal(1.0, 0.8, n_items), 2)})
    favourite = rng.integers(0, n_categories, (n_users, 3))
    n = n_users * per_user
    user = np.repeat(np.arange(n_users), per_user)
    pick = favourite[user, rng.integers(0, 3, n)]
    sizes = np.array([max(len(b), 1) for b in by_category])
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    flat = np.concatenate([b if len(b) else np.zeros(1, np.int64) for b in by_category])
    item = flat[offsets[pick] + rng.integers(0, 1 << 30, n) % sizes[pick]]
    # re-buy half the time: an earlier purchase of the same shopper
    position = np.tile(np.arange(per_user), n_users)
    again = (rng.random(n) < 0.5) & (position > 0)
    earlier = np.flatnonzero(again)
    item[earlier] = item[earlier - 1 - (rng.integers(0, 1 << 30, len(earlier)) % position[earlier])]
    day = np.sort(rng.uniform(0, 365, (n_users, per_user)), axis=1).reshape(-1)
    inter = pd.DataFrame({"request_id": np.arange(n), "user_id": [f"u{u}" for u in user],
                          "item_id": [f"i{j}" for j in item],
                          "timestamp": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(day, unit="D"),
                          "position": 1, "clicked": 1, "purchased": 1})
    return LoggedData.from_frames(items, inter, name=f"bench-{n_users}x{n_items}")


def floor_seconds(n_users: int, n_items: int, batch: int, seed: int) -> float:
    """The bare floor: a dense (users x items) float32 score matrix by GEMM and its top 10, in batches."""
    from shopgym.numeric import topk

    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, 64)).astype(np.float32)
    items = rng.standard_normal((n_items, 64)).astype(np.float32)
    started = time.perf_counter()
    for start in range(0, n_users, batch):
        topk(users[start:start + batch] @ items.T, 10)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from encoders.hashing import HashingEncoder
    from shopgym.app.evaluate import evaluate_offline, next_item_split

    logs = purchase_log(args.users, args.items, args.per_user, args.seed)
    started = time.perf_counter()
    split = next_item_split(logs, target="purchase", test_fraction=0.2)
    result = evaluate_offline(split, HashingEncoder(dim=256, seed=0), k=10, seed=args.seed)
    table = result.table(resamples=1000, seed=args.seed)
    total = time.perf_counter() - started
    n_eval = len(split.users)
    floor = floor_seconds(n_eval, args.items, max(1, min(n_eval, int(64e6 // (args.items * 256)))), args.seed)
    print(f"# offline evaluation: {n_eval:,} held-out shoppers x {args.items:,} items ({len(logs.interactions):,} "
          f"purchases), whole catalog ranked, HR/recall/NDCG/MRR@10 with 1,000 resamples")
    print(f"floor (dense GEMM scores + top 10, same batches): {floor:.3f} s")
    print("| policy | seconds | x floor | HR@10 |")
    print("|---|---|---|---|")
    for row in table.itertuples():
        seconds = result.seconds[row.policy]
        print(f"| {row.policy} | {seconds:.2f} | {seconds / floor:.1f} | {row.hr:.3f} |")
    print(f"whole evaluation (split, fits, rankings, metrics, bootstrap): {total:.1f} s")


if __name__ == "__main__":
    main()
