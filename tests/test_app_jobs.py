"""The parallel runner of ``shopgym compare``: ETA, scheduling, the same results for any number of workers."""

from __future__ import annotations

import pytest

from shopgym.app.jobs import Eta, format_seconds, run_parallel, worker_count
from shopgym.errors import ConfigError


def _kind(job: tuple[str, int]) -> str:
    return job[0]


def test_eta_is_unknown_until_a_run_reports_then_uses_measured_costs() -> None:
    eta: Eta[tuple[str, int]] = Eta(2, _kind)
    queued = [("a", 1), ("b", 0), ("b", 1)]
    eta.start(("a", 0), now=0.0)
    assert eta.remaining(queued, now=1.0) is None  # nothing measured, no progress yet
    eta.progress(("a", 0), 0.25)
    # a's run extrapolates to 4 s; b is unknown and takes the mean of the known kinds (4 s)
    assert eta.remaining(queued, now=1.0) == pytest.approx((3 + 4 + 4 + 4) / 2)
    eta.finish(("a", 0), 4.0)
    eta.start(("b", 0), now=4.0)
    eta.progress(("b", 0), 0.5)
    queued = [("a", 1), ("b", 1)]
    # b extrapolates to 2 s: rest 1 s; queued a (4 s) and b (2 s)
    assert eta.remaining(queued, now=5.0) == pytest.approx((1 + 4 + 2) / 2)


def test_eta_is_never_less_than_the_longest_running_rest() -> None:
    eta: Eta[tuple[str, int]] = Eta(4, _kind)
    eta.finish(("slow", 0), 100.0)
    eta.start(("slow", 1), now=0.0)
    assert eta.remaining([], now=10.0) == pytest.approx(90.0)


def test_scheduling_measures_every_kind_first_then_runs_the_longest() -> None:
    eta: Eta[tuple[str, int]] = Eta(2, _kind)
    queued = [("fast", 0), ("slow", 0), ("fast", 1), ("slow", 1)]
    assert eta.next_job(queued, 0.0) == ("fast", 0)
    eta.start(("fast", 0), 0.0)
    assert eta.next_job(queued[1:], 0.0) == ("slow", 0)  # a kind not measured nor running
    eta.finish(("fast", 0), 1.0)
    eta.finish(("slow", 0), 9.0)
    assert eta.next_job([("fast", 1), ("slow", 1)], 10.0) == ("slow", 1)


def test_format_seconds() -> None:
    assert format_seconds(None) == "?"
    assert format_seconds(65) == "1:05"
    assert format_seconds(3909) == "1:05:09"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_worker_count_rejects_what_is_not_a_count(bad) -> None:
    with pytest.raises(ConfigError, match="`jobs` must be an integer >= 1"):
        worker_count(bad, 10)


def test_worker_count_is_capped_by_the_runs() -> None:
    assert worker_count(8, 3) == 3
    assert worker_count(None, 1) == 1


def _square(job: int, report) -> int:
    report(0.5)
    report(1.0)
    return job * job


@pytest.mark.parametrize("workers", [1, 2])
def test_run_parallel_returns_every_result(workers: int) -> None:
    results: dict[int, int] = {}
    run_parallel(list(range(7)), _square, lambda job, result, seconds: results.__setitem__(job, result),
                 workers=workers, kind=lambda job: job % 2, label=str, progress=False)
    assert results == {j: j * j for j in range(7)}


def _fails(job: int, report) -> int:
    if job == 3:
        raise ConfigError("job 3 is bad")
    if job == 4:
        raise ValueError("a bug")
    return job


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_run_stops_the_others_with_its_message(workers: int) -> None:
    with pytest.raises((ConfigError, RuntimeError), match="job 3 is bad|a bug"):
        run_parallel([3, 4, 5], _fails, lambda *a: None, workers=workers, kind=str, label=str, progress=False)
    if workers == 2:
        with pytest.raises(RuntimeError, match=r"(?s)4 failed in a worker process.*ValueError: a bug"):
            run_parallel([4], _fails, lambda *a: None, workers=2, kind=str, label=str, progress=False)


def test_compare_gives_the_same_numbers_on_one_worker_and_on_two(tmp_path, monkeypatch) -> None:
    import pandas as pd

    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    tables = []
    for jobs in (1, 2):
        run = tmp_path / f"jobs{jobs}"
        assert main(["compare", "experiment=quick", "backend=true", "seeds=[0,1]", "only=[random,linucb,ppo]",
                     "steps=6", f"jobs={jobs}", "progress=false", f"hydra.run.dir={run}"]) == 0
        tables.append(pd.read_csv(run / "results.csv").drop(columns=["seconds", "seconds_ci95"], errors="ignore"))
        assert "finished ppo seed 1 (true world)" in (run / "compare.log").read_text()
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_the_command_line_makes_torch_threads_sleep_before_torch_loads() -> None:
    """Spinning OpenMP threads made the fit 7x slower beside two busy processes (shopgym.threads)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import sys, os, shopgym.cli; print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "PASSIVE"]
    kept = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, check=True).stdout
    assert kept.split() == ["False", "ACTIVE"]  # the user's own setting wins
