"""``shopgym fit``: fit the user-response model once and save it with its fingerprint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

HELP = """\
Fit the user-response model on the training part of the logs (the earliest 1 - test_fraction of requests)
and save it in MODEL_DIR with a fingerprint of what it was fitted on (content hash of the training rows and
items, the split, the encoder's identity, the fit options). Every command that simulates takes it back:
  shopgym compare model=MODEL_DIR ...     shopgym simulate fidelity DATA --model MODEL_DIR
and refuses it, naming what differs, if it is used with other data, another split or another encoder (pass
the same KEY=VALUE options). The fit is also kept in the fit cache ($SHOPGYM_CACHE/models, default
~/.cache/shopgym/models): the same data and options are never fitted twice.

Examples:
  shopgym fit --out models/world                                  # the built-in world
  shopgym fit --out models/world-quick experiment=quick           # the small world, hashing encoder
  shopgym fit ../shared/data/obd/random/all --format obd --out models/obd
  shopgym fit my_logs --out models/mine fit.class_restarts=1 test_fraction=0.3
"""


def register(commands: Any) -> None:
    """Add ``fit`` to the top-level subparsers."""
    parser = commands.add_parser("fit", help="fit the user-response model once and save it (MODEL_DIR)",
                                 description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=None,
                        help="the logs: a dataset folder in shopgym's format, or with --format a raw OBD folder "
                        "or Online Retail file (default: the built-in synthetic world)")
    parser.add_argument("--format", dest="source_format", choices=("folder", "obd", "online-retail"),
                        default="folder", help="how DATA is stored (default: folder, shopgym's format)")
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write (MODEL_DIR)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides as for `shopgym compare` (e.g. encoder=hashing, fit.steps=500, "
                        "test_fraction=0.3, world.seed=1, experiment=quick)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from omegaconf import OmegaConf

    from envs.build import response_model, simulator_inputs
    from envs.model_store import FIT_CALLS, check_model_target, save_fitted
    from shopgym.app.config import compose_run, data_overrides, simulator_spec
    from shopgym.data.io import check_writable_folder

    data, overrides = args.data, list(args.overrides)
    if data is not None and "=" in str(data) and not data.exists():  # argparse gave the first KEY=VALUE to DATA
        data, overrides = None, [str(args.data), *overrides]
    cfg = compose_run([*data_overrides(data, args.source_format), *overrides, "backend=fitted", "model=null"])
    out = check_model_target(check_writable_folder(args.out, "--out"))  # before any work
    spec = replace(simulator_spec(cfg, progress=True), model=None)
    started = time.perf_counter()
    inputs = simulator_inputs(spec)
    fits = FIT_CALLS["count"]
    model, cached, fingerprint = response_model(inputs, spec)
    reused = FIT_CALLS["count"] == fits
    save_fitted(model, fingerprint, out, extra={"config.yaml": OmegaConf.to_yaml(cfg, resolve=True)})
    seconds = time.perf_counter() - started
    where = "reused the fit cache's model" if reused else "fitted the response model"
    print(f"{where} ({seconds:.1f} s with the logs and item vectors): {fingerprint.train_rows:,} training rows, "
          f"{fingerprint.n_items:,} items, encoder {fingerprint.encoder['identity']}")
    print(f"wrote {out} (fingerprint {fingerprint.key}; cache entry {cached})")
    print(f"use it with the same data and options: shopgym compare ... model={out}, "
          f"shopgym simulate fidelity ... --model {out}")
    return 0
