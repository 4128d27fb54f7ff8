"""OBD study: estimate one logging policy's CTR from the other policy's logs, on the Open Bandit Dataset sample.

The Open Bandit Dataset was collected in an A/B test: the same week of ZOZOTOWN traffic was served
by a uniform-random policy and by Bernoulli Thompson Sampling (BTS), each log recording its true
propensities. So each policy's on-policy CTR is a ground truth for off-policy estimates computed
from the *other* policy's log. Protocol (as in obp's ``examples/obd/evaluate_off_policy_estimators.py``):

* behaviour log = one policy's log; each row (an impression of one item at one of 3 positions)
  is a round; context = one-hot user features; ground truth = the other log's mean click;
* 20 runs: resample the behaviour log with replacement (seed = run), cross-fit the reward model
  (3 folds), estimate, and record the relative error |V_hat - V| / V; report mean and std;
* obp's published figures for BTS evaluated on the random log, campaign "all", small sample:
  DM 0.180 +- 0.115, IPW 0.333 +- 0.350, DR 0.304 +- 0.348 (logistic-regression reward model).

What we do differently from obp (see docs/notes/ope-validation.md):

* the BTS evaluation policy. obp simulates BTS from its stored ZOZOTOWN Beta prior, which gives one
  fixed, context-free distribution per (item, position). We do not use obp's prior files. The
  BTS log records its own propensities, but they are not stable: they drift within hours as the
  production posterior was updated (checked and printed below). We therefore reconstruct the
  policy from the BTS log's recorded propensities: for each (item, position), linear interpolation
  in time of the recorded propensities, renormalised over items per position. This gives a
  **time-matched** policy: random-log round i is evaluated with the BTS distribution in force at its
  timestamp, which is the policy whose on-policy CTR is the ground truth. This was chosen before any
  estimate was compared with the truth (primary). As a sensitivity check, and as the analogue of obp's
  fixed distribution, the **time-averaged** policy uses the BTS log's empirical (item, position)
  frequencies. Neither uses a single click from the BTS log.
* the random policy (reverse direction) is exactly uniform: 1/n_items at every position.
* reward models: an L2 logistic regression on [user one-hot, item one-hot, position one-hot]
  (like obp's logistic model) and per-(item, position) shrunk means; estimators beyond DM/IPW/DR
  are reported too, plus the naive "no correction" baseline (the behaviour log's own CTR).

Run:  python benchmarks/ope_obd.py                  (3 campaigns x 3 settings x 20 runs; a few minutes)
      python benchmarks/ope_obd.py --runs 5 --campaigns all --markdown out.md
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ope  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "obd"
CAMPAIGNS = ("all", "men", "women")
OBP_PUBLISHED = {"dm (logit)": (0.180288, 0.114694), "ips": (0.333113, 0.350425), "dr (logit)": (0.304401, 0.347842)}


@dataclass(frozen=True)
class Campaign:
    """One OBD log: the bandit log sorted by time, timestamps in seconds, and the item ids."""

    log: ope.BanditLog
    seconds: np.ndarray
    item_ids: tuple[str, ...]


def load_campaign(root: Path, policy: str, campaign: str) -> Campaign:
    """Read one campaign through the shopgym OBD adapter (pandas fallback if the adapter is absent)."""
    folder = root / policy / campaign
    try:
        from shopgym.adapters.obd import load_obd
    except ImportError:  # the adapter is optional for this script
        load_obd = None
    if load_obd is not None:
        data = load_obd(folder)
        log = ope.bandit_log_from_logged(data, context_columns=[f"user_feature_{i}" for i in range(4)])
        seconds = data.interactions["timestamp"].astype("int64").to_numpy() / 1e9
        return Campaign(log, seconds, tuple(data.items["item_id"].astype(str)))
    frame = pd.read_csv(folder / f"{campaign}.csv.gz", index_col=0)
    frame = frame.sort_values("timestamp", kind="stable")
    items = pd.read_csv(folder / "item_context.csv", index_col=0)["item_id"].astype(str)
    log = ope.BanditLog(
        reward=frame["click"].to_numpy(dtype=float),
        action=pd.Index(items).get_indexer(frame["item_id"].astype(str)),
        n_actions=len(items), pscore=frame["propensity_score"].to_numpy(dtype=float),
        position=frame["position"].to_numpy() - 1, n_positions=3,
        context=pd.get_dummies(frame.filter(like="user_feature").astype(str), dtype=float).to_numpy())
    seconds = pd.to_datetime(frame["timestamp"], utc=True).astype("int64").to_numpy() / 1e9
    return Campaign(log, seconds, tuple(items))


# ---------------------------------------------------------------- the BTS policy, reconstructed from its log
def _cells(bts: Campaign) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (item-position cell, time): cell ids, times, propensities, and cell start offsets."""
    k = int(bts.log.n_positions or 0)
    assert bts.log.position is not None and bts.log.pscore is not None
    cell = bts.log.action * k + bts.log.position
    order = np.lexsort((bts.seconds, cell))
    cells = cell[order]
    bounds = np.searchsorted(cells, np.arange(bts.log.n_actions * k + 1))
    return cells, bts.seconds[order], bts.log.pscore[order], bounds


def bts_time_matched(bts: Campaign, query_seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_query, n_items, 3) BTS distribution at each query time, and (n_query, 3) mass before renormalising.

    Per (item, position) cell, the recorded propensities are linearly interpolated in time (constant
    beyond the first and last record; 0 for a cell BTS never showed in the sample), then each
    position's distribution over items is renormalised to sum to 1.
    """
    a, k = bts.log.n_actions, int(bts.log.n_positions or 0)
    _, times, probs, bounds = _cells(bts)
    out = np.zeros((query_seconds.shape[0], a, k))
    for c in range(a * k):  # a loop over the item-position cells, each vectorised over all query rounds
        lo, hi = bounds[c], bounds[c + 1]
        if hi > lo:
            out[:, c // k, c % k] = np.interp(query_seconds, times[lo:hi], probs[lo:hi])
    mass = out.sum(axis=1)
    return out / mass[:, None, :], mass


def bts_time_averaged(bts: Campaign) -> np.ndarray:
    """(n_items, 3) empirical frequency of each item at each position in the BTS log."""
    a, k = bts.log.n_actions, int(bts.log.n_positions or 0)
    assert bts.log.position is not None
    counts = np.bincount(bts.log.action * k + bts.log.position, minlength=a * k).reshape(a, k)
    return counts / counts.sum(axis=0, keepdims=True)


def propensity_stability(bts: Campaign) -> dict[str, float]:
    """How much the recorded BTS propensities drift, and how well time interpolation recovers them.

    Returns the median (over cells with >= 10 records) coefficient of variation of a cell's
    propensities, and the median |log(predicted / recorded)| when each record is predicted by linear
    interpolation between its two time-neighbours in the same cell (leave-one-out).
    """
    cells, times, probs, bounds = _cells(bts)
    sizes = np.diff(bounds)
    cell_mean = np.bincount(cells, weights=probs, minlength=sizes.size) / np.maximum(sizes, 1)
    cell_sq = np.bincount(cells, weights=probs**2, minlength=sizes.size) / np.maximum(sizes, 1)
    cv = np.sqrt(np.maximum(cell_sq - cell_mean**2, 0)) / np.where(cell_mean > 0, cell_mean, 1)
    inner = (cells[1:-1] == cells[:-2]) & (cells[1:-1] == cells[2:])
    t0, t1, t2 = times[:-2][inner], times[1:-1][inner], times[2:][inner]
    p0, p1, p2 = probs[:-2][inner], probs[1:-1][inner], probs[2:][inner]
    frac = np.where(t2 > t0, (t1 - t0) / np.where(t2 > t0, t2 - t0, 1), 0.5)
    predicted = p0 + frac * (p2 - p0)
    return {"median_cv_within_cell": float(np.median(cv[sizes >= 10])),
            "loo_median_abs_log_ratio": float(np.median(np.abs(np.log(predicted / p1)))),
            "cells_seen": float((sizes > 0).sum()), "cells": float(sizes.size)}


# ---------------------------------------------------------------- the runs
MODEL_FREE = {"ips": ope.IPS(), "snips": ope.SelfNormalizedIPS(), "clipped_ips": ope.ClippedIPS()}
MODEL_BASED = {"dm": ope.DirectMethod(), "dr": ope.DoublyRobust(), "sndr": ope.SelfNormalizedDR(),
               "switch_dr": ope.SwitchDR(), "dr_os": ope.DoublyRobustWithShrinkage()}
REWARD_MODELS: dict[str, ope.RewardModel] = {
    "logit": ope.LinearRewardModel(link="logistic", l2=1.0), "cell": ope.CellMeanModel(prior_strength=10.0)}


def run_setting(behaviour: Campaign, action_dist: np.ndarray, truth: float, runs: int) -> pd.DataFrame:
    """Relative errors of every estimator over ``runs`` bootstrap resamples of the behaviour log."""
    rows = []
    n = behaviour.log.n_rounds
    for run in range(runs):
        idx = np.random.default_rng(run).integers(0, n, n)
        log, dist = behaviour.log.subset(idx), action_dist[idx]
        estimates = {"naive (no correction)": log.logged_mean}
        base = ope.prepare_bandit_inputs(log, action_dist=dist)
        for name, est in MODEL_FREE.items():
            estimates[name] = est.terms(base).value
        for model_name, model in REWARD_MODELS.items():
            q_hat = ope.cross_fit_q_hat(log, model, n_folds=3, seed=run)
            inputs = ope.prepare_bandit_inputs(log, action_dist=dist, q_hat=q_hat)
            for name, est in MODEL_BASED.items():
                estimates[f"{name} ({model_name})"] = est.terms(inputs).value
        for name, value in estimates.items():
            rows.append({"run": run, "estimator": name, "estimate": value, "rel_error": abs(value - truth) / truth})
    return pd.DataFrame(rows)


def consistency_table(behaviour: Campaign, dist: np.ndarray, truth: float, n_truth: int, n_resamples: int) -> str:
    """Full-log estimates with 95% bootstrap intervals, and whether they are consistent with the truth.

    The truth is itself an on-policy mean of ``n_truth`` rounds, so the check uses
    z = (estimate - truth) / sqrt(se_estimate^2 + se_truth^2), se_truth = sqrt(V (1 - V) / n_truth).
    """
    report = ope.evaluate_bandit(
        behaviour.log, action_dist=dist, reward_model=REWARD_MODELS["logit"], n_resamples=n_resamples, seed=0,
        warn=False, estimators=[ope.IPS(), ope.SelfNormalizedIPS(), ope.DoublyRobust(), ope.DirectMethod(),
                                ope.DoublyRobustWithShrinkage()])
    se_truth = np.sqrt(truth * (1 - truth) / n_truth)
    lines = ["| estimator (full log, logit model) | estimate | 95% bootstrap CI | CI covers truth | z vs truth |",
             "|---|---|---|---|---|"]
    for r in report.results:
        ci = r.interval("bootstrap")
        assert ci is not None
        z = (r.value - truth) / np.sqrt(r.se**2 + se_truth**2)
        lines.append(f"| {r.estimator} | {r.value:.5f} | [{ci.low:.5f}, {ci.high:.5f}] | "
                     f"{'yes' if ci.contains(truth) else 'no'} | {z:+.2f} |")
    return "\n".join(lines)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    g = frame.groupby("estimator", sort=False)
    out = pd.DataFrame({"rel_error_mean": g["rel_error"].mean(), "rel_error_std": g["rel_error"].std(ddof=1),
                        "estimate_mean": g["estimate"].mean()})
    return out.sort_values("rel_error_mean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the obd folder (random/, bts/)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--campaigns", default=",".join(CAMPAIGNS))
    parser.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples of the full-log CIs")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"OBD folder not found: {args.root} (pass --root)")
    t_start = time.perf_counter()
    out: list[str] = [f"# OBD study ({args.runs} bootstrap runs per setting)", ""]

    def emit(line: str = "") -> None:
        print(line)
        out.append(line)

    for campaign in [c.strip() for c in args.campaigns.split(",") if c.strip()]:
        random_log = load_campaign(args.root, "random", campaign)
        bts = load_campaign(args.root, "bts", campaign)
        if random_log.item_ids != bts.item_ids:
            raise SystemExit(f"{campaign}: the two logs list different items")
        truth = {"random": random_log.log.logged_mean, "bts": bts.log.logged_mean}
        stab = propensity_stability(bts)
        matched, mass = bts_time_matched(bts, random_log.seconds)
        averaged = bts_time_averaged(bts)
        n, a, k = random_log.log.n_rounds, random_log.log.n_actions, 3
        l1 = np.abs(matched.mean(axis=0) - averaged).sum(axis=0).mean()
        emit(f"## campaign {campaign}")
        emit()
        emit(f"- on-policy CTR: random {truth['random']:.5f} ({int(random_log.log.reward.sum())} clicks), "
             f"BTS {truth['bts']:.5f} ({int(bts.log.reward.sum())} clicks); relative standard error of each "
             f"truth: {np.sqrt((1 - truth['random']) / (truth['random'] * n)):.2f} and "
             f"{np.sqrt((1 - truth['bts']) / (truth['bts'] * n)):.2f}")
        emit(f"- BTS propensities drift: median within-(item, position) coefficient of variation "
             f"{stab['median_cv_within_cell']:.2f}; leave-one-out time interpolation error (median |log ratio|) "
             f"{stab['loo_median_abs_log_ratio']:.3f}; cells seen {stab['cells_seen']:.0f}/{stab['cells']:.0f}")
        emit(f"- time-matched reconstruction: interpolated mass per position before renormalising "
             f"{mass.mean():.2f} (range {mass.min():.2f}-{mass.max():.2f}); its time average differs from the "
             f"empirical frequencies by L1 {l1:.3f} per position")
        settings = [
            ("BTS on random log, time-matched BTS (primary)", random_log, matched, truth["bts"], bts.log.n_rounds),
            ("BTS on random log, time-averaged BTS", random_log, np.broadcast_to(averaged, (n, a, k)), truth["bts"],
             bts.log.n_rounds),
            ("random on BTS log", bts, np.full((bts.log.n_rounds, a, k), 1.0 / a), truth["random"],
             random_log.log.n_rounds),
        ]
        for title, behaviour, dist, value, n_truth in settings:
            diag = ope.diagnose(behaviour.log, action_dist=dist, warn=False)
            summary = summarise(run_setting(behaviour, dist, value, args.runs))
            emit()
            emit(f"### {title}: truth {value:.5f}; ESS {diag.ess_fraction:.1%} of rounds, max weight "
                 f"{diag.max_weight:.3g}, empirical support deficiency {diag.support_deficiency:.2%}")
            emit()
            emit("| estimator | relative error (mean +- std) | mean estimate | obp published (all) |")
            emit("|---|---|---|---|")
            for name, row in summary.iterrows():
                ref = ""
                if campaign == "all" and title.startswith("BTS on random") and name in OBP_PUBLISHED:
                    ref = "{:.3f} +- {:.3f}".format(*OBP_PUBLISHED[str(name)])
                error = f"{row.rel_error_mean:.3f} +- {row.rel_error_std:.3f}"
                emit(f"| {name} | {error} | {row.estimate_mean:.5f} | {ref} |")
            emit()
            emit(consistency_table(behaviour, dist, value, n_truth, args.n_resamples))
        emit()
    emit(f"(total {time.perf_counter() - t_start:.0f} s)")
    if args.markdown:
        args.markdown.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
