"""Request context columns in the response model: their encoding, their effect on clicks, and the simulated
sessions that start from logged contexts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs.fitted import FitConfig, ResponseModel, fit_response_model
from envs.fitted.context import ContextEncoding, context_columns
from shopgym.data import LoggedData
from shopgym.data import schema as S


def test_encoding_keeps_frequent_levels_and_standardises_numbers():
    frame = pd.DataFrame({"request_id": list("abcdefgh"), "device": ["m"] * 5 + ["d"] * 2 + [None],
                          "age": [20.0, 30.0, 40.0, np.nan, 20.0, 30.0, 40.0, 30.0]})
    enc = ContextEncoding.fit(frame, min_count=2)
    assert context_columns(frame) == ["device", "age"]
    assert enc.categorical == {"device": ["m", "d"]} and set(enc.numeric) == {"age"}
    x = enc.transform(pd.DataFrame({"device": ["d", "tablet", None], "age": [30.0, np.nan, 1e9]}))
    assert x.shape == (3, enc.width) == (3, 3)
    np.testing.assert_array_equal(x[:, :2], [[0, 1], [0, 0], [0, 0]])  # unknown and missing levels: zeros
    assert x[1, 2] == 0.0 and x[2, 2] == 5.0  # missing numbers: the mean; outliers clipped
    assert ContextEncoding.from_json(enc.to_json()) == enc
    assert ContextEncoding.fit(frame, min_count=9).width == 1  # too rare a level is not an input


@pytest.fixture(scope="module")
def context_logs(small_logs):
    """The small world's logs with a request context that changes who clicks: segment 'b' clicks 4x less."""
    inter = small_logs.interactions.copy()
    rng = np.random.default_rng(0)
    requests = inter[S.REQUEST_ID].unique()
    segment = pd.Series(np.where(rng.random(len(requests)) < 0.5, "a", "b"), index=requests)
    inter["segment"] = segment.reindex(inter[S.REQUEST_ID]).to_numpy()
    drop = (inter["segment"] == "b").to_numpy() & (rng.random(len(inter)) < 0.75)
    for column in (S.CLICKED, S.CARTED, S.PURCHASED):
        inter.loc[drop, column] = 0
    inter.loc[drop, S.REVENUE] = 0.0
    return LoggedData(small_logs.items, inter, "context")


def _queries(logs: LoggedData) -> list[str]:
    return logs.interactions[S.QUERY].unique().tolist()


def test_the_model_learns_the_context_effect_and_saves_it(context_logs, tmp_path):
    from encoders.hashing import HashingEncoder
    from envs.space import ItemSpace

    space = ItemSpace.build(context_logs.items, HashingEncoder(dim=64), _queries(context_logs))
    config = FitConfig(steps=300, latent_classes=0)
    model = fit_response_model(context_logs, space, config)
    assert model.report["context_inputs"] == 2 and model.context.categorical == {"segment": ["a", "b"]}
    b, k = 4, 8
    items = np.tile(np.arange(k), (b, 1))
    args = (np.tile(model.default_profile, (b, 1)), space.item_vecs[items], np.zeros((b, space.dim)),
            np.zeros(b, dtype=bool), items)
    ctx = model.context.transform(pd.DataFrame({"segment": ["a", "a", "b", "b"]}))
    alpha = model.predict(*args, context=ctx)[..., 0]
    assert alpha[2:].mean() < 0.6 * alpha[:2].mean()  # segment b clicks less
    without = fit_response_model(context_logs, space, FitConfig(steps=300, latent_classes=0, context=False))
    a0 = without.predict(*args)[..., 0]
    np.testing.assert_allclose(a0[0], a0[2])  # ... which a model without context cannot tell
    model.save(tmp_path / "m")
    loaded = ResponseModel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(*args, context=ctx), model.predict(*args, context=ctx))
    assert loaded.context == model.context


def test_simulated_sessions_start_from_logged_contexts(context_logs):
    from encoders.hashing import HashingEncoder
    from envs.build import log_simulator
    from envs.space import ItemSpace

    anonymous = LoggedData(context_logs.items, context_logs.interactions.drop(columns=[S.USER_ID, S.SESSION_ID]),
                           "anonymous")
    space = ItemSpace.build(anonymous.items, HashingEncoder(dim=64), _queries(anonymous))
    model = fit_response_model(anonymous, space, FitConfig(steps=50, latent_classes=0, context_l2=1.0))
    sim = log_simulator(anonymous, space, model)
    state = sim.reset(np.random.default_rng(0), 200)
    ctx = state.sessions.context
    assert ctx is not None and ctx.shape == (200, 2)
    share_b = ctx[:, 1].mean()
    logged_b = (anonymous.interactions.drop_duplicates(S.REQUEST_ID)["segment"] == "b").mean()
    assert abs(share_b - logged_b) < 0.1  # drawn from the logged requests
    result = sim.step(state, np.tile(np.arange(sim.config.slate_size), (200, 1)), np.random.default_rng(1))
    assert np.isfinite(result.reward).all()
