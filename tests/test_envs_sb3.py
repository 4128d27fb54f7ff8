"""SB3's VecEnv API over the batched env: same trajectories as SB3's DummyVecEnv, SB3 conventions kept."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from envs.build import setup_world, world_simulator
from envs.core import EnvConfig, Simulator
from envs.rerank import ReRankEnv, ReRankVectorEnv
from envs.sb3 import SB3BatchedEnv
from envs.synthetic import WorldConfig

N, K = 12, 4


@pytest.fixture(scope="module")
def sim() -> Simulator:
    setup = setup_world(WorldConfig(seed=3, n_items=150, n_users=120, n_slots=2000, n_candidates=N, slate_size=K),
                        dim=8)
    return world_simulator(setup, EnvConfig(n_candidates=N, slate_size=K, max_pages=3))


def _actions(rng: np.random.Generator, n_envs: int) -> np.ndarray:
    return rng.uniform(-1, 1, (n_envs, N)).astype(np.float32)


def test_one_session_matches_dummy_vec_env_step_for_step(sim):
    ours = SB3BatchedEnv(ReRankVectorEnv(1, simulator=sim))
    ours.seed(11)
    dummy = make_vec_env(lambda: ReRankEnv(sim), n_envs=1, seed=11, vec_env_cls=DummyVecEnv)
    np.testing.assert_array_equal(ours.reset(), dummy.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(40):
        a = _actions(rng, 1)
        ours.step_async(a)
        dummy.step_async(a)
        o1, r1, d1, i1 = ours.step_wait()
        o2, r2, d2, i2 = dummy.step_wait()
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_allclose(r1, r2, rtol=1e-6)
        np.testing.assert_array_equal(d1, d2)
        if d1[0]:
            ended += 1
            np.testing.assert_array_equal(i1[0]["terminal_observation"], i2[0]["terminal_observation"])
            assert i1[0]["TimeLimit.truncated"] == i2[0]["TimeLimit.truncated"]
    assert ended >= 5  # sessions of at most 3 pages: the autoreset path ran


def test_batch_keeps_sb3_conventions_and_monitor_counts_episodes(sim):
    env = VecMonitor(SB3BatchedEnv(ReRankVectorEnv(16, simulator=sim)))
    env.seed(0)
    obs = env.reset()
    assert obs.shape == (16, sim.obs_dim) and env.observation_space.shape == (sim.obs_dim,)
    rng = np.random.default_rng(1)
    episodes, truncated = [], 0
    for _ in range(10):
        obs, reward, dones, infos = env.step(_actions(rng, 16))
        assert reward.shape == (16,) and reward.dtype == np.float32 and dones.dtype == bool
        for done, info in zip(dones, infos, strict=True):
            assert ("terminal_observation" in info) == bool(done)
            if done:
                episodes.append(info["episode"]["l"])
                truncated += info["TimeLimit.truncated"]
    assert episodes and max(episodes) <= 3 and truncated > 0  # the page cap truncates some sessions
    assert env.get_attr("num_envs") == [16] * 16


def test_seed_reproduces_and_differs(sim):
    def first_obs(seed: int) -> np.ndarray:
        env = SB3BatchedEnv(ReRankVectorEnv(4, simulator=sim))
        env.seed(seed)
        return env.reset()

    np.testing.assert_array_equal(first_obs(5), first_obs(5))
    assert not np.array_equal(first_obs(5), first_obs(6))


def test_step_wait_needs_actions(sim):
    env = SB3BatchedEnv(ReRankVectorEnv(2, simulator=sim))
    env.reset()
    with pytest.raises(RuntimeError, match="step_async"):
        env.step_wait()
