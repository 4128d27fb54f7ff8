"""Decision and update time per step of every agent, and LinUCB's update against a naive inverse recompute.

Setting (the issue's): N = 100 candidates, d = 384 embedding dims, K = 10 slots, F = 2 extra features,
batches of B = 1 and B = 64 requests, a catalog of 5,000 items. Contexts are random unit vectors; the
feedback is drawn from a hidden position-based click model so that learners update on realistic
click rates (~5%). Every agent first runs ``--warmup`` steps (lazy construction, first factorisations),
then ``--steps`` timed steps; the table gives the median milliseconds per step of ``rank`` and of
``update`` (and per request), and the mean step time, which includes occasional work such as the
neural-linear bandit's retraining (every 5,000 slots, i.e. every ~8 steps at B = 64).

Reference for LinUCB's update, measured in the same run on the same observation stream: the naive
method adds each observation to ``A`` and recomputes ``np.linalg.inv(A)`` (then ``theta = A^-1 b``).
Ours: Sherman-Morrison per observation, or for large batches a rank-m update of ``A`` and one Cholesky
refactorisation ("auto" picks; both are shown). Times are for the ridge update alone and for the whole
``LinUCBRanker.update`` (features, credit, item effects included).

The feature-dimension table motivates the default ``proj_dim = 64`` (feature dim p = 3 + 3 * proj_dim +
F + 1 = 198): the cost of a LinUCB step at B = 64 grows roughly as p^2.

BLAS threads: the script re-executes itself with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` = ``--threads`` (default 1) so that runs are comparable on a busy machine.

Usage::

    python benchmarks/bench_agents.py                 # full run, ~3 minutes on 2 cores
    python benchmarks/bench_agents.py --quick         # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per agent and batch size")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / torch threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, d = 64, N = 20")
    parser.add_argument("--batches", default="1,64,1024", help="comma-separated batch sizes B of the first table")
    parser.add_argument("--only-first", action="store_true", help="print the per-agent table only")
    return parser.parse_args()


def _reexec_with_threads(threads: int) -> None:
    if all(os.environ.get(v) == str(threads) for v in THREAD_VARS):
        return
    env = dict(os.environ) | {v: str(threads) for v in THREAD_VARS}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    args = _parse()
    _reexec_with_threads(args.threads)
    sys.path.insert(0, str(REPO))

    import numpy as np
    import pandas as pd
    import torch

    from agents import (
        ALSPolicy,
        CosinePolicy,
        EpsilonGreedyRanker,
        ItemKNNPolicy,
        LinTSRanker,
        LinUCBRanker,
        NeuralLinearRanker,
        OnlineLogisticRanker,
        PopularityPolicy,
        RandomPolicy,
        RidgeModel,
        slot_credit,
    )
    from agents.base import Feedback, RankingContext, RankingPolicy
    from shopgym.data import LoggedData
    from shopgym.data import schema as S

    torch.set_num_threads(args.threads)
    n_items, n_users, f_extra = 5000, 2000, 2
    n, d, k = (20, 64, 5) if args.quick else (100, 384, 10)
    steps, warmup = (3, 2) if args.quick else (args.steps, args.warmup)
    batches = tuple(int(x) for x in args.batches.split(","))
    rng = np.random.default_rng(0)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    item_vecs = unit(rng.standard_normal((n_items, d)))
    user_vecs = unit(rng.standard_normal((n_users, d)))
    taste = rng.standard_normal(d)
    exam = np.arange(1, k + 1, dtype=np.float64) ** -0.8
    history = rng.integers(0, n_items, (n_users, 20))

    def context(b: int, r: np.random.Generator) -> RankingContext:
        users = r.integers(0, n_users, b)
        cands = np.argpartition(r.random((b, n_items)), n, axis=1)[:, :n]  # distinct per row
        return RankingContext(user_vecs[users], np.where(r.random((b, 1)) < 0.3, unit(r.standard_normal((b, d))), 0.0)
                              .astype(np.float32), r.random(b) < 0.3, cands.astype(np.int64), item_vecs[cands],
                              users.astype(np.int64), history[users], r.random((b, n, f_extra)).astype(np.float32))

    def feedback(ctx: RankingContext, slots: np.ndarray, r: np.random.Generator) -> Feedback:
        items = np.take_along_axis(ctx.candidates, slots, axis=1)
        vecs = item_vecs[items]
        logit = -3.0 + 4.0 * np.einsum("bkd,bd->bk", vecs, ctx.user) + vecs @ taste / np.sqrt(d)
        clicked = (r.random(items.shape) < exam[None, : slots.shape[1]] / (1 + np.exp(-logit))).astype(np.int8)
        zero = np.zeros_like(clicked)
        return Feedback(clicked, zero, zero, clicked.astype(np.float64))

    # logs for the fitted baselines: 20,000 random slates
    n_req = 2000 if args.quick else 20_000
    users = rng.integers(0, n_users, n_req)
    shown = rng.integers(0, n_items, (n_req, k))
    logit = -3.0 + 4.0 * np.einsum("bkd,bd->bk", item_vecs[shown], user_vecs[users])
    clicked = rng.random(shown.shape) < exam[None, :] / (1 + np.exp(-logit))
    item_ids, user_ids = pd.Index([f"i{j}" for j in range(n_items)]), pd.Index([f"u{j}" for j in range(n_users)])
    req = np.repeat(np.arange(n_req), k)
    logs = LoggedData.from_frames(
        pd.DataFrame({S.ITEM_ID: item_ids, S.TEXT: ""}),
        pd.DataFrame({S.REQUEST_ID: req, S.USER_ID: user_ids[users[req]],
                      S.TIMESTAMP: pd.Timestamp("2024-01-01") + pd.to_timedelta(req, "s"),
                      S.POSITION: np.tile(np.arange(1, k + 1), n_req), S.ITEM_ID: item_ids[shown.ravel()],
                      S.CLICKED: clicked.ravel().astype(int)}))

    ex = exam.tolist()
    agents: dict[str, Callable[[], RankingPolicy]] = {
        "random": lambda: RandomPolicy(),
        "popularity": lambda: PopularityPolicy(examination=ex).fit(logs, item_ids),
        "cosine": lambda: CosinePolicy(),
        "item_knn": lambda: ItemKNNPolicy().fit(logs, item_ids),
        "als": lambda: ALSPolicy().fit(logs, item_ids, user_ids),
        "epsilon_greedy": lambda: EpsilonGreedyRanker(examination=ex),
        "linucb": lambda: LinUCBRanker(examination=ex),
        "lin_ts": lambda: LinTSRanker(examination=ex),
        "lin_ts+propensity": lambda: LinTSRanker(examination=ex, estimate_propensity=True),
        "logistic": lambda: OnlineLogisticRanker(examination=ex),
        "neural_linear": lambda: NeuralLinearRanker(examination=ex),
    }

    print(f"N={n} candidates, d={d}, K={k}, F={f_extra}, catalog {n_items}; {args.threads} BLAS/torch thread(s); "
          f"median of {steps} steps after {warmup} warm-up steps")
    print(f"\n{'agent':<18} {'B':>5} {'rank ms':>9} {'update ms':>10} {'step ms':>9} {'us/request':>11} "
          f"{'mean step ms':>13} {'users/s':>9} {'vs B=' + str(batches[0]):>8}")
    for name, make in agents.items():
        first_rate = None
        for b in batches:
            policy = make()
            r = np.random.default_rng(1)
            rank_t, update_t = [], []
            for step in range(warmup + steps):
                ctx = context(b, r)
                t0 = time.perf_counter()
                ranking = policy.rank(ctx, k, r)
                t1 = time.perf_counter()
                fb = feedback(ctx, ranking.slots, r)
                t2 = time.perf_counter()
                policy.update(ctx, ranking, fb)
                t3 = time.perf_counter()
                if step >= warmup:
                    rank_t.append(t1 - t0)
                    update_t.append(t3 - t2)
            rank_ms, update_ms = 1e3 * np.median(rank_t), 1e3 * np.median(update_t)
            mean_ms = 1e3 * (np.mean(rank_t) + np.mean(update_t))  # includes occasional work (retraining)
            rate = 1e3 * b / mean_ms  # users per second, occasional work included
            first_rate = first_rate or rate
            print(f"{name:<18} {b:>5} {rank_ms:>9.2f} {update_ms:>10.2f} {rank_ms + update_ms:>9.2f} "
                  f"{1e3 * (rank_ms + update_ms) / b:>11.1f} {mean_ms:>13.2f} {rate:>9,.0f} "
                  f"{rate / first_rate:>7.2f}x", flush=True)
    if args.only_first:
        return

    # ------------------------------------------------------------------ LinUCB update vs naive inverse
    print("\nLinUCB update: ours vs naive (A += w x x^T; A_inv = np.linalg.inv(A) after every observation)")
    print(f"{'B':>3} {'obs':>5} {'p':>4} {'method':<18} {'ridge ms':>9} {'x naive':>8} {'update() ms':>12} "
          f"{'max |A_inv - naive|':>20}")
    for b in batches[:2]:
        stream_rng = np.random.default_rng(2)
        probe = LinUCBRanker(examination=ex)
        stream = []
        for _ in range(warmup + steps):
            ctx = context(b, stream_rng)
            ranking = probe.rank(ctx, k, stream_rng)
            fb = feedback(ctx, ranking.slots, stream_rng)
            credit = slot_credit(fb, exam, False, "reward")
            x = probe.features(ctx, ranking.slots).reshape(-1, probe.features.n_features)
            stream.append((ctx, ranking, fb, x.astype(np.float64), credit.weight.ravel(), credit.reward.ravel()))
        p = probe.features.n_features

        # naive reference
        a_mat, b_vec = np.eye(p), np.zeros(p)
        naive_t = []
        a_inv = np.eye(p)
        for step, (_, _, _, x, w, r) in enumerate(stream):
            t0 = time.perf_counter()
            for row, wi, ri in zip(x, w, r, strict=True):
                a_mat += wi * np.outer(row, row)
                b_vec += ri * row
                a_inv = np.linalg.inv(a_mat)
            _theta = a_inv @ b_vec
            if step >= warmup:
                naive_t.append(time.perf_counter() - t0)
        naive_ms = 1e3 * np.median(naive_t)
        print(f"{b:>3} {b * k:>5} {p:>4} {'naive inverse':<18} {naive_ms:>9.2f} {1.0:>8.1f} {'':>12} {0.0:>20.1e}")

        for method in ("sherman_morrison", "cholesky", "auto"):
            model = RidgeModel(p, 1.0, method)
            ridge_t = []
            for step, (_, _, _, x, w, r) in enumerate(stream):
                t0 = time.perf_counter()
                model.add(x, w, r)
                if step >= warmup:
                    ridge_t.append(time.perf_counter() - t0)
            policy = LinUCBRanker(examination=ex, update_method=method, item_reg=None)
            update_t = []
            for step, (ctx, ranking, fb, *_rest) in enumerate(stream):
                t0 = time.perf_counter()
                policy.update(ctx, ranking, fb)
                if step >= warmup:
                    update_t.append(time.perf_counter() - t0)
            ridge_ms = 1e3 * np.median(ridge_t)
            gap = float(np.abs(model.A_inv - a_inv).max())
            print(f"{b:>3} {b * k:>5} {p:>4} {method:<18} {ridge_ms:>9.2f} {naive_ms / ridge_ms:>8.1f} "
                  f"{1e3 * np.median(update_t):>12.2f} {gap:>20.1e}", flush=True)

    # ------------------------------------------------------------------ feature dimension
    print("\nLinUCB step (rank + update) by projection dimension, B = 64")
    print(f"{'proj_dim':>8} {'p':>5} {'rank ms':>9} {'update ms':>10}")
    for proj in ((8, 16, None) if args.quick else (32, 64, 128, None)):
        policy = LinUCBRanker(examination=ex, proj_dim=proj)
        r = np.random.default_rng(3)
        rank_t, update_t = [], []
        for step in range(warmup + max(steps // 3, 2)):
            ctx = context(64, r)
            t0 = time.perf_counter()
            ranking = policy.rank(ctx, k, r)
            t1 = time.perf_counter()
            fb = feedback(ctx, ranking.slots, r)
            t2 = time.perf_counter()
            policy.update(ctx, ranking, fb)
            if step >= warmup:
                rank_t.append(t1 - t0)
                update_t.append(time.perf_counter() - t2)
        print(f"{proj!s:>8} {policy.features.n_features:>5} {1e3 * np.median(rank_t):>9.2f} "
              f"{1e3 * np.median(update_t):>10.2f}", flush=True)


if __name__ == "__main__":
    main()
