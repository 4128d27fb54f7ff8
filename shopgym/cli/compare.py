"""``shopgym compare``: the main job (Hydra), see :mod:`shopgym.app.compare` and ``conf/compare.yaml``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import conf

CONF_DIR = str(Path(conf.__file__).resolve().parent)

HELP = """\
Run every agent online in the simulator over several seeds and compare them: TensorBoard scalars,
results.csv / results.md (mean and 95% CI per agent over seeds), learning_curves.png, and the printed
table, in outputs/compare/<time>/ (the resolved config is saved there too).

Overrides use Hydra syntax (KEY=VALUE), e.g.:
  shopgym compare                                   # default world, every agent, 3 seeds
  shopgym compare experiment=quick                  # a small smoke run
  shopgym compare only=[linucb,lin_ts,random] steps=500 seeds=[0,1,2,3,4]
  shopgym compare backend=fitted                    # shoppers answered by the model fitted on the logs
  shopgym compare backend=fitted fit.class_restarts=1   # ... fitted faster (one EM run, not 3)
  shopgym compare backend=segment                   # the truth as known at segment level (a reference)
  shopgym compare backend=fitted shoppers=logged    # only the shoppers of the training logs (default: all)
  shopgym compare data=obd data.path=../shared/data/obd/random/all
  shopgym compare --multirun agents.linucb.alpha=0.1,0.5,1.0 only=[linucb]   # a sweep
Config groups: world (default, small), env (default, small), data (synthetic, obd, online_retail,
generic), fit (the response model fitted from the logs: conf/fit/default.yaml), agent (one per agent),
experiment (quick, long, revenue). See conf/compare.yaml.
"""


def register(commands: Any) -> None:
    """Add ``compare`` to the top-level subparsers."""
    parser = commands.add_parser("compare", help="the main job: compare online-learning rankers in the simulator",
                                 description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides KEY=VALUE")
    parser.add_argument("--multirun", "-m", action="store_true", help="Hydra multirun (sweep over values)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import hydra
    from omegaconf import DictConfig

    from shopgym.app.compare import compare
    from shopgym.errors import ShopgymError

    failures: list[ShopgymError] = []

    @hydra.main(config_path=CONF_DIR, config_name="compare", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        try:
            compare(cfg, Path(HydraConfig.get().runtime.output_dir))
        except ShopgymError as exc:  # bad input: the CLI prints one clear message (not Hydra's traceback)
            failures.append(exc)

    saved = sys.argv
    sys.argv = ["shopgym-compare", *(["--multirun"] if args.multirun else []), *args.overrides]
    try:
        _main()
    finally:
        sys.argv = saved
    if failures:
        raise failures[0]
    return 0
