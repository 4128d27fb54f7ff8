"""``shopgym compare``: the main job as a Hydra app (:mod:`shopgym.app.compare`, ``conf/compare.yaml``).

:func:`main` is a module-level ``@hydra.main`` entry whose body returns the headline metric (the best agent's
simulated cumulative reward), so Hydra's sweepers can optimise it; every Hydra flag works as usual
(``--cfg job``, ``--info``, ``--multirun``, ``--help``). ``shopgym compare ARGS`` calls :func:`dispatch`, which
first composes the config once to turn a bad override into one line (exit 2), then hands ARGS to :func:`main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

import conf
from shopgym.app.config import register_configs
from shopgym.cli import EXIT_INPUT_ERROR
from shopgym.errors import ShopgymError

CONF_DIR = str(Path(conf.__file__).resolve().parent)
#: Hydra flags after which the command line is not a plain run (nothing to pre-check)
_NO_PRECHECK = ("-m", "--multirun", "-h", "--help", "--hydra-help", "-i", "--info", "--shell-completion", "-sc")
#: Hydra flags that add config folders (e.g. a user's own conf/sweep/*.yaml): the pre-check cannot see them
_SEARCH_PATH_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp")
#: Hydra flags that take a value
_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun")

register_configs()


@hydra.main(config_path="pkg://conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run the comparison of ``cfg``; return the best agent's mean cumulative reward in the simulator."""
    return run(cfg)


def run(cfg: DictConfig) -> float:
    """The body of :func:`main`: bad input is one line on stderr and exit status 2.

    A job of a sweep (``--multirun``) runs quietly (the sweep has one progress line,
    :class:`shopgym.app.sweep_progress.SweepProgress`), is skipped when its folder's record says it is done with
    the same config, and is recorded as failed instead of stopping the sweep when it raises
    (:func:`shopgym.app.sweep.run_sweep_job`).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from shopgym.app.compare import compare, headline

    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from shopgym.app.sweep import in_folder, run_sweep_job
        from shopgym.app.sweep_progress import launcher_name

        in_folder(hydra_cfg.runtime.cwd)  # a worker of a Ray or joblib launcher: relative paths as typed
        parallel_launcher = launcher_name(hydra_cfg.launcher) != "basic"
        with open_dict(cfg):
            cfg.progress = False  # speed-only, like jobs: not part of the job's key
            if parallel_launcher and cfg.get("jobs") is None:
                cfg.jobs = 1  # the launcher runs jobs side by side: one process each, not one per CPU each
        return run_sweep_job(cfg, out, list(hydra_cfg.overrides.task),
                             lambda: compare(cfg, out, echo=False), headline)
    try:
        table = compare(cfg, out)
    except ShopgymError as exc:
        print(f"shopgym: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT_ERROR) from None
    return headline(table)


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The config overrides on a ``shopgym compare`` command line (not Hydra's flags, not ``hydra.*`` keys)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and not arg.lstrip("+~").startswith("hydra."):
            out.append(arg)
    return out


def compose_error(overrides: Sequence[str]) -> str | None:
    """One line saying why ``overrides`` do not compose or do not check (wrong type, bad seeds...), else None."""
    from shopgym.app.config import check_run, compose_run

    try:
        check_run(compose_run(list(overrides)))
    except ShopgymError as exc:
        return str(exc)
    return None


def run_dir_of(argv: Sequence[str]) -> Path:
    """The run folder a plain ``shopgym compare ARGS`` will write: ``hydra.run.dir=...``, else the default's parent."""
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "hydra.run.dir":
            return Path(value)
    return Path("outputs/compare")  # conf/compare.yaml: outputs/compare/<time>


def dispatch(argv: Sequence[str]) -> int:
    """``shopgym compare ARGS``: check the overrides and the run folder, then run the Hydra app on ARGS.

    Returns:
        The exit status.
    """
    from shopgym.data.io import check_writable_folder

    argv = list(argv)
    own_configs = any(arg.split("=", 1)[0] in _SEARCH_PATH_FLAGS for arg in argv)  # Hydra composes those itself
    if not own_configs and not any(arg in _NO_PRECHECK for arg in argv):
        problem = compose_error(overrides_of(argv))
        if problem is None and not any(arg.startswith("--cfg") or arg == "-c" for arg in argv):
            try:
                check_writable_folder(run_dir_of(argv), "hydra.run.dir")
            except ShopgymError as exc:
                problem = str(exc)
        if problem is not None:
            print(f"shopgym: error: {problem}", file=sys.stderr)
            return EXIT_INPUT_ERROR
    saved = sys.argv
    sys.argv = ["shopgym compare", *argv]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
        if "shopgym.app.sweep_progress" in sys.modules:
            sys.modules["shopgym.app.sweep_progress"].stop_monitors()
    return 0
