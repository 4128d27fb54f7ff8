"""The purchase-choice simulator of purchase-only logs: repeat counts, the fit, the outside option, one purchase per
page at the multinomial-logit probabilities, persistence, the fidelity report, and (opt-in, slow) the real
UCI Online Retail log through `shopgym compare`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopgym.data import LoggedData

CATEGORIES = ("mug", "teapot", "candle", "basket")


def purchase_log(n_users: int = 120, per_user: int = 24, seed: int = 0) -> LoggedData:
    """Purchases only: each shopper re-buys one of their items half the time, else a new item of their category."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(80)],
                          "text": [f"{c} {w}" for j, (c, w) in enumerate(
                              (CATEGORIES[j % 4], ("red", "blue", "green", "white", "large")[j // 16])
                              for j in range(80))],
                          "price": np.round(rng.uniform(1, 20, 80), 2)})
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for u in range(n_users):
        category = u % 4
        own = np.flatnonzero(np.arange(80) % 4 == category)
        bought: list[int] = []
        for t in range(per_user):
            item = int(rng.choice(bought)) if bought and rng.random() < 0.5 else int(rng.choice(own))
            bought.append(item)
            rows.append((f"r{u}-{t}", f"u{u}", f"i{item}", start + pd.Timedelta(days=t * 3, hours=u % 24)))
    inter = pd.DataFrame(rows, columns=["request_id", "user_id", "item_id", "timestamp"])
    inter = inter.assign(position=1, clicked=1, purchased=1)
    return LoggedData.from_frames(items, inter, name="purchases")


def test_earlier_counts_match_a_loop() -> None:
    from envs.fitted.choice import PurchaseIndex

    rng = np.random.default_rng(0)
    user, item, request = rng.integers(0, 5, 300), rng.integers(0, 7, 300), rng.integers(0, 40, 300)
    q_user, q_item, q_request = rng.integers(0, 6, 200), rng.integers(0, 7, 200), rng.integers(0, 45, 200)
    got = PurchaseIndex(user, item, request, 7).earlier(q_user, q_item, q_request)
    want = [int(((user == u) & (item == i) & (request < r)).sum()) for u, i, r in
            zip(q_user, q_item, q_request, strict=True)]
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    from envs.build import SimulatorSpec, build_simulator
    from envs.fitted import FitConfig

    folder = tmp_path_factory.mktemp("purchases") / "log"
    purchase_log().save(folder)
    spec = SimulatorSpec(data="folder", data_path=str(folder), encoder="hashing", test_fraction=0.25,
                         fit=FitConfig(steps=300, seed=0))
    return build_simulator(spec)


def test_a_purchase_only_log_gets_the_choice_model_and_learns_repeats_and_taste(fitted) -> None:
    from envs.core import choice_probabilities

    model = fitted.model
    assert model.single_choice and model.choice is not None
    assert model.choice.repeat_coef > 0.5, model.report  # half the purchases are repeats
    assert model.report["valid_choice_nll"][-1] < np.log(1 + model.report["negatives"]) - 0.3
    sim = fitted.sim
    rng = np.random.default_rng(0)
    state = sim.reset(rng, 400)
    p = sim.backend.probabilities(state.sessions, sim.profile_vectors(state), state.candidates)
    np.testing.assert_array_equal(p[..., 1:], 1.0)  # a choice is a purchase
    # a shopper's own category is more attractive than the others (known shoppers, taste from the text)
    user = state.sessions.user
    category = np.where(user >= 0, np.array([int(u[1:]) % 4 for u in sim.users.user_ids])[np.maximum(user, 0)], -1)
    item_category = np.array([int(i[1:]) % 4 for i in sim.space.item_ids])[state.candidates]
    own = item_category == category[:, None]
    known = user >= 0
    assert p[..., 0][known][own[known]].mean() > 2 * p[..., 0][known][~own[known]].mean()
    assert choice_probabilities(p[..., 0][:, :5], np.ones(5)).sum(axis=1).max() < 1


def test_the_outside_option_sets_the_conversion_of_random_pages(fitted) -> None:
    from dataclasses import replace

    from envs.fitted import fit_response_model

    model, space, train = fitted.model, fitted.inputs.space, fitted.inputs.train
    sim = fitted.sim
    rng = np.random.default_rng(1)
    state = sim.reset(rng, 2000)
    known = state.sessions.user >= 0
    pages = rng.integers(0, space.n_items, (int(known.sum()), 10))
    sessions = state.sessions.take(np.flatnonzero(known))
    profile = sim.profile_vectors(state)[known]

    def conversion(m) -> float:
        backend = type(sim.backend)(m, space, sim.backend.purchases)
        a = backend.probabilities(sessions, profile, pages)[..., 0]
        odds = a / (1 - a)
        return float((odds.sum(axis=1) / (1 + odds.sum(axis=1))).mean())

    assert 0.5 * 0.02 < conversion(model) < 2 * 0.02
    higher = fit_response_model(train, space, replace(fitted.spec.fit, page_conversion=0.2))
    assert higher.attract_shift > model.attract_shift
    assert 0.5 * 0.2 < conversion(higher) < 1.5 * 0.2


def test_each_page_ends_in_at_most_one_purchase_at_the_logit_probabilities(fitted) -> None:
    from envs.core import choice_probabilities

    sim = fitted.sim
    rng = np.random.default_rng(2)
    one = sim.reset(rng, 64)
    row = int(np.flatnonzero(one.sessions.user >= 0)[0])
    n = 20_000
    state = one.take(np.full(n, row))
    slots = np.tile(np.arange(sim.config.slate_size), (n, 1))
    result = sim.step(state, slots, rng)
    purchased = result.info["purchased"]
    assert purchased.sum(axis=1).max() <= 1
    np.testing.assert_array_equal(result.info["clicked"], purchased)
    shown = state.candidates[:1, slots[0]]
    attract = sim.backend.probabilities(state.sessions.take(np.array([0])), sim.profile_vectors(state)[:1],
                                        shown)[..., 0]
    want = choice_probabilities(attract, sim.examination)[0]
    got = purchased.mean(axis=0)
    se = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(got - want) <= 5 * se + 1e-9), (got, want)
    # the tracked expected reward is the logit page value, the oracle's is at least as large
    assert np.all(result.info["oracle_reward"] >= result.info["expected_reward"] - 1e-12)
    np.testing.assert_allclose(result.info["expected_reward"][0], want.sum(), rtol=1e-9)


def test_a_choice_model_survives_save_and_load(fitted, tmp_path: Path) -> None:
    from envs.fitted import ResponseModel

    model = fitted.model
    model.save(tmp_path / "m")
    back = ResponseModel.load(tmp_path / "m")
    assert back.single_choice and back.choice.to_json() == model.choice.to_json()
    np.testing.assert_array_equal(back.choice.price_score, model.choice.price_score)
    sim = fitted.sim
    state = sim.reset(np.random.default_rng(3), 32)
    counts = sim.backend.repeats(state.sessions.user, state.candidates)
    args = (sim.profile_vectors(state), sim.space.item_vecs[state.candidates], np.zeros((32, sim.space.dim)),
            np.zeros(32, bool), state.candidates, state.sessions.user, None, counts)
    np.testing.assert_array_equal(back.predict(*args), model.predict(*args))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(Exception, match="refit it"):
        ResponseModel.load(tmp_path / "m")


def test_purchase_fidelity_reports_the_agents_order_and_the_next_purchase(fitted, tmp_path: Path) -> None:
    from encoders.hashing import HashingEncoder
    from shopgym.app.purchase_fidelity import purchase_fidelity, write_purchase_report

    report = purchase_fidelity(fitted, HashingEncoder(dim=256, seed=0), sessions=300, resamples=200)
    names = [row["policy"] for row in report.agents]
    assert set(names) == {"buy_again", "popularity", "item_knn", "als", "cosine", "random"}
    by_name = {row["policy"]: row for row in report.agents}
    assert by_name["buy_again"]["simulated"] > by_name["random"]["simulated"]
    assert -1 <= report.kendall_tau_hr <= 1
    figures = {row["figure"]: row for row in report.next_purchase}
    repeat = figures["repeat share (purchases of items bought before)"]
    assert 0.2 < repeat["heldout"] < 0.9 and repeat["simulated_low"] <= repeat["simulated"] <= repeat["simulated_high"]
    perplexity = figures["perplexity of held-out purchases (lower is better)"]
    assert perplexity["simulated"] < perplexity["reference"]  # taste and repeats beat popularity
    write_purchase_report(report, tmp_path)
    assert (tmp_path / "agents_order.png").stat().st_size > 0
    assert "Kendall tau" in (tmp_path / "fidelity.md").read_text()


@pytest.mark.slow
@pytest.mark.shared_data
def test_compare_runs_on_online_retail(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "shopgym", "compare", "data=online_retail", "experiment=quick",
                           f"data.path={shared_data / 'online_retail' / 'online_retail.csv.gz'}",
                           f"hydra.run.dir={out}", f"cache_dir={tmp_path / 'cache'}"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    assert {"buy_again", "random", "linucb"} <= set(table["agent"])
    reward = table.set_index("agent")["cumulative_reward"]
    assert reward["buy_again"] > reward["random"]
