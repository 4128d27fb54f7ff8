"""PPO with the Plackett-Luce ranking policy: encoding, exact probabilities, symmetry, persistence, a known optimum."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.base import PolicyInputError, RankingContext, load_policy
from agents.ppo import (
    PlackettLuceDistribution,
    PPORanker,
    decode_ranking,
    encode_ranking,
    observation_from_context,
    ranking_log_prob_entropy,
)
from envs.backends import Sessions
from envs.build import setup_world, world_simulator
from envs.core import EnvConfig, Simulator, plackett_luce_log_prob
from envs.rerank import ReRankEnv
from envs.synthetic import WorldConfig
from shopgym.errors import ConfigError

N, K = 10, 3
GOOD_ATTRACT, BAD_ATTRACT = 0.9, 0.1


class OneFeatureBackend:
    """Known optimum: a candidate is clicked with 0.9 if its first embedding coordinate is in the top 30 %, else 0.1.

    Every slot is examined and sessions go on with probability 0.8, so the best page shows the "good" candidates
    and its expected reward is ``sum of the K best attractions`` (the env's ``oracle_reward``).
    """

    def __init__(self, good: np.ndarray) -> None:
        self.good = good

    def examination(self, n_positions: int) -> np.ndarray:
        return np.ones(n_positions)

    def probabilities(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray) -> np.ndarray:
        out = np.zeros((*shown.shape, 3))
        out[..., 0] = np.where(self.good[shown], GOOD_ATTRACT, BAD_ATTRACT)
        return out

    def continuation(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray, clicked: np.ndarray,
                     purchased: np.ndarray, repeat_share: np.ndarray, attract: np.ndarray,
                     page: np.ndarray) -> np.ndarray:
        return np.full(len(page), 0.8)


@pytest.fixture(scope="module")
def setup():
    return setup_world(WorldConfig(seed=0, n_items=200, n_users=200, n_slots=3000, n_candidates=N, slate_size=K),
                       dim=16)


def _sim(setup, **env_kwargs) -> Simulator:
    config = EnvConfig(n_candidates=N, slate_size=K, max_pages=5, **env_kwargs)
    return world_simulator(setup, config)


@pytest.fixture(scope="module")
def toy_sim(setup) -> Simulator:
    base = _sim(setup)
    first = setup.space.item_vecs[:, 0]
    good = first > np.quantile(first, 0.7)
    return Simulator(base.space, base.users, base.generator, OneFeatureBackend(good), base.source, base.config,
                     base.prices, base.default_profile)


def _contexts(sim: Simulator, n: int, seed: int) -> tuple[RankingContext, np.ndarray]:
    state = sim.reset(np.random.default_rng(seed), n)
    return sim.context(state), sim.observe(state)


# ---------------------------------------------------------------------- encoding and probabilities
def test_encoding_roundtrips_through_the_env_top_k(toy_sim):
    rng = np.random.default_rng(0)
    ranking = torch.as_tensor(np.stack([rng.permutation(N)[:K] for _ in range(50)]))
    actions = encode_ranking(ranking, N)
    assert actions.dtype == torch.float32 and actions.shape == (50, N)
    assert (actions.abs() <= 1.0).all()  # inside Box(-1, 1): SB3's clip leaves it as is
    assert torch.equal(torch.as_tensor(np.clip(actions.numpy(), -1, 1)), actions)
    assert torch.equal(decode_ranking(actions, K), ranking)
    slots, prob = toy_sim.slots_from_action(actions.numpy(), rng)  # what the env shows
    np.testing.assert_array_equal(slots, ranking.numpy())
    np.testing.assert_array_equal(prob, 1.0)


def _all_rankings(n: int, k: int) -> torch.Tensor:
    return torch.as_tensor(list(itertools.permutations(range(n), k)))


def test_log_prob_is_exact_and_entropy_estimate_is_unbiased():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0, 0.7]], dtype=torch.float64)
    rankings = _all_rankings(5, 3)
    rows = logits.expand(len(rankings), -1)
    log_prob, entropy = ranking_log_prob_entropy(rows, rankings)
    np.testing.assert_allclose(log_prob.numpy(), plackett_luce_log_prob(rows.numpy(), rankings.numpy()), atol=1e-12)
    prob = log_prob.exp()
    assert prob.sum().item() == pytest.approx(1.0, abs=1e-12)  # a distribution over all 5!/2! rankings
    exact_entropy = -(prob * log_prob).sum().item()
    assert (prob * entropy).sum().item() == pytest.approx(exact_entropy, abs=1e-12)  # chain rule
    one = ranking_log_prob_entropy(logits, torch.tensor([[2]]))[1].item()  # K = 1: exact softmax entropy
    p = torch.softmax(logits, 1)
    assert one == pytest.approx(-(p * p.log()).sum().item(), abs=1e-12)


def test_gumbel_top_k_samples_the_plackett_luce_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.0, -0.5, 0.5]])
    dist = PlackettLuceDistribution(2).proba_distribution(logits.expand(40_000, -1))
    sampled = decode_ranking(dist.sample(), 2)
    rankings = _all_rankings(4, 2)
    expected = ranking_log_prob_entropy(logits.expand(len(rankings), -1), rankings)[0].exp()
    counts = (sampled[:, None, :] == rankings[None]).all(dim=2).sum(dim=0).double() / len(sampled)
    np.testing.assert_allclose(counts.numpy(), expected.numpy(), atol=0.01)
    assert torch.equal(decode_ranking(dist.mode(), 2)[0], torch.tensor([0, 3]))


def test_entropy_gradients_are_finite_after_masking():
    logits = torch.randn(4, N, requires_grad=True)
    ranking = torch.stack([torch.randperm(N)[:K] for _ in range(4)])
    log_prob, entropy = ranking_log_prob_entropy(logits, ranking)
    (log_prob.sum() + entropy.sum()).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------- the policy
def _built(sim: Simulator, seed: int = 0, **kwargs) -> PPORanker:
    ranker = PPORanker(seed=seed, slate_size=K, **kwargs)
    ranker.score(_contexts(sim, 1, 0)[0])  # builds the network for the sim's shapes
    return ranker


def test_scores_are_permutation_equivariant_and_values_invariant(toy_sim):
    ranker = _built(toy_sim)
    policy = ranker.policy
    assert policy is not None
    torch.manual_seed(0)
    with torch.no_grad():  # make the logit head non-trivial
        policy.logit_head.weight.normal_()
    ctx, obs = _contexts(toy_sim, 6, 1)
    perm = np.random.default_rng(1).permutation(N)
    shuffled = RankingContext(ctx.user, ctx.query, ctx.is_search, ctx.candidates[:, perm],
                              ctx.candidate_vecs[:, perm], ctx.user_ids, ctx.history, ctx.extra[:, perm])
    np.testing.assert_allclose(ranker.score(shuffled), ranker.score(ctx)[:, perm], rtol=1e-5, atol=1e-6)
    obs_shuffled = observation_from_context(shuffled, page=obs[:, 2 * toy_sim.space.dim + 1])
    with torch.no_grad():
        values = policy.predict_values(torch.as_tensor(obs)).numpy()
        values_shuffled = policy.predict_values(torch.as_tensor(obs_shuffled)).numpy()
    np.testing.assert_allclose(values_shuffled, values, rtol=1e-5, atol=1e-6)


def test_context_scores_equal_the_scores_the_policy_acts_on(toy_sim):
    ranker = _built(toy_sim)
    env = ReRankEnv(toy_sim)
    env.reset(seed=3)
    for _ in range(3):  # later pages too: the actor does not read the page counter
        obs, *_ = env.step(np.linspace(1, -1, N, dtype=np.float32))
        assert ranker.policy is not None
        with torch.no_grad():
            acted = ranker.policy.logits(torch.as_tensor(obs[None])).numpy()
        np.testing.assert_allclose(ranker.score(env.ranking_context()), acted, atol=1e-6)


def test_forward_and_evaluate_actions_agree(toy_sim):
    ranker = _built(toy_sim)
    policy = ranker.policy
    assert policy is not None
    _, obs = _contexts(toy_sim, 8, 2)
    x = torch.as_tensor(obs)
    torch.manual_seed(0)
    with torch.no_grad():
        actions, values, log_prob = policy(x)
        values2, log_prob2, entropy = policy.evaluate_actions(x, actions)
    assert actions.shape == (8, N) and values.shape == (8, 1) and log_prob.shape == (8,)
    torch.testing.assert_close(log_prob2, log_prob)
    torch.testing.assert_close(values2, values)
    assert entropy is not None and (entropy > 0).all()
    # near-uniform at initialisation: log P = -log(N (N-1) (N-2)) for every ranking
    assert log_prob.numpy() == pytest.approx(-math.log(N * (N - 1) * (N - 2)), abs=0.05)


def test_rank_reports_exact_slate_propensities(toy_sim):
    ranker = _built(toy_sim)
    assert ranker.policy is not None
    torch.manual_seed(0)
    with torch.no_grad():
        ranker.policy.logit_head.weight.normal_(std=3.0)
    ctx, _ = _contexts(toy_sim, 5, 4)
    ranking = ranker.rank(ctx, K, np.random.default_rng(0))
    logits = ranker.score(ctx)
    assert ranking.slots.shape == (5, K) and ranking.slots.dtype == np.int64
    np.testing.assert_allclose(ranking.slate_propensity, np.exp(plackett_luce_log_prob(logits, ranking.slots)))
    first = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ranking.propensity[:, 0], first[np.arange(5), ranking.slots[:, 0]], rtol=1e-6)
    assert np.isnan(ranking.propensity[:, 1:]).all()  # documented: NaN unless estimated

    ranker.estimate_propensity, ranker.n_propensity_samples = True, 2000
    estimated = ranker.rank(ctx, K, np.random.default_rng(1))
    assert np.isfinite(estimated.propensity).all() and (estimated.propensity > 0).all()
    again = ranker.rank(ctx, K, np.random.default_rng(1))
    np.testing.assert_array_equal(again.slots, estimated.slots)  # same generator, same numbers
    # against the exact per-slot marginals, by enumerating all N!/(N-K)! rankings
    rankings = _all_rankings(N, K).numpy()
    for b in range(5):
        prob = np.exp(plackett_luce_log_prob(np.repeat(logits[b:b + 1], len(rankings), 0), rankings))
        exact = [prob[rankings[:, j] == estimated.slots[b, j]].sum() for j in range(K)]
        assert estimated.propensity[b, 0] == pytest.approx(exact[0], rel=1e-6)
        np.testing.assert_allclose(estimated.propensity[b, 1:], exact[1:], atol=0.03)


# ---------------------------------------------------------------------- arguments, envs, persistence
INVALID_ARGS = [
    ({"hidden": []}, ConfigError, "hidden"),
    ({"hidden": 64}, ConfigError, "hidden"),
    ({"activation": "gelu"}, ConfigError, "activation"),
    ({"learning_rate": 0.0}, ConfigError, "learning_rate"),
    ({"n_steps": 1}, ConfigError, "n_steps"),
    ({"gamma": 1.5}, ConfigError, "gamma"),
    ({"clip_range": -0.1}, ConfigError, "clip_range"),
    ({"n_envs": 0}, ConfigError, "n_envs"),
    ({"seed": 1.5}, ConfigError, "seed"),
    ({"n_candidates": 3, "slate_size": 5}, ConfigError, "slate_size"),
]


@pytest.mark.parametrize("kwargs, err, match", INVALID_ARGS)
def test_rejects_bad_args(kwargs, err, match):
    with pytest.raises(err, match=match):
        PPORanker(**kwargs)


@pytest.mark.parametrize("env_kwargs, match", [({"ranking_mode": "plackett_luce"}, "ranking_mode"),
                                               ({"action_type": "ranking"}, "action_type")])
def test_rejects_envs_it_cannot_act_in(setup, env_kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PPORanker(n_steps=8, batch_size=8).learn(_sim(setup, **env_kwargs), 8)


def test_rejects_contexts_of_another_shape(toy_sim):
    ranker = _built(toy_sim)
    ctx, _ = _contexts(toy_sim, 2, 0)
    other = RankingContext(ctx.user[:, :8], ctx.query[:, :8], ctx.is_search, ctx.candidates,
                           ctx.candidate_vecs[:, :, :8], ctx.user_ids, ctx.history, ctx.extra)
    with pytest.raises(PolicyInputError, match="d=16"):
        ranker.score(other)


SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 2, "n_envs": 2}


def test_training_without_tensorboard_leaves_nothing_in_the_temp_folder(toy_sim, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    PPORanker(seed=0, **SMALL).learn(toy_sim, 64)
    assert not list(tmp_path.glob("SB3-*"))


def test_same_seed_same_numbers(toy_sim):
    def train(seed: int) -> PPORanker:
        return PPORanker(seed=seed, **SMALL).learn(toy_sim, 128)

    a, b, c = train(5), train(5), train(6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)
    assert not np.array_equal(sa["policy.logit_head.weight"], sc["policy.logit_head.weight"])
    assert a.num_timesteps == 128 and len(a.curve.timesteps) == 2


def test_save_and_load_without_pickle(toy_sim, tmp_path: Path):
    ranker = PPORanker(seed=1, **SMALL).learn(toy_sim, 64)
    folder = ranker.save(tmp_path / "ppo")
    assert sorted(p.name for p in folder.iterdir()) == ["policy.json", "state.safetensors"]
    header = json.loads((folder / "policy.json").read_text())
    assert header["class"] == "agents.ppo.PPORanker" and header["config"]["dim"] == 16
    loaded = load_policy(folder)
    assert isinstance(loaded, PPORanker)
    ctx, _ = _contexts(toy_sim, 4, 9)
    np.testing.assert_array_equal(loaded.score(ctx), ranker.score(ctx))
    np.testing.assert_array_equal(loaded.curve.reward_per_page, ranker.curve.reward_per_page)
    assert loaded.num_timesteps == ranker.num_timesteps == 64
    r1 = loaded.rank(ctx, K, np.random.default_rng(0))
    r2 = ranker.rank(ctx, K, np.random.default_rng(0))
    np.testing.assert_array_equal(r1.slots, r2.slots)
    # training continues from the loaded weights
    loaded.learn(toy_sim, 64)
    assert loaded.num_timesteps == 128 and len(loaded.curve.timesteps) == 2


def test_corrupted_state_is_reported(toy_sim, tmp_path: Path):
    folder = PPORanker(seed=1, **SMALL).learn(toy_sim, 64).save(tmp_path / "ppo")
    header = json.loads((folder / "policy.json").read_text())
    header["config"]["hidden"] = [8]
    (folder / "policy.json").write_text(json.dumps(header))
    with pytest.raises(ConfigError, match="does not fit"):
        load_policy(folder)


# ---------------------------------------------------------------------- known optimum
def _page_values(sim: Simulator, act, pages: int = 300, seed: int = 123) -> tuple[float, float]:
    """Mean expected reward of the shown pages and of the best pages, over ``pages`` pages of the env."""
    env = ReRankEnv(sim)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    expected, oracle = [], []
    for _ in range(pages):
        _, _, terminated, truncated, info = env.step(act(env, rng))
        expected.append(info["expected_reward"])
        oracle.append(info["oracle_reward"])
        if terminated or truncated:
            env.reset()
    return float(np.mean(expected)), float(np.mean(oracle))


def _from_slots(slots: np.ndarray) -> np.ndarray:
    return encode_ranking(torch.as_tensor(slots[None]), N)[0].numpy()


def _check_learns_known_optimum(sim: Simulator, timesteps: int, greedy_share: float, sampled_gain: float) -> None:
    # The page does not change the future here (a contextual bandit in disguise): a short horizon, gamma = 0.5,
    # keeps the next pages' click noise out of the advantages while still bootstrapping from the critic.
    # 8 rollouts of 256 pages: 5 epochs per rollout (the compare job's 3 suit its 125 rollouts of 128 pages)
    ranker = PPORanker(seed=0, n_envs=4, n_steps=64, gamma=0.5, n_epochs=5).learn(sim, timesteps)
    random_value, oracle = _page_values(sim, lambda env, rng: rng.uniform(-1, 1, N).astype(np.float32))
    greedy, _ = _page_values(sim, lambda env, rng: ranker.score(env.ranking_context())[0])
    sampled, _ = _page_values(sim, lambda env, rng: _from_slots(ranker.rank(env.ranking_context(), K, rng).slots[0]))
    print(f"reward per page after {timesteps} steps: random {random_value:.3f}, PPO sampled {sampled:.3f}, "
          f"PPO greedy {greedy:.3f}, optimum {oracle:.3f}; curve {np.round(ranker.curve.reward_per_page, 2)}")
    assert random_value == pytest.approx(K * (0.3 * GOOD_ATTRACT + 0.7 * BAD_ATTRACT), abs=0.15)
    assert greedy >= random_value + greedy_share * (oracle - random_value)
    assert sampled >= random_value + sampled_gain
    assert ranker.curve.reward_per_page[-2:].mean() >= random_value + 0.75 * sampled_gain  # earned on-policy


def test_ppo_learns_the_known_optimum(toy_sim):
    _check_learns_known_optimum(toy_sim, 2048, greedy_share=0.8, sampled_gain=0.4)


@pytest.mark.slow
def test_ppo_learns_the_known_optimum_long(toy_sim):
    _check_learns_known_optimum(toy_sim, 8192, greedy_share=0.95, sampled_gain=0.9)


def test_learns_from_an_env_instance_and_logs_the_reward_curve(toy_sim, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ranker = PPORanker(seed=2, n_steps=32, batch_size=32, n_epochs=1).learn(ReRankEnv(toy_sim), 64,
                                                                            tensorboard_log=str(tmp_path))
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    logged = [e.value for e in events.Scalars("rollout/reward_per_page")]
    np.testing.assert_allclose(logged, ranker.curve.reward_per_page, rtol=1e-6)
    # SB3's own predict goes through the same encoding: deterministic actions show the top-K logits
    _, obs = _contexts(toy_sim, 4, 5)
    assert ranker.policy is not None
    actions, _ = ranker.policy.predict(obs, deterministic=True)
    top = np.argsort(-ranker.policy.logits(torch.as_tensor(obs)).detach().numpy(), axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(decode_ranking(torch.as_tensor(actions), K).numpy(), top)


def test_refuses_an_env_of_another_dimension(toy_sim, setup):
    ranker = PPORanker(seed=0, n_steps=16, batch_size=16, dim=8, n_extra=2, n_candidates=N, slate_size=K)
    ranker.score(RankingContext(np.zeros((1, 8), np.float32), np.zeros((1, 8), np.float32), np.zeros(1, bool),
                                np.arange(N)[None], np.zeros((1, N, 8), np.float32), np.zeros(1, np.int64),
                                np.full((1, 1), -1), np.zeros((1, N, 2), np.float32)))  # built for d = 8
    with pytest.raises(ConfigError, match="d=8"):
        ranker.learn(toy_sim, 16)
