"""The ``shopgym`` command line.

Every subcommand has ``--help``. Errors caused by input (a malformed log, a bad option) print one
clear message and exit with status 2; success exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shopgym.threads import passive_omp_waits

passive_omp_waits()  # before any subcommand imports torch: no spinning threads on a busy machine

from shopgym.cli import data as data_cmd  # noqa: E402
from shopgym.cli import evaluate as evaluate_cmd  # noqa: E402
from shopgym.cli import export as export_cmd  # noqa: E402
from shopgym.cli import fit as fit_cmd  # noqa: E402
from shopgym.cli import ope as ope_cmd  # noqa: E402
from shopgym.cli import serve as serve_cmd  # noqa: E402
from shopgym.cli import simulate as simulate_cmd  # noqa: E402
from shopgym.cli import sweep as sweep_cmd  # noqa: E402
from shopgym.errors import ShopgymError  # noqa: E402

EXIT_INPUT_ERROR = 2

DESCRIPTION = """\
shopgym: a Gymnasium user-behaviour simulator for e-commerce search and recommendation, built from
logged data. Generate or convert logs, validate them, fit a simulator, compare online-learning
rankers, and evaluate policies off-policy.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="shopgym", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # `shopgym compare` is a Hydra app: main() hands its arguments to it before this parser sees them
    commands.add_parser("compare", add_help=False,
                        help="the main job: compare online-learning rankers in the simulator (Hydra; "
                        "`shopgym compare --help`)")
    fit_cmd.register(commands)
    data_cmd.register(commands)
    ope_cmd.register(commands)
    evaluate_cmd.register(commands)
    simulate_cmd.register(commands)
    sweep_cmd.register(commands)
    export_cmd.register(commands)
    serve_cmd.register(commands)
    return parser


def _version() -> str:
    from shopgym import __version__

    return f"shopgym {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (also used as the console script)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from shopgym.cli.compare import dispatch

        return dispatch(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # KEY=VALUE overrides after an option (`fit DATA --out DIR key=value`): argparse does not go back to a
        # positional list it has closed, so take them here for the commands that accept overrides
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status = args.handler(args)
    except ShopgymError as exc:
        print(f"shopgym: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return int(status or 0)


def console() -> None:
    """Entry point of the ``shopgym`` console script."""
    raise SystemExit(main())
