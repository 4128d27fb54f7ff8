"""The fidelity report: its statistics, and `shopgym simulate fidelity` end to end on a small world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from envs.fidelity import _auc, describe_attractiveness, split_value_error, total_variation, wilson
from shopgym.cli import main


def test_wilson_interval_matches_closed_form_values():
    low, high = wilson(np.array([0.0, 5.0, 30.0]), np.array([10.0, 10.0, 1000.0]))
    np.testing.assert_allclose(low, [0.0, 0.2366, 0.02107], atol=2e-4)
    np.testing.assert_allclose(high, [0.2775, 0.7634, 0.04255], atol=2e-4)


def test_auc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(float)
    p = rng.random(500) + 0.3 * y
    p[:50] = np.round(p[:50], 1)  # ties count one half
    u = stats.mannwhitneyu(p[y == 1], p[y == 0]).statistic
    assert _auc(p, y) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))
    assert np.isnan(_auc(p, np.zeros(500)))


def test_total_variation():
    assert total_variation(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2])) == 0.0
    assert total_variation(np.array([1, 1]), np.array([3, 3])) == 1.0
    assert total_variation(np.array([1, 2]), np.array([1, 1])) == pytest.approx(0.5)


def test_simulate_fidelity_on_a_small_world_writes_the_report(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SHOPGYM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fid"
    status = main(["simulate", "fidelity", "--encoder", "hashing", "--users", "300", "--slots", "30000",
                   "--sessions", "300", "--refits", "2", "--bootstrap", "2", "--fit", "seed=3",
                   "--fit", "class_restarts=1", "--fit", "class_epochs=20",
                   "--out", str(out)])  # restarts are tested in test_latent.py
    assert status == 0
    assert {p.name for p in out.iterdir()} >= {"fidelity.md", "fidelity.json", "ctr_by_position.png"}
    report = json.loads((out / "fidelity.json").read_text())
    # the model it used is the fit cache's entry, fingerprinted: `--model` gives it back without fitting
    assert (Path(report["settings"]["model"]) / "fingerprint.json").is_file()
    rows = report["ctr_by_position"]
    assert [r["position"] for r in rows] == list(range(1, 11))
    for r in rows:
        assert 0.0 <= r["low"] <= r["heldout"] <= r["high"] <= 1.0 and 0.0 < r["simulated"] < 1.0
    assert report["positions_inside_ci"] == sum(r["low"] <= r["simulated"] <= r["high"] for r in rows)
    policies = {p["policy"]: p for p in report["policies"]}
    assert set(policies) == {"random", "popularity", "cosine", "logging", "oracle-greedy"}
    # the truth of the world: knowing the tastes beats a random ranking by a wide margin
    assert policies["oracle-greedy"]["true"] > 2 * policies["random"]["true"]
    for p in policies.values():
        assert p["fitted"] > 0 and p["relative_error"] == pytest.approx(p["fitted"] / p["true"] - 1)
        # the interval spans the fit and its 2 bootstrap refits, each with its simulation noise
        assert p["models"] == 3 and p["fitted_ci"][0] < p["fitted_ci"][1]
        assert p["covers"] == (p["fitted_ci"][0] <= p["true"] <= p["fitted_ci"][1])
    for r in rows:
        assert 0.0 <= r["sim_low"] < r["sim_high"] <= 1.0
    assert -1.0 <= report["kendall_tau"] <= 1.0
    # two refits (torch seeds 3 and 4, from --fit seed=3): the fitted column is their mean, each has its own agreement
    refits = report["refits"]
    assert [r["seed"] for r in refits] == [3, 4]
    # the resolved fitting options are written with the report, and the markdown names the changed ones
    assert report["settings"]["fit"]["seed"] == 3 and report["settings"]["fit"]["class_restarts"] == 1
    assert report["settings"]["command"]["refits"] == 2
    # by default the policies were valued on the shoppers of the training logs, and the markdown says so
    assert report["settings"]["command"]["shoppers"] == "logged"
    assert "Sessions of the shoppers of the training logs only" in (out / "fidelity.md").read_text()
    assert "Fitting options: `class_epochs=20`, `seed=3`" in (out / "fidelity.md").read_text()
    for name, p in policies.items():
        assert p["fitted"] == pytest.approx(np.mean([r[name] for r in refits]))
    assert refits[0]["random"] != refits[1]["random"]
    for r in refits:
        assert -1.0 <= r["kendall_tau"] <= 1.0 and r["mean_abs_relative_error"] >= 0.0
    assert "each refit alone" in (out / "fidelity.md").read_text()
    # each refit's latent-class log-likelihood of the training logs, to tell EM optima apart
    assert all(r["log_likelihood"] < 0.0 for r in refits) and "log-likelihood |" in (out / "fidelity.md").read_text()
    # the segment reference: a value per policy, its own agreement, and a line in the markdown
    for p in policies.values():
        assert p["reference"] > 0 and p["reference_error"] == pytest.approx(p["reference"] / p["true"] - 1)
    assert -1.0 <= report["reference_kendall_tau"] <= 1.0 and report["reference_mean_abs_relative_error"] >= 0
    assert "Segment reference" in (out / "fidelity.md").read_text()
    # each value error split into reward per page and pages per session (their product, up to the refits' spread)
    for p in policies.values():
        assert p["per_page_error"] == pytest.approx(p["fitted_per_page"] / p["true_per_page"] - 1)
        assert p["true_pages"] >= 1.0 and p["fitted_pages"] >= 1.0
        assert p["true_per_page"] * p["true_pages"] == pytest.approx(p["true"])
        assert (1 + p["per_page_error"]) * (1 + p["length_error"]) == pytest.approx(1 + p["relative_error"], abs=0.05)
    assert "Where the error lies" in (out / "fidelity.md").read_text()
    assert 0.0 <= report["session_length_tv"] <= 1.0
    assert "Kendall tau" in capsys.readouterr().out
    # the report says which attractiveness model answered: classes that learned from the logger's own pages
    summary = report["attractiveness"]
    assert summary["kind"] == "latent_classes" and summary["ranked_pages"] > 0
    assert f"the order of {summary['ranked_pages']:,} pages" in (out / "fidelity.md").read_text()


def test_split_value_error_is_per_page_times_length():
    policy = {"true_per_page": 0.5, "fitted_per_page": 0.4, "true_pages": 2.0, "fitted_pages": 2.5}
    split = split_value_error(policy)
    assert split == {"per_page_error": pytest.approx(-0.2), "length_error": pytest.approx(0.25)}
    # value: true 0.5 * 2.0 = 1.0, fitted 0.4 * 2.5 = 1.0, so the two errors cancel
    assert (1 + split["per_page_error"]) * (1 + split["length_error"]) == pytest.approx(1.0)
    assert split_value_error({"true_per_page": 0.5}) == {}


def test_describe_attractiveness_names_the_model_and_what_it_learned_from():
    assert "MLP click head" in describe_attractiveness({"kind": "mlp"})
    classes = {"kind": "latent_classes", "n_classes": 16, "mean_max_posterior": 0.93, "ranked_pages": 0,
               "logger_gain": 0.0}
    assert "16 latent shopper classes" in describe_attractiveness(classes)
    assert "no logged orders" in describe_attractiveness(classes)
    assert "gain on its beliefs 1.80" in describe_attractiveness({**classes, "ranked_pages": 5, "logger_gain": 1.8})
    with_own = describe_attractiveness({**classes, "ranked_pages": 5, "logger_gain": 1.8, "deviation_rank": 32,
                                        "deviation_gain": 0.12})
    assert "own deviation from their class, rank 32, gain 0.12" in with_own
    assert "relevance" not in with_own
    assert "a query-relevance curve with 12 knots" in describe_attractiveness({**classes, "relevance_knots": 12})


def test_simulate_fidelity_rejects_zero_refits(tmp_path: Path, capsys):
    assert main(["simulate", "fidelity", "--refits", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--refits" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "named"), [("class_restart=3", "class_restart"),
                                             ("class_restarts=x", "class_restarts"),
                                             ("class_restarts", "KEY=VALUE"), ("class_restarts=0", "class_restarts")])
def test_simulate_fidelity_rejects_a_bad_fit_option_before_any_work(tmp_path: Path, capsys, option: str, named: str):
    status = main(["simulate", "fidelity", "--fit", option, "--out", str(tmp_path / "x")])
    assert status == 2
    err = capsys.readouterr().err
    assert named in err
    assert not (tmp_path / "x").exists()


def test_simulate_fidelity_rejects_a_bad_world_size(tmp_path: Path, capsys):
    status = main(["simulate", "fidelity", "--encoder", "hashing", "--users", "0", "--out", str(tmp_path / "x")])
    assert status == 2
    assert "n_users" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the segment reference
@pytest.fixture(scope="module")
def small_world():
    from envs.synthetic import SyntheticWorld, WorldConfig

    return SyntheticWorld(WorldConfig(seed=3, n_items=200, n_users=300, n_segments=4))


def _sessions(world, users, is_search):
    from envs.backends import Sessions
    from envs.synthetic import Intent

    b = len(users)
    intent = Intent(category=np.zeros(b, dtype=np.int64), attr_group=np.full(b, -1), attr_value=np.full(b, -1),
                    is_search=np.asarray(is_search))
    return Sessions(np.full(b, -1), np.asarray(users), intent, np.full(b, -1), intent.is_search, np.zeros(b, bool))


def test_segment_reference_peers_share_the_segment_and_are_seeded(small_world):
    from envs.backends import SegmentReferenceBackend

    ref = SegmentReferenceBackend(small_world, n_peers=8, seed=0)
    segment = small_world.population.segment
    assert ref.peers.shape == (300, 8)
    assert (segment[ref.peers] == segment[:, None]).all()
    np.testing.assert_array_equal(ref.peers, SegmentReferenceBackend(small_world, n_peers=8, seed=0).peers)
    assert not np.array_equal(ref.peers, SegmentReferenceBackend(small_world, n_peers=8, seed=1).peers)


def test_segment_reference_search_is_the_peers_mean_truth(small_world):
    from envs.backends import SegmentReferenceBackend

    ref = SegmentReferenceBackend(small_world, n_peers=5)
    users = np.array([0, 7, 42])
    shown = np.random.default_rng(0).integers(0, 200, (3, 6))
    sessions = _sessions(small_world, users, [True, True, True])
    got = ref.probabilities(sessions, np.zeros((3, 4)), shown)
    for row, u in enumerate(users):
        peers = ref.peers[u]
        expected = small_world.attractiveness(peers, np.repeat(shown[row:row + 1], 5, axis=0),
                                              sessions.intent.take(np.zeros(5, dtype=np.int64))).mean(axis=0)
        np.testing.assert_allclose(got[row, :, 0], expected, rtol=1e-12)


def test_segment_reference_browsing_marginalises_the_intent(small_world):
    """Browsing: the exact average over intents drawn as sessions draw them (Gumbel-max of category tastes)."""
    from envs.backends import SegmentReferenceBackend
    from envs.synthetic import Intent

    ref = SegmentReferenceBackend(small_world, n_peers=1)
    user = 11
    peer = int(ref.peers[user, 0])
    shown = np.arange(12)[None, :]
    got = ref.probabilities(_sessions(small_world, [user], [False]), np.zeros((1, 4)), shown)[0, :, 0]
    rng = np.random.default_rng(0)
    taste = small_world.population.tastes[1][peer]
    draws = np.argmax(taste + rng.gumbel(size=(20_000, len(taste))), axis=1)
    categories, counts = np.unique(draws, return_counts=True)
    mc = np.zeros(12)
    for c, n in zip(categories, counts, strict=True):
        intent = Intent(np.array([c]), np.array([-1]), np.array([-1]), np.array([False]))
        mc += n * small_world.attractiveness(np.array([peer]), shown, intent)[0]
    mc /= counts.sum()
    np.testing.assert_allclose(got, mc, rtol=0.03)


def test_simulate_fidelity_rejects_an_unknown_shopper_population(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "fidelity", "--shoppers", "new", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--shoppers" in capsys.readouterr().err and not (tmp_path / "x").exists()
