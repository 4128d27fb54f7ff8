"""``shopgym sweep report DIR``: the leaderboard of a sweep folder (``shopgym compare -m``, ``shopgym sweep tune``)."""

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


def _report(args: argparse.Namespace) -> int:
    from shopgym.app.leaderboard import leaderboard, read_sweep, write_leaderboard

    jobs = read_sweep(args.folder)
    table = leaderboard(jobs, args.metric, args.agent)
    print(write_leaderboard(table, jobs, args.metric, args.folder))
    print(f"wrote {args.folder / 'leaderboard.md'}, leaderboard.csv, leaderboard.png, best.json")
    return 0
