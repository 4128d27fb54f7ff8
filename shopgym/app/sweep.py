"""One job of a sweep: skip it when already done, record it as done or failed, publish its hyperparameters.

A sweep (``shopgym compare -m ...`` on any Hydra launcher, or ``shopgym sweep tune``) is a set of jobs, one
folder each. Every job folder gets a record, ``job.json``, written atomically:

* ``{"status": "running", ...}`` when the job starts;
* ``{"status": "done", "metric": ..., "seconds": ...}`` as the job's last file, after its results, trained
  agents and hyperparameter events: the completion marker;
* ``{"status": "failed", "error": ..., "traceback": ...}`` when the job raised (the sweep goes on).

Each record holds the job's overrides and ``key``, the SHA-256 of its resolved config without the options that
change nothing but speed (:data:`shopgym.app.compare.SPEED_ONLY_KEYS`). A sweep started again into the same
folder skips every job whose record is ``done`` with the same key (:func:`run_sweep_job`) and reruns the
others; a job rerun after a kill also reads back its own finished runs (``shopgym compare`` resumes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from shopgym.data.io import atomic_folder, write_json

log = logging.getLogger(__name__)

#: the job record's file name in a job folder
RECORD = "job.json"
#: job statuses (``stopped``: an early-stopping scheduler ended it, :mod:`shopgym.app.tune`)
RUNNING, DONE, FAILED, STOPPED = "running", "done", "failed", "stopped"
#: the hyperparameter events of a job, under its folder (``tensorboard --logdir SWEEP`` finds them)
HPARAMS_DIR = "tensorboard/hparams"


@dataclass(frozen=True)
class JobRecord:
    """What ``job.json`` says about one job of a sweep.

    Attributes:
        status: ``running``, ``done`` or ``failed``.
        key: SHA-256 (hex) of the job's resolved config without the speed-only options.
        overrides: the job's overrides (``key=value``), as the launcher gave them.
        metric: the job's headline (the best agent's mean simulated cumulative reward); NaN unless done.
        seconds: wall seconds of the job (done or failed); NaN while running.
        error: the error's one-line message (failed jobs).
        traceback: the error's traceback (failed jobs).
        host: the machine that ran the job; pid: its process.
        started: when the job started (Unix seconds).
    """

    status: str
    key: str
    overrides: tuple[str, ...] = ()
    metric: float = float("nan")
    seconds: float = float("nan")
    error: str = ""
    traceback: str = ""
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)


def read_record(folder: Path) -> JobRecord | None:
    """The record in ``folder`` (None when there is none or it is unreadable: the job is then run again)."""
    path = Path(folder) / RECORD
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["overrides"] = tuple(str(o) for o in raw.get("overrides", ()))
        raw["metric"] = float("nan") if raw.get("metric") is None else float(raw["metric"])
        raw["seconds"] = float("nan") if raw.get("seconds") is None else float(raw["seconds"])
        return JobRecord(**{k: v for k, v in raw.items() if k in JobRecord.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def write_record(folder: Path, record: JobRecord) -> None:
    """Write ``record`` as ``folder/job.json`` (atomically; NaN written as null)."""
    raw = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(record).items()}
    raw["overrides"] = list(record.overrides)
    write_json(raw, Path(folder) / RECORD)


def config_key(cfg: DictConfig) -> str:
    """SHA-256 of ``cfg`` resolved, without the options that change nothing but speed: what a job *is*."""
    from shopgym.app.compare import essential_config

    text = json.dumps(essential_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_sweep_job(cfg: DictConfig, out: Path, overrides: Sequence[str],
                  body: Callable[[], pd.DataFrame], headline: Callable[[pd.DataFrame], float]) -> float:
    """Run one sweep job into ``out`` unless its record says it is done; record how it ended.

    Args:
        cfg: the job's config (its key is :func:`config_key`).
        out: the job's folder.
        overrides: the job's overrides (recorded; the hyperparameters of its TensorBoard hparams events).
        body: runs the job and returns its results table (``shopgym compare``'s).
        headline: the table's headline metric.

    Returns:
        The job's headline metric; NaN when the job failed (the error is recorded, not raised, so the sweep
        goes on). A ``KeyboardInterrupt`` is not caught.
    """
    key = config_key(cfg)
    previous = read_record(out)
    if previous is not None and previous.status == DONE and previous.key == key:
        log.info("job already done (%s): metric %.6g, skipped", out / RECORD, previous.metric)
        return previous.metric
    start = time.time()
    write_record(out, JobRecord(RUNNING, key, tuple(overrides), started=start))
    try:
        with warnings_to_log():
            table = body()
        metric = headline(table)
        write_hparams(out, overrides, table)
    except Exception as exc:  # noqa: BLE001 - a failed job is recorded and the sweep goes on
        text = "".join(traceback.format_exception(exc))
        write_record(out, JobRecord(FAILED, key, tuple(overrides), seconds=time.time() - start,
                                    error=f"{type(exc).__name__}: {exc}", traceback=text, started=start))
        log.error("job failed: %s\n%s", exc, text)
        return float("nan")
    write_record(out, JobRecord(DONE, key, tuple(overrides), metric=metric, seconds=time.time() - start,
                                started=start))
    return metric


def in_folder(folder: str | Path | None) -> None:
    """Work in ``folder`` (the sweep's launch folder) when this process is elsewhere and ``folder`` exists here.

    Launchers start jobs in workers whose working folder is their own (Ray's session folder, a Tune trial's
    folder); the paths a user typed (``data.path=data/obd``, ``model=models/obd``) are relative to where the
    sweep was started. On another machine of a cluster the folder must exist at the same path (a shared file
    system); otherwise nothing changes.
    """
    if folder and Path(folder).is_dir() and Path.cwd() != Path(folder):
        os.chdir(folder)


@contextmanager
def warnings_to_log() -> Iterator[None]:
    """Send Python warnings to the logging system (the job's ``compare.log``) instead of the console.

    A sweep's console has one progress line; a warning from each of 50 jobs would bury it.
    """
    with warnings.catch_warnings():
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)


def hparam_value(text: str) -> float | bool | str:
    """An override's value as TensorBoard's hparams plugin takes it: a number, a bool, else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(text)
    except ValueError:
        return text


def hparams_of(overrides: Sequence[str]) -> dict[str, float | bool | str]:
    """``key=value`` overrides (``+``/``++`` prefixes dropped) as hyperparameters; ``hydra.*`` keys left out."""
    out: dict[str, float | bool | str] = {}
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and not key.startswith("hydra."):
            out[key] = hparam_value(value)
    return out


#: the results columns published as hparams metrics, per agent (``<agent>/<column>``)
HPARAM_METRICS = ("cumulative_reward", "true_cumulative_reward", "ctr", "purchase_rate", "cumulative_regret")


def write_hparams(out: Path, overrides: Sequence[str], table: pd.DataFrame) -> Path:
    """Write the job's hyperparameters and final metrics for TensorBoard's hparams plugin.

    The events go to ``out/tensorboard/hparams`` (a folder written aside and renamed in), one session whose
    hyperparameters are the job's overrides and whose metrics are ``<agent>/<metric>`` for the metrics of
    :data:`HPARAM_METRICS` found in ``table``, plus ``headline`` (the best agent's simulated cumulative reward).
    ``tensorboard --logdir SWEEP_DIR`` then shows every job in the HPARAMS tab (table and parallel coordinates).
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    metrics = {"headline": float(table["cumulative_reward"].max())}
    for _, row in table.iterrows():
        for column in HPARAM_METRICS:
            if column in table.columns and np.isfinite(row[column]):
                metrics[f"{row['agent']}/{column}"] = float(row[column])
    params = hparams_of(overrides) or {"config": "base"}
    final = out / HPARAMS_DIR
    with atomic_folder(final) as tmp:
        writer = SummaryWriter(str(tmp))
        try:
            experiment, start, end = hparams(params, metrics)
            for summary in (experiment, start, end):
                writer._get_file_writer().add_summary(summary)
            for name, value in metrics.items():
                writer.add_scalar(name, value)
        finally:
            writer.close()
    return final
