"""Bandit estimators: a hand-worked example, invariants, unbiasedness, invalid inputs."""

from __future__ import annotations

import numpy as np
import pytest

import ope
from ope import (
    IPS,
    BanditLog,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    MissingPropensityError,
    OPEInputError,
    SelfNormalizedDR,
    SelfNormalizedIPS,
    SwitchDR,
)

# ---------------------------------------------------------------- a tiny log, worked by hand
# weights w = pi_e(a_i) / pscore_i = [0.5/0.5, 0.8/0.5, 0.5/0.25, 1.0/0.8] = [1, 1.6, 2, 1.25]
REWARD = np.array([1.0, 0.0, 1.0, 0.0])
ACTION = np.array([0, 1, 1, 0])
PSCORE = np.array([0.5, 0.5, 0.25, 0.8])
DIST = np.array([[0.5, 0.5], [0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
Q_HAT = np.array([[0.6, 0.2], [0.4, 0.3], [0.1, 0.5], [0.2, 0.9]])
W = np.array([1.0, 1.6, 2.0, 1.25])
DM_ROWS = np.array([0.5 * 0.6 + 0.5 * 0.2, 0.2 * 0.4 + 0.8 * 0.3, 0.5 * 0.1 + 0.5 * 0.5, 1.0 * 0.2])
RESIDUAL = REWARD - np.array([0.6, 0.3, 0.5, 0.2])  # r_i - q_hat(x_i, a_i)


@pytest.fixture
def tiny() -> BanditLog:
    return BanditLog(reward=REWARD, action=ACTION, n_actions=2, pscore=PSCORE)


def shrunk(w: np.ndarray, lam: float) -> np.ndarray:
    return lam * w / (w**2 + lam)


HAND_WORKED = [
    (DirectMethod(), DM_ROWS.mean()),
    (IPS(), (1 * 1 + 2 * 1) / 4),
    (ClippedIPS(max_weight=1.5), (1 * 1 + 1.5 * 1) / 4),
    (SelfNormalizedIPS(), (1 * 1 + 2 * 1) / W.sum()),
    (DoublyRobust(), DM_ROWS.mean() + (W * RESIDUAL).mean()),
    (SelfNormalizedDR(), DM_ROWS.mean() + (W * RESIDUAL).sum() / W.sum()),
    (SwitchDR(max_weight=1.5), DM_ROWS.mean() + (np.array([1, 0, 0, 1]) * W * RESIDUAL).mean()),
    (DoublyRobustWithShrinkage(shrinkage=1.0), DM_ROWS.mean() + (shrunk(W, 1.0) * RESIDUAL).mean()),
]


@pytest.mark.parametrize("estimator, expected", HAND_WORKED, ids=lambda v: getattr(v, "name", ""))
def test_hand_worked_example(tiny: BanditLog, estimator: ope.BanditEstimator, expected: float) -> None:
    value = estimator.estimate(tiny, action_dist=DIST, q_hat=Q_HAT)
    assert value == pytest.approx(expected, rel=1e-12)
    rounds = estimator.estimate_rounds(tiny, action_dist=DIST, q_hat=Q_HAT)
    assert rounds.shape == (4,)
    assert rounds.mean() == pytest.approx(expected, rel=1e-12)


def test_hand_worked_numbers_are_what_the_comments_say() -> None:
    # guards the fixture itself: the weights and DM rows are what the formulas above assume
    assert np.allclose(DIST[np.arange(4), ACTION] / PSCORE, W)
    assert np.allclose((DIST * Q_HAT).sum(axis=1), DM_ROWS)


def test_target_prob_alone_is_enough_for_the_ips_family(tiny: BanditLog) -> None:
    prob = DIST[np.arange(4), ACTION]
    for est in (IPS(), ClippedIPS(max_weight=1.5), SelfNormalizedIPS()):
        assert est.estimate(tiny, target_prob=prob) == est.estimate(tiny, action_dist=DIST)


# ---------------------------------------------------------------- invariants
@pytest.fixture(scope="module")
def sample() -> ope.BanditSample:
    return ope.SyntheticBandit(n_actions=6, dim_context=3, seed=3).sample(3000, np.random.default_rng(0))


def test_on_policy_ips_and_snips_give_the_mean_logged_reward(sample: ope.BanditSample) -> None:
    log, pb = sample.log, sample.logging_action_dist
    assert IPS().estimate(log, action_dist=pb) == pytest.approx(log.reward.mean(), rel=1e-12)
    assert SelfNormalizedIPS().estimate(log, action_dist=pb) == pytest.approx(log.reward.mean(), rel=1e-12)
    assert ClippedIPS(max_weight=1.0).estimate(log, action_dist=pb) == pytest.approx(log.reward.mean(), rel=1e-12)


def test_on_policy_dr_family_gives_the_mean_reward_plus_mean_model_gap(sample: ope.BanditSample) -> None:
    # with w = 1: DR = mean(r) + mean(q(x, pi_b) - q(x, a_i)); SNDR, Switch-DR(tau >= 1), DRos(inf) agree
    log, pb = sample.log, sample.logging_action_dist
    q = np.random.default_rng(1).random(pb.shape)
    gap = ((pb * q).sum(axis=1) - q[np.arange(log.n_rounds), log.action]).mean()
    for est in (DoublyRobust(), SelfNormalizedDR(), SwitchDR(max_weight=1.0),
                DoublyRobustWithShrinkage(shrinkage=np.inf)):
        assert est.estimate(log, action_dist=pb, q_hat=q) == pytest.approx(log.reward.mean() + gap, rel=1e-10)


def test_limits_of_the_tuning_parameters(sample: ope.BanditSample) -> None:
    log, pe = sample.log, sample.action_dist
    q = sample.expected_reward * 0.9
    kw = {"action_dist": pe, "q_hat": q}
    dr, dm, ips = DoublyRobust().estimate(log, **kw), DirectMethod().estimate(log, **kw), IPS().estimate(log, **kw)
    assert SwitchDR(max_weight=np.inf).estimate(log, **kw) == pytest.approx(dr)
    assert SwitchDR(max_weight=0.0).estimate(log, **kw) == pytest.approx(dm)
    assert DoublyRobustWithShrinkage(shrinkage=np.inf).estimate(log, **kw) == pytest.approx(dr)
    assert DoublyRobustWithShrinkage(shrinkage=0.0).estimate(log, **kw) == pytest.approx(dm)
    assert DoublyRobustWithShrinkage(shrinkage=1e12).estimate(log, **kw) == pytest.approx(dr, rel=1e-6)
    assert ClippedIPS(max_weight=np.inf).estimate(log, **kw) == pytest.approx(ips)
    # DR with a zero model is IPS; DM with a constant model is that constant
    assert DoublyRobust().estimate(log, action_dist=pe, q_hat=np.zeros_like(q)) == pytest.approx(ips)
    assert DirectMethod().estimate(log, action_dist=pe, q_hat=np.full_like(q, 0.37)) == pytest.approx(0.37)


def test_self_normalised_estimators_ignore_the_scale_of_the_weights(sample: ope.BanditSample) -> None:
    log = sample.log
    prob = ope.target_prob_of_logged(log, sample.action_dist)
    assert SelfNormalizedIPS().estimate(log, target_prob=0.5 * prob) == pytest.approx(
        SelfNormalizedIPS().estimate(log, target_prob=prob))
    assert IPS().estimate(log, target_prob=0.5 * prob) == pytest.approx(0.5 * IPS().estimate(log, target_prob=prob))


def test_clipping_never_raises_the_estimate_for_non_negative_rewards(sample: ope.BanditSample) -> None:
    values = [ClippedIPS(max_weight=m).estimate(sample.log, action_dist=sample.action_dist) for m in (0.5, 1, 2, 5)]
    assert values == sorted(values)
    assert values[-1] <= IPS().estimate(sample.log, action_dist=sample.action_dist)


def test_position_dependent_targets_use_the_logged_position() -> None:
    rng = np.random.default_rng(0)
    n, a, k = 50, 4, 3
    position = rng.integers(0, k, n)
    action = rng.integers(0, a, n)
    log = BanditLog(reward=rng.random(n), action=action, n_actions=a, pscore=np.full(n, 0.25),
                    position=position, n_positions=k)
    dist = rng.dirichlet(np.ones(a), size=(n, k)).transpose(0, 2, 1)  # (n, A, K)
    q = rng.random((n, a, k))
    rows = np.arange(n)
    at = dist[rows, :, position]
    q_at = q[rows, :, position]
    expected_ips = (at[rows, action] / 0.25 * log.reward).mean()
    expected_dm = (at * q_at).sum(axis=1).mean()
    assert IPS().estimate(log, action_dist=dist) == pytest.approx(expected_ips)
    assert DirectMethod().estimate(log, action_dist=dist, q_hat=q) == pytest.approx(expected_dm)
    # a position-free target with per-position q_hat mixes both layouts correctly
    assert DirectMethod().estimate(log, action_dist=at, q_hat=q) == pytest.approx(expected_dm)


@pytest.mark.parametrize("estimator", [IPS(), SelfNormalizedIPS(), DoublyRobust(), SelfNormalizedDR()],
                         ids=lambda e: e.name)
def test_unbiased_estimators_find_the_exact_truth_on_a_large_log(estimator: ope.BanditEstimator) -> None:
    world = ope.SyntheticBandit(n_actions=5, dim_context=3, target_beta=1.5, seed=11)
    s = world.sample(200_000, np.random.default_rng(5))
    q = np.clip(s.expected_reward + 0.1, 0, 1)  # a deliberately biased model: DR must correct it
    terms = estimator.round_terms(s.log, action_dist=s.action_dist, q_hat=q)
    assert abs(terms.value - world.true_value) < 4 * ope.standard_error(terms)
    biased_dm = DirectMethod().estimate(s.log, action_dist=s.action_dist, q_hat=q)
    assert abs(biased_dm - world.true_value) > 0.05  # ... while DM keeps the model's bias


# ---------------------------------------------------------------- invalid inputs
INVALID_ESTIMATOR_ARGS = [
    (ClippedIPS, {"max_weight": 0.0}, r"`max_weight` must be in \(0, inf\); found 0.0"),
    (ClippedIPS, {"max_weight": -1}, r"`max_weight` must be in \(0"),
    (ClippedIPS, {"max_weight": float("nan")}, r"`max_weight` must be a number; found NaN"),
    (ClippedIPS, {"max_weight": "10"}, r"`max_weight` must be a float; found '10' of type str"),
    (SwitchDR, {"max_weight": -0.5}, r"`max_weight` must be in \[0, inf\); found -0.5"),
    (SwitchDR, {"max_weight": None}, r"`max_weight` must be a float; found None"),
    (DoublyRobustWithShrinkage, {"shrinkage": -1.0}, r"`shrinkage` must be in \[0, inf\)"),
    (DoublyRobustWithShrinkage, {"shrinkage": True}, r"`shrinkage` must be a float; found True of type bool"),
]


@pytest.mark.parametrize("cls, kwargs, match", INVALID_ESTIMATOR_ARGS)
def test_estimators_reject_bad_hyperparameters(cls: type, kwargs: dict, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        cls(**kwargs)


def test_yaml_integers_are_accepted_as_floats() -> None:
    assert ClippedIPS(max_weight=10).max_weight == 10


INVALID_TARGETS = [
    ({"action_dist": DIST[:3]}, r"`action_dist` must have shape \(4, 2\)"),
    ({"action_dist": DIST * 1.1}, r"`action_dist` must be in \[0, 1\]"),
    ({"action_dist": DIST * 0.9}, r"`action_dist` must be probabilities summing to 1 over axis 1.*4 of 4"),
    ({"action_dist": np.where(DIST == 0.2, np.nan, DIST)}, r"`action_dist` must not hold missing \(NaN\)"),
    ({"action_dist": -DIST}, r"`action_dist` must be in \[0, 1\]"),
    ({"action_dist": DIST[:, :, None]}, r"`action_dist` is 3-D \(per position\) but the log has no `position`"),
    ({"action_dist": DIST[0]}, r"`action_dist` must be a 2-D or 3-D array; found shape \(2,\)"),
    ({"target_prob": np.array([0.5, 0.8, 0.5])}, r"`target_prob` must have shape \(4,\)"),
    ({"target_prob": np.array([0.5, 0.8, 0.5, 1.2])}, r"`target_prob` must be in \[0, 1\].*1.2 at index 3"),
    ({"target_prob": np.array(["a", "b", "c", "d"])}, r"`target_prob` must hold real numbers; found dtype <U1"),
    ({"action_dist": DIST, "target_prob": np.array([0.5, 0.8, 0.5, 0.9])},
     r"`target_prob` must equal `action_dist` at the logged actions.*first round 3"),
    ({"action_dist": DIST, "q_hat": Q_HAT[:, :1]}, r"`q_hat` must have shape \(4, 2\)"),
    ({"action_dist": DIST, "q_hat": np.where(Q_HAT > 0.8, np.inf, Q_HAT)}, r"`q_hat` must be finite"),
]


@pytest.mark.parametrize("kwargs, match", INVALID_TARGETS)
def test_estimators_reject_bad_targets(tiny: BanditLog, kwargs: dict, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        DoublyRobust().estimate(tiny, **kwargs)


MISSING_REQUIREMENTS = [
    (IPS(), {"action_dist": DIST}, False, MissingPropensityError, r"`pscore`: ips needs the logging policy's"),
    (SwitchDR(), {"action_dist": DIST, "q_hat": Q_HAT}, False, MissingPropensityError, r"switch_dr needs"),
    (IPS(), {}, True, OPEInputError, r"ips needs the evaluation policy's probability"),
    (DirectMethod(), {"action_dist": DIST}, True, OPEInputError, r"`q_hat`: dm needs reward-model predictions"),
    (DoublyRobust(), {"target_prob": DIST[np.arange(4), ACTION], "q_hat": Q_HAT}, True, OPEInputError,
     r"`action_dist`: dr needs reward-model predictions q_hat .* and the evaluation policy's full action_dist"),
]


@pytest.mark.parametrize("estimator, kwargs, with_pscore, err, match", MISSING_REQUIREMENTS)
def test_missing_requirements_get_a_clear_error(estimator, kwargs, with_pscore, err, match) -> None:
    log = BanditLog(reward=REWARD, action=ACTION, n_actions=2, pscore=PSCORE if with_pscore else None)
    with pytest.raises(err, match=match):
        estimator.estimate(log, **kwargs)


def test_dm_runs_without_propensities() -> None:
    log = BanditLog(reward=REWARD, action=ACTION, n_actions=2)
    assert DirectMethod().estimate(log, action_dist=DIST, q_hat=Q_HAT) == pytest.approx(DM_ROWS.mean())
