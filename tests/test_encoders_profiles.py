"""User profiles: log pooling against a per-user reference loop, the online update, cold start, composite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from encoders import (
    BehaviourWeights,
    CompositeProfile,
    ProfileState,
    decay_from_half_life,
    interaction_weights,
    l2_normalize,
    profiles_from_logs,
    update,
    vector,
)
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError

N_ITEMS, DIM = 30, 8


@pytest.fixture(scope="module")
def item_vectors() -> np.ndarray:
    return l2_normalize(np.random.default_rng(0).normal(size=(N_ITEMS, DIM)))


@pytest.fixture(scope="module")
def log() -> LoggedData:
    rng = np.random.default_rng(1)
    n_requests, slate = 120, 4
    users = rng.choice(np.array([f"u{i}" for i in range(15)], dtype=object), size=n_requests)
    users[:3] = "cold"  # three requests of a user who never engages
    start = pd.Timestamp("2024-03-01", tz="UTC")
    rows = []
    for r in range(n_requests):
        when = start + pd.Timedelta(hours=int(rng.integers(0, 24 * 30)))
        for pos, item in enumerate(rng.choice(N_ITEMS, size=slate, replace=False), start=1):
            clicked = 0 if users[r] == "cold" else int(rng.random() < 0.4)
            carted = int(clicked and rng.random() < 0.5)
            purchased = int(carted and rng.random() < 0.5)
            rows.append({S.REQUEST_ID: f"r{r}", S.USER_ID: users[r], S.TIMESTAMP: when, S.POSITION: pos,
                         S.ITEM_ID: f"i{item}", S.CLICKED: clicked, S.CARTED: carted, S.PURCHASED: purchased})
    items = pd.DataFrame({S.ITEM_ID: [f"i{i}" for i in range(N_ITEMS)], S.TEXT: ""})
    return LoggedData.from_frames(items, pd.DataFrame(rows))


def reference_profiles(log: LoggedData, vectors: np.ndarray, pooling: str, half_life_s: float) -> dict[str, np.ndarray]:
    """The definition, one user at a time (a plain loop, for checking only)."""
    w_beh = BehaviourWeights()
    out = {}
    for user, rows in log.interactions.groupby(S.USER_ID):
        total = np.zeros(DIM)
        engaged = rows[(rows[S.CLICKED] + rows[S.CARTED] + rows[S.PURCHASED]) > 0]
        if len(engaged) == 0:
            continue
        t_last = engaged[S.TIMESTAMP].max()
        for _, row in engaged.iterrows():
            weight = 1.0
            if pooling.startswith("behaviour"):
                weight = (w_beh.purchase if row[S.PURCHASED] else w_beh.cart if row[S.CARTED] else w_beh.click)
            if pooling.endswith("recency"):
                weight *= 0.5 ** ((t_last - row[S.TIMESTAMP]).total_seconds() / half_life_s)
            total += weight * vectors[int(row[S.ITEM_ID][1:])]
        out[str(user)] = total / np.linalg.norm(total)
    return out


@pytest.mark.parametrize("pooling", ["mean", "behaviour", "recency", "behaviour_recency"])
def test_log_profiles_match_the_definition(log: LoggedData, item_vectors: np.ndarray, pooling: str) -> None:
    profiles = profiles_from_logs(log, item_vectors, pooling=pooling, half_life="3D")  # type: ignore[arg-type]
    expected = reference_profiles(log, item_vectors, pooling, 3 * 86400.0)
    got = profiles.lookup(list(expected))
    np.testing.assert_allclose(got, np.stack(list(expected.values())), atol=1e-5)
    assert profiles.vectors.dtype == np.float32 and profiles.pooling == pooling


def test_poolings_differ(log: LoggedData, item_vectors: np.ndarray) -> None:
    mean = profiles_from_logs(log, item_vectors, pooling="mean").vectors
    behaviour = profiles_from_logs(log, item_vectors, pooling="behaviour").vectors
    recency = profiles_from_logs(log, item_vectors, pooling="recency", half_life="1D").vectors
    assert not np.allclose(mean, behaviour) and not np.allclose(mean, recency)


def test_cold_start_gets_the_population_mean(log: LoggedData, item_vectors: np.ndarray) -> None:
    profiles = profiles_from_logs(log, item_vectors)
    cold = profiles.user_ids.get_loc("cold")
    assert profiles.state.is_cold[cold] and profiles.state.is_cold.sum() == 1
    warm = profiles.vectors[~profiles.state.is_cold]
    population = warm.mean(axis=0) / np.linalg.norm(warm.mean(axis=0))
    np.testing.assert_allclose(profiles.default, population, atol=1e-6)
    np.testing.assert_allclose(profiles.vectors[cold], population, atol=1e-6)
    np.testing.assert_allclose(profiles.lookup(["never-seen", "cold"]), [population, population], atol=1e-6)
    own = profiles_from_logs(log, item_vectors, default=item_vectors[0])
    np.testing.assert_allclose(own.lookup(["cold"])[0], item_vectors[0], atol=1e-6)


def test_online_updates_reproduce_log_profiles(log: LoggedData, item_vectors: np.ndarray) -> None:
    """Replaying the log request by request through `update` gives the log profiles."""
    offline = profiles_from_logs(log, item_vectors, pooling="behaviour")
    users = offline.user_ids
    state = ProfileState.zeros(len(users), DIM)
    inter = log.interactions
    weights = BehaviourWeights().of(inter[S.CLICKED], inter[S.CARTED], inter[S.PURCHASED])
    rows = users.get_indexer(pd.Index(inter[S.USER_ID]))
    items = log.item_index().get_indexer(pd.Index(inter[S.ITEM_ID]))
    for _, request in inter.groupby(S.REQUEST_ID, sort=False).indices.items():
        k = len(request)
        item_vecs = np.zeros((len(users), k, DIM))
        step_w = np.zeros((len(users), k))
        item_vecs[rows[request[0]]] = item_vectors[items[request]]
        step_w[rows[request[0]]] = weights[request]
        state = update(state, item_vecs, step_w, decay=1.0)
    np.testing.assert_allclose(state.sum, offline.state.sum, atol=1e-9)
    np.testing.assert_allclose(vector(state, offline.default), offline.vectors, atol=1e-6)


def test_update_decays_and_is_pure(item_vectors: np.ndarray) -> None:
    state = ProfileState.zeros(2, DIM)
    first = update(state, item_vectors[None, [0, 1]].repeat(2, axis=0), np.array([[1.0, 0.0], [0.0, 2.0]]), decay=0.5)
    assert not state.sum.any()  # input untouched
    second = update(first, item_vectors[None, [2]].repeat(2, axis=0), np.array([[1.0], [0.0]]), decay=0.5)
    np.testing.assert_allclose(second.sum[0], 0.5 * item_vectors[0] + item_vectors[2])
    np.testing.assert_allclose(second.sum[1], 0.5 * 2 * item_vectors[1])
    np.testing.assert_allclose(second.weight, [1.5, 1.0])
    assert decay_from_half_life(1.0) == 0.5
    np.testing.assert_allclose(decay_from_half_life(10.0) ** 10, 0.5)


def test_vector_cold_rows_and_default(item_vectors: np.ndarray) -> None:
    state = update(ProfileState.zeros(3, DIM), item_vectors[[0, 1, 2]][:, None, :], np.array([[1.0], [0.0], [3.0]]))
    default = 2 * item_vectors[5]
    out = vector(state, default)
    np.testing.assert_allclose(out[[0, 2]], item_vectors[[0, 2]], atol=1e-6)
    np.testing.assert_allclose(out[1], item_vectors[5], atol=1e-6)
    assert not vector(state, np.zeros(DIM))[1].any()


def test_behaviour_weights() -> None:
    w = BehaviourWeights(shown=0.1, click=1, cart=2, purchase=5)
    got = w.of(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(got, [0.1, 1, 2, 5])
    with pytest.raises(ConfigError, match="`cart` must be >= 0"):
        BehaviourWeights(cart=-1)


def test_composite_profile() -> None:
    q, a, h = np.eye(3)[0][None], np.eye(3)[1][None], np.eye(3)[2][None]
    comp = CompositeProfile(query=0.5, attributes=0.2, history=0.3)
    expected = np.array([[0.5, 0.2, 0.3]]) / np.linalg.norm([0.5, 0.2, 0.3])
    np.testing.assert_allclose(comp.combine(q, a, h), expected, atol=1e-6)
    # a cold user's (zero) history is skipped: the query and attributes decide alone
    np.testing.assert_allclose(comp.combine(q, a, np.zeros((1, 3))), comp.combine(q, a), atol=1e-7)
    np.testing.assert_allclose(comp.combine(q, 5 * a), comp.combine(q, a), atol=1e-7)  # parts are normalised
    batch = comp.combine(np.vstack([q, np.zeros((1, 3))]), None, np.vstack([h, np.zeros((1, 3))]),
                         default=np.ones(3))
    np.testing.assert_allclose(batch[1], np.ones(3) / np.sqrt(3), atol=1e-6)  # nothing known -> default


def test_composite_errors() -> None:
    with pytest.raises(ConfigError, match="at least one of"):
        CompositeProfile().combine()
    with pytest.raises(ConfigError, match="same"):
        CompositeProfile().combine(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ConfigError, match="all 0"):
        CompositeProfile(0, 0, 0)


def test_profile_input_errors(log: LoggedData, item_vectors: np.ndarray) -> None:
    with pytest.raises(ConfigError, match=r"one row per item"):
        profiles_from_logs(log, item_vectors[:-1])
    with pytest.raises(DataFormatError, match="user id column"):
        profiles_from_logs(log, item_vectors, user_column="shopper")
    with pytest.raises(ConfigError, match="`pooling` must be one of"):
        profiles_from_logs(log, item_vectors, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="half_life"):
        interaction_weights(log.interactions, "recency", half_life="soon")
    with pytest.raises(ConfigError, match=r"item_vecs.*shape"):
        update(ProfileState.zeros(2, DIM), np.zeros((3, 1, DIM)), np.zeros((3, 1)))
    with pytest.raises(ConfigError, match="decay"):
        update(ProfileState.zeros(1, DIM), np.zeros((1, 1, DIM)), np.zeros((1, 1)), decay=1.5)
