"""Weight diagnostics and their warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ope
from ope import (
    BanditLog,
    DiagnosticThresholds,
    LargeImportanceWeightWarning,
    LowEffectiveSampleSizeWarning,
    OPEInputError,
    SupportDeficiencyWarning,
)


def test_ess_and_largest_weight_formulas() -> None:
    w = np.array([1.0, 2.0, 0.0, 5.0])
    d = ope.weight_diagnostics(w, warn=False)
    assert d.ess == pytest.approx(8.0**2 / 30.0)
    assert d.ess_fraction == pytest.approx(8.0**2 / 30.0 / 4)
    assert d.max_weight == 5.0 and d.max_weight_share == pytest.approx(5 / 8) and d.mean_weight == 2.0
    assert np.isnan(d.support_deficiency) and d.support_method == "unavailable"


def test_benign_weights_raise_no_warning() -> None:
    s = ope.SyntheticBandit(n_actions=4, target_beta=0.7, seed=0).sample(5000, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ope.diagnose(s.log, action_dist=s.action_dist, logging_action_dist=s.logging_action_dist)
    assert d.messages == () and d.support_method == "exact" and d.support_deficiency == 0.0
    assert d.mean_weight == pytest.approx(1.0, abs=0.05)


def test_heavy_weights_warn_and_say_what_it_means() -> None:
    w = np.ones(1000)
    w[0] = 500.0
    low_ess = r"effective sample size 9 of 1,000 rounds .*wide intervals"
    large = r"largest importance weight 500 is 33.4% .*hinge on a few"
    with pytest.warns(LowEffectiveSampleSizeWarning, match=low_ess), pytest.warns(LargeImportanceWeightWarning,
                                                                                   match=large):
        d = ope.weight_diagnostics(w)
    assert len(d.messages) == 2


def _log_without_action_2(n: int = 200) -> BanditLog:
    rng = np.random.default_rng(0)
    action = rng.integers(0, 2, n)  # actions 0 and 1 only; action 2 is never logged
    return BanditLog(reward=rng.random(n), action=action, n_actions=3, pscore=np.full(n, 0.5))


def test_support_deficiency_empirical_and_exact() -> None:
    log = _log_without_action_2()
    target = np.tile([0.45, 0.45, 0.1], (log.n_rounds, 1))
    with pytest.warns(SupportDeficiencyWarning, match=r"puts 10.00% of its probability mass on actions never seen"):
        d = ope.diagnose(log, action_dist=target)
    assert d.support_method == "empirical" and d.support_deficiency == pytest.approx(0.1)
    behaviour = np.tile([0.5, 0.5, 0.0], (log.n_rounds, 1))
    with pytest.warns(SupportDeficiencyWarning, match=r"where the logging policy's probability is zero.*biased"):
        exact = ope.diagnose(log, action_dist=target, logging_action_dist=behaviour)
    assert exact.support_method == "exact" and exact.support_deficiency == pytest.approx(0.1)
    # and IPS is indeed biased down by that share: on-support weights cover only 90% of the target
    assert exact.mean_weight == pytest.approx(0.9)


def test_empirical_support_is_checked_per_position() -> None:
    # action 1 is logged at position 0 only; a target that shows it at position 1 is unsupported there
    log = BanditLog(reward=[1, 0, 1, 0], action=[0, 1, 0, 0], n_actions=2, pscore=[0.5] * 4, position=[0, 0, 1, 1])
    dist = np.zeros((4, 2, 2))
    dist[:, 1, :] = 1.0  # always action 1
    d = ope.diagnose(log, action_dist=dist, warn=False)
    assert d.support_deficiency == pytest.approx(0.5)  # the two rounds at position 1


def test_logs_without_propensities_still_get_a_support_check() -> None:
    log = BanditLog(reward=[1, 0], action=[0, 0], n_actions=2)
    d = ope.diagnose(log, action_dist=np.array([[0.5, 0.5], [0.5, 0.5]]), warn=False)
    assert np.isnan(d.ess) and d.support_deficiency == pytest.approx(0.5)


def test_thresholds_are_configurable_and_validated() -> None:
    w = np.ones(100)
    w[0] = 3.0
    with pytest.warns(LargeImportanceWeightWarning, match=r"2.9% of the total weight"):
        ope.weight_diagnostics(w)  # 3 / 102 > the default 1%
    quiet = DiagnosticThresholds(max_weight_share=0.5)
    assert ope.weight_diagnostics(w, thresholds=quiet, warn=False).messages == ()
    with pytest.raises(OPEInputError, match=r"`min_ess_fraction` must be in \[0, 1\]; found 2"):
        DiagnosticThresholds(min_ess_fraction=2)
    with pytest.raises(OPEInputError, match=r"`weights` must be finite and >= 0"):
        ope.weight_diagnostics(np.array([1.0, -1.0]))


def test_slate_diagnostics_pick_the_whole_slate_weights() -> None:
    s = ope.SyntheticSlates(seed=0).sample(2000, np.random.default_rng(0))
    d = ope.diagnose_slate(s.log, s.target, warn=False)
    w = s.target.slate_prob / s.log.slate_pscore
    assert d.weights_label == "slate" and d.ess == pytest.approx(w.sum() ** 2 / (w**2).sum())
    marginal_only = ope.SlateLog(reward=s.log.reward, slate=s.log.slate, n_actions=s.log.n_actions,
                                 marginal_pscore=s.log.marginal_pscore)
    d2 = ope.diagnose_slate(marginal_only, s.target, warn=False)
    assert d2.weights_label.startswith("marginal (slot")
