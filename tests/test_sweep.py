"""Sweeps: a sweep config, one progress line, job records, failed jobs, kill -9 and resume, the leaderboard with seeds
pooled, hparams events, the kept winner; the same per-job numbers on every launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT

#: a 12-job sweep (conf/sweep/linucb_alpha.yaml) at a tiny budget: true world, quick experiment
TINY = ["sweep=linucb_alpha", "experiment=quick", "backend=true", "steps=4"]


def _per_job(folder: Path) -> dict[str, pd.DataFrame]:
    """Each job's runs.csv keyed by its overrides, without the run times."""
    out = {}
    for sub in folder.iterdir():
        if (sub / "job.json").is_file():
            record = json.loads((sub / "job.json").read_text())
            key = " ".join(o for o in record["overrides"] if not o.startswith("hydra"))
            out[key] = pd.read_csv(sub / "runs.csv").drop(columns=["seconds"])
    return out


def _board(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "leaderboard.csv").drop(columns=["seconds"])


def test_count_jobs_multiplies_the_sweeps_and_the_command_line_wins() -> None:
    from shopgym.app.sweep_progress import count_jobs

    assert count_jobs(["a=1,2,3", "b=x"], {"c": "[0],[1]"}) == 6
    assert count_jobs(["c=[0]"], {"c": "[0],[1]", "d": "range(0,4)"}) == 4
    assert count_jobs(["lr=interval(0.1,1.0)"]) is None
    assert count_jobs([]) == 1


def test_the_progress_line_counts_records_and_ignores_a_stale_running_one(tmp_path) -> None:
    import io

    from shopgym.app.sweep import DONE, FAILED, RUNNING, JobRecord, write_record
    from shopgym.app.sweep_progress import SweepMonitor

    for name, status, started in (("0", DONE, time.time()), ("1", FAILED, time.time()), ("2", RUNNING, time.time()),
                                  ("3", RUNNING, time.time() - 3600)):
        (tmp_path / name).mkdir()
        write_record(tmp_path / name, JobRecord(status, "k", seconds=10.0, started=started))
    stream = io.StringIO()
    monitor = SweepMonitor(tmp_path, total=5, stream=stream)
    monitor.poll()
    assert monitor.counts == {DONE: 1, RUNNING: 1, FAILED: 1, "stopped": 0}
    # 3 jobs left x 10 s each, one running at a time
    assert "1/5 jobs done, 1 running, 1 failed" in monitor.line() and "ETA 00:30" in monitor.line()
    monitor.start()
    monitor.stop()
    assert stream.getvalue().count("\n") >= 1 and "\r" not in stream.getvalue()  # not a terminal: plain lines


def test_a_sweep_config_runs_its_grid_keeps_its_agents_and_ranks_configurations_over_seeds(tmp_path, monkeypatch,
                                                                                            capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from agents.base import load_policy
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    assert main(["compare", *TINY, f"hydra.sweep.dir={sweep}"]) == 0  # no -m: the sweep config is a multirun
    err = capsys.readouterr().err
    assert "sweep: 12 jobs into" in err and "12/12 jobs done, 0 running, 0 failed" in err
    assert "#3 :" not in err and "#3 :" in (sweep / "sweep.log").read_text()  # the launcher's lines: in the log
    records = [json.loads((sweep / str(n) / "job.json").read_text()) for n in range(12)]
    assert all(r["status"] == "done" and np.isfinite(r["metric"]) for r in records)
    assert len({r["key"] for r in records}) == 12
    board = pd.read_csv(sweep / "leaderboard.csv")
    # 3 alphas x 2 purchase weights; each configuration pools its 2 seed jobs
    assert len(board) == 6 and (board["seeds"] == 2).all()
    assert set(board["agents.linucb.alpha"]) == {0.1, 0.5, 2.0} and set(board["env.reward.purchase"]) == {0.0, 1.0}
    for _, row in board.iterrows():  # mean over the configuration's two seeds, from the jobs' own runs.csv
        values = [pd.read_csv(sweep / job / "runs.csv")["cumulative_reward"].iloc[0] for job in row["jobs"].split(";")]
        assert row["metric"] == pytest.approx(np.mean(values))
        assert row["metric_ci95"] == pytest.approx(12.706 * np.std(values, ddof=1) / np.sqrt(2), rel=1e-3)
    assert list(board["metric"]) == sorted(board["metric"], reverse=True)
    best = json.loads((sweep / "best.json").read_text())
    assert best["agent"] == "linucb" and best["value"] == pytest.approx(board["metric"].iloc[0])
    policy = load_policy(sweep / best["agent_folder"])  # the winner's trained agent, loadable
    assert type(policy).__name__ == "LinUCBRanker"
    text = (sweep / "leaderboard.md").read_text()
    assert "12 of 12 jobs done, 0 failed" in text and "varies the reward's weights" in text
    assert (sweep / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    # TensorBoard's hparams plugin: each job's overrides and its final metrics
    acc = EventAccumulator(str(sweep / "5" / "tensorboard" / "hparams"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v.number_value if v.HasField("number_value") else v.string_value
               for k, v in start.session_start_info.hparams.items()}
    assert hparams["agents.linucb.alpha"] == 0.5 and hparams["env.reward.purchase"] == 0.0
    assert hparams["seeds"] == "[1]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"headline", "linucb/cumulative_reward"}
    assert acc.Scalars("headline")[0].value == pytest.approx(records[5]["metric"])
    # the same sweep on Hydra's joblib launcher (2 processes): the same numbers, job by job
    parallel = tmp_path / "joblib"
    assert main(["compare", *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={parallel}"]) == 0
    sequential_jobs, parallel_jobs = _per_job(sweep), _per_job(parallel)
    assert len(parallel_jobs) == 12 and parallel_jobs.keys() == sequential_jobs.keys()
    for key, frame in sequential_jobs.items():
        pd.testing.assert_frame_equal(parallel_jobs[key], frame)
    pd.testing.assert_frame_equal(_board(parallel), _board(sweep))
    # started again: every job is skipped as done (no record rewritten), the leaderboard is the same
    stamps = {n: (sweep / str(n) / "job.json").stat().st_mtime_ns for n in range(12)}
    before = _board(sweep)
    assert main(["compare", *TINY, f"hydra.sweep.dir={sweep}"]) == 0
    assert {n: (sweep / str(n) / "job.json").stat().st_mtime_ns for n in range(12)} == stamps
    pd.testing.assert_frame_equal(_board(sweep), before)


def test_a_failing_job_is_recorded_with_its_error_and_the_sweep_goes_on(tmp_path, monkeypatch) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    assert main(["compare", "-m", "experiment=quick", "backend=true", "steps=2", "only=[random],[nope]",
                 f"hydra.sweep.dir={sweep}"]) == 0
    ok, bad = (json.loads((sweep / n / "job.json").read_text()) for n in ("0", "1"))
    assert ok["status"] == "done" and bad["status"] == "failed"
    assert "ConfigError" in bad["error"] and "nope" in bad["error"] and "Traceback" in bad["traceback"]
    text = (sweep / "leaderboard.md").read_text()
    assert "1 of 2 jobs done, 1 failed" in text and "unknown agents ['nope']" in text
    assert main(["sweep", "report", str(sweep), "--metric", "nope"]) == 2


def _sweep_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "shopgym", "compare", "-m", "experiment=quick", "backend=true", "steps=40",
            "only=[linucb]", "agents.linucb.alpha=0.1,0.5,1.0,2.0", "seeds=[0],[1]", f"hydra.sweep.dir={folder}"]


def test_a_sweep_killed_mid_way_and_started_again_loses_nothing_and_redoes_nothing(tmp_path) -> None:
    """kill -9 of the sweep's process group while jobs run; the same command again: the jobs done before the kill
    are skipped (records untouched), the rest run, and the leaderboard equals an uninterrupted sweep's."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_sweep_command(full), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(_sweep_command(killed), cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once two jobs are done and a third one has started
        statuses = [json.loads(p.read_text()).get("status") for p in killed.glob("*/job.json")
                    if p.stat().st_size]
        if statuses.count("done") >= 2 and "running" in statuses:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in killed.glob("*/job.json")
                   if json.loads(p.read_text())["status"] == "done"}
    assert 2 <= len(done_before) < 8
    subprocess.run(_sweep_command(killed), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    assert {n: (killed / n / "job.json").stat().st_mtime_ns for n in done_before} == done_before  # not redone
    assert all(json.loads((killed / str(n) / "job.json").read_text())["status"] == "done" for n in range(8))
    pd.testing.assert_frame_equal(_board(killed), _board(full))
    full_jobs, killed_jobs = _per_job(full), _per_job(killed)
    assert full_jobs.keys() == killed_jobs.keys()
    for key, frame in full_jobs.items():
        pd.testing.assert_frame_equal(killed_jobs[key], frame)


def test_a_local_ray_writes_under_the_sweep_or_a_temp_folder_and_a_cluster_is_left_alone(tmp_path,
                                                                                        monkeypatch) -> None:
    from omegaconf import OmegaConf

    from shopgym.app.sweep_progress import RAY_TEMP_MAX_CHARS, prepare_local_ray

    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    deep = tmp_path / ("x" * RAY_TEMP_MAX_CHARS) / "sweep"
    cfg = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {"address": None}}}}})
    temp = prepare_local_ray(cfg, deep)
    assert temp is not None and len(str(temp)) <= 60 and (deep / "ray").resolve() == temp.resolve()
    assert cfg.hydra.launcher.ray.init._temp_dir == str(temp) and cfg.hydra.launcher.ray.init.include_dashboard is False
    assert len(os.environ["RAY_AUTH_TOKEN"]) == 64  # Ray then saves no token under the home folder
    cluster = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {"address": "10.0.0.1:6379"}}}}})
    assert prepare_local_ray(cluster, tmp_path / "other") is None and "_temp_dir" not in cluster.hydra.launcher.ray.init
    monkeypatch.chdir(tmp_path)
    short = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {}}}}})
    if len(str((tmp_path / "s" / "ray").resolve())) <= RAY_TEMP_MAX_CHARS:
        assert prepare_local_ray(short, Path("s")) == (tmp_path / "s" / "ray").resolve()


@pytest.mark.slow
def test_a_sweep_on_a_real_ray_cluster_gives_the_sequential_numbers_and_writes_nothing_in_home(tmp_path) -> None:
    """As a user would: `ray start --head`, the sweep with the cluster's address, `ray stop`; HOME is a fresh folder
    that stays empty (Ray's token in RAY_AUTH_TOKEN, its files in --temp-dir; shopgym's cache in SHOPGYM_CACHE and
    matplotlib's in MPLCONFIGDIR, which are not Ray's)."""
    import secrets
    import socket
    import tempfile

    home = tmp_path / "home"
    home.mkdir()
    ray_temp = Path(tempfile.mkdtemp(prefix="sg-ray-"))  # short: Ray's Unix sockets live under it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Ray's token authentication with the token in the environment (a head and a driver that share it); Ray's
    # local-only mode keeps every Ray socket on 127.0.0.1
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO_ROOT), "SHOPGYM_CACHE": str(tmp_path / "cache"),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLCONFIGDIR": str(tmp_path / "matplotlib")}
    ray = str(Path(sys.executable).parent / "ray")
    shopgym = [sys.executable, "-m", "shopgym", "compare", *TINY]
    subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    f"--temp-dir={ray_temp}", "--include-dashboard=false", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        subprocess.run([*shopgym, "hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                        f"hydra.sweep.dir={tmp_path / 'ray'}"], cwd=tmp_path, env=env, check=True,
                       capture_output=True, timeout=600)
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    subprocess.run([*shopgym, f"hydra.sweep.dir={tmp_path / 'seq'}"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)
    on_ray, sequential = _per_job(tmp_path / "ray"), _per_job(tmp_path / "seq")
    assert len(on_ray) == 12 and on_ray.keys() == sequential.keys()
    for key, frame in sequential.items():
        pd.testing.assert_frame_equal(on_ray[key], frame)
    pd.testing.assert_frame_equal(_board(tmp_path / "ray"), _board(tmp_path / "seq"))
    assert not (tmp_path / "ray" / "ray").exists()  # a cluster writes where `ray start --temp-dir` said
    assert list(home.iterdir()) == []


def test_a_search_space_in_hydra_sweep_syntax_becomes_tune_domains() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    from shopgym.app.tune import search_space, trial_overrides
    from shopgym.errors import ConfigError

    space = search_space(["experiment=quick", "agents.linucb.proj_dim=16,32", "agents.linucb.reg=int(interval(1,10))"],
                         {"agents.linucb.alpha": "tag(log, interval(0.01, 5.0))", "seeds": "[0],[1]",
                          "agents.linucb.reg": "interval(0.1, 1.0)"})
    assert space.fixed == ("experiment=quick",)
    alpha, reg, dim, seeds = (space.params[k] for k in ("agents.linucb.alpha", "agents.linucb.reg",
                                                        "agents.linucb.proj_dim", "seeds"))
    assert isinstance(alpha, Float) and "LogUniform" in type(alpha.get_sampler()).__name__
    assert (alpha.lower, alpha.upper) == (0.01, 5.0)
    assert isinstance(reg, Integer) and (reg.lower, reg.upper) == (1, 11)  # the command line wins; ints: randint
    assert isinstance(dim, Categorical) and dim.categories == ["16", "32"]
    assert seeds.categories == ["[0]", "[1]"]
    assert trial_overrides(space, {"agents.linucb.alpha": 0.25, "seeds": "[1]"}) == [
        "experiment=quick", "agents.linucb.alpha=0.25", "seeds=[1]"]
    with pytest.raises(ConfigError, match="no search space"):
        search_space(["experiment=quick"])
    with pytest.raises(ConfigError, match="not a search space"):
        search_space(["agents=glob(*)"])


def test_tune_tunes_one_agent_only() -> None:
    from shopgym.app.config import compose_run
    from shopgym.app.tune import check_one_agent
    from shopgym.errors import ConfigError

    cfg = compose_run(["only=[linucb]"])
    assert check_one_agent(cfg) == "linucb"
    for only in (None, ["linucb", "random"], ["nope"]):
        cfg.only = only
        with pytest.raises(ConfigError, match="tunes one agent"):
            check_one_agent(cfg)


def test_tune_searches_with_optuna_stops_hopeless_trials_early_and_writes_a_leaderboard(tmp_path, monkeypatch) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "tune"
    assert main(["sweep", "tune", "sweep=linucb_tune", "experiment=quick", "backend=true", "steps=12",
                 "--samples", "5", "--concurrent", "1", "--dir", str(folder)]) == 0
    records = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/job.json")}
    assert len(records) == 5 and {r["status"] for r in records.values()} <= {"done", "stopped"}
    done = [n for n, r in records.items() if r["status"] == "done"]
    stopped = [r for r in records.values() if r["status"] == "stopped"]
    assert done and stopped  # the first trial runs to the end; with 5 trials ASHA stops at least one
    for record in stopped:
        pages = int(record["error"].split(" after ")[1].split(" pages")[0])
        assert 3 <= pages < 24  # at a rung: after the grace of 12 // 4 pages, before the 2 x 12 pages of the end
    for name in done:  # a finished trial ran its 2 seeds and kept its agents
        runs = pd.read_csv(folder / name / "runs.csv")
        assert list(runs["seed"]) == [0, 1]
        assert (folder / name / "agents" / "linucb" / "seed1" / "policy.json").is_file()
    alphas = [float(next(o for o in r["overrides"] if o.startswith("agents.linucb.alpha=")).split("=")[1])
              for r in records.values()]
    assert len(set(alphas)) == 5 and all(0.01 <= a <= 5.0 for a in alphas)
    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(board) == len(done) and set(board["jobs"]) == set(done)
    assert "stopped early by ASHA" in (folder / "leaderboard.md").read_text()
    assert not (tmp_path / "ray_results").exists()


def test_a_sweep_fits_once_per_distinct_fit_config(tmp_path, monkeypatch) -> None:
    """Jobs that differ in an agent key load one cached fit; a sweep over a fit option fits once per value."""
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    common = ["compare", "-m", "experiment=quick", "backend=fitted", "truth=false", "bootstrap=0", "steps=2",
              "only=[random]", "fit.steps=40", "fit.class_epochs=3", f"cache_dir={cache}"]
    assert main([*common, "agents.random.seed=1,2,3", f"hydra.sweep.dir={tmp_path / 'agents'}"]) == 0
    assert len([p for p in (cache / "models").iterdir() if p.is_dir()]) == 1
    assert main([*common, "fit.item_bias_l2=0.001,0.01", f"hydra.sweep.dir={tmp_path / 'fits'}"]) == 0
    fits = [p for p in (cache / "models").iterdir() if p.is_dir()]
    assert len(fits) == 3  # the first sweep's fit (the default) and one per swept value


def test_a_users_own_sweep_file_runs_from_its_config_dir(tmp_path, monkeypatch) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_conf" / "sweep").mkdir(parents=True)
    (tmp_path / "my_conf" / "sweep" / "mine.yaml").write_text(
        "# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweep:\n    dir: multirun/sweep/mine\n"
        "  sweeper:\n    params:\n      only: '[random]'\n      seeds: '[0],[1]'\n")
    assert main(["compare", "--config-dir", str(tmp_path / "my_conf"), "sweep=mine", "experiment=quick",
                 "backend=true", "steps=2"]) == 0
    board = pd.read_csv(tmp_path / "multirun" / "sweep" / "mine" / "leaderboard.csv")
    assert list(board["agent"]) == ["random"] and int(board["seeds"].iloc[0]) == 2
