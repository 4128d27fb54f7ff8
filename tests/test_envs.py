"""The re-ranking env: conformance, determinism, invalid actions, single vs vector, fitted model IO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.build import QuickWorld, fit_world, setup_world, world_simulator
from envs.core import EnvConfig, InvalidActionError, plackett_luce_log_prob
from envs.fitted import FitConfig, ResponseModel
from envs.fitted.model import shift_logit
from envs.rerank import ReRankEnv, ReRankVectorEnv
from shopgym.errors import ConfigError

CONFIG = EnvConfig(n_candidates=20, slate_size=5, max_pages=6)


@pytest.fixture(scope="module")
def setup():
    return setup_world(QuickWorld().config)


@pytest.fixture(scope="module")
def sim(setup):
    return world_simulator(setup, CONFIG)


@pytest.fixture(scope="module")
def model(setup):
    return fit_world(setup, FitConfig(steps=200, batch_size=512, class_restarts=1))  # restarts: test_latent.py


def test_registered_and_conforms(sim) -> None:
    assert envs.ENV_ID in gym.registry
    check_env(ReRankEnv(sim), skip_render_check=True)
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(ReRankEnv(sim), warn=False)


def test_gym_make_builds_default_world() -> None:
    env = gym.make(envs.ENV_ID, env_config=CONFIG)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def _rollout(env: gym.Env, seed: int, steps: int) -> list:
    obs, _ = env.reset(seed=seed)
    action_rng = np.random.default_rng(123)
    out = [obs]
    for _ in range(steps):
        action = action_rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["shown"].tolist(), info["clicked"].tolist()))
        if terminated or truncated:
            out.append(env.reset()[0])
    return out


def _equal(a: list, b: list) -> bool:
    return all(str(x) == str(y) if not isinstance(x, np.ndarray) else np.array_equal(x, y) for x, y in zip(a, b,
                                                                                                          strict=True))


def test_same_seed_same_trajectory(sim) -> None:
    a, b = _rollout(ReRankEnv(sim), 7, 50), _rollout(ReRankEnv(sim), 7, 50)
    assert _equal(a, b)
    c = _rollout(ReRankEnv(sim), 8, 50)
    assert not _equal(a, c)


def test_vector_env_of_one_matches_single_env(sim) -> None:
    single, vector = ReRankEnv(sim), ReRankVectorEnv(1, simulator=sim)
    obs_s, _ = single.reset(seed=3)
    obs_v, _ = vector.reset(seed=3)
    np.testing.assert_array_equal(obs_s, obs_v[0])
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = rng.uniform(-1, 1, (1, CONFIG.n_candidates)).astype(np.float32)
        obs_s, r_s, term_s, trunc_s, info_s = single.step(action[0])
        if term_s or trunc_s:
            obs_s, _ = single.reset()
        obs_v, r_v, term_v, trunc_v, info_v = vector.step(action)
        assert r_s == r_v[0] and term_s == term_v[0] and trunc_s == trunc_v[0]
        np.testing.assert_array_equal(info_s["shown"], info_v["shown"][0])
        np.testing.assert_array_equal(obs_s, obs_v[0])


def test_vector_env_matches_single_env_in_distribution(sim) -> None:
    # 64 sessions at once vs 64 single-env sessions: same click-through and session-length laws
    def single_stats() -> tuple[float, float]:
        env = ReRankEnv(sim)
        env.reset(seed=11)
        clicks, slots, lengths = 0, 0, []
        for _ in range(600):
            env.reset()
            done, n = False, 0
            while not done:
                _, _, term, trunc, info = env.step(np.zeros(CONFIG.n_candidates, np.float32))
                clicks += int(info["clicked"].sum())
                slots += CONFIG.slate_size
                n += 1
                done = term or trunc
            lengths.append(n)
        return clicks / slots, float(np.mean(lengths))

    def vector_stats() -> tuple[float, float]:
        vec = ReRankVectorEnv(64, simulator=sim)
        vec.reset(seed=12)
        clicks, slots, ended, pages = 0, 0, 0, 0
        while ended < 600:
            _, _, term, trunc, info = vec.step(np.zeros((64, CONFIG.n_candidates), np.float32))
            clicks += int(info["clicked"].sum())
            slots += 64 * CONFIG.slate_size
            pages += 64
            ended += int((term | trunc).sum())
        return clicks / slots, pages / ended

    ctr_s, len_s = single_stats()
    ctr_v, len_v = vector_stats()
    assert abs(ctr_s - ctr_v) < 0.25 * ctr_s + 0.005
    assert abs(len_s - len_v) < 0.15 * len_s


@pytest.mark.parametrize("action, match", [
    (np.zeros(19, np.float32), "shape"),
    (np.full(20, np.nan, np.float32), "finite"),
])
def test_invalid_score_actions(sim, action, match) -> None:
    env = ReRankEnv(sim)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


@pytest.mark.parametrize("action, match", [
    (np.array([0, 1, 2, 3, 3]), "at most once"),
    (np.array([0, 1, 2, 3, 25]), r"\[0, 20\)"),
    (np.array([0, 1, 2]), "5 candidate indices"),
    (np.array([0.0, 1, 2, 3, 4]), "integer"),
])
def test_invalid_ranking_actions(setup, action, match) -> None:
    from dataclasses import replace

    env = ReRankEnv(world_simulator(setup, replace(CONFIG, action_type="ranking")))
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)
    obs, reward, *_ = env.step(np.array([4, 3, 2, 1, 0]))
    assert env.observation_space.contains(obs)


def test_plackett_luce_probabilities_sum_to_one() -> None:
    import itertools

    logits = np.array([[0.3, -1.0, 2.0, 0.1]])
    total = sum(np.exp(plackett_luce_log_prob(logits, np.array([perm])))[0]
                for perm in itertools.permutations(range(4), 2))
    assert total == pytest.approx(1.0)


def test_shoppers_logged_draws_only_the_shoppers_of_the_training_logs(setup) -> None:
    rng = np.random.default_rng(0)
    everyone = world_simulator(setup, CONFIG).source.sample(rng, 4000, 0.0)
    logged = world_simulator(setup, CONFIG, shoppers="logged").source.sample(rng, 4000, 0.0)
    # the default world draws shoppers the training logs never saw (unknown users, row -1)
    assert (everyone.user < 0).any() and (logged.user >= 0).all()
    known = np.isin(setup.world.user_ids(), setup.train.interactions["user_id"].unique())
    assert known[logged.world_user].all() and not known[everyone.world_user].all()
    # the logged shoppers keep their relative activity: the most active one is drawn the most often
    top = np.argmax(np.where(known, setup.world.population.activity, 0.0))
    counts = np.bincount(logged.world_user, minlength=len(known))
    assert counts.argmax() == top or counts[top] >= 0.8 * counts.max()
    with pytest.raises(ConfigError, match="`shoppers` must be one of 'all', 'logged'"):
        world_simulator(setup, CONFIG, shoppers="new")  # type: ignore[arg-type]


def test_fitted_model_roundtrip_and_fitted_backend(tmp_path, setup, model) -> None:
    model.save(tmp_path / "m")
    loaded = ResponseModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.examination(5), model.examination(5))
    fitted = world_simulator(setup, CONFIG, backend="fitted", model=loaded)
    env = ReRankVectorEnv(8, simulator=fitted)
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.zeros((8, CONFIG.n_candidates), np.float32))
    assert obs.shape == (8, fitted.obs_dim) and np.isfinite(reward).all()
    # the fitted position bias falls with position, like the truth
    theta = model.examination_logged
    assert theta[0] == 1.0 and theta[-1] < 0.6


def test_fitted_model_refuses_positives_only_logs(setup) -> None:
    from envs.fitted import fit_response_model
    from shopgym.data import LoggedData
    from shopgym.errors import DataFormatError

    logs = setup.train
    inter = logs.interactions.assign(clicked=1)
    positives = LoggedData(logs.items, inter, "positives")
    with pytest.raises(DataFormatError, match="clicked"):
        fit_response_model(positives, setup.space)


def test_click_only_logs_never_simulate_carts_or_purchases(tmp_path, setup) -> None:
    from envs.build import log_simulator
    from envs.fitted import fit_response_model
    from shopgym.data import LoggedData

    logs = setup.train
    inter = logs.interactions.drop(columns=["carted", "purchased", "revenue"], errors="ignore")
    clicks_only = LoggedData(logs.items, inter, "clicks-only")
    model = fit_response_model(clicks_only, setup.space, FitConfig(steps=50, batch_size=512, class_restarts=1))
    assert not model.has_cart and not model.has_purchase
    model.save(tmp_path / "m")
    loaded = ResponseModel.load(tmp_path / "m")
    assert not loaded.has_cart and not loaded.has_purchase
    sim = log_simulator(clicks_only, setup.space, loaded, CONFIG)
    env = ReRankVectorEnv(32, simulator=sim)
    env.reset(seed=0)
    clicks = 0.0
    for _ in range(5):
        *_, info = env.step(np.zeros((32, CONFIG.n_candidates), np.float32))
        assert info["carted"].sum() == 0 and info["purchased"].sum() == 0
        clicks += info["clicked"].sum()
    assert clicks > 0
    # with carts and purchases in the logs the heads are trained and used
    assert model_has_heads(setup)


def model_has_heads(setup) -> bool:
    from envs.fitted import fit_response_model

    model = fit_response_model(setup.train, setup.space, FitConfig(steps=20, batch_size=512))
    return model.has_cart and model.has_purchase


def test_logs_without_user_ids_give_a_working_simulator(setup) -> None:
    """OBD-like logs (no user ids): every simulated shopper is cold, and nothing crashes."""
    from envs.build import log_simulator
    from envs.fitted import fit_response_model
    from shopgym.data import LoggedData

    logs = setup.train
    inter = logs.interactions.drop(columns=["user_id", "session_id"], errors="ignore")
    anonymous = LoggedData(logs.items, inter, "anonymous")
    assert not anonymous.has_users
    model = fit_response_model(anonymous, setup.space, FitConfig(steps=50, batch_size=512))
    sim = log_simulator(anonymous, setup.space, model, CONFIG)
    env = ReRankVectorEnv(16, simulator=sim)
    obs, _ = env.reset(seed=0)
    obs, reward, *_ = env.step(np.zeros((16, CONFIG.n_candidates), np.float32))
    assert np.isfinite(obs).all() and np.isfinite(reward).all()


def test_latent_classes_are_fitted_on_logs_with_users_and_survive_save_and_load(tmp_path, setup, model) -> None:
    assert model.classes is not None and model.report["latent_classes"]["mean_max_posterior"] > 0
    model.save(tmp_path / "m")
    loaded = ResponseModel.load(tmp_path / "m")
    assert loaded.classes is not None
    # the shoppers' own deviations (learned from the logger's ranked pages) are saved too
    assert loaded.classes.deviation_rank == model.classes.deviation_rank > 0
    # and so is the query-relevance curve of search pages
    assert len(loaded.classes.knots) == len(model.classes.knots) >= 2
    np.testing.assert_array_equal(loaded.classes.relevance.detach().numpy(), model.classes.relevance.detach().numpy())
    rng = np.random.default_rng(0)
    items = rng.integers(0, setup.space.n_items, (6, 4))
    queries = setup.space.query_vecs[rng.integers(0, len(setup.space.query_vecs), 6)] * (np.arange(6) % 2)[:, None]
    args = (rng.normal(size=(6, setup.space.dim)), setup.space.item_vecs[items], queries,
            np.arange(6) % 2 == 1, items, np.array([0, 1, 2, -1, 5, 10**6]))
    np.testing.assert_array_equal(model.predict(*args), loaded.predict(*args))
    # the class mixture, moved by the calibration's logit shift, not the MLP's click head, answers P(click | examined)
    np.testing.assert_allclose(model.predict(*args)[..., 0], shift_logit(
        model.classes.attractiveness(args[1], args[2], args[3], items, args[5], args[0]), model.attract_shift))


def test_latent_classes_can_be_turned_off(setup) -> None:
    off = fit_world(setup, FitConfig(steps=50, batch_size=512, latent_classes=0))
    assert off.classes is None and off.report["latent_classes"] is None
    with pytest.raises(Exception, match="latent_classes"):
        FitConfig(latent_classes=1)


def test_fit_config_from_options_converts_checks_and_names_bad_keys() -> None:
    cfg = FitConfig.from_options(["class_restarts=3", "debias=false", "threads=null", "seed=5"])
    assert (cfg.class_restarts, cfg.debias, cfg.threads, cfg.seed) == (3, False, None, 5)
    assert FitConfig.from_options({"lr": "0.01"}).lr == 0.01 and FitConfig.from_options(None) == FitConfig()
    with pytest.raises(ConfigError, match="'class_restart'.*known keys: hidden"):
        FitConfig.from_options(["class_restart=3"])
    with pytest.raises(ConfigError, match="'class_restarts'.*could not be converted"):
        FitConfig.from_options({"class_restarts": "three"})
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        FitConfig.from_options(["class_restarts"])
    with pytest.raises(ConfigError, match="class_restarts"):  # FitConfig's own range checks still apply
        FitConfig.from_options(["class_restarts=0"])


def test_the_composed_config_defaults_are_the_librarys() -> None:
    """The schema is generated from the library's dataclasses: the defaults are written once, in the library."""
    from hydra import compose, initialize_config_module

    from envs.build import SimulatorSpec
    from envs.core import EnvConfig
    from envs.synthetic import WorldConfig
    from shopgym.app.config import register_configs, simulator_spec

    register_configs()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        spec = simulator_spec(compose(config_name="compare"))
    assert (spec.fit, spec.world, spec.env) == (FitConfig(), WorldConfig(), EnvConfig())
    default = SimulatorSpec()
    assert (spec.backend, spec.shoppers, spec.test_fraction, spec.attribute_weight) == \
        (default.backend, default.shoppers, default.test_fraction, default.attribute_weight)
