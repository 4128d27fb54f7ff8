"""``shopgym evaluate DATA``: offline ranking metrics of the fittable policies on any log, with intervals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Rank the whole catalog for every shopper with each policy fitted on the earlier part of a log, and measure
how well it finds what the shopper bought (or clicked) later: HR@K, recall@K, NDCG@K and MRR@K, each with a
95% bootstrap interval over shoppers, and every policy's NDCG against the best one's (a paired interval).
Works on purchase-only logs (no impressions, no propensities needed) and on impression logs.

  1. The log is split by time (--test-fraction of the requests, latest first, are the test part), or it
     trains on DATA and tests on --test OTHER (e.g. a later period).
  2. Targets: per shopper, the items with a --target event in the test part; shoppers without a history in
     the training part are left out (counted).
  3. Policies (--policies): buy_again (what the shopper bought before, recency- and frequency-weighted, then
     popular items), popularity, item_knn, als, cosine (item vectors from --encoder and the shopper's
     profile), random. Agents that learn from shown pages (the bandits, PPO) have no offline fit on a log:
     compare them in the simulator (`shopgym compare`).

Outputs: the table on stdout; with --out, results.csv, results.md, report.json and results.png.
"""

EPILOG = """\
examples:
  shopgym evaluate ../shared/data/online_retail/online_retail.csv.gz --format online-retail
  shopgym evaluate data/shop --target click --k 20 --out results/offline
  shopgym evaluate logs/2024 --test logs/2025-q1 --policies buy_again,item_knn,als
"""


def register(commands: Any) -> None:
    """Add ``evaluate``."""
    from shopgym.app.evaluate import POLICIES, TARGETS

    parser = commands.add_parser("evaluate", help="offline ranking metrics (HR/recall/NDCG/MRR@K with intervals) "
                                 "of the policies that can be fitted from a log", description=DESCRIPTION,
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the log: a dataset folder, or with --format a raw OBD folder or "
                        "Online Retail file")
    parser.add_argument("--format", dest="source_format", choices=("folder", "obd", "online-retail"),
                        default="folder", help="how DATA (and --test) is stored (default: %(default)s)")
    parser.add_argument("--test", type=Path, default=None, help="evaluate on this log instead of a time split")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of the requests, latest first, in the test part (default: %(default)s)")
    parser.add_argument("--target", choices=tuple(TARGETS), default="purchase",
                        help="the event a ranking should find (default: %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="cut-off K (default: %(default)s)")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated, from {', '.join(POLICIES)} (default: all)")
    parser.add_argument("--encoder", choices=("hashing", "minilm", "features"), default="hashing",
                        help="item vectors for cosine and the profiles (default: %(default)s; minilm: the packaged "
                        "BERT, cached after the first run)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.csv/.md/.png and report.json")
    parser.set_defaults(handler=_evaluate)


def markdown(table: Any, k: int) -> str:
    """The results table as markdown: mean [95% interval] per metric."""
    def cell(row: Any, metric: str) -> str:
        return f"{row[metric]:.4f} [{row[metric + '_low']:.4f}, {row[metric + '_high']:.4f}]"

    lines = [f"| policy | HR@{k} | recall@{k} | NDCG@{k} | MRR@{k} | NDCG vs best | seconds |",
             "|---|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['policy']} | {cell(row, 'hr')} | {cell(row, 'recall')} | {cell(row, 'ndcg')} | "
                     f"{cell(row, 'mrr')} | {cell(row, 'ndcg_vs_best')} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def plot(table: Any, k: int, path: Path) -> None:
    """NDCG@K and HR@K per policy with their intervals (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from shopgym.data.io import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(table) + 1.8), sharey=True)
    y = np.arange(len(table))
    for ax, metric, label in ((axes[0], "ndcg", f"NDCG@{k}"), (axes[1], "hr", f"HR@{k}")):
        err = [table[metric] - table[f"{metric}_low"], table[f"{metric}_high"] - table[metric]]
        ax.barh(y, table[metric], xerr=err, color="#4c72b0", capsize=3)
        ax.set_xlabel(f"{label} (95% bootstrap interval over shoppers)")
    axes[0].set_yticks(y, table["policy"])
    axes[0].invert_yaxis()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _evaluate(args: argparse.Namespace) -> int:
    import json
    import time

    from envs.build import load_logs, make_encoder
    from shopgym.app.evaluate import POLICIES, evaluate_offline, next_item_split
    from shopgym.data.io import atomic_write, check_writable_folder, write_json
    from shopgym.errors import ConfigError

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown or not policies:
        raise ConfigError(f"--policies: unknown {unknown or 'empty list'}; choose from {', '.join(POLICIES)}")
    if not 0.0 < args.test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.k < 1 or args.resamples < 100:
        raise ConfigError(f"--k must be >= 1 and --resamples >= 100; got {args.k} and {args.resamples}")
    if args.out is not None:
        check_writable_folder(args.out, "--out")
    started = time.perf_counter()
    logs = load_logs(args.source_format, args.data)
    test = load_logs(args.source_format, args.test) if args.test is not None else None
    split = next_item_split(logs, target=args.target, test_fraction=args.test_fraction, test=test)
    result = evaluate_offline(split, make_encoder(args.encoder), policies=policies, target=args.target, k=args.k,
                              progress=None)
    table = result.table(args.resamples, seed=args.seed)
    n_users = len(split.users)
    print(f"## Offline evaluation on {logs.name}: next {args.target}, top {args.k} of {len(split.train.items):,} "
          f"items\n")
    print(markdown(table, args.k))
    print(f"\nshoppers evaluated: {n_users:,} ({split.split}); left out: "
          + ", ".join(f"{v:,} {k}" for k, v in split.left_out.items()))
    print(f"targets per shopper: mean {split.targets.sum() / max(n_users, 1):.1f}; intervals: percentile bootstrap "
          f"over shoppers, {args.resamples:,} resamples, the same for every policy")
    for name, error in result.errors.items():
        print(f"- {name}: not evaluated ({error})")
    print(f"({time.perf_counter() - started:.1f} s)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
        text = markdown(table, args.k) + "\n"
        atomic_write(args.out / "results.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        write_json({"data": str(args.data), "split": split.split, "target": args.target, "k": args.k,
                    "shoppers": n_users, "left_out": split.left_out, "resamples": args.resamples,
                    "seed": args.seed, "encoder": args.encoder, "errors": result.errors,
                    "results": json.loads(table.to_json(orient="records"))}, args.out / "report.json")
        plot(table, args.k, args.out / "results.png")
        print(f"wrote {args.out}/results.csv, results.md, report.json, results.png")
    return 0
