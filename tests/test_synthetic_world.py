"""The synthetic shop world: determinism, the shape of its logs, exact propensities, the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs.synthetic import Intent, RewardWeights, SyntheticWorld, WorldConfig, generate_logs, logging_policy_for
from shopgym.errors import ConfigError


def test_same_seed_same_logs(small_world) -> None:
    a = generate_logs(small_world, 3000)
    b = generate_logs(SyntheticWorld(small_world.config), 3000)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    c = generate_logs(SyntheticWorld(WorldConfig(**(small_world.config.to_dict() | {"seed": 4}))), 3000)
    assert not a.interactions["item_id"].equals(c.interactions["item_id"])


def test_titles_are_composed_from_attributes(small_world) -> None:
    items = small_world.items_table()
    assert items["item_id"].is_unique
    for _, row in items.head(20).iterrows():
        for column in ("audience", "colour", "material", "style", "category", "brand"):
            assert row[column] in row["text"]
    # dresses are only made for women and girls
    dresses = items[items["category"] == "dress"]
    assert set(dresses["audience"]) <= {"women's", "girls'"}


def test_ctr_falls_with_position(small_logs) -> None:
    ctr = small_logs.summary().ctr_by_position
    values = [ctr[k] for k in sorted(ctr)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_ctr_falls_with_position_among_random_slates(small_logs) -> None:
    # on the uniformly random branch, item quality is the same at every slot: only examination differs
    inter = small_logs.interactions
    random_rows = inter[inter["slate_propensity"] < 0.01]
    ctr = random_rows.groupby("position")["clicked"].mean()
    assert ctr.iloc[0] > 1.5 * ctr.iloc[-1]


def test_logs_have_search_queries_and_purchases(small_logs) -> None:
    summary = small_logs.summary()
    assert 0.15 < summary.search_share < 0.45
    inter = small_logs.interactions
    assert ((inter["purchased"] <= inter["carted"]) & (inter["carted"] <= inter["clicked"])).all()
    assert (inter.loc[inter["purchased"] == 1, "revenue"] > 0).all()
    assert 0.01 < summary.ctr < 0.2


def test_marginal_propensities_sum_to_one_over_candidates(small_world) -> None:
    rng = np.random.default_rng(0)
    users, intent = small_world.sample_sessions(rng, 64)
    candidates = small_world.sample_candidates(rng, users, intent, small_world.config.n_candidates)
    policy = logging_policy_for(small_world)
    marginals = policy.marginals(users, candidates, intent, small_world.config.slate_size)
    np.testing.assert_allclose(marginals.sum(axis=2), 1.0)
    # each candidate appears at most once per ranking, so its marginals over slots sum to <= 1
    assert (marginals.sum(axis=1) <= 1 + 1e-12).all()


def test_logged_propensities_match_empirical_frequencies(small_world) -> None:
    rng = np.random.default_rng(1)
    users, intent = small_world.sample_sessions(rng, 1)
    candidates = small_world.sample_candidates(rng, users, intent, small_world.config.n_candidates)
    users, candidates = np.repeat(users, 20_000), np.repeat(candidates, 20_000, axis=0)
    intent = intent.take(np.zeros(20_000, dtype=int))
    policy = logging_policy_for(small_world)
    shown = policy.sample(rng, users, candidates, intent, small_world.config.slate_size)
    expected = policy.marginals(users[:1], candidates[:1], intent.take(np.array([0])), shown.slots.shape[1])[0]
    freq = np.zeros_like(expected)
    np.add.at(freq, (np.broadcast_to(np.arange(shown.slots.shape[1]), shown.slots.shape), shown.slots), 1.0)
    freq /= len(users)
    np.testing.assert_allclose(freq, expected, atol=0.01)
    # the logged propensity of each shown item is the marginal of that item at that slot
    rows = np.arange(shown.slots.shape[1])
    np.testing.assert_allclose(shown.propensity[0], expected[rows, shown.slots[0]])
    assert np.isclose(shown.slate_propensity[shown.explored].max(), shown.slate_propensity[shown.explored].min())


def test_oracle_prefers_the_oracle_ranking(small_world) -> None:
    rng = np.random.default_rng(2)
    users, intent = small_world.sample_sessions(rng, 500)
    candidates = small_world.sample_candidates(rng, users, intent, 20)
    k = 5
    best_cols = small_world.oracle_ranking(users, candidates, intent, k)
    best = np.take_along_axis(candidates, best_cols, axis=1)
    random_cols = np.argsort(rng.random(candidates.shape), axis=1)[:, :k]
    random = np.take_along_axis(candidates, random_cols, axis=1)
    v_best = small_world.expected_reward(users, best, intent)
    v_random = small_world.expected_reward(users, random, intent)
    assert (v_best >= v_random - 1e-12).all()
    assert v_best.mean() > 1.5 * v_random.mean()
    # reversing the best ranking can only lose (examination decreases with position)
    assert (small_world.expected_reward(users, best[:, ::-1], intent) <= v_best + 1e-12).all()


def test_oracle_matches_monte_carlo(small_world) -> None:
    rng = np.random.default_rng(3)
    users, intent = small_world.sample_sessions(rng, 1)
    candidates = small_world.sample_candidates(rng, users, intent, 20)
    ranking = candidates[:, :5]
    weights = RewardWeights(click=1.0, purchase=2.0)
    value = small_world.expected_reward(users, ranking, intent, weights)[0]
    n = 200_000
    exam = small_world.examination_probs(5)
    attract = small_world.attractiveness(users, ranking, intent)[0]
    cart, buy = small_world.conversion(users, ranking)
    clicks = rng.random((n, 5)) < exam * attract
    bought = clicks & (rng.random((n, 5)) < cart[0]) & (rng.random((n, 5)) < buy[0])
    simulated = (clicks.sum(1) + 2.0 * bought.sum(1)).mean()
    assert simulated == pytest.approx(value, rel=0.03)


def test_search_intent_favours_matching_items(small_world) -> None:
    users = np.zeros(1, dtype=int)
    items = np.arange(small_world.catalog.n_items)[None, :]
    category = small_world.catalog.values[:, 1]
    search = Intent(np.array([category[0]]), np.array([-1]), np.array([-1]), np.array([True]))
    attract = small_world.attractiveness(users, items, search)[0]
    assert attract[category == category[0]].mean() > 3 * attract[category != category[0]].mean()
    assert small_world.query_text(search)[0] == small_world.items_table()["category"][0]


@pytest.mark.parametrize("kwargs, match", [
    ({"slate_size": 50, "n_candidates": 20}, "slate_size"),
    ({"n_items": 0}, "n_items"),
    ({"search_share": 1.5}, "search_share"),
    ({"n_candidates": 5000}, "n_candidates"),
])
def test_bad_config(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        WorldConfig(**kwargs)
