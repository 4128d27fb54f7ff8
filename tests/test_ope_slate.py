"""Slate estimators: hand-worked values, invariants, click-model (un)biasedness, target helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ope
from ope import (
    MissingPropensityError,
    OPEInputError,
    SelfNormalizedSlateIndependentIPS,
    SelfNormalizedSlateRewardInteractionIPS,
    SelfNormalizedSlateStandardIPS,
    SlateIndependentIPS,
    SlateLog,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
    SlateTarget,
)

# two slates of two slots
REWARD = np.array([[1.0, 0.0], [0.0, 1.0]])
LOG = SlateLog(reward=REWARD, slate=np.array([[0, 1], [2, 0]]), n_actions=3,
               slate_pscore=np.array([0.1, 0.2]), marginal_pscore=np.array([[0.4, 0.3], [0.5, 0.4]]),
               cascade_pscore=np.array([[0.4, 0.1], [0.5, 0.2]]))
TARGET = SlateTarget(slate_prob=np.array([0.3, 0.05]), marginal_prob=np.array([[0.6, 0.6], [0.2, 0.5]]),
                     cascade_prob=np.array([[0.6, 0.3], [0.2, 0.05]]))
# ratios: slate [3, 0.25]; marginal [[1.5, 2], [0.4, 1.25]]; cascade [[1.5, 3], [0.4, 0.25]]
HAND_WORKED = [
    (SlateStandardIPS(), (3 * 1 + 0.25 * 1) / 2),
    (SlateIndependentIPS(), (1.5 * 1 + 1.25 * 1) / 2),
    (SlateRewardInteractionIPS(), (1.5 * 1 + 0.25 * 1) / 2),
    (SelfNormalizedSlateStandardIPS(), (3 * 1 + 0.25 * 1) / (3 + 0.25)),
    (SelfNormalizedSlateIndependentIPS(), 1.5 / (1.5 + 0.4) + 1.25 / (2 + 1.25)),
    (SelfNormalizedSlateRewardInteractionIPS(), 1.5 / (1.5 + 0.4) + 0.25 / (3 + 0.25)),
]


@pytest.mark.parametrize("estimator, expected", HAND_WORKED, ids=lambda v: getattr(v, "name", ""))
def test_hand_worked_slates(estimator: ope.SlateEstimator, expected: float) -> None:
    assert estimator.estimate(LOG, TARGET) == pytest.approx(expected, rel=1e-12)
    assert estimator.estimate_rounds(LOG, TARGET).mean() == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def position_sample() -> ope.SlateSample:
    return ope.SyntheticSlates(click_model="position", seed=1).sample(60_000, np.random.default_rng(2))


@pytest.fixture(scope="module")
def cascade_sample() -> ope.SlateSample:
    return ope.SyntheticSlates(click_model="cascade", seed=1).sample(60_000, np.random.default_rng(3))


def test_on_policy_slate_estimators_give_the_mean_summed_reward(position_sample: ope.SlateSample) -> None:
    log = position_sample.log
    same = SlateTarget(slate_prob=log.slate_pscore, marginal_prob=log.marginal_pscore, cascade_prob=log.cascade_pscore)
    for est in ope.DEFAULT_SLATE_ESTIMATORS:
        assert est.estimate(log, same) == pytest.approx(log.logged_mean, rel=1e-12), est.name


def test_single_slot_slates_reduce_to_bandit_ips() -> None:
    rng = np.random.default_rng(0)
    n = 40
    p, t = rng.uniform(0.1, 1, n), rng.uniform(0, 1, n)
    r, a = rng.integers(0, 2, n).astype(float), rng.integers(0, 4, n)
    slate_log = SlateLog(reward=r[:, None], slate=a[:, None], n_actions=4, slate_pscore=p,
                         marginal_pscore=p[:, None], cascade_pscore=p[:, None])
    target = SlateTarget(slate_prob=t, marginal_prob=t[:, None], cascade_prob=t[:, None])
    bandit = ope.BanditLog(reward=r, action=a, n_actions=4, pscore=p)
    ips, snips = ope.IPS().estimate(bandit, target_prob=t), ope.SelfNormalizedIPS().estimate(bandit, target_prob=t)
    for est in (SlateStandardIPS(), SlateIndependentIPS(), SlateRewardInteractionIPS()):
        assert est.estimate(slate_log, target) == pytest.approx(ips)
    for est in (SelfNormalizedSlateStandardIPS(), SelfNormalizedSlateIndependentIPS(),
                SelfNormalizedSlateRewardInteractionIPS()):
        assert est.estimate(slate_log, target) == pytest.approx(snips)


def _z(sample: ope.SlateSample, estimator: ope.SlateEstimator) -> float:
    terms = estimator.round_terms(sample.log, sample.target)
    return (terms.value - sample.true_value) / ope.standard_error(terms)


@pytest.mark.parametrize("estimator", ope.DEFAULT_SLATE_ESTIMATORS, ids=lambda e: e.name)
def test_every_slate_estimator_is_unbiased_under_the_item_position_model(position_sample, estimator) -> None:
    assert abs(_z(position_sample, estimator)) < 4


def test_cascade_clicks_break_independent_ips_but_not_reward_interaction_ips(cascade_sample) -> None:
    assert abs(_z(cascade_sample, SlateRewardInteractionIPS())) < 4
    assert abs(_z(cascade_sample, SlateStandardIPS())) < 4
    assert abs(_z(cascade_sample, SlateIndependentIPS())) > 10  # its item-position assumption is violated


def test_reward_interaction_ips_has_less_variance_than_standard(position_sample) -> None:
    se = {e.name: ope.standard_error(e.round_terms(position_sample.log, position_sample.target))
          for e in (SlateStandardIPS(), SlateRewardInteractionIPS(), SlateIndependentIPS())}
    assert se["iips"] < se["rips"] < se["sips"]


def test_missing_propensity_kinds_are_reported_by_name() -> None:
    log = SlateLog(reward=REWARD, slate=LOG.slate, n_actions=3, marginal_pscore=LOG.marginal_pscore)
    with pytest.raises(MissingPropensityError, match=r"`cascade_pscore`: rips needs the logging policy's cascade"):
        SlateRewardInteractionIPS().estimate(log, TARGET)
    with pytest.raises(OPEInputError, match=r"`target.slate_prob`: sips needs the evaluation policy's slate"):
        SlateStandardIPS().estimate(LOG, SlateTarget(marginal_prob=TARGET.marginal_prob))
    with pytest.raises(OPEInputError, match=r"`target.marginal_prob` must have shape \(2, 2\)"):
        SlateIndependentIPS().estimate(LOG, SlateTarget(marginal_prob=np.full((3, 2), 0.5)))


# ---------------------------------------------------------------- target helpers
def test_plackett_luce_prefix_probabilities_sum_to_one_over_all_rankings() -> None:
    scores = np.array([[0.3, -1.0, 2.0, 0.0, 0.5]])
    rankings = np.array(list(itertools.permutations(range(5), 3)))
    prob = ope.plackett_luce_prefix_prob(np.repeat(scores, len(rankings), axis=0), rankings)
    assert prob[:, -1].sum() == pytest.approx(1.0)
    first = np.exp(scores[0]) / np.exp(scores[0]).sum()
    assert np.allclose(prob[:, 0], first[rankings[:, 0]])


def test_slate_target_helpers_match_exact_marginals() -> None:
    world = ope.SyntheticSlates(n_actions=5, slate_size=2, seed=4)
    sample = world.sample(300, np.random.default_rng(0))
    scores = world.target_beta * world.logits[sample.context_index]
    target = ope.slate_target_plackett_luce(sample.log, scores, n_marginal_samples=4000, seed=1)
    assert np.allclose(target.cascade_prob, sample.target.cascade_prob)
    assert np.allclose(target.slate_prob, sample.target.slate_prob)
    assert target.marginal_prob is not None and sample.target.marginal_prob is not None
    assert np.abs(target.marginal_prob - sample.target.marginal_prob).max() < 0.04


def test_slate_target_from_position_dist_multiplies_the_slots() -> None:
    dist = np.random.default_rng(0).dirichlet(np.ones(3), size=(2, 2)).transpose(0, 2, 1)  # (n, A, K)
    target = ope.slate_target_from_position_dist(LOG, dist)
    marginal = np.array([[dist[0, 0, 0], dist[0, 1, 1]], [dist[1, 2, 0], dist[1, 0, 1]]])
    assert np.allclose(target.marginal_prob, marginal)
    assert np.allclose(target.cascade_prob, np.cumprod(marginal, axis=1))
    assert np.allclose(target.slate_prob, marginal.prod(axis=1))
    with pytest.raises(OPEInputError, match=r"`position_dist` must have shape \(2, 3, 2\)"):
        ope.slate_target_from_position_dist(LOG, dist[:, :2])
    with pytest.raises(OPEInputError, match="summing to 1"):
        ope.slate_target_from_position_dist(LOG, dist * 0.5)


def test_cascade_dr_is_rips_without_a_model_and_unbiased_with_a_wrong_one(cascade_sample) -> None:
    from ope.slate import SlateCascadeDR, SlateRewardPredictions

    log, target = cascade_sample.log, cascade_sample.target
    zero = SlateRewardPredictions(np.zeros(log.reward.shape), np.zeros(log.reward.shape))
    np.testing.assert_allclose(SlateCascadeDR().round_terms(log, target, zero).additive,
                               SlateRewardInteractionIPS().round_terms(log, target).additive, rtol=1e-12)
    wrong = SlateRewardPredictions(np.full(log.reward.shape, 0.3), np.full(log.reward.shape, 0.3))
    terms = SlateCascadeDR().round_terms(log, target, wrong)
    assert abs((terms.value - cascade_sample.true_value) / ope.standard_error(terms)) < 4
    with pytest.raises(OPEInputError, match="cascade_dr needs a reward model"):
        SlateCascadeDR().round_terms(log, target)
    with pytest.raises(OPEInputError, match="same shape"):
        SlateRewardPredictions(np.zeros((2, 3)), np.zeros((2, 2)))
