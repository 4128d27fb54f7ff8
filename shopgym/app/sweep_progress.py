"""One progress line for a sweep, and its leaderboard at the end: a Hydra callback on every launcher.

:class:`SweepProgress` is listed under ``hydra.callbacks`` in ``conf/compare.yaml``. When a multirun starts (in
the driver process, whatever the launcher: sequential, joblib or Ray) it starts :class:`SweepMonitor`, a thread
that reads the job records (``job.json``, :mod:`shopgym.app.sweep`) of the sweep folder once a second and
redraws one line: jobs done / running / failed of the total, elapsed time and an ETA. When the multirun ends it
stops the line and writes the leaderboard (:mod:`shopgym.app.leaderboard`) into the sweep folder.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from shopgym.app.sweep import DONE, FAILED, RUNNING, STOPPED, read_record


def count_jobs(task_overrides: Sequence[str], params: Mapping[str, Any] | None = None) -> int | None:
    """How many jobs Hydra's basic sweeper makes of the command-line overrides and ``hydra.sweeper.params``.

    The product of the sweeps' lengths (a key given on the command line replaces its ``params`` entry); None
    when a sweep cannot be enumerated (an ``interval``: an optimiser's search space, not a grid).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = [f"{key}={value}" for key, value in (params or {}).items()] + list(task_overrides)
    by_key = {}
    for override in OverridesParser.create().parse_overrides(texts):
        by_key[override.get_key_element()] = override
    total = 1
    for override in by_key.values():
        if override.is_sweep_override():
            try:
                total *= len(list(override.sweep_iterator()))
            except Exception:  # noqa: BLE001 - hydra raises a plain OverrideParseException for intervals
                return None
    return total


class SweepMonitor:
    """A thread redrawing the sweep's progress line from the job records in ``folder``.

    Counts: *done* (record ``done``, including jobs skipped as done by an earlier start of the same sweep),
    *failed*, *stopped* (early, by ``shopgym sweep tune``'s scheduler), *running* (a ``running`` record written
    since this monitor started; one left by a killed earlier start does not count). ETA = remaining jobs x the
    mean wall time of the jobs finished in this start / the jobs running at once (at least 1); ``?`` until a job
    finished.
    """

    def __init__(self, folder: Path, total: int | None, interval: float = 1.0, stream: Any = None) -> None:
        self.folder = Path(folder)
        self.total = total
        self.interval = interval
        self.stream = stream or sys.stderr
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parallel = 1
        self._durations: list[float] = []
        self._drawn = False
        self.counts: dict[str, int] = {DONE: 0, RUNNING: 0, FAILED: 0, STOPPED: 0}

    def poll(self) -> dict[str, int]:
        """Read every job record once; update :attr:`counts`."""
        counts = {DONE: 0, RUNNING: 0, FAILED: 0, STOPPED: 0}
        durations = []
        folders = [p for p in self.folder.iterdir() if p.is_dir()] if self.folder.is_dir() else []
        for sub in folders:
            record = read_record(sub)
            if record is None:
                continue
            fresh = record.started >= self.started - 1.0
            if record.status == RUNNING and not fresh:
                continue
            counts[record.status] = counts.get(record.status, 0) + 1
            if record.status in (DONE, FAILED, STOPPED) and fresh and math.isfinite(record.seconds):
                durations.append(record.seconds)
        self._parallel = max(self._parallel, counts[RUNNING])
        self._durations = durations
        self.counts = counts
        return counts

    def line(self) -> str:
        """The progress line: ``sweep: 5/12 jobs done, 2 running, 0 failed [01:10 elapsed, ETA 02:40]``."""
        c = self.counts
        finished = c[DONE] + c[FAILED] + c[STOPPED]
        total = "?" if self.total is None else str(self.total)
        eta = "?"
        if self.total is not None and self._durations:
            rest = max(self.total - finished, 0)
            eta = _clock(rest * (sum(self._durations) / len(self._durations)) / max(self._parallel, 1))
        stopped = f", {c[STOPPED]} stopped early" if c[STOPPED] else ""
        return (f"sweep: {c[DONE]}/{total} jobs done, {c[RUNNING]} running, {c[FAILED]} failed{stopped} "
                f"[{_clock(time.time() - self.started)} elapsed, ETA {eta}]")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._draw()
            except (OSError, ValueError):  # the stream closed under us (the process is ending): stop drawing
                return

    def _draw(self, final: bool = False) -> None:
        """Redraw the line in place on a terminal; elsewhere (a CI log, a file) write it when the counts change."""
        before = dict(self.counts)
        self.poll()
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\r" + self.line() + "\x1b[K" + ("\n" if final else ""))
        elif final or self.counts != before or not self._drawn:
            self.stream.write(self.line() + "\n")
        self._drawn = True
        self.stream.flush()

    def start(self) -> SweepMonitor:
        """Start the thread (a daemon: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._loop, name="shopgym-sweep-progress", daemon=True)
        self._thread.start()
        _ACTIVE.add(self)
        return self

    def stop(self) -> None:
        """Stop the thread and draw the final line."""
        _ACTIVE.discard(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._draw(final=True)
        except (OSError, ValueError):
            pass


#: the monitors running in this process (a launcher that raises never calls ``on_multirun_end``)
_ACTIVE: set[SweepMonitor] = set()


def stop_monitors() -> None:
    """Stop every progress line still running in this process (after a sweep that ended by an exception)."""
    for monitor in list(_ACTIVE):
        monitor.stop()


#: Unix socket paths (Ray puts its sockets under its temp folder) are at most 107 bytes; Ray's own part is ~70
RAY_TEMP_MAX_CHARS = 36


def prepare_local_ray(config: DictConfig, folder: Path) -> Path | None:
    """Where a Ray started for this sweep writes, decided before the Ray launcher starts it.

    Connecting to a running cluster (``hydra.launcher.ray.init.address`` or ``RAY_ADDRESS``): the cluster writes
    where its ``ray start --temp-dir`` says; only the launcher's default ``object_store_memory`` (meant for a local
    Ray, and refused by ``ray.init`` when connecting) is set to null. A local Ray started by the launcher gets

    * ``_temp_dir`` (unless given): ``<sweep>/ray`` when that path is short enough for Ray's Unix sockets, else a
      new ``shopgym-ray-*`` folder in the system temp folder, linked from ``<sweep>/ray``; Ray's session files
      and logs go there instead of ``/tmp/ray``;
    * an authentication token in ``RAY_AUTH_TOKEN`` (unless one is configured), so Ray does not save one as
      ``~/.ray/auth_token``: nothing is written under the home folder;
    * no dashboard (unless ``include_dashboard`` is given).

    Returns:
        The temp folder chosen, or None when connecting to a cluster.
    """
    import os
    import secrets
    import tempfile

    from omegaconf import open_dict

    init = config.hydra.launcher.ray.init
    if init.get("address") or os.environ.get("RAY_ADDRESS"):
        if "object_store_memory" not in init:
            with open_dict(init):  # the launcher's default for a local Ray; ray.init refuses it for a cluster
                init["object_store_memory"] = None
        return None
    temp = init.get("_temp_dir")
    link = folder / "ray"
    if temp is None:
        folder.mkdir(parents=True, exist_ok=True)
        if len(str(link.resolve())) <= RAY_TEMP_MAX_CHARS:
            temp = str(link.resolve())
        else:
            temp = tempfile.mkdtemp(prefix="shopgym-ray-")
            if not link.exists() and not link.is_symlink():
                link.symlink_to(temp, target_is_directory=True)
    with open_dict(init):
        init["_temp_dir"] = str(temp)
        init.setdefault("include_dashboard", False)
    if not any(os.environ.get(v) for v in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # inherited by the Ray processes started here
    return Path(temp)


def launcher_name(launcher: Any) -> str:
    """The short name (``basic``, ``joblib``, ``ray``...) of a Hydra launcher node, from its ``_target_``."""
    target = str(launcher.get("_target_", ""))
    for name in ("joblib", "ray", "basic"):
        if name in target.lower():
            return name
    return target or "?"


class _LauncherLogToFile:
    """Send the Hydra launchers' info lines (``#3 : key=value ...`` per job) to a file, warnings still to stderr.

    They would break the sweep's one progress line; the file keeps them. Undone by :meth:`close`.
    """

    LOGGERS = ("hydra", "hydra_plugins")

    def __init__(self, path: Path) -> None:
        import logging

        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        self.console = logging.StreamHandler(sys.stderr)
        self.console.setLevel(logging.WARNING)
        self.saved = []
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self.saved.append((logger, logger.propagate))
            logger.propagate = False
            logger.addHandler(self.file)
            logger.addHandler(self.console)

    def close(self) -> None:
        """Restore the loggers."""
        for logger, propagate in self.saved:
            logger.removeHandler(self.file)
            logger.removeHandler(self.console)
            logger.propagate = propagate
        self.file.close()


def _clock(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour)."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class SweepProgress(Callback):
    """Hydra callback: the sweep's progress line while it runs and its leaderboard when it ends.

    Args:
        interval: seconds between redraws of the line.
        leaderboard: write the leaderboard (``leaderboard.md/.csv/.png``) into the sweep folder at the end.
    """

    def __init__(self, interval: float = 1.0, leaderboard: bool = True) -> None:
        self.interval = float(interval)
        self.leaderboard = bool(leaderboard)
        self._monitor: SweepMonitor | None = None
        self._quiet: _LauncherLogToFile | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Only the settings, for the launchers that pickle Hydra's callbacks to their workers (Ray).

        The driver's thread and log file stay in the driver.
        """
        return {"interval": self.interval, "leaderboard": self.leaderboard, "_monitor": None, "_quiet": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the progress line (in the driver process); the launcher's per-job lines go to ``sweep.log``."""
        folder = Path(str(config.hydra.sweep.dir))
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params) if params is not None else None
        total = count_jobs(list(config.hydra.overrides.task), params)  # type: ignore[arg-type]
        self._quiet = _LauncherLogToFile(folder / "sweep.log")
        launcher = launcher_name(config.hydra.launcher)
        if launcher == "ray":
            prepare_local_ray(config, folder)
        print(f"sweep: {total if total is not None else 'an unknown number of'} jobs into {folder} (launcher "
              f"{launcher}; its log: {folder / 'sweep.log'})", file=sys.stderr)
        self._monitor = SweepMonitor(folder, total, self.interval).start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Stop the line; write and summarise the leaderboard."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        if self._quiet is not None:
            self._quiet.close()
            self._quiet = None
        if self.leaderboard:
            report_sweep(Path(str(config.hydra.sweep.dir)))


def report_sweep(folder: Path, metric: str = "cumulative_reward") -> None:
    """Write the leaderboard of the sweep in ``folder`` and print where it is and what won."""
    from shopgym.app.leaderboard import config_keys, config_label, leaderboard, read_sweep, write_leaderboard
    from shopgym.errors import ShopgymError

    try:
        jobs = read_sweep(folder)
        table = leaderboard(jobs, metric)
        write_leaderboard(table, jobs, metric, folder)
    except ShopgymError as exc:
        print(f"shopgym: no leaderboard: {exc}", file=sys.stderr)
        return
    failed = sum(job.status == FAILED for job in jobs)
    print(f"leaderboard: {folder / 'leaderboard.md'} (.csv, .png); {len(jobs)} jobs, {failed} failed")
    if not table.empty:
        best = table.iloc[0]
        label = config_label({k: best[k] for k in config_keys(table)}, shorten=True)
        print(f"best: {best['agent']} {label}: {metric} {best['metric']:.4g}; trained agent: "
              f"{folder / best['agent_folder'] if best['agent_folder'] else 'not saved'}")
