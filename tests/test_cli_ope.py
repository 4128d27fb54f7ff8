"""``shopgym ope`` end to end on a small generated synthetic log: outputs, diagnostics, missing propensities, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shopgym.cli import main
from shopgym.data import LoggedData

FAST = ["--n-resamples", "300"]


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory) -> Path:
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs

    folder = tmp_path_factory.mktemp("ope_logs") / "shop"
    generate_logs(SyntheticWorld(WorldConfig(seed=1, n_items=200, n_users=300, n_slots=5000))).save(folder)
    return folder


@pytest.fixture(scope="module")
def no_propensity_dir(logs_dir: Path, tmp_path_factory) -> Path:
    data = LoggedData.load(logs_dir)
    inter = data.interactions.drop(columns=["propensity", "slate_propensity", "carted"])
    folder = tmp_path_factory.mktemp("ope_logs") / "no_propensity"
    LoggedData.from_frames(data.items, inter, name="no-propensity").save(folder)
    return folder


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv").set_index("estimator")


def test_popularity_writes_table_csv_markdown_and_json(logs_dir, tmp_path, capsys) -> None:
    out = tmp_path / "pop"
    assert main(["ope", str(logs_dir), "--policy", "popularity", "--candidates", "shown", "--out", str(out),
                 *FAST]) == 0
    printed = capsys.readouterr().out
    assert "Off-policy evaluation of `popularity`" in printed and "| dr |" in printed and "95% bootstrap CI" in printed
    rows = _rows(out)
    assert list(rows.index) == ["dm", "ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dr_os", "sips",
                                "snsips", "rips", "snrips", "cascade_dr", "bound_low", "bound_high"]
    assert rows[["estimate", "bootstrap_low", "bootstrap_high", "normal_low", "normal_high"]].notna().all().all()
    assert (rows["bootstrap_low"] <= rows["estimate"] + 1e-12).all()
    report = json.loads((out / "report.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert report["policy"] == "popularity" and report["kind"] == "ranking" and report["n_resamples"] == 300
    assert report["n_fit_requests"] > 0 and report["n_requests"] > 0
    assert report["probability_method"] == "deterministic"
    assert report["diagnostics"]["weights_label"] == "per-slot"
    # the synthetic logging policy picks each slot among 30 candidates but shows 10: the re-ranking caveat fires
    assert any("candidate sets" in w for w in report["warnings"])
    assert 15 < sum(report["pool_size"]) / len(report["pool_size"]) < 45
    assert (out / "results.md").read_text().count("| dm |") == 1


def test_logging_policy_reproduces_the_logged_mean(logs_dir, tmp_path) -> None:
    out = tmp_path / "logging"
    assert main(["ope", str(logs_dir), "--policy", "logging", "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    by_name = {r["estimator"]: r for r in report["results"]}
    assert by_name["ips"]["estimate"] == pytest.approx(report["logged_mean"])
    assert by_name["sips"]["estimate"] == pytest.approx(report["logged_mean"])
    assert report["diagnostics"]["ess_fraction"] == pytest.approx(1.0)
    assert by_name["dm"]["estimate"] is None and "reward-model" in by_name["dm"]["error"]


def test_without_propensities_dm_runs_and_the_others_say_why(no_propensity_dir, tmp_path, capsys) -> None:
    out = tmp_path / "nop"
    assert main(["ope", str(no_propensity_dir), "--policy", "random", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert rows.loc["dm", "estimate"] > 0 and pd.isna(rows.loc["dm", "error"])
    for name in ("ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dr_os"):
        assert pd.isna(rows.loc[name, "estimate"])
        assert "propensit" in rows.loc[name, "error"] and "DM" in rows.loc[name, "error"]
    assert "slate_pscore" in rows.loc["sips", "error"]
    assert "| ips | - |" in printed and "this log has none" in printed


def test_catalog_candidates_flag_missing_support(logs_dir, tmp_path) -> None:
    out = tmp_path / "catalog"
    argv = ["ope", str(logs_dir), "--policy", "uniform", "--candidates", "catalog", "--estimators", "dm,ips,dr",
            "--out", str(out), *FAST]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"] == "catalog" and report["probability_method"] == "exact"
    # a uniform policy over 200 items puts most of its mass where the logging policy (30 retrieved) never goes
    assert report["diagnostics"]["mean_weight"] < 0.5
    assert any("well below 1" in m for m in report["diagnostics"]["messages"])
    assert not any("candidate sets" in w for w in report["warnings"])


def test_reranking_log_showing_every_candidate_needs_no_caveat(tmp_path) -> None:
    """When the logging policy shows all its candidates (N = K), re-ranking the shown items is exact."""
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs

    folder = tmp_path / "rerank"
    world = SyntheticWorld(WorldConfig(seed=2, n_items=200, n_users=300, n_slots=4000, n_candidates=5, slate_size=5))
    generate_logs(world).save(folder)
    out = tmp_path / "rerank_out"
    assert main(["ope", str(folder), "--policy", "random", "--estimators", "ips,snips,dr", "--out", str(out),
                 *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["warnings"] == []
    assert 4 < sum(report["pool_size"]) / len(report["pool_size"]) < 6
    assert report["diagnostics"]["mean_weight"] == pytest.approx(1.0, abs=0.15)
    assert not any("well above" in m or "well below" in m for m in report["diagnostics"]["messages"])


def test_partial_pages_in_catalog_mode(logs_dir, tmp_path) -> None:
    """One logged slot per request (the Open Bandit Dataset's layout): catalog mode uses every request."""
    data = LoggedData.load(logs_dir)
    inter = data.interactions
    codes = pd.factorize(inter["request_id"])[0]
    one = inter[inter["position"] == codes % 3 + 1]
    folder = tmp_path / "partial"
    LoggedData.from_frames(data.items, one, name="partial").save(folder)
    out = tmp_path / "partial_out"
    assert main(["ope", str(folder), "--policy", "logging", "--candidates", "catalog", "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    by_name = {r["estimator"]: r for r in report["results"]}
    assert by_name["ips"]["estimate"] == pytest.approx(report["logged_mean"])
    assert report["n_requests"] == LoggedData.load(folder).split_by_time(0.3)[1].n_requests
    assert any("pages are partial" in n for n in report["notes"])
    assert main(["ope", str(folder), "--policy", "random", "--candidates", "catalog", "--estimators", "ips,dr",
                 *FAST]) == 0


def test_saved_stochastic_policy_and_other_reward(logs_dir, tmp_path, capsys) -> None:
    from agents import LinTSRanker

    saved = LinTSRanker(proj_dim=8).save(tmp_path / "lin_ts")
    argv = ["ope", str(logs_dir), "--policy", str(saved), "--reward", "purchased", "--n-policy-samples", "4",
            "--estimators", "dm,ips,dr", *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "`lin_ts`" in printed and "monte carlo (4 draws per request)" in printed and "`purchased`" in printed


def test_test_fraction_one_evaluates_everything(logs_dir, tmp_path) -> None:
    out = tmp_path / "all"
    assert main(["ope", str(logs_dir), "--policy", "cosine", "--test-fraction", "1", "--estimators", "ips",
                 "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_fit_requests"] == 0 and report["n_requests"] == LoggedData.load(logs_dir).n_requests


@pytest.mark.parametrize("extra, message", [
    (["--policy", "nope"], "not a built-in policy"),
    (["--policy", "random", "--test-fraction", "0"], "--test-fraction"),
    (["--policy", "random", "--estimators", "ips,bogus"], "bogus"),
    (["--policy", "random", "--alpha", "1.5"], "--alpha"),
    (["--policy", "popularity", "--test-fraction", "1"], "fitted on the earlier part"),
])
def test_user_errors_exit_2_with_a_clear_message(logs_dir, capsys, extra, message) -> None:
    assert main(["ope", str(logs_dir), *extra, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shopgym: error:") and message in err


def test_missing_column_and_missing_folder_exit_2(no_propensity_dir, tmp_path, capsys) -> None:
    assert main(["ope", str(no_propensity_dir), "--policy", "random", "--reward", "carted", *FAST]) == 2
    assert "no 'carted' column" in capsys.readouterr().err
    assert main(["ope", str(no_propensity_dir), "--policy", "logging", *FAST]) == 2
    assert "no `propensity` column" in capsys.readouterr().err
    assert main(["ope", str(tmp_path / "missing"), "--policy", "random", *FAST]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_help_explains_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "shopgym", "ope", "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    for text in ("usage: shopgym ope", "--candidates", "--test-fraction", "propensit", "Exit status", "results.csv",
                 "logging"):
        assert text in result.stdout


# ---------------------------------------------------------------------------------- OPE that refuses nonsense
def test_a_positives_only_log_is_refused_with_what_to_do(logs_dir: Path, tmp_path: Path, capsys) -> None:
    data = LoggedData.load(logs_dir)
    inter = data.interactions[data.interactions["clicked"] == 1].drop(columns=["propensity", "slate_propensity"])
    inter = inter.assign(position=1, request_id=[f"p{i}" for i in range(len(inter))])
    folder = tmp_path / "purchases"
    LoggedData.from_frames(data.items, inter, name="purchases-only").save(folder)
    assert main(["ope", str(folder), "--policy", "popularity", *FAST]) == 2
    err = capsys.readouterr().err
    assert "positive events only" in err and "shopgym evaluate" in err


def test_a_constant_reward_is_refused(logs_dir: Path, tmp_path: Path, capsys) -> None:
    data = LoggedData.load(logs_dir)
    folder = tmp_path / "no_purchase"
    LoggedData.from_frames(data.items, data.interactions.assign(purchased=0), name="no-purchase").save(folder)
    assert main(["ope", str(folder), "--policy", "popularity", "--reward", "purchased", *FAST]) == 2
    assert "--reward purchased is 0 on every one of" in capsys.readouterr().err


def test_a_small_evaluated_share_and_impossible_values_are_flagged() -> None:
    from types import SimpleNamespace

    from shopgym.app.offline import implausible_estimates

    req = SimpleNamespace(reward=np.array([[0.0, 1.0], [0.0, 0.0]]), mask=None)
    ok = SimpleNamespace(estimator="ips", value=0.4, error=None)
    below = SimpleNamespace(estimator="dr", value=-0.155, error=None)
    above = SimpleNamespace(estimator="ips", value=2.5, error=None)
    diag = SimpleNamespace(ess_fraction=0.5, ess=100.0)
    report = SimpleNamespace(results=(ok, below, above), diagnostics=diag, extra_diagnostics=(), n_rounds=200)
    found = implausible_estimates(report, req, 2)
    assert len(found) == 2 and "dr = -0.155 is outside" in found[0] and "reward model extrapolates" in found[0]
    assert "ips = 2.5 is outside" in found[1]
    tiny = SimpleNamespace(ess_fraction=0.002, ess=0.4)
    found = implausible_estimates(SimpleNamespace(results=(ok,), diagnostics=tiny, extra_diagnostics=(tiny,),
                                                  n_rounds=200), req, 2)
    assert len(found) == 1 and "effective sample of at most 0" in found[0]


def test_pages_left_out_are_counted_in_a_warning(logs_dir: Path, tmp_path: Path, capsys) -> None:
    data = LoggedData.load(logs_dir)
    inter = data.interactions
    # pages of three sizes: 40% keep every slot, 30% lose the last, 30% the last two: 60% are left out
    k = int(inter["position"].max())
    ids = inter["request_id"].drop_duplicates().sample(frac=1.0, random_state=0).to_numpy()
    cut = pd.Series(np.where(np.arange(len(ids)) < 0.4 * len(ids), 0,
                             np.where(np.arange(len(ids)) < 0.7 * len(ids), 1, 2)), index=ids)
    keep = inter["position"].to_numpy() <= k - cut.loc[inter["request_id"]].to_numpy()
    folder = tmp_path / "ragged"
    LoggedData.from_frames(data.items, inter[keep], name="ragged").save(folder)
    assert main(["ope", str(folder), "--policy", "popularity", "--candidates", "shown", *FAST]) == 0
    out = capsys.readouterr().out
    assert "warning: evaluated pages: only" in out and "were left out because their slots" in out


def test_defaults_are_chosen_from_the_log_and_one_headline_leads(logs_dir: Path, tmp_path: Path, capsys) -> None:
    """The built-in shop's logging policy chose among ~30 items and showed 10: catalog; items have text: hashing.
    A headline with its interval and reason comes before the table."""
    out = tmp_path / "auto"
    assert main(["ope", str(logs_dir), "--policy", "random", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "- chosen: --candidates catalog (the propensities say the logging policy chose each slot among" in printed
    assert "- chosen: --encoder hashing (100% of the items have text)" in printed
    head = printed.split("| estimator |")[0]
    assert head.count("**") == 2 and "per page (95% interval)" in head and "Assumes" in head
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"] == "catalog" and report["headline"]["estimator"] in ("dr", "snips", "dm")
    # the random policy's value is known here: the logging policy's candidates are a superset, so IPS with
    # the whole catalog covers the logged mean times the share it can reach; at least the headline is a value
    by_name = {r["estimator"]: r for r in report["results"]}
    assert by_name[report["headline"]["estimator"]]["estimate"] is not None


def test_logs_without_item_text_choose_the_feature_encoder() -> None:
    from shopgym.app.offline import auto_candidates, auto_encoder

    items = pd.DataFrame({"item_id": ["a", "b", "c"], "text": ["", "", ""], "colour": ["red", "blue", "red"]})
    inter = pd.DataFrame({"request_id": ["r1", "r2", "r2"], "timestamp": 0, "position": [1, 1, 2],
                          "item_id": ["a", "b", "c"], "clicked": [0, 1, 0], "propensity": [0.3, 0.3, 0.3]})
    data = LoggedData.from_frames(items, inter, name="no-text")
    assert auto_encoder(data)[0] == "features"
    choice, why = auto_candidates(data)
    assert choice == "catalog" and "different sizes" in why


@pytest.mark.shared_data
def test_obd_random_log_with_defaults_headline_covers_the_logged_ctr(shared_data: Path, tmp_path: Path) -> None:
    """OBD's random logger chose uniformly among 80 items: the random policy's value is the logged CTR."""
    folder = tmp_path / "obd"
    assert main(["data", "convert", "--format", "obd", str(shared_data / "obd" / "random" / "all"), "--out",
                 str(folder)]) == 0
    out = tmp_path / "random"
    assert main(["ope", str(folder), "--policy", "random", "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"] == "catalog" and report["encoder"].startswith("features")
    head = {r["estimator"]: r for r in report["results"]}[report["headline"]["estimator"]]
    interval = {i["method"]: i for i in head["intervals"]}["bootstrap"]
    assert interval["low"] <= report["logged_mean"] <= interval["high"], (head, report["logged_mean"])


def test_cascade_estimators_run_from_the_logs_prefix_propensities(logs_dir: Path, tmp_path: Path) -> None:
    data = LoggedData.load(logs_dir)
    inter = data.interactions
    last = inter[inter["position"] == inter["position"].max()]
    np.testing.assert_allclose(last["prefix_propensity"], last["slate_propensity"])
    first = inter[inter["position"] == 1]
    assert (first["prefix_propensity"] >= first["slate_propensity"] - 1e-12).all()
    out = tmp_path / "rips"
    assert main(["ope", str(logs_dir), "--policy", "random", "--candidates", "shown", "--out", str(out), *FAST]) == 0
    rows = {r["estimator"]: r for r in json.loads((out / "report.json").read_text())["results"]}
    assert rows["rips"]["error"] is None and rows["snrips"]["error"] is None and rows["rips"]["estimate"] > 0
    # without the column the rows say what is missing
    folder = tmp_path / "no_prefix"
    LoggedData.from_frames(data.items, inter.drop(columns=["prefix_propensity"]), name="no-prefix").save(folder)
    out2 = tmp_path / "rips2"
    assert main(["ope", str(folder), "--policy", "random", "--out", str(out2), *FAST]) == 0
    rows = {r["estimator"]: r for r in json.loads((out2 / "report.json").read_text())["results"]}
    assert "prefix_propensity" in rows["rips"]["error"]


def test_a_bad_prefix_propensity_is_refused_naming_the_column(logs_dir: Path, tmp_path: Path, capsys) -> None:
    data = LoggedData.load(logs_dir)
    inter = data.interactions.copy()
    inter.loc[inter.index[3], "prefix_propensity"] = 1.5
    folder = tmp_path / "bad_prefix"
    folder.mkdir()
    data.items.to_parquet(folder / "items.parquet")
    inter.to_parquet(folder / "interactions.parquet")
    assert main(["data", "validate", str(folder)]) == 2
    assert "prefix_propensity" in capsys.readouterr().err
