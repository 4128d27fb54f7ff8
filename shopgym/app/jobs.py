r"""Many independent runs on a few worker processes, with progress lines and a truthful ETA.

``shopgym compare`` runs every (agent, seed, world) once; the runs share nothing but the prepared simulator,
so :func:`run_parallel` hands them to ``workers`` processes forked from the caller (they inherit the
simulator copy-on-write instead of rebuilding it). A run's numbers depend only on the run itself (its seeds
are its own and every run uses one torch thread and one BLAS thread), so any ``workers`` gives the same
results; only the wall time changes.

Scheduling: a job of a kind (an agent in one world) not measured yet goes first, so that every kind's cost
is known early; after that the longest expected job goes first (longest-processing-time order, which keeps
the last minutes from being one long run beside an idle worker).

ETA (:class:`Eta`): the remaining work is each queued run's expected seconds (the mean of the finished runs
of its kind; before any has finished, its running run's elapsed time / fraction done, else the mean of the
kinds known) plus each running run's expected rest, divided by the workers, and never less than the longest
running run's rest. It is shown as ``?`` until one run of any kind has reported progress.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

from shopgym.errors import ConfigError, ShopgymError
from shopgym.threads import available_cpus

J = TypeVar("J", bound=Hashable)
R = TypeVar("R")

#: ``report(fraction)``: a run's progress in [0, 1]
Report = Callable[[float], None]


def worker_count(jobs: Any, n_runs: int) -> int:
    """The ``jobs`` option as a number of worker processes: None means the available CPUs; capped at the runs.

    Raises:
        ConfigError: ``jobs`` is not None or an integer >= 1.
    """
    if jobs is None:
        wanted = available_cpus()
    elif isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"`jobs` must be an integer >= 1 (worker processes) or null (one per CPU), got {jobs!r}")
    else:
        wanted = int(jobs)
    return max(1, min(wanted, n_runs))


def format_seconds(seconds: float | None) -> str:
    """``1:05:09``, ``4:31`` or ``?``."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Eta(Generic[J]):
    """Expected remaining wall time of a set of runs on ``workers`` workers (see the module docstring).

    Args:
        workers: worker processes.
        kind: a run's kind (runs of one kind cost about the same), e.g. (agent, world).
    """

    workers: int
    kind: Callable[[J], Hashable]
    finished: dict[Hashable, list[float]] = field(default_factory=dict)
    #: running job -> (start time, fraction done)
    running: dict[J, tuple[float, float]] = field(default_factory=dict)

    def start(self, job: J, now: float) -> None:
        """``job`` started at ``now`` (seconds, any clock)."""
        self.running[job] = (now, 0.0)

    def progress(self, job: J, fraction: float) -> None:
        """``job`` is ``fraction`` done."""
        if job in self.running:
            self.running[job] = (self.running[job][0], min(max(float(fraction), 0.0), 1.0))

    def finish(self, job: J, seconds: float) -> None:
        """``job`` took ``seconds``."""
        self.running.pop(job, None)
        self.finished.setdefault(self.kind(job), []).append(float(seconds))

    def expected(self, job: J, now: float) -> float | None:
        """Expected total seconds of ``job``, or None when nothing is known of its kind."""
        return self._expected_kind(self.kind(job), now)

    def remaining(self, queued: Sequence[J], now: float) -> float | None:
        """Expected seconds until the queued and running jobs are done, or None when no cost is known yet."""
        kinds = {self.kind(j) for j in [*queued, *self.running]}
        known = {k: e for k in kinds for e in [self._expected_kind(k, now)] if e is not None}
        if not known:
            return None
        fallback = sum(known.values()) / len(known)
        rests = [max(known.get(self.kind(j), fallback) - (now - start), 0.0) for j, (start, _) in self.running.items()]
        work = sum(known.get(self.kind(j), fallback) for j in queued) + sum(rests)
        return max(work / max(self.workers, 1), max(rests, default=0.0))

    def _expected_kind(self, kind: Hashable, now: float) -> float | None:
        """The mean of the finished runs of ``kind``; else its running runs' elapsed / fraction (>= 5% done)."""
        times = self.finished.get(kind)
        if times:
            return sum(times) / len(times)
        guesses = [(now - start) / fraction for job, (start, fraction) in self.running.items()
                   if self.kind(job) == kind and fraction >= 0.05]
        return max(guesses) if guesses else None

    def next_job(self, queued: list[J], now: float) -> J:
        """The queued job to start next: the first of a kind with no estimate and none running, else the longest."""
        busy = {self.kind(j) for j in self.running}
        for job in queued:
            if self.kind(job) not in self.finished and self.kind(job) not in busy:
                return job
        estimates = [self.expected(j, now) for j in queued]  # unknown ones last; ties: the first queued
        best = max(range(len(queued)), key=lambda i: (estimates[i] if estimates[i] is not None else -1.0, -i))
        return queued[best]


# ---------------------------------------------------------------------- worker side
#: set by the parent just before the workers fork (inherited, never pickled): the job runner and the queue
_FORKED: dict[str, Any] = {}


def _work(index: int, job: Any) -> tuple[str, Any, float]:
    """Run one job in a worker; failures come back as text (exceptions with custom signatures do not unpickle)."""
    progress_queue = _FORKED["queue"]
    last = [0.0]

    def report(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or fraction >= 1.0:
            last[0] = now
            progress_queue.put((index, float(fraction)))

    started = time.perf_counter()
    try:
        result = _FORKED["execute"](job, report)
    except ShopgymError as exc:
        return "input-error", str(exc), time.perf_counter() - started
    except BaseException:  # noqa: BLE001 - reported with its traceback in the parent
        return "crash", traceback.format_exc(), time.perf_counter() - started
    return "ok", result, time.perf_counter() - started


# ---------------------------------------------------------------------- parent side
class _Display:
    """One overall bar (runs done, ETA) and one line per worker (its run and its progress)."""

    def __init__(self, total: int, workers: int, desc: str, enabled: bool) -> None:
        self.enabled = enabled
        self.overall = tqdm(total=total, desc=desc, unit="run", disable=not enabled, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs "
                                       "[{elapsed} elapsed{postfix}]")  # tqdm puts ", " before the postfix
        self.overall.set_postfix_str("ETA ?", refresh=False)
        self.lines = [tqdm(total=1000, position=i + 1, leave=False, disable=not enabled, dynamic_ncols=True,
                           bar_format="  {desc}: {percentage:3.0f}%|{bar:24}|") for i in range(workers)]

    def show(self, slot: int, label: str, fraction: float) -> None:
        if not self.enabled:
            return
        line = self.lines[slot]
        line.set_description_str(label, refresh=False)
        line.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        line.refresh()

    def eta(self, seconds: float | None) -> None:
        self.overall.set_postfix_str(f"ETA {format_seconds(seconds)}", refresh=False)
        self.overall.refresh()

    def done(self) -> None:
        self.overall.update(1)

    def close(self) -> None:
        for line in self.lines:
            line.close()
        self.overall.close()


def run_parallel(jobs: Sequence[J], execute: Callable[[J, Report], R], on_result: Callable[[J, R, float], None],
                 *, workers: int, kind: Callable[[J], Hashable], label: Callable[[J], str],
                 desc: str = "runs", progress: bool = True) -> None:
    """Run ``execute(job, report)`` for every job on ``workers`` forked processes (1: in this process).

    ``on_result(job, result, seconds)`` is called in this process as each job finishes (in the order they
    finish); ``execute`` must call ``report(fraction)`` as it goes. With one worker nothing is forked.

    Raises:
        ConfigError: a job raised a :class:`~shopgym.errors.ShopgymError` (its message; the other jobs are
            cancelled).
        RuntimeError: a job crashed (the worker's traceback is in the message) or a worker died.
    """
    queued = list(jobs)
    if not queued:
        return
    eta: Eta[J] = Eta(workers, kind)
    display = _Display(len(queued), workers, desc, progress)
    try:
        if workers <= 1:
            _run_inline(queued, execute, on_result, eta, display, label)
        else:
            _run_forked(queued, execute, on_result, eta, display, label, workers)
    finally:
        display.close()


def _run_inline(queued: list[J], execute: Callable[[J, Report], R], on_result: Callable[[J, R, float], None],
                eta: Eta[J], display: _Display, label: Callable[[J], str]) -> None:
    while queued:
        job = eta.next_job(queued, time.monotonic())
        queued.remove(job)
        eta.start(job, time.monotonic())

        def report(fraction: float, job: J = job) -> None:
            eta.progress(job, fraction)
            display.show(0, label(job), fraction)
            display.eta(eta.remaining(queued, time.monotonic()))

        started = time.perf_counter()
        result = execute(job, report)
        seconds = time.perf_counter() - started
        eta.finish(job, seconds)
        on_result(job, result, seconds)
        display.done()
        display.eta(eta.remaining(queued, time.monotonic()))


def _run_forked(queued: list[J], execute: Callable[[J, Report], R], on_result: Callable[[J, R, float], None],
                eta: Eta[J], display: _Display, label: Callable[[J], str], workers: int) -> None:
    context = mp.get_context("fork")
    progress_queue = context.Queue()
    _FORKED.update(execute=execute, queue=progress_queue)
    index_of: dict[int, J] = {}
    slot_of: dict[int, int] = {}
    free_slots = list(range(workers))
    running: dict[Future[tuple[str, Any, float]], int] = {}
    pool = ProcessPoolExecutor(workers, mp_context=context)
    completed = False
    try:
        def submit() -> None:
            job = eta.next_job(queued, time.monotonic())
            queued.remove(job)
            index = len(index_of)
            index_of[index], slot_of[index] = job, free_slots.pop(0)
            eta.start(job, time.monotonic())
            display.show(slot_of[index], label(job), 0.0)
            running[pool.submit(_work, index, job)] = index

        while queued and len(running) < workers:
            submit()
        while running:
            finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(progress_queue, index_of, slot_of, eta, display, label)
            for future in finished:
                index = running.pop(future)
                job = index_of[index]
                try:
                    status, payload, seconds = future.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    raise RuntimeError(f"a worker process died while running {label(job)}: {exc!r}") from exc
                if status == "input-error":
                    raise ConfigError(payload)
                if status == "crash":
                    raise RuntimeError(f"{label(job)} failed in a worker process:\n{payload}")
                free_slots.append(slot_of[index])
                free_slots.sort()
                eta.finish(job, seconds)
                on_result(job, payload, seconds)
                display.done()
                if queued:
                    submit()
            display.eta(eta.remaining(queued, time.monotonic()))
        completed = True
    finally:
        if not completed:  # a failure or Ctrl-C: stop the other runs now rather than wait for them
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        _FORKED.clear()
        progress_queue.close()


def _drain(progress_queue: Any, index_of: dict[int, J], slot_of: dict[int, int], eta: Eta[J], display: _Display,
           label: Callable[[J], str]) -> None:
    """Apply every progress message waiting in the queue."""
    while True:
        try:
            index, fraction = progress_queue.get_nowait()
        except queue_module.Empty:
            return
        job = index_of[index]
        if job in eta.running:
            eta.progress(job, fraction)
            display.show(slot_of[index], label(job), fraction)
