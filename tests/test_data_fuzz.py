"""Fuzz the validator: any corrupted table loads correctly or raises DataFormatError, nothing else."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopgym.data import LoggedData
from shopgym.errors import DataFormatError

COLUMNS = ["request_id", "user_id", "timestamp", "position", "item_id", "clicked", "purchased", "propensity",
           "revenue", "query"]
JUNK = st.one_of(
    st.none(), st.just(np.nan), st.just(np.inf), st.just(-1), st.just(0), st.just(2), st.just(0.5),
    st.just(1e300), st.just(""), st.just("x"), st.just("2024-13-45"), st.just("1"), st.just(True),
    st.text(max_size=5), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
)


def _base() -> pd.DataFrame:
    n = 8
    return pd.DataFrame({
        "request_id": np.repeat(["r1", "r2"], 4).astype(object),
        "user_id": np.repeat(["u1", "u2"], 4).astype(object),
        "timestamp": ["2024-01-01 10:00:00"] * 4 + ["2024-01-01 11:00:00"] * 4,
        "position": np.tile([1, 2, 3, 4], 2).astype(object),
        "item_id": np.array(["a", "b", "c", "d"] * 2, dtype=object),
        "clicked": np.array([1, 0, 0, 0, 0, 1, 0, 0], dtype=object),
        "purchased": np.zeros(n, dtype=object),
        "propensity": np.full(n, 0.25, dtype=object),
        "revenue": np.zeros(n, dtype=object),
        "query": np.array([""] * n, dtype=object),
    })


ITEMS = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "text": ["red shoe", "blue hat", "", "scarf"]})


@settings(max_examples=int(os.environ.get("SHOPGYM_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(COLUMNS), JUNK), min_size=1, max_size=4),
    dropped=st.lists(st.sampled_from(COLUMNS), max_size=2),
)
def test_corrupted_interactions_load_or_raise_our_error(edits, dropped) -> None:
    frame = _base().astype(object)
    for row, column, value in edits:
        frame.at[row, column] = value
    frame = frame.drop(columns=list(set(dropped)))
    try:
        data = LoggedData.from_frames(ITEMS, frame)
    except DataFormatError as err:
        assert err.source == "interactions" or err.source == "items"
        return
    # it loaded: then it must satisfy every documented invariant (no silently wrong result)
    inter = data.interactions
    assert len(inter) == len(frame), "rows were dropped silently"
    assert (inter["position"] >= 1).all()
    assert set(np.unique(inter["clicked"])) <= {0, 1}
    if "propensity" in inter:
        p = inter["propensity"].to_numpy()
        assert np.all((p > 0) & (p <= 1))
    if "revenue" in inter:
        assert np.all(np.isfinite(inter["revenue"])) and (inter["revenue"] >= 0).all()
    assert not inter.duplicated(["request_id", "position"]).any()
    assert inter["item_id"].isin(ITEMS["item_id"]).all()
    assert inter["timestamp"].notna().all()
