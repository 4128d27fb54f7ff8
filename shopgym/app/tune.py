r"""A hyperparameter search over a large space: Ray Tune with Optuna's sampler and ASHA's early stopping.

``shopgym sweep tune`` takes the same overrides as ``shopgym compare`` and a search space written in Hydra's
sweep syntax (a ``conf/sweep/*.yaml`` file's ``hydra.sweeper.params``, or sweeps on the command line):

* ``key=a,b,c`` or ``choice(a,b,c)`` and ``range(0,5)``: a categorical choice;
* ``interval(lo,hi)``: uniform floats; ``int(interval(lo,hi))``: uniform integers in [lo, hi];
  ``tag(log,interval(lo,hi))``: log-uniform.

Each trial is one ``shopgym compare`` job of one agent (``only=[NAME]``), run in a Ray worker into
``<folder>/<trial>/`` with the same job record, results, trained agents and hyperparameter events as a Hydra
sweep job (:mod:`shopgym.app.sweep`), so ``shopgym sweep report`` and the leaderboard read both alike.

The objective is the trial's mean page reward, ``reward_per_step`` = cumulative reward / steps, averaged over
the trial's seeds: at the end it is the entry's headline divided by ``steps``. While a trial runs it reports the
mean page reward of the pages run so far every ``log_every`` steps (its learning curve, seeds in order), and
ASHA (asynchronous successive halving) stops the trials whose curve is in the bottom ``1 - 1/reduction``
at a rung (``grace`` pages, then ``grace x reduction``, ...). Optuna's TPE sampler proposes each new trial
from the finished ones (seeded: with one trial at a time the same command gives the same trials).

Why Ray Tune and not Hydra's Optuna sweeper: that plugin pins optuna 2.10, whose storage breaks with
SQLAlchemy 2, and a Hydra sweeper only sees a job's final value, so it cannot stop a hopeless trial early.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopgym.app.sweep import RUNNING, STOPPED, JobRecord, read_record, write_record
from shopgym.errors import ConfigError

#: the metric Tune optimises and ASHA compares (higher is better)
OBJECTIVE = "reward_per_step"
#: the time axis of the learning curves: pages (steps) run so far by the trial, over its seeds in order
TIME_ATTR = "pages"


@dataclass(frozen=True)
class SearchSpace:
    """The overrides of a tune sweep, split into what is searched and what is fixed.

    Attributes:
        params: key -> a Ray Tune domain (``tune.choice`` over the options' override texts, ``tune.uniform``,
            ``tune.loguniform``, ``tune.randint``).
        fixed: the other overrides, as given (``key=value``).
    """

    params: dict[str, Any]
    fixed: tuple[str, ...]


def override_text(value: Any) -> str:
    """A parsed override value as Hydra override text (``[0,1]``, ``true``, ``null``, ``0.5``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def search_space(overrides: Sequence[str], params: dict[str, str] | None = None) -> SearchSpace:
    """Split ``overrides`` (and a sweep config's ``params``; the command line wins) into a Tune search space.

    Raises:
        ConfigError: an override that does not parse, or no searched key at all.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException
    from ray import tune

    texts_in = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(texts_in)
    except HydraException as exc:
        raise ConfigError(f"a search-space override does not parse: {exc}") from None
    by_key: dict[str, Any] = {}
    for override, text in zip(parsed, texts_in, strict=True):
        by_key[override.get_key_element()] = (override, text)
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for key, (override, text) in by_key.items():
        if not override.is_sweep_override():
            fixed.append(text)
            continue
        value = override.value()
        if isinstance(value, IntervalSweep):
            lo, hi = value.start, value.end
            assert lo is not None and hi is not None
            if "log" in value.tags:
                space[key] = tune.loguniform(lo, hi)
            elif isinstance(lo, int) and isinstance(hi, int):
                space[key] = tune.randint(lo, hi + 1)
            else:
                space[key] = tune.uniform(lo, hi)
        elif isinstance(value, (ChoiceSweep, RangeSweep)):
            space[key] = tune.choice([override_text(v) for v in override.sweep_iterator()])
        else:  # a glob: not a search space
            raise ConfigError(f"{text}: not a search space (use a,b,c, choice(...), range(...) or interval(lo,hi))")
    if not space:
        raise ConfigError("no search space: give swept keys, e.g. sweep=linucb_tune or "
                          "'agents.linucb.alpha=tag(log,interval(0.01,5))'")
    return SearchSpace(space, tuple(fixed))


def trial_overrides(space: SearchSpace, sampled: dict[str, Any]) -> list[str]:
    """The overrides of one trial: the fixed ones, then each searched key at its sampled value."""
    return [*space.fixed, *(f"{key}={value}" for key, value in sampled.items())]


def _trial(config: dict[str, Any], *, space: SearchSpace, folder: str, steps_per_report: int, cwd: str) -> None:
    """One trial (in a Ray worker): a ``shopgym compare`` job reporting its learning curve to Tune."""
    from ray import tune

    from shopgym.app.compare import compare, headline
    from shopgym.app.config import compose_run, seed_list
    from shopgym.app.sweep import in_folder, run_sweep_job

    in_folder(cwd)  # Tune starts a trial in its own folder; the user's paths are relative to the launch folder

    overrides = trial_overrides(space, config)
    out = Path(folder) / tune.get_context().get_trial_id()
    cfg = compose_run(overrides)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.jobs, cfg.progress = 1, False  # speed-only: the trial runs its seeds in order, in this process
    steps = int(cfg.steps)
    total = steps * len(seed_list(cfg.seeds))
    state = {"pages": 0, "reward": 0.0}

    def on_step(run: Any, t: int, reward: float) -> None:
        if run.tag:  # the true world's runs (built-in world) do not count: the simulator is what is tuned
            return
        state["pages"] += 1
        state["reward"] += reward
        if state["pages"] % steps_per_report == 0 and state["pages"] < total:
            tune.report({OBJECTIVE: state["reward"] / state["pages"], TIME_ATTR: state["pages"]})

    # an ASHA stop ends this function at a report: the record stays "running" until the driver marks it stopped
    metric = run_sweep_job(cfg, out, overrides, lambda: compare(cfg, out, echo=False, on_step=on_step), headline)
    tune.report({OBJECTIVE: metric / steps if math.isfinite(metric) else float("nan"), TIME_ATTR: total,
                 "cumulative_reward": metric})


def check_one_agent(cfg: Any) -> str:
    """The one agent a tune sweep tunes (``only=[NAME]``).

    Raises:
        ConfigError: ``only`` does not name exactly one configured agent.
    """
    only = cfg.get("only")
    if only is None or len(only) != 1 or str(only[0]) not in cfg.agents:
        raise ConfigError(f"`shopgym sweep tune` tunes one agent: give only=[NAME] with one of {list(cfg.agents)} "
                          f"(got only={None if only is None else list(only)})")
    return str(only[0])


def tune_sweep(overrides: Sequence[str], folder: Path, *, samples: int, concurrent: int, seed: int = 0,
               grace: int | None = None, reduction: int = 3, address: str | None = None) -> Path:
    """Run the search and write its leaderboard into ``folder``; return ``folder``.

    Args:
        overrides: ``shopgym compare`` overrides, swept ones (or ``sweep=NAME``) forming the search space.
        folder: where the trials (``<folder>/<trial id>/``), Tune's own files (``<folder>/tune/``), Ray's
            temp files (a local Ray) and the leaderboard go.
        samples: trials to run.
        concurrent: trials at once (1: Optuna sees every earlier trial: reproducible).
        seed: Optuna's sampler seed.
        grace: pages a trial runs before ASHA may stop it (None: a quarter of one seed's steps).
        reduction: ASHA's reduction factor (keeps the best ``1/reduction`` at each rung).
        address: a Ray cluster's address (None: ``RAY_ADDRESS`` if set, else a local Ray).

    Raises:
        ConfigError: a bad search space or option.
    """
    import ray
    from omegaconf import OmegaConf
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from shopgym.app.config import check_run, compose_run, seed_list
    from shopgym.app.sweep_progress import prepare_local_ray, report_sweep

    if samples < 1 or concurrent < 1 or reduction < 2:
        raise ConfigError(f"--samples and --concurrent must be >= 1 and --reduction >= 2, got {samples}, "
                          f"{concurrent}, {reduction}")
    params = sweep_params(overrides)
    space = search_space([o for o in overrides if not o.startswith("sweep=")], params)
    base = compose_run(list(space.fixed))
    check_run(base)  # a bad data path or seed list fails here, once, not in every trial
    check_one_agent(base)
    steps, n_seeds = int(base.steps), len(seed_list(base.seeds))
    grace = max(1, steps // 4) if grace is None else int(grace)
    if grace < 1 or grace > steps * n_seeds:
        raise ConfigError(f"--grace must be in [1, {steps * n_seeds}] pages (steps x seeds), got {grace}")
    shown = Path(folder)  # as the user gave it, for the messages
    folder = shown.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    init = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {"address": address}}}}})
    prepare_local_ray(init, folder)
    if not ray.is_initialized():
        ray.init(**{k: v for k, v in OmegaConf.to_container(init.hydra.launcher.ray.init).items()  # type: ignore
                    if v is not None or k == "address"}, log_to_driver=False)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    every = max(1, int(base.log_every))
    trainable = tune.with_parameters(_trial, space=space, folder=str(folder), steps_per_report=every,
                                     cwd=os.getcwd())
    searcher = ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=concurrent)
    scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=steps * n_seeds, grace_period=grace,
                              reduction_factor=reduction)
    store = folder / "tune"
    if (store / "shopgym").is_dir() and tune.Tuner.can_restore(str(store / "shopgym")):
        tuner = tune.Tuner.restore(str(store / "shopgym"), trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space.params,
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", search_alg=searcher, scheduler=scheduler,
                                        num_samples=samples),
            run_config=tune.RunConfig(name="shopgym", storage_path=str(store), verbose=0,
                                      callbacks=[_stop_recorder(folder)]))
    from shopgym.app.sweep_progress import SweepMonitor

    monitor = SweepMonitor(folder, samples).start()
    try:
        grid = tuner.fit()
        for index in range(len(grid)):  # a trial the callback missed (e.g. an interrupted driver)
            result = grid[index]
            trial_id = (result.metrics or {}).get("trial_id")
            if trial_id:
                mark_stopped(folder, str(trial_id), dict(result.metrics or {}))
    finally:
        monitor.stop()
    report_sweep(shown)
    return folder


def sweep_params(overrides: Sequence[str]) -> dict[str, str]:
    """The search space of a ``sweep=NAME`` config among ``overrides`` (its ``hydra.sweeper.params``), else {}."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from shopgym.app.config import one_line, register_configs

    chosen = [o for o in overrides if o.startswith("sweep=")]
    if not chosen:
        return {}
    register_configs()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        try:
            cfg = compose(config_name="compare", overrides=chosen, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(one_line(exc)) from None
    params = cfg.hydra.sweeper.get("params")
    return {} if params is None else {str(k): str(v) for k, v in OmegaConf.to_container(params).items()}  # type: ignore


def mark_stopped(folder: Path, trial_id: str, metrics: dict[str, Any]) -> bool:
    """Record a trial that ended while its record still says running: ASHA stopped it at its last report.

    Returns:
        Whether the record was changed.
    """
    record = read_record(folder / trial_id)
    if record is None or record.status != RUNNING:
        return False
    value = float(metrics.get(OBJECTIVE, float("nan")))
    pages = int(metrics.get(TIME_ATTR, 0))
    write_record(folder / trial_id, JobRecord(
        STOPPED, record.key, record.overrides, seconds=time.time() - record.started, started=record.started,
        host=record.host, pid=record.pid, error=f"stopped early by ASHA after {pages} pages: {OBJECTIVE} {value:.4g}"))
    return True


def _stop_recorder(folder: Path) -> Any:
    """A Ray Tune callback marking each trial's record ``stopped`` as soon as the trial ends early."""
    from ray import tune

    class StopRecorder(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            mark_stopped(folder, str(trial.trial_id), dict(trial.last_result or {}))

    return StopRecorder()

