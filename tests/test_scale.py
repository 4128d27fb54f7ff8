"""Scale paths: observations by reference, the lazy context, row-set membership, neighbour search, float16 spaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp
from gymnasium.utils.env_checker import check_env

from envs.build import world_simulator
from envs.candidates import first_distinct_no_fill
from envs.core import in_row_sets
from envs.interface import PolicyInputError, RankingContext
from envs.neighbours import _exact, _ivf, _merge_co, item_neighbours
from envs.rerank import ReRankEnv, ReRankVectorEnv, flatten_ids_observation
from envs.space import ItemSpace
from shopgym.errors import ConfigError
from tests.test_envs import CONFIG, setup, sim  # noqa: F401  # the env tests' world and simulator fixtures


def test_ids_observation_conforms_and_flattens_to_the_flat_one(sim) -> None:  # noqa: F811  (fixture)
    check_env(ReRankEnv(sim, observation="ids"), skip_render_check=True)
    flat, ids = ReRankVectorEnv(16, simulator=sim), ReRankVectorEnv(16, simulator=sim, observation="ids")
    obs_f, _ = flat.reset(seed=5)
    obs_i, _ = ids.reset(seed=5)
    assert ids.observation_space.contains(obs_i)
    np.testing.assert_array_equal(flatten_ids_observation(obs_i, ids.item_table), obs_f)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(12):
        action = rng.uniform(-1, 1, (16, CONFIG.n_candidates)).astype(np.float32)
        obs_f, r_f, *_, info_f = flat.step(action)
        obs_i, r_i, *_, info_i = ids.step(action)
        np.testing.assert_array_equal(r_f, r_i)
        np.testing.assert_array_equal(flatten_ids_observation(obs_i, ids.item_table), obs_f)
        if "final_obs" in info_f:
            ended += 1
            np.testing.assert_array_equal(flatten_ids_observation(info_i["final_obs"], ids.item_table),
                                          info_f["final_obs"])
    assert ended  # the autoreset path was exercised
    single, _ = ReRankEnv(sim, observation="ids").reset(seed=1)
    assert flatten_ids_observation(single, sim.item_table).shape == (sim.obs_dim,)
    with pytest.raises(ConfigError, match="observation"):
        ReRankEnv(sim, observation="vectors")


def test_gym_make_passes_the_observation() -> None:
    env = gym.make("shopgym/ReRank-v0", env_config=CONFIG, observation="ids")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"user", "query", "is_search", "page", "candidates", "extra"}
    assert obs["candidates"].shape == (CONFIG.n_candidates,)
    env.close()


def test_context_gathers_candidate_vectors_only_when_read(sim) -> None:  # noqa: F811  (fixture)
    env = ReRankVectorEnv(4, simulator=sim, observation="ids")
    env.reset(seed=0)
    ctx = env.ranking_context()
    assert not ctx.has_candidate_vecs
    sub = ctx.take(np.array([2, 0]))
    assert not sub.has_candidate_vecs
    np.testing.assert_array_equal(ctx.candidate_vecs, sim.space.item_vecs[ctx.candidates])
    assert ctx.has_candidate_vecs and ctx.candidate_vecs is ctx.candidate_vecs  # gathered once
    np.testing.assert_array_equal(sub.candidate_vecs, ctx.candidate_vecs[[2, 0]])
    assert ctx.dim == sim.space.dim
    with pytest.raises(PolicyInputError, match="item_table"):
        RankingContext(ctx.user, ctx.query, ctx.is_search, ctx.candidates, None,  # type: ignore[arg-type]
                       ctx.user_ids, ctx.history, ctx.extra)
    with pytest.raises(PolicyInputError, match="candidate_vecs"):
        RankingContext(ctx.user, ctx.query, ctx.is_search, ctx.candidates, ctx.candidate_vecs[:, :3],
                       ctx.user_ids, ctx.history, ctx.extra)


def test_in_row_sets_equals_the_broadcast_comparison() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        b, m, s, n = (int(x) for x in rng.integers(1, [6, 9, 12, 30]))
        values, sets = rng.integers(0, n, (b, m)), rng.integers(-1, n, (b, s))
        sets[:, rng.integers(0, s):] = -1  # padded tails, as the env's `seen`
        expected = (values[:, :, None] == sets[:, None, :]).any(axis=2)
        np.testing.assert_array_equal(in_row_sets(values, sets), expected)


def test_first_distinct_keeps_column_order_and_counts() -> None:
    rng = np.random.default_rng(1)
    picks = rng.integers(0, 12, (200, 15))
    out, distinct = first_distinct_no_fill(picks, 6)
    for row, got, count in zip(picks, out, distinct, strict=True):
        firsts = list(dict.fromkeys(row.tolist()))
        assert count == len(firsts)
        assert got[:min(6, count)].tolist() == firsts[:6]
        assert (got[min(6, count):] == -1).all()


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n // 40, d))[rng.integers(0, n // 40, n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sparse_co_engagement_merge_equals_the_exact_lists() -> None:
    vecs = _clustered(600, 16, 0)
    rng = np.random.default_rng(2)
    users = sp.csr_matrix((np.ones(3000), (rng.integers(0, 300, 3000), rng.integers(0, 600, 3000))), shape=(300, 600))
    users.data[:] = 1.0
    co = (users.T @ users).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    k = 10
    exact = _exact(vecs, co, k)
    embedding = _exact(vecs, None, k)
    cos = np.einsum("nd,nkd->nk", vecs, vecs[embedding])
    merged = _merge_co(vecs, co, (embedding, cos), k)
    same = (merged == exact).mean()
    assert same > 0.99, same  # float32 vs float64 sums may swap exact ties only


def test_inverted_lists_recall_the_exact_neighbours() -> None:
    vecs = _clustered(6000, 32, 3)
    k = 20
    exact = _exact(vecs, None, k)
    ids, cos = _ivf(vecs, k, probes=8, seed=0)
    recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(exact, ids, strict=True)])
    assert recall > 0.95, recall
    assert not (ids == np.arange(len(vecs))[:, None]).any()  # never its own neighbour
    again = item_neighbours(vecs, None, k, exact_max=1000)
    np.testing.assert_array_equal(again, item_neighbours(vecs, None, k, exact_max=1000))  # seeded
    assert again.shape == (6000, k) and again.min() >= 0


def test_float16_space_saves_loads_memory_mapped_and_simulates(tmp_path, setup) -> None:  # noqa: F811  (fixture)
    space = setup.space
    half = ItemSpace(space.item_ids, space.item_vecs.astype(np.float16), space.query_texts, space.query_vecs,
                     space.projection)
    saved = half.save(tmp_path / "space")
    loaded = ItemSpace.load(saved)
    assert isinstance(loaded.item_vecs, np.memmap) and loaded.item_vecs.dtype == np.float16
    np.testing.assert_array_equal(loaded.item_vecs, half.item_vecs)
    assert list(loaded.item_ids) == [str(i) for i in space.item_ids]
    assert [p.name for p in tmp_path.iterdir()] == ["space"]  # nothing left beside it (built aside, renamed)
    from envs.build import WorldSetup

    sim16 = world_simulator(WorldSetup(setup.world, setup.logs, setup.train, setup.test, loaded), CONFIG)
    env = ReRankVectorEnv(32, simulator=sim16, observation="ids")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, (32, CONFIG.n_candidates)).astype(np.float32))
    ctx = env.ranking_context()
    assert ctx.candidate_vecs.dtype == np.float32
    assert env.item_table.dtype == np.float32
    with pytest.raises(ConfigError, match="missing"):
        ItemSpace.load(tmp_path)


@pytest.mark.parametrize("name", ["linucb", "lin_ts", "epsilon_greedy", "logistic", "neural_linear"])
def test_bandits_score_in_row_chunks_exactly_as_in_one_pass(monkeypatch, sim, name) -> None:  # noqa: F811  (fixture)
    import agents.features
    from agents import EpsilonGreedyRanker, LinTSRanker, LinUCBRanker, NeuralLinearRanker, OnlineLogisticRanker
    from agents.base import Feedback

    make = {"linucb": LinUCBRanker, "lin_ts": lambda **kw: LinTSRanker(estimate_propensity=True, **kw),
            "epsilon_greedy": EpsilonGreedyRanker, "logistic": OnlineLogisticRanker,
            "neural_linear": lambda **kw: NeuralLinearRanker(train_every=200, **kw)}[name]

    env = ReRankVectorEnv(150, simulator=sim, observation="ids")
    env.reset(seed=0)
    results = {}
    for chunk in (1000, 64):
        monkeypatch.setattr(agents.features, "ROW_CHUNK", chunk)
        policy = make(seed=0)
        rng = np.random.default_rng(4)
        env.reset(seed=0)
        ranks = []
        for _ in range(3):
            ctx = env.ranking_context()
            ranking = policy.rank(ctx, CONFIG.slate_size, rng)
            _, _, _, _, info = env.step_slots(ranking.slots)
            policy.update(ctx, ranking, Feedback(info["clicked"], info["carted"], info["purchased"],
                                                 info["slot_reward"]))
            ranks.append((ranking.slots, ranking.propensity, policy.score(env.ranking_context())))
        results[chunk] = ranks
    for (a_slots, a_prop, a_score), (b_slots, b_prop, b_score) in zip(*results.values(), strict=True):
        np.testing.assert_array_equal(a_slots, b_slots)
        np.testing.assert_array_equal(a_prop, b_prop)
        np.testing.assert_allclose(a_score, b_score, rtol=1e-12, atol=1e-12)


def test_precomputed_row_terms_give_the_models_own_logits() -> None:
    import torch

    from envs.latent import LatentClasses, _RowTerms

    torch.manual_seed(0)
    n_items, d, users, classes, rank, requests, n = 50, 12, 20, 4, 3, 100, 400
    model = LatentClasses(d, n_items, users, classes, rank, 5)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        model.basis.normal_()
        model.knots.copy_(torch.linspace(-1, 1, 5))
    items = torch.randn(n_items, d)
    row_item, row_req = torch.randint(0, n_items, (n,)), torch.randint(0, requests, (n,))
    search = (torch.rand(requests) < 0.4).float()
    query, profile = torch.randn(requests, d) * search[:, None], torch.randn(requests, d)
    row_user = torch.randint(0, users, (n,))
    terms = _RowTerms.of(items, row_item, row_req, query, search, profile, items @ model.basis.T)
    for rows in (torch.randperm(n)[:100], slice(10, 60)):
        expected = model.logits(items[row_item[rows]], query[row_req[rows]], search[row_req[rows]], row_item[rows],
                                profile[row_req[rows]], row_user[rows])
        torch.testing.assert_close(terms.logits(model, rows, row_user[rows]), expected, rtol=1e-5, atol=1e-5)
    no_profile = _RowTerms.of(items, row_item, row_req, query, search, None, items @ model.basis.T)
    rows = torch.arange(30)
    torch.testing.assert_close(no_profile.logits(model, rows, row_user[rows]),
                               model.logits(items[row_item[rows]], query[row_req[rows]], search[row_req[rows]],
                                            row_item[rows], None, row_user[rows]), rtol=1e-5, atol=1e-5)


def test_hashing_encoder_chunks_give_the_same_rows(monkeypatch) -> None:
    import encoders.hashing
    from encoders.hashing import HashingEncoder

    texts = [f"linen shirt {i % 7} blue {i % 13} men's" if i % 11 else "" for i in range(5000)]
    whole = HashingEncoder(dim=64, bigrams=True).encode(texts)
    monkeypatch.setattr(encoders.hashing, "_CHUNK", 700)
    monkeypatch.setattr(encoders.hashing, "_MIN_CHUNK", 300)
    np.testing.assert_array_equal(HashingEncoder(dim=64, bigrams=True).encode(texts), whole)
