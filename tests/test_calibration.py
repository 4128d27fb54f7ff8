"""Calibration of the fitted simulator, robust inverse-propensity weights, bootstrap members, and the checks on
the real OBD logs (in-sample CTR by position; fit on one logging policy's log, predict the other's)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.fidelity import replay_predictions, wilson
from envs.fitted import FitConfig, calibrate_examination, debias_weights, fit_response_model
from envs.fitted.ensemble import bootstrap_weights, member_interval
from shopgym.data import schema as S


def _rows(rng: np.random.Generator, n: int, theta: list[float], alpha_range=(0.01, 0.2)):
    position = rng.integers(1, len(theta) + 1, n)
    alpha = rng.uniform(*alpha_range, n)
    clicked = (rng.random(n) < np.asarray(theta)[position - 1] * alpha).astype(float)
    return alpha, position, clicked


def test_calibration_without_shrinkage_matches_the_clicks_at_every_position():
    rng = np.random.default_rng(0)
    alpha, position, clicked = _rows(rng, 20_000, [1.0, 0.6, 0.3])
    cal = calibrate_examination(alpha * 0.5, position, clicked, prior_clicks=0.0)  # a model 2x too low
    np.testing.assert_allclose(cal.expected, cal.clicks, rtol=1e-6)
    assert cal.theta.max() == pytest.approx(1.0)
    assert cal.shift > 0.3  # the level was raised
    # the examination comes back (the attractiveness was only scaled): within sampling noise
    np.testing.assert_allclose(cal.theta, [1.0, 0.6, 0.3], atol=0.08)
    assert np.all(cal.theta_low <= cal.theta) and np.all(cal.theta <= cal.theta_high)


def test_calibration_shrinks_a_position_with_few_clicks_towards_the_pooled_rate():
    alpha = np.full(300, 0.01)
    position = np.repeat([1, 2, 3], 100)
    clicked = np.zeros(300)
    clicked[[0, 1, 2, 100]] = 1.0  # 3, 1 and 0 clicks
    raw = calibrate_examination(alpha, position, clicked, prior_clicks=0.0)
    shrunk = calibrate_examination(alpha, position, clicked, prior_clicks=5.0)
    assert raw.theta[2] == pytest.approx(0.0, abs=1e-9)
    assert 0.3 < shrunk.theta[2] < shrunk.theta[1] < shrunk.theta[0] == pytest.approx(1.0)
    assert shrunk.expected.sum() == pytest.approx(4.0, rel=1e-6)  # the total is kept


def test_debias_weights_keep_the_effective_sample_and_warn():
    rng = np.random.default_rng(1)
    propensity = np.exp(rng.uniform(np.log(1e-6), 0.0, 10_000))  # weights spanning six orders of magnitude
    with pytest.warns(UserWarning, match="effective sample"):
        weight, report = debias_weights(propensity, 50.0, 0.5, "logs.csv")
    assert report["effective_rows_unclipped"] < 0.2 * len(propensity)
    assert report["effective_rows"] >= 0.5 * len(propensity) and report["lowered"]
    assert weight.mean() == pytest.approx(1.0, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # uniform propensities: nothing to warn about
        weight, report = debias_weights(np.full(100, 0.2), 50.0, 0.5, "logs.csv")
    assert not report["lowered"] and report["effective_rows"] == pytest.approx(100)


def test_bootstrap_weights_move_whole_shoppers_and_are_seeded(small_logs):
    w = bootstrap_weights(small_logs, member=1)
    users = small_logs.interactions[S.USER_ID].to_numpy()
    assert w.shape == (len(users),) and (w > 0).all()
    per_user = pd.Series(w).groupby(users).nunique()
    assert (per_user == 1).all()  # one weight per shopper
    assert abs(pd.Series(w).groupby(users).first().mean() - 1.0) < 0.1  # Exp(1)
    np.testing.assert_array_equal(bootstrap_weights(small_logs, member=1), w)
    assert not np.array_equal(bootstrap_weights(small_logs, member=2), w)


def test_calibration_with_weights_matches_the_weighted_clicks():
    rng = np.random.default_rng(3)
    alpha, position, clicked = _rows(rng, 5000, [1.0, 0.5])
    weight = rng.standard_exponential(5000)
    cal = calibrate_examination(alpha, position, clicked, prior_clicks=0.0, weight=weight)
    expected = np.bincount(position - 1, weights=weight * clicked)
    np.testing.assert_allclose(cal.clicks, expected)
    np.testing.assert_allclose(cal.expected, expected, rtol=1e-6)


def test_member_interval_mixes_model_and_noise():
    lo, hi = member_interval(np.linspace(1.0, 2.0, 21), method="percentile")
    assert 1.0 <= lo < 1.1 and 1.9 < hi <= 2.0
    # the basic interval reflects the refits around the fit: refits above the fit move it below
    lo, hi = member_interval([1.0, 1.2, 1.3, 1.4, 1.5])
    assert lo < 0.6 and 0.9 < hi <= 1.0
    with pytest.raises(ValueError, match="method"):
        member_interval([1.0, 2.0], method="bca")
    lo1, hi1 = member_interval([5.0], [1.0])
    assert lo1 == pytest.approx(5 - 1.96, abs=0.15) and hi1 == pytest.approx(5 + 1.96, abs=0.15)


# ---------------------------------------------------------------------- the real OBD logs (opt-in)
OBD_LOGS = [f"{policy}/{campaign}" for policy in ("random", "bts") for campaign in ("all", "men", "women")]


@pytest.mark.shared_data
@pytest.mark.parametrize("log", OBD_LOGS)
def test_obd_in_sample_ctr_by_position_is_inside_the_observed_interval(shared_data: Path, log: str):
    from encoders.features import FeatureEncoder
    from envs.space import ItemSpace
    from shopgym.adapters import convert

    logs = convert("obd", shared_data / "obd" / log)
    space = ItemSpace.build(logs.items, FeatureEncoder(), [], attribute_weight=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the BTS logs' weights are clipped, with a warning
        model = fit_response_model(logs, space, FitConfig())
    click, _ = replay_predictions(logs, np.ones(len(logs.interactions), dtype=bool), space, model)
    y = logs.interactions[S.CLICKED].to_numpy(dtype=float)
    pos = logs.interactions[S.POSITION].to_numpy()
    for k in (1, 2, 3):
        m = pos == k
        low, high = wilson(np.array([y[m].sum()]), np.array([m.sum()]))
        assert low[0] <= click[m].mean() <= high[0], (log, k, click[m].mean(), y[m].mean())
    assert model.report["weighting"] is None or model.report["weighting"]["effective_rows"] >= 5000


@pytest.mark.shared_data
@pytest.mark.parametrize(("train", "test"), [("random", "bts"),
                                             pytest.param("bts", "random", marks=pytest.mark.slow)])  # ~1 min each
def test_obd_other_policy_ctr_is_inside_the_interval_and_beats_the_naive_answer(
        shared_data: Path, tmp_path: Path, monkeypatch, train: str, test: str):
    from shopgym.cli import main

    monkeypatch.setenv("SHOPGYM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fid"
    status = main(["simulate", "fidelity", str(shared_data / "obd" / train / "all"), "--format", "obd",
                   "--test", str(shared_data / "obd" / test / "all"), "--bootstrap", "10", "--out", str(out)])
    assert status == 0
    assert {p.name for p in out.iterdir()} >= {"fidelity.md", "fidelity.json", "ctr_other_log.png"}
    report = json.loads((out / "fidelity.json").read_text())
    overall = report["rows"][0]
    assert overall["scope"] == "all" and report["members"] == 11
    assert overall["predictive_ci"][0] <= overall["real_ctr"] <= overall["predictive_ci"][1]
    assert overall["abs_error"] <= overall["naive_abs_error"]
    assert [o["estimator"] for o in report["off_policy"]] == ["ips", "snips", "dr"]


def test_cross_log_report_compares_with_the_real_and_naive_ctr_and_names_unknown_items(small_logs, tmp_path):
    from encoders.hashing import HashingEncoder
    from envs.cross_fidelity import check_items_known, cross_log_report, write_cross_report
    from envs.space import ItemSpace
    from shopgym.data import LoggedData
    from shopgym.errors import DataFormatError

    train, test = small_logs.split_by_time(0.5)
    space = ItemSpace.build(small_logs.items, HashingEncoder(dim=32),
                            small_logs.interactions[S.QUERY].unique().tolist())
    config = FitConfig(steps=40, latent_classes=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        models = [fit_response_model(train, space, config)] + [
            fit_response_model(train, space, config, sample_weight=bootstrap_weights(train, j)) for j in (1, 2)]
    report = cross_log_report(train, test, space, models, n_resamples=200)
    overall = report.rows[0]
    y = test.interactions[S.CLICKED]
    assert overall["scope"] == "all" and overall["real_ctr"] == pytest.approx(y.mean())
    assert overall["naive_ctr"] == pytest.approx(train.interactions[S.CLICKED].mean())
    assert overall["predictive_ci"][0] <= overall["predicted_ci"][0] <= overall["predicted_ci"][1] \
        <= overall["predictive_ci"][1]
    assert overall["inside"] == (overall["predictive_ci"][0] <= overall["real_ctr"] <= overall["predictive_ci"][1])
    assert [r["scope"] for r in report.rows[1:]] == [f"position {k}" for k in range(1, 6)]
    assert {o["estimator"] for o in report.off_policy} == {"ips", "snips", "dr"}
    write_cross_report(report, tmp_path / "x")
    saved = json.loads((tmp_path / "x" / "fidelity.json").read_text())
    assert saved["rows"][0]["real_ctr"] == overall["real_ctr"] and (tmp_path / "x" / "ctr_other_log.png").is_file()
    # another shop's log: its items are not in the catalog, and the error says which
    other = test.interactions.copy()
    other.loc[other.index[:3], S.ITEM_ID] = "no-such-item"
    with pytest.raises(DataFormatError, match="no-such-item"):
        check_items_known(LoggedData(test.items, other, "other"), space)
