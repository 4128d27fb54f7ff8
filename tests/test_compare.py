"""The main job: every config composes; a tiny run writes results, a PNG and readable TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from shopgym.cli.compare import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
AGENTS = sorted(p.stem for p in (Path(CONF_DIR) / "agent").glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="compare", overrides=overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str) -> None:
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.steps > 0 and len(cfg.seeds) >= 1


@pytest.mark.parametrize("agent", AGENTS)
def test_every_agent_config_instantiates(agent: str, small_world) -> None:
    from hydra.utils import instantiate

    from agents.base import RankingPolicy
    from envs.reward import RewardWeights

    cfg = _compose([f"+agent@agents.extra={agent}"])
    # the synthetic world's reference policies are given the world (and the env's reward) at build time
    supplies = {"logging_policy": {"world": small_world}, "oracle": {"world": small_world, "reward": RewardWeights()}}
    assert isinstance(instantiate(cfg.agents.extra, _convert_="all", **supplies.get(agent, {})), RankingPolicy)


def test_tiny_compare_writes_results_and_tensorboard(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from shopgym.app.compare import compare

    cfg = _compose(["experiment=quick", "backend=true", "steps=6", "seeds=[0,1]", "only=[random,cosine,linucb]",
                    "progress=false", f"cache_dir={tmp_path / 'cache'}"])
    table = compare(cfg, tmp_path / "run")
    out = tmp_path / "run"
    assert set(table["agent"]) == {"random", "cosine", "linucb"}
    csv = pd.read_csv(out / "results.csv")
    assert {"cumulative_reward", "cumulative_reward_ci95", "ndcg", "coverage"} <= set(csv.columns)
    assert (out / "results.md").read_text().startswith("| agent |")
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "steps: 6" in (out / "config.yaml").read_text()
    acc = EventAccumulator(str(out / "tensorboard" / "linucb" / "seed1"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"rollout/reward", "rollout/ctr", "eval/cumulative_regret", "eval/ndcg", "eval/coverage"} <= tags
    assert len(acc.Scalars("rollout/reward")) >= 2


def test_compare_rejects_unknown_agent(tmp_path) -> None:
    from shopgym.app.compare import compare
    from shopgym.errors import ConfigError

    cfg = _compose(["experiment=quick", "only=[nope]", "progress=false"])
    with pytest.raises(ConfigError, match="nope"):
        compare(cfg, tmp_path)


def test_blas_threads_limits_the_pools_and_rejects_bad_values():
    from threadpoolctl import threadpool_info

    from shopgym.app.compare import blas_threads
    from shopgym.errors import ConfigError

    with blas_threads(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
    with blas_threads(None):
        pass
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="blas_threads"):
            blas_threads(bad)


def test_agents_the_logs_cannot_support_are_skipped_and_reported(tmp_path) -> None:
    """Logs without user ids (like OBD): ALS cannot be fitted; the job runs the rest and says why."""
    from envs.build import QuickWorld
    from envs.synthetic import SyntheticWorld, generate_logs
    from shopgym.app.compare import compare
    from shopgym.data import LoggedData

    logs = generate_logs(SyntheticWorld(QuickWorld().config))
    anonymous = LoggedData(logs.items, logs.interactions.drop(columns=["user_id", "session_id"]), "anonymous")
    anonymous.save(tmp_path / "logs")
    cfg = _compose(["experiment=quick", "data=generic", f"data.path={tmp_path / 'logs'}", "steps=3",
                    "only=[random,als]", "progress=false", f"cache_dir={tmp_path / 'cache'}", "fit.steps=40",
                    "fit.class_restarts=1", "fit.class_epochs=3"])
    table = compare(cfg, tmp_path / "run")
    assert list(table["agent"]) == ["random"]
    report = (tmp_path / "run" / "results.md").read_text()
    assert "Skipped" in report and "als" in report and "user_id" in report


def test_cli_reports_bad_input_as_one_message(tmp_path, monkeypatch, capsys) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    status = main(["compare", "experiment=quick", "only=[nope]", "progress=false", f"hydra.run.dir={tmp_path}/o"])
    assert status == 2
    err = capsys.readouterr().err
    assert "shopgym: error:" in err and "nope" in err and "Traceback" not in err


def test_a_bad_fit_option_is_one_message_before_any_logs_are_made(tmp_path, monkeypatch, capsys) -> None:
    import envs.build
    from shopgym.cli import main

    def no_world(*args, **kwargs):
        raise AssertionError("the world was built before the fit options were checked")

    monkeypatch.setattr(envs.build, "setup_world", no_world)
    monkeypatch.chdir(tmp_path)
    status = main(["compare", "experiment=quick", "backend=fitted", "fit.class_restarts=x", "progress=false",
                   f"hydra.run.dir={tmp_path}/o"])
    assert status == 2
    err = capsys.readouterr().err
    assert "shopgym: error:" in err and "fit.class_restarts" in err and "Integer" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # checked at compose time: no run folder


def test_backend_option_accepts_what_hydra_parses():
    from shopgym.app.compare import backend_name
    from shopgym.errors import ConfigError

    assert backend_name(True) == "true"  # `backend=true` on the command line is YAML's boolean
    assert [backend_name(v) for v in ("true", "fitted", "segment")] == ["true", "fitted", "segment"]
    for bad in (False, "truth", 1):
        with pytest.raises(ConfigError, match="backend"):
            backend_name(bad)


def test_regret_is_measured_against_the_truth_whatever_the_backend():
    import numpy as np

    from envs.backends import TrueWorldBackend
    from envs.build import QuickWorld, setup_world, world_simulator
    from envs.core import EnvConfig
    from shopgym.app.rollout import true_candidate_values

    setup = setup_world(QuickWorld().config)
    config = EnvConfig(n_candidates=20, slate_size=5, max_pages=4, track_values=True)
    truth = TrueWorldBackend(setup.world)
    values = {}
    for backend in ("true", "segment"):
        sim = world_simulator(setup, config, backend=backend)
        state = sim.reset(np.random.default_rng(0), 16)
        res = sim.step(state, np.tile(np.arange(5), (16, 1)), np.random.default_rng(1))
        assert "candidate_values" in res.info
        values[backend] = true_candidate_values(sim, truth, state, res.info)
        if backend == "segment":  # the segment backend's own values are not the truth
            assert not np.allclose(res.info["candidate_values"], values[backend])
    np.testing.assert_allclose(values["segment"], values["true"])


def test_the_fit_group_reaches_the_response_model() -> None:
    from envs.fitted import FitConfig
    from shopgym.app.config import simulator_spec

    assert simulator_spec(_compose([])).fit == simulator_spec(_compose(["fit.seed=0"])).fit == FitConfig()
    cfg = simulator_spec(_compose(["backend=fitted", "fit.class_restarts=1", "fit.shopper_deviation=0"])).fit
    assert (cfg.class_restarts, cfg.shopper_deviation) == (1, 0)


@pytest.mark.parametrize("shoppers", ["all", "logged"])
def test_the_shoppers_option_sets_whose_sessions_the_agents_serve(tmp_path, shoppers: str) -> None:
    import numpy as np

    from shopgym.app.compare import prepare

    cfg = _compose(["experiment=quick", "backend=true", f"shoppers={shoppers}", "progress=false",
                    f"cache_dir={tmp_path / 'cache'}"])
    sim = prepare(cfg).sim
    rows = sim.source.sample(np.random.default_rng(0), 2000, 0.0).user  # -1: a shopper absent from the logs
    if shoppers == "logged":
        assert (rows >= 0).all()
    else:  # the small world's logs miss some of its shoppers
        assert (rows < 0).any() and (rows >= 0).any()


def test_a_bad_shoppers_option_is_one_clear_message(tmp_path) -> None:
    from shopgym.app.compare import prepare
    from shopgym.errors import ConfigError

    cfg = _compose(["experiment=quick", "backend=true", "shoppers=some", "progress=false",
                    f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ConfigError, match="`shoppers` must be one of 'all', 'logged', got 'some'"):
        prepare(cfg)


# ---------------------------------------------------------------------- Hydra-native command
def test_cfg_job_prints_the_composed_config(tmp_path, monkeypatch, capsys) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--cfg", "job", "experiment=quick", "encoder=hashing"]) == 0
    out = capsys.readouterr().out
    assert "_target_: encoders.HashingEncoder" in out and "steps: 30" in out and "backend: fitted" in out
    assert not (tmp_path / "outputs").exists()


def test_info_and_help_are_hydras(tmp_path, monkeypatch, capsys) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "shopgym compare" in out and "== Config groups ==" in out and "encoder: features, hashing, minilm" in out
    assert main(["compare", "--info", "config"]) == 0
    assert "Config search path" in capsys.readouterr().out


def test_encoder_is_a_group_and_a_run_with_it_works(tmp_path, monkeypatch) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "encoder=hashing", "experiment=quick", "backend=true", "only=[random]", "steps=2",
                 "progress=false", f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    assert "HashingEncoder" in (tmp_path / "run" / "config.yaml").read_text()


def test_multirun_sweeps_and_each_job_writes_its_results(tmp_path, monkeypatch) -> None:
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "-m", "experiment=quick", "backend=true", "only=[linucb]", "steps=2", "progress=false",
                 "agents.linucb.alpha=0.1,1.0", f"hydra.sweep.dir={tmp_path / 'sweep'}"]) == 0
    jobs = sorted((tmp_path / "sweep").glob("*/results.csv"))
    assert len(jobs) == 2
    assert "alpha: 1.0" in (jobs[1].parent / "config.yaml").read_text()
    # the leaderboard across the jobs: ranked, with the swept key only, and an unfinished job listed
    killed = tmp_path / "sweep" / "2" / ".hydra"
    killed.mkdir(parents=True)
    first = (jobs[0].parent / ".hydra" / "overrides.yaml").read_text()
    (killed / "overrides.yaml").write_text(first.replace("agents.linucb.alpha=0.1", "agents.linucb.alpha=5.0"))
    (killed.parent / "compare.log").write_text("[2026-12-06] finished linucb seed 0\n")
    assert main(["sweep", "report", str(tmp_path / "sweep")]) == 0
    board = pd.read_csv(tmp_path / "sweep" / "leaderboard.csv")
    results = [pd.read_csv(j) for j in jobs]
    order = np.argsort([-r["cumulative_reward"][0] for r in results], kind="stable")
    assert list(board["jobs"].astype(str)) == [str(i) for i in order]
    assert list(board["rank"]) == [1, 2] and set(board["agents.linucb.alpha"].astype(str)) == {"0.1", "1.0"}
    assert "only" not in board.columns  # the same in every job: not a swept key
    assert board["metric"].iloc[0] >= board["metric"].iloc[1]
    text = (tmp_path / "sweep" / "leaderboard.md").read_text()
    assert "2 of 3 jobs done, 0 failed, 1 unfinished" in text and "agents.linucb.alpha=5.0" in text
    assert "): [2026-12-06] finished" in text
    assert (tmp_path / "sweep" / "leaderboard.png").stat().st_size > 0
    assert main(["sweep", "report", str(tmp_path / "sweep"), "--metric", "nope"]) == 2


def test_main_returns_the_headline_metric(tmp_path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from shopgym.cli.compare import run

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="compare", return_hydra_config=True,
                      overrides=["experiment=quick", "backend=true", "only=[random,cosine]", "steps=3",
                                 "progress=false", f"hydra.run.dir={tmp_path / 'run'}",
                                 f"hydra.runtime.output_dir={tmp_path / 'run'}"])
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra hands the job its config
    value = run(cfg)
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert isinstance(value, float) and value == pytest.approx(table["cumulative_reward"].max())


def test_a_type_error_surfaces_at_compose_time() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="steps"):
        _compose(["steps=abc"])
    with pytest.raises(ConfigCompositionException, match="n_items"):
        _compose(["world.n_items=many"])


def test_the_main_job_reports_simulated_and_true_values_and_their_agreement(tmp_path) -> None:
    from shopgym.app.compare import compare

    cfg = _compose(["experiment=quick", "steps=4", "only=[random,cosine,popularity]", "progress=false",
                    f"cache_dir={tmp_path / 'cache'}", "fit.steps=40", "fit.class_restarts=1", "fit.class_epochs=3"])
    table = compare(cfg, tmp_path / "run")
    assert {"cumulative_reward", "true_cumulative_reward", "relative_error"} <= set(table.columns)
    assert table["true_cumulative_reward"].notna().all()
    expected = (table["cumulative_reward"] - table["true_cumulative_reward"]) / table["true_cumulative_reward"]
    assert (table["relative_error"] - expected).abs().max() < 1e-12
    report = (tmp_path / "run" / "results.md").read_text()
    assert "true_cumulative_reward" in report and "Kendall tau" in report and "fitted simulator" in report
    assert (tmp_path / "run" / "agreement.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_at_a_tiny_budget(tmp_path, experiment: str) -> None:
    from shopgym.app.compare import compare

    cfg = _compose([f"experiment={experiment}", "world=small", "env=small", "encoder=hashing", "steps=2",
                    "seeds=[0]", "batch_size=4", "only=[random,linucb]", "progress=false",
                    f"cache_dir={tmp_path / 'cache'}", "fit.steps=40", "fit.class_restarts=1",
                    "fit.class_epochs=3"])
    table = compare(cfg, tmp_path / "run")
    assert set(table["agent"]) == {"random", "linucb"}


def test_seeds_run_in_bootstrap_refits_of_the_fitted_simulator(tmp_path) -> None:
    """bootstrap=1: seed 0 runs in the fit, seed 1 in its bootstrap refit; results.md says what that buys."""
    from shopgym.app.compare import bootstrap_members, compare

    assert bootstrap_members(None, 5.0, 3) == 2 and bootstrap_members(None, 100.0, 3) == 0
    assert bootstrap_members(1, 100.0, 3) == 1
    for bad in (-1, True, "2"):
        with pytest.raises(Exception, match="bootstrap"):
            bootstrap_members(bad, 1.0, 3)
    common = ["experiment=quick", "backend=fitted", "truth=false", "steps=3", "seeds=[0,1]", "only=[random]",
              "progress=false", f"cache_dir={tmp_path / 'cache'}", "fit.steps=40", "fit.class_epochs=3"]
    one = compare(_compose([*common, "bootstrap=0"]), tmp_path / "one")
    two = compare(_compose([*common, "bootstrap=1"]), tmp_path / "two")
    assert "ran in 2 fitted models" in (tmp_path / "two" / "results.md").read_text()
    assert "not the model's uncertainty" in (tmp_path / "one" / "results.md").read_text()
    curves_one = pd.read_json(tmp_path / "one" / "curves.json")
    curves_two = pd.read_json(tmp_path / "two" / "curves.json")
    # seed 0 ran in the same model both times; seed 1 in the refit the second time
    assert curves_one["random/seed0"]["reward"] == curves_two["random/seed0"]["reward"]
    assert curves_one["random/seed1"]["reward"] != curves_two["random/seed1"]["reward"]
    assert len(one) == len(two) == 1


def test_a_killed_sweep_rerun_into_its_folder_redoes_only_what_was_lost(tmp_path, monkeypatch) -> None:
    """A sweep killed mid-way (job 1's run lost, job 0 finished) and started again with the same command: job 0's
    runs are read back, not run again; job 1's lost run is run; the leaderboard is the uninterrupted one."""
    from shopgym.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["compare", "-m", "experiment=quick", "backend=true", "only=[linucb]", "steps=3", "progress=false",
            "seeds=[0,1]", "agents.linucb.alpha=0.1,1.0", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert main(argv) == 0
    assert main(["sweep", "report", str(tmp_path / "sweep")]) == 0
    uninterrupted = pd.read_csv(tmp_path / "sweep" / "leaderboard.csv").drop(columns=["seconds"])
    done = tmp_path / "sweep" / "0" / "traces" / "linucb-seed1.json"
    stamp = done.stat().st_mtime_ns
    lost = tmp_path / "sweep" / "1" / "traces" / "linucb-seed1.json"
    lost.unlink()  # as if killed before job 1's second run was published
    (tmp_path / "sweep" / "1" / "results.csv").unlink()
    record = tmp_path / "sweep" / "1" / "job.json"
    record.write_text(record.read_text().replace('"status": "done"', '"status": "running"'))
    assert main(argv) == 0
    assert done.stat().st_mtime_ns == stamp  # read back, not run again
    assert lost.is_file()
    assert main(["sweep", "report", str(tmp_path / "sweep")]) == 0
    again = pd.read_csv(tmp_path / "sweep" / "leaderboard.csv").drop(columns=["seconds"])
    pd.testing.assert_frame_equal(again, uninterrupted)
