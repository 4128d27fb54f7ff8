"""``shopgym data``: generate, validate, summarise and convert logged datasets."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from shopgym.data import LoggedData
from shopgym.data.io import check_writable_folder
from shopgym.errors import ConfigError


def register(commands: Any) -> None:
    """Add ``data`` and its subcommands to the top-level subparsers."""
    data = commands.add_parser(
        "data", help="generate, validate, summarise and convert logged datasets",
        description="Work with logged datasets in shopgym's format (docs/data-format.md): a folder holding "
        "items.{parquet,csv,csv.gz} and interactions.{parquet,csv,csv.gz}.",
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    gen = sub.add_parser(
        "generate", help="generate logs from the built-in synthetic shop world",
        description="Simulate shoppers of the built-in synthetic shop under its stochastic logging policy and "
        "write the logs (with exact propensities) in the standard format.",
    )
    gen.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    gen.add_argument("--force", action="store_true", help="replace the dataset in an --out folder that is not empty")
    gen.add_argument("--seed", type=int, default=0, help="world and log seed (default: 0)")
    gen.add_argument("--n-items", type=int, default=2000, help="catalog size (default: 2000)")
    gen.add_argument("--n-users", type=int, default=5000, help="number of shoppers (default: 5000)")
    gen.add_argument("--n-slots", type=int, default=200_000, help="shown slots to log (default: 200000)")
    gen.add_argument("--format", dest="fmt", choices=("parquet", "csv", "csv.gz"), default="parquet",
                     help="table format (default: parquet)")
    gen.set_defaults(handler=_generate)

    val = sub.add_parser(
        "validate", help="validate a dataset folder and print its summary",
        description="Load a dataset folder with strict validation. Exit 0 and print the summary if it is valid; "
        "otherwise print what is wrong (file, column, first rows, hint) and exit 2.",
    )
    val.add_argument("path", type=Path, help="dataset folder")
    val.set_defaults(handler=_validate)

    summ = sub.add_parser("summary", help="print a dataset's summary (text or JSON)",
                          description="Rows, requests, users, items, date range, CTR by position, purchase "
                          "rate and share of rows with propensities.")
    summ.add_argument("path", type=Path, help="dataset folder")
    summ.add_argument("--json", action="store_true", help="print JSON instead of text")
    summ.set_defaults(handler=_summary)

    conv = sub.add_parser(
        "convert", help="convert a real log (OBD, UCI Online Retail, generic) to the standard format",
        description="Convert a source log to shopgym's format. Rows dropped on purpose are counted by reason "
        "and printed. See docs/adapters.md.",
        epilog="examples:\n"
        "  shopgym data convert --format obd ../shared/data/obd/random/all --out data/obd-random-all\n"
        "  shopgym data convert --format online-retail ../shared/data/online_retail/online_retail.csv.gz "
        "--out data/retail\n"
        "  shopgym data convert --format generic clicks.csv --items items.csv --map ts=timestamp "
        "--map sku=item_id --out data/mine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conv.add_argument("src", type=Path, help="source: OBD folder, Online Retail CSV, or generic interactions file")
    conv.add_argument("--format", dest="source_format", required=True,
                      choices=("obd", "online-retail", "generic"), help="source format")
    conv.add_argument("--out", required=True, type=Path, help="output folder")
    conv.add_argument("--force", action="store_true", help="replace the dataset in an --out folder that is not empty")
    conv.add_argument("--items", type=Path, default=None, help="generic: items table (optional)")
    conv.add_argument("--map", action="append", default=[], metavar="SRC=STD",
                      help="generic: rename interactions column SRC to standard name STD (repeatable)")
    conv.add_argument("--item-map", action="append", default=[], metavar="SRC=STD",
                      help="generic: rename items column SRC to standard name STD (repeatable)")
    conv.add_argument("--to", dest="fmt", choices=("parquet", "csv", "csv.gz"), default="parquet",
                      help="output table format (default: parquet)")
    conv.set_defaults(handler=_convert)


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding anything, unless ``force`` (before any work).

    Raises:
        ConfigError: naming the folder, what it holds and the way on (``--force`` or another folder).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; choose a folder")
    check_writable_folder(out, "--out")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ConfigError(f"--out {out}: the folder is not empty ({shown}); pass --force to replace the dataset "
                          "in it, or choose another folder")


def _generate(args: argparse.Namespace) -> int:
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs

    check_out(args.out, args.force)
    config = WorldConfig(seed=args.seed, n_items=args.n_items, n_users=args.n_users, n_slots=args.n_slots)
    started = time.perf_counter()
    logs = generate_logs(SyntheticWorld(config), progress=True)
    out = logs.save(args.out, fmt=args.fmt)
    print(f"wrote {len(logs.interactions):,} shown slots to {out} in {time.perf_counter() - started:.1f} s")
    print(logs.summary().to_text())
    return 0


def _validate(args: argparse.Namespace) -> int:
    logs = LoggedData.load(args.path)
    print(f"{args.path}: valid")
    print(logs.summary().to_text())
    for line in logs.drops.lines() if logs.drops.dropped else []:
        print(f"  {line}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    logs = LoggedData.load(args.path)
    summary = logs.summary()
    if args.json:
        print(json.dumps(summary.to_dict() | {"drops": dict(logs.drops.dropped)}, indent=2))
    else:
        print(summary.to_text())
    return 0


def _convert(args: argparse.Namespace) -> int:
    from shopgym.adapters import convert
    from shopgym.adapters.generic import parse_mapping

    check_out(args.out, args.force)
    kwargs: dict[str, Any] = {}
    if args.source_format == "generic":
        kwargs = {
            "items": args.items,
            "mapping": parse_mapping(args.map, option="--map"),
            "item_mapping": parse_mapping(args.item_map, option="--item-map"),
        }
    logs = convert(args.source_format, args.src, **kwargs)
    out = logs.save(args.out, fmt=args.fmt)
    print(f"converted {args.src} ({args.source_format}) -> {out}")
    for line in logs.drops.lines():
        print(f"  {line}")
    print(logs.summary().to_text())
    return 0
