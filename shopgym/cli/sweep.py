"""``shopgym sweep``: a sweep folder's leaderboard (``report``) and a hyperparameter search (``tune``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``sweep`` and its subcommands."""
    sweep = commands.add_parser("sweep", help="sweeps: the leaderboard of a sweep folder",
                                description="Work with the folder of a sweep (`shopgym compare sweep=NAME`, "
                                "`shopgym compare -m KEY=V1,V2 ...`).")
    sub = sweep.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)
    report = sub.add_parser(
        "report", help="one table across the sweep's jobs (leaderboard.md, .csv, .png, best.json)",
        description="Rank every (configuration, agent) of a sweep folder by a metric: mean and 95% interval over "
        "all the seeds of a configuration (jobs that differ only in `seeds` are pooled), with the keys the sweep "
        "varied, the run time and the folder of the best seed's trained agent; list failed jobs with their error "
        "and unfinished ones with the last line of their log. Writes leaderboard.md, leaderboard.csv, "
        "leaderboard.png and best.json into the folder. A sweep writes it by itself when it ends; this command "
        "redoes it on demand (mid-sweep, or with another metric).")
    report.add_argument("folder", type=Path, help="the sweep folder (hydra.sweep.dir, e.g. multirun/sweep/NAME)")
    report.add_argument("--metric", default="cumulative_reward",
                        help="a column of the jobs' runs.csv: cumulative_reward (default), true_cumulative_reward "
                        "(built-in world), final_reward, ctr, purchase_rate, ndcg, coverage, diversity, "
                        "cumulative_regret or seconds (the last two rank lower first)")
    report.add_argument("--agent", default=None, help="rank only this agent (default: every agent of every job)")
    report.set_defaults(handler=_report)
    tune = sub.add_parser(
        "tune", help="search a large space: Optuna's sampler with ASHA early stopping, on Ray Tune",
        description="Search hyperparameters of one agent with Ray Tune: Optuna's TPE sampler proposes each trial, "
        "ASHA stops trials whose learning curve (mean page reward so far) is behind at a rung. Each trial is a "
        "`shopgym compare` job of one agent (only=[NAME]) written like a sweep job, so the leaderboard, the "
        "trained agents and the TensorBoard hparams view work the same. The search space is Hydra's sweep syntax: "
        "a sweep config (sweep=NAME: its hydra.sweeper.params) or swept overrides, e.g. "
        "'agents.linucb.alpha=tag(log,interval(0.01,5))' (log-uniform), 'agents.linucb.reg=interval(0.1,10)' "
        "(uniform), 'agents.linucb.proj_dim=32,64,128' (a choice). Started again with the same --dir, an "
        "interrupted search resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tune.add_argument("overrides", nargs="+", metavar="OVERRIDE",
                      help="shopgym compare overrides (KEY=VALUE, sweep=NAME); the swept ones are the search space")
    tune.add_argument("--samples", type=int, default=20, help="trials to run")
    tune.add_argument("--concurrent", type=int, default=None,
                      help="trials at once (default: one per CPU of this machine; 1 is reproducible: every trial "
                      "sees all the earlier ones)")
    tune.add_argument("--seed", type=int, default=0, help="Optuna's sampler seed")
    tune.add_argument("--grace", type=int, default=None,
                      help="pages (steps) a trial runs before ASHA may stop it (default: a quarter of the steps)")
    tune.add_argument("--reduction", type=int, default=3, help="ASHA's reduction factor: keep the best 1/N at a rung")
    tune.add_argument("--dir", type=Path, default=None,
                      help="the sweep folder (default: multirun/tune/<sweep name, else 'search'>)")
    tune.add_argument("--address", default=None,
                      help="a Ray cluster to run on, HOST:PORT (default: RAY_ADDRESS if set, else a local Ray)")
    tune.set_defaults(handler=_tune)


def _report(args: argparse.Namespace) -> int:
    from shopgym.app.leaderboard import leaderboard, read_sweep, write_leaderboard

    jobs = read_sweep(args.folder)
    table = leaderboard(jobs, args.metric, args.agent)
    print(write_leaderboard(table, jobs, args.metric, args.folder))
    print(f"wrote {args.folder / 'leaderboard.md'}, leaderboard.csv, leaderboard.png, best.json")
    return 0


def _tune(args: argparse.Namespace) -> int:
    import os

    from shopgym.app.tune import tune_sweep

    name = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("sweep=")), "search")
    folder = args.dir or Path("multirun") / "tune" / name
    concurrent = args.concurrent or len(os.sched_getaffinity(0))
    tune_sweep(args.overrides, folder, samples=args.samples, concurrent=concurrent, seed=args.seed,
               grace=args.grace, reduction=args.reduction, address=args.address)
    return 0
