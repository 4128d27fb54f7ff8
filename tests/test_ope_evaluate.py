"""evaluate(): the report, its exports, per-estimator errors, and a run on the real OBD sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ope
from ope import OPEInputError

OBD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "obd"


@pytest.fixture(scope="module")
def sample() -> ope.BanditSample:
    return ope.SyntheticBandit(n_actions=5, dim_context=3, seed=6).sample(2000, np.random.default_rng(0))


@pytest.fixture(scope="module")
def report(sample: ope.BanditSample) -> ope.OPEReport:
    return ope.evaluate(sample.log, sample.action_dist, n_resamples=1000, seed=3, warn=False,
                        logging_action_dist=sample.logging_action_dist)


def test_report_rows_equal_the_estimators_run_directly(sample: ope.BanditSample, report: ope.OPEReport) -> None:
    q = ope.cross_fit_q_hat(sample.log, ope.default_reward_model(sample.log), n_folds=3, seed=3)
    assert [r.estimator for r in report.results] == [e.name for e in ope.DEFAULT_BANDIT_ESTIMATORS]
    for est in ope.DEFAULT_BANDIT_ESTIMATORS:
        row = report[est.name]
        terms = est.round_terms(sample.log, action_dist=sample.action_dist, q_hat=q)
        assert row.ok and row.value == pytest.approx(terms.value)
        assert row.se == pytest.approx(ope.standard_error(terms))
        boot, normal = row.interval("bootstrap"), row.interval("normal")
        assert boot is not None and normal is not None
        assert boot.low < row.value < boot.high and normal.low < row.value < normal.high
    assert report.reward_model == "linear (3-fold cross-fitted)"
    assert report.logged_mean == pytest.approx(sample.log.reward.mean())


def test_report_is_seeded(sample: ope.BanditSample, report: ope.OPEReport) -> None:
    again = ope.evaluate(sample.log, sample.action_dist, n_resamples=1000, seed=3, warn=False,
                         logging_action_dist=sample.logging_action_dist)
    assert again.to_frame().equals(report.to_frame())


def test_report_exports(report: ope.OPEReport, tmp_path: Path) -> None:
    frame = report.to_frame()
    assert list(frame.columns) == ["estimate", "se", "bootstrap_low", "bootstrap_high", "normal_low", "normal_high",
                                   "error"]
    assert frame.loc["ips", "estimate"] == report["ips"].value
    md = report.to_markdown()
    assert md.splitlines()[0] == "| estimator | estimate | SE | 95% bootstrap CI | 95% normal CI | note |"
    assert "| dr | " in md and "support deficiency (exact): 0.00%" in md and "ESS" in md
    text = report.to_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data == json.loads(text)
    assert data["results"][1]["estimator"] == "ips" and data["diagnostics"]["support_method"] == "exact"
    with pytest.raises(KeyError, match="no estimator named 'nope'"):
        report["nope"]


def test_logs_without_propensities_report_errors_but_dm_runs(sample: ope.BanditSample) -> None:
    log = ope.BanditLog(reward=sample.log.reward, action=sample.log.action, n_actions=5, context=sample.log.context)
    rep = ope.evaluate(log, sample.action_dist, n_resamples=200, warn=False)
    assert rep["dm"].ok and math.isfinite(rep["dm"].value)
    for name in ("ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dr_os"):
        assert not rep[name].ok and math.isnan(rep[name].value)
        assert rep[name].error is not None and "this log has none (pscore=None)" in rep[name].error
    assert "| ips | - | - | - | - |" in rep.to_markdown()
    data = json.loads(rep.to_json())  # NaN values become null, JSON stays valid
    assert data["results"][1]["estimate"] is None and data["diagnostics"]["ess"] is None


def test_target_prob_only_runs_the_ips_family(sample: ope.BanditSample) -> None:
    prob = ope.target_prob_of_logged(sample.log, sample.action_dist)
    rep = ope.evaluate(sample.log, prob, n_resamples=200, warn=False, ci="normal")
    assert rep["ips"].ok and rep["snips"].ok and rep["ips"].interval("bootstrap") is None
    assert not rep["dm"].ok and "full action_dist" in (rep["dm"].error or "")
    assert rep.n_resamples == 0 and list(rep.to_frame().columns) == ["estimate", "se", "normal_low", "normal_high",
                                                                      "error"]


def test_given_q_hat_and_custom_estimators(sample: ope.BanditSample) -> None:
    rep = ope.evaluate(sample.log, sample.action_dist, q_hat=sample.expected_reward, n_resamples=100, warn=False,
                       estimators=[ope.DoublyRobust(), ope.ClippedIPS(max_weight=2.0, name="ips_clip2")])
    assert rep.reward_model is None
    assert rep["dr"].value == pytest.approx(
        ope.DoublyRobust().estimate(sample.log, action_dist=sample.action_dist, q_hat=sample.expected_reward))
    assert rep["ips_clip2"].ok


def test_evaluate_warns_through_diagnostics() -> None:
    s = ope.SyntheticBandit(n_actions=8, target_beta=12.0, logging_beta=-1.0, seed=0).sample(
        300, np.random.default_rng(1))
    with pytest.warns(ope.OPEWarning):
        rep = ope.evaluate(s.log, s.action_dist, n_resamples=100, reward_model=ope.CellMeanModel())
    assert rep.diagnostics.messages and "- warning: " in rep.to_markdown()


def test_slate_evaluation() -> None:
    s = ope.SyntheticSlates(seed=2).sample(3000, np.random.default_rng(0))
    rep = ope.evaluate(s.log, s.target, n_resamples=500, warn=False)
    assert rep.kind == "slate" and [r.estimator for r in rep.results][:3] == ["sips", "iips", "rips"]
    assert rep["rips"].value == pytest.approx(ope.SlateRewardInteractionIPS().estimate(s.log, s.target))
    partial = ope.SlateLog(reward=s.log.reward, slate=s.log.slate, n_actions=s.log.n_actions,
                           marginal_pscore=s.log.marginal_pscore)
    rep2 = ope.evaluate(partial, s.target, n_resamples=100, warn=False)
    assert rep2["iips"].ok and not rep2["rips"].ok and "cascade_pscore" in (rep2["rips"].error or "")


INVALID = [
    (lambda s: ope.evaluate(s.log, ope.SlateTarget(slate_prob=np.ones(3))), r"`target` is a SlateTarget but `log`"),
    (lambda s: ope.evaluate_bandit(s.log), r"pass the evaluation policy as one of them; found neither"),
    (lambda s: ope.evaluate(s.log, s.action_dist, estimators=[ope.IPS(), ope.IPS()]),
     r"`estimators` must have distinct names; found duplicates \['ips'\]"),
    (lambda s: ope.evaluate(s.log, s.action_dist, estimators=[]), r"`estimators` must hold at least one"),
    (lambda s: ope.evaluate(s.log, s.action_dist, ci=("bootstrap", "bca")), r"`ci` must hold methods from"),
    (lambda s: ope.evaluate(s.log, s.action_dist[:10]), r"`action_dist` must have shape \(2000, 5\)"),
    (lambda s: ope.evaluate(s.log, s.action_dist, alpha=1.5), r"`alpha` must be in \(0, 1\)"),
]


@pytest.mark.parametrize("call, match", INVALID)
def test_evaluate_rejects_malformed_inputs(sample: ope.BanditSample, call, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        call(sample)


# ---------------------------------------------------------------- the real Open Bandit Dataset sample
def _obd_log(policy: str, campaign: str = "men") -> ope.BanditLog:
    frame = pd.read_csv(OBD / policy / campaign / f"{campaign}.csv.gz", index_col=0)
    users = pd.get_dummies(frame.filter(like="user_feature"), dtype=float).to_numpy()
    n_items = len(pd.read_csv(OBD / policy / campaign / "item_context.csv", index_col=0))
    return ope.BanditLog(reward=frame["click"].to_numpy(), action=frame["item_id"].to_numpy(), n_actions=n_items,
                         pscore=frame["propensity_score"].to_numpy(), position=frame["position"].to_numpy() - 1,
                         context=users)


@pytest.mark.shared_data
def test_obd_uniform_policy_on_its_own_log_is_the_observed_ctr() -> None:
    if not OBD.is_dir():
        pytest.skip("../shared/data/obd is not available")
    log = _obd_log("random")
    target = ope.uniform_action_dist(log.n_rounds, log.n_actions, log.n_positions)
    rep = ope.evaluate(log, target, n_resamples=500, warn=False, reward_model=ope.CellMeanModel())
    assert rep["ips"].value == pytest.approx(log.reward.mean(), rel=1e-9)  # every weight is exactly 1
    assert rep["snips"].value == pytest.approx(log.reward.mean(), rel=1e-9)
    assert rep.diagnostics.ess_fraction == pytest.approx(1.0)


@pytest.mark.shared_data
def test_obd_random_policy_on_bts_logs_is_close_to_the_random_ctr() -> None:
    if not OBD.is_dir():
        pytest.skip("../shared/data/obd is not available")
    bts = _obd_log("bts")
    truth = _obd_log("random").reward.mean()
    target = ope.uniform_action_dist(bts.n_rounds, bts.n_actions, bts.n_positions)
    with pytest.warns(ope.LargeImportanceWeightWarning):
        rep = ope.evaluate(bts, target, n_resamples=2000, reward_model=ope.CellMeanModel())
    ci = rep["snips"].interval("bootstrap")
    assert ci is not None and ci.contains(truth)
