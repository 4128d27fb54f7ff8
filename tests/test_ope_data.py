"""Containers (BanditLog, SlateLog, SlateTarget), obp interop and builders from LoggedData."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import ope
from ope import BanditLog, OPEInputError, SlateLog, SlateTarget
from shopgym.data import LoggedData

GOOD = {"reward": np.array([1.0, 0.0, 1.0]), "action": np.array([0, 2, 1]), "n_actions": 3,
        "pscore": np.array([0.5, 0.25, 1.0])}

INVALID_BANDIT_LOGS = [
    ({"n_actions": 0}, r"`n_actions` must be in \[1, inf\); found 0"),
    ({"n_actions": 2.0}, r"`n_actions` must be a int; found 2.0"),
    ({"reward": np.array([1.0, np.nan, 0.0])}, r"`reward` must be finite.*nan at index 1"),
    ({"reward": np.array([[1.0, 0.0, 1.0]])}, r"`reward` must be a 1-D array; found shape \(1, 3\)"),
    ({"reward": np.array([])}, r"`reward` must hold at least one round"),
    ({"action": np.array([0, 3, 1])}, r"`action` must be integers in \[0, 3\).*3 at index 1"),
    ({"action": np.array([0, -1, 1])}, r"`action` must be integers in \[0, 3\)"),
    ({"action": np.array([0.0, 1.5, 1.0])}, r"`action` must hold integers; found dtype float64 with non-integral"),
    ({"action": np.array([0, 1])}, r"`action` must have shape \(3,\)"),
    ({"pscore": np.array([0.5, 0.0, 1.0])}, r"`pscore` must be in \(0, 1\].*0.0 at index 1"),
    ({"pscore": np.array([0.5, 1.5, 1.0])}, r"`pscore` must be in \(0, 1\].*1.5 at index 1"),
    ({"pscore": np.array([0.5, np.nan, 1.0])}, r"`pscore` must not hold missing \(NaN\) values.*pass pscore=None"),
    ({"pscore": np.array([0.5, 0.5])}, r"`pscore` must have shape \(3,\)"),
    ({"position": np.array([0, -1, 1])}, r"`position` must be integers in \[0, 2\)"),
    ({"position": np.array([0, 1, 3]), "n_positions": 3}, r"`position` must be integers in \[0, 3\).*3 at index 2"),
    ({"n_positions": 2}, r"`n_positions` must be None or 0 when `position` is None"),
    ({"context": np.ones((2, 4))}, r"`context` must have shape \(n_rounds=3, dim_context\); found shape \(2, 4\)"),
    ({"context": np.array([[1.0], [np.inf], [0.0]])}, r"`context` must be finite"),
    ({"action_context": np.ones((2, 4))}, r"`action_context` must have shape \(n_actions=3"),
]


@pytest.mark.parametrize("override, match", INVALID_BANDIT_LOGS)
def test_bandit_log_rejects_bad_fields(override: dict, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        BanditLog(**(GOOD | override))


def test_bandit_log_converts_and_infers() -> None:
    log = BanditLog(reward=[1, 0, 1], action=[0.0, 2.0, 1.0], n_actions=3, position=[0, 2, 1])
    assert log.reward.dtype == np.float64 and log.action.dtype == np.int64
    assert log.n_positions == 3 and log.n_rounds == 3 and not log.has_pscore
    assert log.logged_mean == pytest.approx(2 / 3)
    sub = log.subset(np.array([2, 2, 0]))
    assert sub.action.tolist() == [1, 1, 0] and sub.n_positions == 3


SLATE = {"reward": np.array([[1.0, 0.0], [0.0, 1.0]]), "slate": np.array([[0, 1], [2, 0]]), "n_actions": 3,
         "slate_pscore": np.array([0.1, 0.2]), "marginal_pscore": np.array([[0.4, 0.3], [0.5, 0.4]]),
         "cascade_pscore": np.array([[0.4, 0.1], [0.5, 0.2]])}

INVALID_SLATE_LOGS = [
    ({"slate": np.array([[0, 1]])}, r"`slate` must have shape \(2, 2\)"),
    ({"slate": np.array([[0, 3], [2, 0]])}, r"`slate` must be integers in \[0, 3\).*3 at index \(0, 1\)"),
    ({"cascade_pscore": np.array([[0.4, 0.5], [0.5, 0.2]]), "slate_pscore": np.array([0.5, 0.2])},
     r"`cascade_pscore` must be non-increasing along positions.*round 0"),
    ({"cascade_pscore": np.array([[0.3, 0.1], [0.5, 0.2]])}, r"`cascade_pscore\[:, 0\]` must equal `marginal_pscore"),
    ({"slate_pscore": np.array([0.1, 0.25])}, r"`cascade_pscore\[:, -1\]` must equal `slate_pscore`.*round 1"),
    ({"slate_pscore": np.array([0.1, 0.45]), "cascade_pscore": None},
     r"`slate_pscore` must not exceed `marginal_pscore`.*round 1: 0.45 > 0.4 at slot 1"),
    ({"marginal_pscore": np.array([[0.4, 0.0], [0.5, 0.4]])}, r"`marginal_pscore` must be in \(0, 1\]"),
    ({"reward": np.ones((2, 0)), "slate": np.ones((2, 0))}, r"`reward` must have shape \(n_rounds >= 1"),
]


@pytest.mark.parametrize("override, match", INVALID_SLATE_LOGS)
def test_slate_log_rejects_bad_fields(override: dict, match: str) -> None:
    with pytest.raises(OPEInputError, match=match):
        SlateLog(**(SLATE | override))


def test_slate_target_validation() -> None:
    with pytest.raises(OPEInputError, match="needs at least one of"):
        SlateTarget()
    with pytest.raises(OPEInputError, match=r"`cascade_prob` must have shape \(2, 2\) like `marginal_prob`"):
        SlateTarget(marginal_prob=np.full((2, 2), 0.5), cascade_prob=np.full((2, 3), 0.1))
    with pytest.raises(OPEInputError, match="must cover the same rounds"):
        SlateTarget(slate_prob=np.full(3, 0.1), marginal_prob=np.full((2, 2), 0.5))
    # zero target probabilities are legal (the evaluation policy never shows that slate)
    assert SlateTarget(slate_prob=np.zeros(2)).n_rounds == 2


# ---------------------------------------------------------------- obp interop
def test_bandit_obp_round_trip() -> None:
    s = ope.SyntheticBandit(n_actions=4, dim_context=2).sample(30, np.random.default_rng(0))
    log = BanditLog(reward=s.log.reward, action=s.log.action, n_actions=4, pscore=s.log.pscore,
                    position=np.arange(30) % 3, context=s.log.context, action_context=np.eye(4))
    feedback = ope.bandit_log_to_obp(log)
    assert set(feedback) >= {"n_rounds", "n_actions", "action", "position", "reward", "pscore", "context",
                             "action_context"}
    back = ope.bandit_log_from_obp(feedback)
    for name in ("reward", "action", "pscore", "position", "context", "action_context"):
        assert np.array_equal(getattr(back, name), getattr(log, name)), name
    assert back.n_positions == 3
    # obp's synthetic feedback has position=None and extra keys; they are ignored
    synthetic = {"n_rounds": 30, "n_actions": 4, "action": s.log.action, "position": None, "reward": s.log.reward,
                 "pscore": s.log.pscore, "context": s.log.context, "expected_reward": s.expected_reward,
                 "pi_b": s.logging_action_dist[:, :, None]}
    assert ope.bandit_log_from_obp(synthetic).position is None


def test_bandit_obp_import_errors() -> None:
    with pytest.raises(OPEInputError, match=r"missing \['reward'\]"):
        ope.bandit_log_from_obp({"n_actions": 2, "action": [0, 1]})
    with pytest.raises(OPEInputError, match=r"`feedback\['n_rounds'\]` must equal len\(feedback\['action'\]\) = 2"):
        ope.bandit_log_from_obp({"n_rounds": 3, "n_actions": 2, "action": [0, 1], "reward": [1, 0]})


def test_slate_obp_round_trip_and_unsorted_import() -> None:
    log = SlateLog(**SLATE)
    feedback = ope.slate_log_to_obp(log)
    assert feedback["slate_id"].tolist() == [0, 0, 1, 1] and feedback["pscore"].tolist() == [0.1, 0.1, 0.2, 0.2]
    back = ope.slate_log_from_obp(feedback)
    for name in ("reward", "slate", "slate_pscore", "marginal_pscore", "cascade_pscore"):
        assert np.array_equal(getattr(back, name), getattr(log, name)), name
    # obp rows may come in any order: they are sorted by (slate_id, position)
    order = np.array([3, 0, 2, 1])
    shuffled = {k: (v[order] if isinstance(v, np.ndarray) and v.shape == (4,) else v) for k, v in feedback.items()}
    again = ope.slate_log_from_obp(shuffled)
    assert np.array_equal(again.slate, log.slate) and np.array_equal(again.reward, log.reward)


def test_slate_obp_import_errors() -> None:
    base = ope.slate_log_to_obp(SlateLog(**SLATE))
    with pytest.raises(OPEInputError, match="same number of slots"):
        ope.slate_log_from_obp(base | {"slate_id": np.array([0, 0, 0, 1])})
    with pytest.raises(OPEInputError, match=r"must be 0..1 exactly once"):
        ope.slate_log_from_obp(base | {"position": np.array([0, 0, 0, 1])})
    with pytest.raises(OPEInputError, match="constant within each slate"):
        ope.slate_log_from_obp(base | {"pscore": np.array([0.1, 0.2, 0.2, 0.2])})


# ---------------------------------------------------------------- builders from LoggedData
def logged(with_propensity: bool = True, slots: tuple[int, ...] = (1, 2, 1, 2, 1)) -> LoggedData:
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "text": ["red shirt", "blue shoe", ""]})
    n = len(slots)
    requests = ["r1", "r1", "r2", "r2", "r3"][:n]
    inter = pd.DataFrame({
        "request_id": requests,
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "position": list(slots),
        "item_id": ["c", "a", "b", "c", "a"][:n],
        "clicked": [1, 0, 0, 1, 0][:n],
        "revenue": [0.0, 0.0, 0.0, 9.5, 0.0][:n],
        "device": ["app", "app", "web", "web", "app"][:n],
        "age": [31.0, 31.0, 45.0, 45.0, 22.0][:n],
    })
    if with_propensity:
        inter["propensity"] = [0.5, 0.25, 0.5, 0.5, 1.0][:n]
        inter["slate_propensity"] = [0.1, 0.1, 0.2, 0.2, 0.3][:n]
    return LoggedData.from_frames(items, inter)


def test_bandit_log_from_logged() -> None:
    data = logged()
    log = ope.bandit_log_from_logged(data, action_context=np.ones((3, 2)))
    assert log.n_actions == 3 and log.n_positions == 2
    assert log.action.tolist() == [2, 0, 1, 2, 0]  # row numbers in data.items
    assert log.position.tolist() == [0, 1, 0, 1, 0]  # 1-based in the format, 0-based here
    assert log.pscore is not None and log.pscore.tolist() == [0.5, 0.25, 0.5, 0.5, 1.0]
    assert log.context is not None and log.context.shape == (5, 3)  # one-hot 'device' (app, web), then 'age'
    assert log.context[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert log.context[:, 2].tolist() == [31.0, 31.0, 45.0, 45.0, 22.0]
    revenue = ope.bandit_log_from_logged(data, reward="revenue", context_columns=[])
    assert revenue.reward.tolist() == [0.0, 0.0, 0.0, 9.5, 0.0] and revenue.context is None
    with pytest.raises(OPEInputError, match=r"`reward` must name an interactions column; found 'purchased'"):
        ope.bandit_log_from_logged(data, reward="purchased")
    with pytest.raises(OPEInputError, match=r"missing \['nope'\]"):
        ope.bandit_log_from_logged(data, context_columns=["nope"])


def test_logs_without_propensities_run_dm_only() -> None:
    log = ope.bandit_log_from_logged(logged(with_propensity=False))
    assert log.pscore is None
    report = ope.evaluate(log, ope.uniform_action_dist(log.n_rounds, 3, 2), n_resamples=200, warn=False,
                          reward_model=ope.CellMeanModel(), n_folds=2)
    assert report["dm"].ok and np.isfinite(report["dm"].value)
    assert not report["ips"].ok and "has none (pscore=None)" in (report["ips"].error or "")


def test_slate_log_from_logged_drops_incomplete_requests_loudly() -> None:
    with pytest.warns(ope.OPEDataWarning, match=r"dropped 1 of 3 requests .*1 rows"):
        log = ope.slate_log_from_logged(logged())
    assert log.n_rounds == 2 and log.slate_size == 2
    assert log.slate.tolist() == [[2, 0], [1, 2]]
    assert log.slate_pscore is not None and log.slate_pscore.tolist() == [0.1, 0.2]
    assert log.marginal_pscore is not None and log.cascade_pscore is None
    assert log.context is not None and log.context.shape == (2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        complete = ope.slate_log_from_logged(logged(slots=(1, 2, 1, 2)))
    assert complete.n_rounds == 2
