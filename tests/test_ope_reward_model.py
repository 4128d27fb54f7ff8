"""Reward models and cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest

import ope
from ope import BanditLog, CellMeanModel, LinearRewardModel, OPEInputError


def test_cell_means_shrink_hierarchically() -> None:
    # position 0: actions 0, 0, 1 with rewards 1, 0, 1; position 1: action 1 with reward 0
    log = BanditLog(reward=[1, 0, 1, 0], action=[0, 0, 1, 1], n_actions=3, position=[0, 0, 0, 1])
    rows = np.arange(4)
    q = CellMeanModel(prior_strength=2.0).fit_predict(log, rows, rows)
    assert q.shape == (4, 3, 2)
    mu = 0.5
    mu0, mu1 = (2 + 2 * mu) / (3 + 2), (0 + 2 * mu) / (1 + 2)
    assert q[0, 0, 0] == pytest.approx((1 + 2 * mu0) / (2 + 2))
    assert q[0, 1, 0] == pytest.approx((1 + 2 * mu0) / (1 + 2))
    assert q[0, 2, 0] == pytest.approx(mu0)  # never shown: the position mean
    assert q[0, 1, 1] == pytest.approx((0 + 2 * mu1) / (1 + 2))
    assert np.all(q == q[0])  # context-free
    raw = CellMeanModel(prior_strength=0.0).fit_predict(log, rows, rows)
    assert raw[0, 0, 0] == pytest.approx(0.5)
    assert raw[0, 2, 1] == 0.0  # an unseen cell gets its position's raw mean (position 1: one reward, 0)


def test_cell_means_without_positions() -> None:
    log = BanditLog(reward=[1, 0, 1], action=[0, 0, 1], n_actions=2)
    q = CellMeanModel(prior_strength=1.0).fit_predict(log, np.arange(3), np.arange(2))
    mu = 2 / 3
    assert q.shape == (2, 2)
    assert q[0].tolist() == pytest.approx([(1 + mu) / 3, (1 + mu) / 2])


def test_ridge_with_a_tiny_penalty_is_least_squares() -> None:
    rng = np.random.default_rng(0)
    n, a = 500, 3
    x, action = rng.normal(size=(n, 2)), rng.integers(0, a, n)
    y = x @ np.array([0.5, -1.0]) + np.array([0.1, 0.3, -0.2])[action] + rng.normal(scale=0.1, size=n)
    log = BanditLog(reward=y, action=action, n_actions=a, context=x)
    rows = np.arange(n)
    q = LinearRewardModel(l2=1e-9).fit_predict(log, rows, rows)
    design = np.column_stack([x, np.eye(a)[action]])  # the one-hot spans the intercept
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert np.allclose(q[rows, action], design @ beta, atol=1e-6)


def test_logistic_model_recovers_per_action_context_effects() -> None:
    world = ope.SyntheticBandit(n_actions=4, dim_context=3, n_contexts=400, seed=1)
    s = world.sample(40_000, np.random.default_rng(0))
    rows = np.arange(s.log.n_rounds)
    model = LinearRewardModel(link="logistic", interactions=True, l2=1.0)
    q = model.fit_predict(s.log, rows[:30_000], rows[30_000:])
    assert np.abs(q - s.expected_reward[30_000:]).max() < 0.06
    additive = LinearRewardModel(link="logistic").fit_predict(s.log, rows[:30_000], rows[30_000:])
    assert np.abs(additive - s.expected_reward[30_000:]).mean() > 2 * np.abs(q - s.expected_reward[30_000:]).mean()


def test_rare_items_are_shrunk_towards_the_average_item() -> None:
    # item 0 dominates the log with CTR 0.5; items 1-4 are rare with CTR 0.1; item 5 is never logged.
    # An unseen item gets the (penalised) average *item*, about (0.5 + 4 * 0.1) / 5 on the link scale,
    # not the row-weighted CTR 0.46: the behaviour docs/notes/ope-validation.md discusses for the OBD study.
    action = np.r_[np.zeros(900, int), np.repeat(np.arange(1, 5), 25)]
    reward = np.r_[np.tile([1.0, 0.0], 450), np.tile(np.r_[1.0, np.zeros(9)], 10)]
    log = BanditLog(reward=reward, action=action, n_actions=6)
    rows = np.arange(len(action))
    q = LinearRewardModel(l2=1.0).fit_predict(log, rows, rows[:1])[0]
    assert q[0] == pytest.approx(0.5, abs=0.01) and q[1] < 0.15
    assert q[5] == pytest.approx((0.5 + 4 * 0.1) / 5, abs=0.03)
    cell = CellMeanModel(prior_strength=10).fit_predict(log, rows, rows[:1])[0]
    assert cell[5] == pytest.approx(reward.mean())  # cell means shrink to the overall mean instead


def test_action_context_features_generalise_to_rarely_logged_actions() -> None:
    rng = np.random.default_rng(3)
    a, n = 30, 3000
    emb = rng.normal(size=(a, 4))
    mean = emb @ np.array([0.3, -0.2, 0.1, 0.0])
    action = rng.integers(0, a, n)
    log = BanditLog(reward=mean[action] + rng.normal(scale=0.05, size=n), action=action, n_actions=a,
                    action_context=emb)
    rows = np.arange(n)
    q = LinearRewardModel(one_hot_actions=False, l2=1e-3).fit_predict(log, rows, rows[:1])
    assert np.allclose(q[0], mean, atol=0.02)


def test_cross_fitting_never_uses_a_rounds_own_reward() -> None:
    s = ope.SyntheticBandit(n_actions=3, dim_context=2, seed=4).sample(300, np.random.default_rng(1))
    model = LinearRewardModel(link="identity")
    q = ope.cross_fit_q_hat(s.log, model, n_folds=3, seed=0)
    flipped = ope.BanditLog(reward=np.where(np.arange(300) == 0, 1 - s.log.reward, s.log.reward),
                            action=s.log.action, n_actions=3, pscore=s.log.pscore, context=s.log.context)
    q2 = ope.cross_fit_q_hat(flipped, model, n_folds=3, seed=0)
    assert np.array_equal(q[0], q2[0])  # round 0's prediction ignores round 0's reward
    assert not np.allclose(q, q2)  # ... but other folds' predictions use it
    in_sample = ope.cross_fit_q_hat(flipped, model, n_folds=1)
    assert not np.array_equal(in_sample[0], ope.cross_fit_q_hat(s.log, model, n_folds=1)[0])


def test_cross_fit_shapes_and_reproducibility() -> None:
    log = BanditLog(reward=np.arange(12) % 2, action=np.arange(12) % 4, n_actions=4, position=np.arange(12) % 3)
    q = ope.cross_fit_q_hat(log, CellMeanModel(), n_folds=4, seed=1)
    assert q.shape == (12, 4, 3)
    assert np.array_equal(q, ope.cross_fit_q_hat(log, CellMeanModel(), n_folds=4, seed=1))


def test_default_model_is_logistic_for_clicks_and_ridge_otherwise() -> None:
    clicks = BanditLog(reward=[0, 1, 1], action=[0, 1, 0], n_actions=2, context=np.ones((3, 2)))
    assert ope.default_reward_model(clicks).link == "logistic"
    assert ope.default_reward_model(clicks).interactions
    revenue = BanditLog(reward=[0, 12.5, 1], action=[0, 1, 0], n_actions=2)
    assert ope.default_reward_model(revenue).link == "identity"


class WrongShape:
    name = "wrong"

    def fit_predict(self, log: BanditLog, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return np.zeros((len(test), log.n_actions + 1))


INVALID = [
    (lambda: LinearRewardModel(l2=0.0), r"`l2` must be in \(0, inf\); found 0.0"),
    (lambda: LinearRewardModel(link="probit"), r"`link` must be 'identity' or 'logistic'; found 'probit'"),
    (lambda: LinearRewardModel(max_iter=0), r"`max_iter` must be in \[1, inf\)"),
    (lambda: CellMeanModel(prior_strength=-1), r"`prior_strength` must be in \[0, inf\)"),
    (lambda: ope.cross_fit_q_hat(BanditLog(reward=[1, 0], action=[0, 1], n_actions=2), CellMeanModel(), n_folds=3),
     r"`n_folds` must be in \[1, 2\]; found 3"),
    (lambda: ope.cross_fit_q_hat(BanditLog(reward=[2.0, 0], action=[0, 1], n_actions=2),
                                 LinearRewardModel(link="logistic"), n_folds=1),
     r"`reward`: a logistic reward model needs rewards in \[0, 1\]"),
    (lambda: ope.cross_fit_q_hat(BanditLog(reward=[1, 0], action=[0, 1], n_actions=2), WrongShape(), n_folds=2),
     r"`model.fit_predict` must return shape \(1, 2\) for 1 rounds; found \(1, 3\) from 'wrong'"),
    (lambda: LinearRewardModel(one_hot_actions=False).fit_predict(
        BanditLog(reward=[1, 0], action=[0, 1], n_actions=2), np.arange(2), np.arange(2)),
     r"LinearRewardModel needs action features"),
]


@pytest.mark.parametrize("call, match", INVALID)
def test_reward_models_reject_bad_arguments(call, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        call()
