"""``shopgym sweep report DIR``: the leaderboard of a ``shopgym compare --multirun`` sweep folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``sweep`` and its subcommands."""
    sweep = commands.add_parser("sweep", help="sweeps: the leaderboard of a `shopgym compare -m` folder",
                                description="Work with the folder of a `shopgym compare --multirun` sweep.")
    sub = sweep.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)
    report = sub.add_parser(
        "report", help="one table across the sweep's jobs (leaderboard.md, .csv, .png)",
        description="Rank every finished (job, agent) of a sweep folder by a metric (mean and 95% interval over "
        "the job's seeds), show only the keys the sweep varied, list the unfinished jobs with the last line of "
        "their log, and write leaderboard.md, leaderboard.csv and leaderboard.png into the folder.")
    report.add_argument("folder", type=Path, help="the sweep folder (hydra.sweep.dir, e.g. multirun/compare/<time>)")
    report.add_argument("--metric", default="cumulative_reward",
                        help="a column of the jobs' results.csv (default: cumulative_reward; cumulative_regret "
                        "and seconds rank lower first)")
    report.add_argument("--agent", default=None, help="rank only this agent (default: every agent of every job)")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from shopgym.app.leaderboard import leaderboard, read_sweep, write_leaderboard

    jobs = read_sweep(args.folder)
    table = leaderboard(jobs, args.metric, args.agent)
    print(write_leaderboard(table, jobs, args.metric, args.folder))
    print(f"wrote {args.folder / 'leaderboard.md'}, leaderboard.csv, leaderboard.png")
    return 0
