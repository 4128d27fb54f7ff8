"""Coverage study: do the 95% intervals of IPS, DR and SNIPS cover a known truth 95% of the time?

Each replication draws a fresh log from a data-generating process (DGP) whose evaluation-policy
value is known exactly, cross-fits the reward model, and computes the estimates with their
bootstrap and normal intervals (all estimators on the same resamples). Over the replications the
script reports, per estimator and interval method: coverage (with its binomial standard error),
mean interval width, mean error +- its standard error, and RMSE; then the acceptance checks of
issue 6 (coverage of IPS and DR bootstrap intervals in [0.90, 0.98]; |mean error of IPS| within
one and two standard errors; RMSE(DR) <= RMSE(IPS)).

The DGP is pluggable: any callable ``dgp(n_rounds, rng) -> Replication`` (a log, the evaluation
policy's ``action_dist``, the exact ``true_value``, and optionally a ``q_hat`` the DGP wants to
supply). The built-in one is :class:`ope.SyntheticBandit` (10 actions, 5-d contexts, logistic
rewards, softmax policies; exact truth over a finite context population). Swap in another with
``--dgp package.module:callable``.

Run:  python benchmarks/ope_coverage.py                      (300 replications, 2,000 resamples; ~1-2 min)
      python benchmarks/ope_coverage.py --n-resamples 10000  (the library default; slower)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ope  # noqa: E402


@dataclass(frozen=True)
class Replication:
    """What a DGP returns for one replication.

    Attributes:
        log: the logged data (with propensities).
        action_dist: (n_rounds, n_actions[, n_positions]) the evaluation policy.
        true_value: the evaluation policy's exact value.
        q_hat: reward-model predictions to use instead of cross-fitting, or None.
    """

    log: ope.BanditLog
    action_dist: np.ndarray
    true_value: float
    q_hat: np.ndarray | None = None


DGP = Callable[[int, np.random.Generator], Replication]


def synthetic_bandit_dgp(n_rounds: int, rng: np.random.Generator, *, target_beta: float = 2.0,
                         logging_beta: float = 0.5, seed: int = 0) -> Replication:
    """The built-in DGP: :class:`ope.SyntheticBandit` with 10 actions and 5-d contexts."""
    world = ope.SyntheticBandit(n_actions=10, dim_context=5, logging_beta=logging_beta, target_beta=target_beta,
                                seed=seed)
    s = world.sample(n_rounds, rng)
    return Replication(s.log, s.action_dist, s.true_value)


ESTIMATORS: dict[str, ope.BanditEstimator] = {
    "ips": ope.IPS(), "dr": ope.DoublyRobust(), "snips": ope.SelfNormalizedIPS(), "sndr": ope.SelfNormalizedDR(),
    "switch_dr": ope.SwitchDR(), "dr_os": ope.DoublyRobustWithShrinkage(), "clipped_ips": ope.ClippedIPS(),
    "dm": ope.DirectMethod(),
}


def one_replication(rep: int, *, dgp: DGP, n_rounds: int, names: Sequence[str], n_resamples: int, alpha: float,
                    seed: int, reward_model: ope.RewardModel | None) -> list[dict[str, float | str | int]]:
    """Run one replication; one row per (estimator, interval method)."""
    rng = np.random.default_rng([seed, rep])
    data = dgp(n_rounds, rng)
    q_hat = data.q_hat
    if q_hat is None and any(ESTIMATORS[n].needs_reward_model for n in names):
        q_hat = ope.cross_fit_q_hat(data.log, reward_model, n_folds=3, seed=rep)
    report = ope.evaluate_bandit(
        data.log, action_dist=data.action_dist, q_hat=q_hat, estimators=[ESTIMATORS[n] for n in names],
        n_resamples=n_resamples, alpha=alpha, seed=rep, n_jobs=1, warn=False)
    rows: list[dict[str, float | str | int]] = []
    for r in report.results:
        for ci in r.intervals:
            rows.append({"rep": rep, "estimator": r.estimator, "method": ci.method, "estimate": r.value,
                         "truth": data.true_value, "low": ci.low, "high": ci.high,
                         "covered": float(ci.contains(data.true_value))})
    return rows


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Coverage, width, error and RMSE per (estimator, method)."""
    frame = frame.assign(error=frame["estimate"] - frame["truth"], width=frame["high"] - frame["low"])
    g = frame.groupby(["estimator", "method"], sort=False)
    out = pd.DataFrame({
        "replications": g.size(),
        "coverage": g["covered"].mean(),
        "mean_width": g["width"].mean(),
        "mean_error": g["error"].mean(),
        "rmse": g["error"].apply(lambda e: float(np.sqrt(np.mean(e**2)))),
    })
    out["coverage_se"] = np.sqrt(out["coverage"] * (1 - out["coverage"]) / out["replications"])
    out["error_se"] = g["error"].std(ddof=1) / np.sqrt(out["replications"])
    return out[["replications", "coverage", "coverage_se", "mean_width", "mean_error", "error_se", "rmse"]]


def acceptance(summary: pd.DataFrame) -> list[str]:
    """The issue's acceptance checks, as PASS/FAIL lines."""
    lines = []
    for name in ("ips", "dr"):
        if (name, "bootstrap") in summary.index:
            cov = summary.loc[(name, "bootstrap"), "coverage"]
            verdict = "PASS" if 0.90 <= cov <= 0.98 else "FAIL"
            lines.append(f"{verdict}: {name} bootstrap coverage {cov:.3f} in [0.90, 0.98]")
    if ("ips", "bootstrap") in summary.index:
        err, se = summary.loc[("ips", "bootstrap"), ["mean_error", "error_se"]]
        z = abs(err) / se
        lines.append(f"{'PASS' if z <= 1 else 'FAIL'}: ips |mean error| {abs(err):.5f} within 1 SE ({se:.5f}); "
                     f"z = {z:.2f} ({'within' if z <= 2 else 'outside'} 2 SE)")
    if ("ips", "bootstrap") in summary.index and ("dr", "bootstrap") in summary.index:
        r_ips, r_dr = summary.loc[("ips", "bootstrap"), "rmse"], summary.loc[("dr", "bootstrap"), "rmse"]
        lines.append(f"{'PASS' if r_dr <= r_ips else 'FAIL'}: RMSE dr {r_dr:.5f} <= ips {r_ips:.5f}")
    return lines


def run_study(dgp: DGP, *, n_rounds: int = 2000, n_replications: int = 300, n_resamples: int = 2000,
              alpha: float = 0.05, names: Sequence[str] = ("ips", "dr", "snips"), seed: int = 0, workers: int = 1,
              reward_model: ope.RewardModel | None = None) -> pd.DataFrame:
    """Run every replication (in ``workers`` processes) and return the per-replication rows."""
    task = partial(one_replication, dgp=dgp, n_rounds=n_rounds, names=names, n_resamples=n_resamples, alpha=alpha,
                   seed=seed, reward_model=reward_model)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            chunks = list(pool.map(task, range(n_replications), chunksize=8))
    else:
        chunks = [task(rep) for rep in range(n_replications)]
    return pd.DataFrame([row for rows in chunks for row in rows])


def load_dgp(spec: str) -> DGP:
    """Import ``package.module:callable``."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--dgp must look like package.module:callable; got {spec!r}")
    fn = getattr(importlib.import_module(module), attr)
    return fn  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dgp", default=None, help="package.module:callable(n_rounds, rng) -> Replication")
    parser.add_argument("--n-rounds", type=int, default=2000)
    parser.add_argument("--replications", type=int, default=300)
    parser.add_argument("--n-resamples", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--target-beta", type=float, default=2.0, help="built-in DGP: greediness of the target")
    parser.add_argument("--estimators", default="ips,dr,snips")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=None, help="write the per-replication rows here")
    args = parser.parse_args()

    dgp = load_dgp(args.dgp) if args.dgp else partial(synthetic_bandit_dgp, target_beta=args.target_beta)
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ESTIMATORS))
    if unknown:
        raise SystemExit(f"unknown estimators {unknown}; choose from {sorted(ESTIMATORS)}")
    t0 = time.perf_counter()
    rows = run_study(dgp, n_rounds=args.n_rounds, n_replications=args.replications, n_resamples=args.n_resamples,
                     alpha=args.alpha, names=names, seed=args.seed, workers=args.workers)
    seconds = time.perf_counter() - t0
    if args.csv:
        rows.to_csv(args.csv, index=False)
    summary = summarise(rows)
    truth = rows["truth"].iloc[0]
    print(f"# coverage study: dgp={args.dgp or f'SyntheticBandit(target_beta={args.target_beta})'} "
          f"n_rounds={args.n_rounds} replications={args.replications} n_resamples={args.n_resamples} "
          f"alpha={args.alpha} seed={args.seed} truth={truth:.5f} ({seconds:.0f} s)")
    with pd.option_context("display.width", 160, "display.float_format", "{:.5f}".format):
        print(summary.to_string())
    for line in acceptance(summary):
        print(line)


if __name__ == "__main__":
    main()
