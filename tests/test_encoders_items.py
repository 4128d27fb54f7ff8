"""Items without text: FeatureEncoder, render_features, and the empty-text rule of encode_items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoders import (
    EncoderInputError,
    FeatureEncoder,
    HashingEncoder,
    TextItemEncoder,
    encode_items,
    item_texts,
    render_features,
)
from shopgym.data import schema as S
from shopgym.errors import ConfigError, DataFormatError


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame({
        S.ITEM_ID: ["a", "b", "c", "d", "e"],
        S.TEXT: ["red leather shoe", "", None, "  ", "blue hat"],
        S.CATEGORY: ["shoes", "bags", None, "hats", "hats"],
        S.PRICE: [30.0, 12.5, np.nan, 8.0, 15.0],
    })


class Recorder:
    """A TextEncoder that records what it was asked to encode."""

    def __init__(self) -> None:
        self.inner = HashingEncoder(32)
        self.seen: list[list[str]] = []

    dim = 32
    identity = "recorder"

    def encode(self, texts: list[str], *, batch_size: int | None = None, show_progress: bool | None = None):
        self.seen.append(list(texts))
        return self.inner.encode(texts)


def test_render_features(items: pd.DataFrame) -> None:
    assert render_features(items) == [
        "category: shoes; price: 30", "category: bags; price: 12.5", "", "category: hats; price: 8",
        "category: hats; price: 15",
    ]
    assert render_features(items, [S.PRICE], separator=" | ")[1] == "price: 12.5"
    with pytest.raises(ConfigError, match="'colour' is not in the items table"):
        render_features(items, ["colour"])


def test_empty_text_rule_features_then_zero(items: pd.DataFrame) -> None:
    rec = Recorder()
    vectors = encode_items(items, rec)
    assert rec.seen == [["red leather shoe", "category: bags; price: 12.5", "category: hats; price: 8", "blue hat"]]
    assert not vectors[2].any()  # no text and no features -> zero vector
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 3, 4]], axis=1), 1.0, atol=1e-6)


def test_empty_text_rule_zero(items: pd.DataFrame) -> None:
    rec = Recorder()
    vectors = encode_items(items, rec, empty="zero")
    assert rec.seen == [["red leather shoe", "blue hat"]]
    assert not vectors[[1, 2, 3]].any()


def test_source_features(items: pd.DataFrame) -> None:
    rec = Recorder()
    enc = TextItemEncoder(rec, source="features", feature_columns=[S.CATEGORY])
    vectors = enc.encode_items(items)
    assert rec.seen == [["category: shoes", "category: bags", "category: hats", "category: hats"]]
    np.testing.assert_array_equal(vectors[3], vectors[4])
    assert "source=features" in enc.identity and enc.dim == 32


def test_all_empty_warns(items: pd.DataFrame) -> None:
    blank = items.assign(**{S.TEXT: ""})[[S.ITEM_ID, S.TEXT]]
    with pytest.warns(UserWarning, match="none of the 5 items"):
        assert not encode_items(blank, HashingEncoder(8)).any()


def test_non_string_text_is_named(items: pd.DataFrame) -> None:
    bad = items.assign(**{S.TEXT: ["ok", 5, "x", "y", "z"]})
    with pytest.raises(DataFormatError, match=r"column 'text'.*not strings.*rows: 1"):
        encode_items(bad, HashingEncoder(8))
    with pytest.raises(DataFormatError, match="required column missing"):
        item_texts(items.drop(columns=[S.TEXT]))
    with pytest.raises(EncoderInputError, match="non-empty DataFrame"):
        encode_items(items.iloc[:0], HashingEncoder(8))


def test_feature_encoder_blocks(items: pd.DataFrame) -> None:
    enc = FeatureEncoder().fit(items)
    kinds = {c.name: (c.kind, c.width) for c in enc.columns}
    assert kinds == {S.CATEGORY: ("onehot", 3), S.PRICE: ("numeric", 1)}
    raw = enc.raw_features(items)
    prices = np.array([30.0, 12.5, 8.0, 15.0])
    z = (prices - prices.mean()) / prices.std()
    np.testing.assert_allclose(raw[[0, 1, 3, 4], 3], z)
    assert raw[2].tolist() == [0.0, 0.0, 0.0, 0.0]  # missing category and price: all zero
    np.testing.assert_array_equal(raw[:, :3].sum(axis=1), [1, 1, 0, 1, 1])
    vectors = enc.encode_items(items)
    assert vectors.shape == (5, 4) and vectors.dtype == np.float32 and enc.dim == 4
    assert not vectors[2].any()
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 3, 4]], axis=1), 1.0, atol=1e-6)


def test_feature_encoder_hashes_large_vocabularies() -> None:
    n = 500
    table = pd.DataFrame({S.ITEM_ID: [f"i{i}" for i in range(n)], S.TEXT: "",
                          "brand": [f"brand{i % 200}" for i in range(n)]})
    enc = FeatureEncoder(max_onehot=50, hash_buckets=16).fit(table)
    (column,) = enc.columns
    assert (column.kind, column.width) == ("hashed", 16)
    raw = enc.raw_features(table)
    assert (np.abs(raw).sum(axis=1) == 1).all()
    np.testing.assert_array_equal(raw[0], raw[200])  # the same brand, the same slot and sign
    np.testing.assert_array_equal(enc.raw_features(table.iloc[[7]]), raw[[7]])  # row independent


def test_feature_encoder_projection_is_seeded(items: pd.DataFrame) -> None:
    a = FeatureEncoder(dim=16, seed=1).fit(items).encode_items(items)
    b = FeatureEncoder(dim=16, seed=1).fit(items).encode_items(items)
    c = FeatureEncoder(dim=16, seed=2).fit(items).encode_items(items)
    assert a.shape == (5, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert FeatureEncoder(dim=16, seed=1).fit(items).identity != FeatureEncoder(dim=16, seed=2).fit(items).identity


def test_feature_encoder_unseen_category(items: pd.DataFrame) -> None:
    enc = FeatureEncoder(categorical=[S.CATEGORY], numeric=[]).fit(items)
    new = pd.DataFrame({S.ITEM_ID: ["z"], S.TEXT: [""], S.CATEGORY: ["socks"]})
    assert not enc.encode_items(new).any()


def test_feature_encoder_errors(items: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        FeatureEncoder().encode_items(items)
    with pytest.raises(ConfigError, match="not fitted"):
        _ = FeatureEncoder().dim
    with pytest.raises(EncoderInputError, match="no feature columns"):
        FeatureEncoder().fit(items[[S.ITEM_ID, S.TEXT]])
    with pytest.raises(ConfigError, match="'colour' is not in the items table"):
        FeatureEncoder(categorical=["colour"]).fit(items)
    with pytest.raises(EncoderInputError, match="'category' holds non-numbers"):
        FeatureEncoder(numeric=[S.CATEGORY]).fit(items)
    with pytest.raises(ConfigError, match="lacks fitted feature column 'price'"):
        FeatureEncoder().fit(items).encode_items(items.drop(columns=[S.PRICE]))
    with pytest.raises(ConfigError, match="`max_onehot` must be >= 1"):
        FeatureEncoder(max_onehot=0)


def test_encode_items_fits_an_unfitted_feature_encoder(items: pd.DataFrame) -> None:
    enc = FeatureEncoder()
    vectors = encode_items(items, enc)
    assert enc.is_fitted and vectors.shape == (5, enc.dim)


@pytest.mark.shared_data
def test_obd_items_have_features_but_no_text(shared_data: Path) -> None:
    table = pd.read_csv(shared_data / "obd" / "random" / "all" / "item_context.csv", index_col=0)
    table = table.assign(**{S.ITEM_ID: table["item_id"].astype(str), S.TEXT: ""})
    enc = FeatureEncoder(dim=32, seed=0).fit(table)
    kinds = sorted(c.kind for c in enc.columns)
    assert kinds.count("numeric") == 1 and len(kinds) == 4
    vectors = encode_items(table, enc)
    assert vectors.shape == (80, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(vectors.round(5), axis=0)) > 40  # items are told apart
    rendered = render_features(table)
    assert rendered[0].startswith("item feature 0: ")
