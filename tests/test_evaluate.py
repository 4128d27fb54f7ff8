"""Offline ranking evaluation: the metrics by hand, the buy-again baseline, the split, the command (and on the
real Online Retail log: every policy with intervals in under a minute, buy-again first)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shopgym.data import LoggedData


def test_ranking_metrics_by_hand() -> None:
    from shopgym.app.evaluate import ranking_metrics

    # shopper 0 wants {2, 5}: ranked [5, 1, 2] -> hits at ranks 1 and 3; shopper 1 wants {4}: no hit in top 3
    targets = sp.csr_array(np.array([[0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 0]], dtype=float))
    m = ranking_metrics(np.array([[5, 1, 2], [0, 1, 2]]), targets, 3)
    np.testing.assert_allclose(m["hr"], [1, 0])
    np.testing.assert_allclose(m["recall"], [1.0, 0.0])
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(m["ndcg"], [(1 + 1 / np.log2(4)) / ideal, 0.0])
    np.testing.assert_allclose(m["mrr"], [1.0, 0.0])
    # k = 1: only the first rank counts
    m1 = ranking_metrics(np.array([[1, 5], [4, 0]]), targets, 1)
    np.testing.assert_allclose(m1["hr"], [0, 1])
    np.testing.assert_allclose(m1["ndcg"], [0, 1])


def _purchases() -> LoggedData:
    """Three shoppers buying over two months (one row per purchase, no impressions)."""
    rows = [("u1", "a", "2024-01-01"), ("u1", "a", "2024-01-20"), ("u1", "b", "2024-01-02"),
            ("u2", "c", "2024-01-05"), ("u2", "d", "2024-02-01"), ("u3", "b", "2024-01-07"),
            ("u1", "a", "2024-03-01"), ("u2", "c", "2024-03-02"), ("u2", "e", "2024-03-03"),
            ("u4", "a", "2024-03-04")]
    inter = pd.DataFrame({"request_id": [f"r{i}" for i in range(len(rows))], "user_id": [r[0] for r in rows],
                          "item_id": [r[1] for r in rows], "timestamp": [r[2] for r in rows], "position": 1,
                          "clicked": 1, "purchased": 1})
    items = pd.DataFrame({"item_id": list("abcdef"), "text": ["red mug", "blue mug", "tea", "coffee", "milk", "jam"]})
    return LoggedData.from_frames(items, inter, name="purchases")


def test_buy_again_ranks_what_the_shopper_bought_recent_and_frequent_first(tmp_path: Path) -> None:
    from agents import BuyAgainPolicy, load_policy
    from agents.base import RankingContext

    logs = _purchases()
    train, _ = logs.split_by_time(0.4)
    users = pd.Index(["u1", "u2", "u3", "nobody"])
    policy = BuyAgainPolicy(half_life_days=10).fit(train, logs.item_index(), users)
    n = 6
    ctx = RankingContext(user=np.zeros((4, 2)), query=np.zeros((4, 2)), is_search=np.zeros(4, bool),
                         candidates=np.tile(np.arange(n), (4, 1)), candidate_vecs=np.zeros((4, n, 2)),
                         user_ids=np.array([0, 1, 2, -1]), history=np.full((4, 1), -1), extra=np.zeros((4, n, 2)))
    scores = policy.score(ctx)
    assert scores[0, 0] > scores[0, 1] > scores[0, 2:].max()  # u1: a twice, b once (older) > the rest
    assert scores[1, 3] > scores[1, 2] > 1.0  # u2: d (Feb) more recent than c (Jan)
    assert (scores[1, 2:4] > 1).all() and (scores[1, [0, 1, 4, 5]] < 1).all()
    np.testing.assert_array_equal(np.argsort(-scores[3], kind="stable")[:2], [0, 1])  # unknown: popularity
    policy.save(tmp_path / "p")
    np.testing.assert_allclose(load_policy(tmp_path / "p").score(ctx), scores)


def test_the_split_counts_who_is_left_out_and_needs_user_ids() -> None:
    from shopgym.app.evaluate import next_item_split
    from shopgym.errors import DataFormatError

    split = next_item_split(_purchases(), test_fraction=0.4)
    # test part: u1 a, u2 c, u2 e, u4 a -> u1 and u2 evaluated, u4 has no history
    assert len(split.users) == 2 and split.left_out["no history before the split"] == 1
    assert split.targets.sum() == 3
    logs = _purchases()
    anonymous = LoggedData.from_frames(logs.items, logs.interactions.drop(columns=["user_id"]), name="anon")
    with pytest.raises(DataFormatError, match="user_id"):
        next_item_split(anonymous)


def test_evaluate_command_writes_the_table_with_intervals(tmp_path: Path, capsys) -> None:
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs
    from shopgym.cli import main

    folder = tmp_path / "shop"
    generate_logs(SyntheticWorld(WorldConfig(seed=1, n_items=200, n_users=300, n_slots=8000))).save(folder)
    out = tmp_path / "offline"
    assert main(["evaluate", str(folder), "--target", "click", "--resamples", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| policy | HR@10 |" in printed and "shoppers evaluated" in printed
    report = json.loads((out / "report.json").read_text())
    results = {r["policy"]: r for r in report["results"]}
    assert set(results) == {"buy_again", "popularity", "item_knn", "als", "cosine", "random"}
    for r in results.values():
        assert r["hr_low"] <= r["hr"] <= r["hr_high"] and 0 <= r["ndcg"] <= 1
    assert results["random"]["ndcg"] < max(r["ndcg"] for r in results.values())
    assert (out / "results.png").stat().st_size > 0 and (out / "results.csv").is_file()
    assert main(["evaluate", str(folder), "--policies", "nope"]) == 2


@pytest.mark.slow
@pytest.mark.shared_data
def test_online_retail_every_policy_with_intervals_in_under_a_minute(shared_data: Path, tmp_path: Path) -> None:
    from shopgym.cli import main

    started = time.perf_counter()
    out = tmp_path / "retail"
    assert main(["evaluate", str(shared_data / "online_retail" / "online_retail.csv.gz"), "--format",
                 "online-retail", "--out", str(out)]) == 0
    assert time.perf_counter() - started < 60
    report = json.loads((out / "report.json").read_text())
    results = {r["policy"]: r for r in report["results"]}
    assert set(results) == {"buy_again", "popularity", "item_knn", "als", "cosine", "random"}
    assert report["shoppers"] > 1000
    best = report["results"][0]
    assert best["policy"] == "buy_again" and best["hr_low"] > results["item_knn"]["hr_high"]
