"""The `conf/encoder/` group: every file composes and `hydra.utils.instantiate` builds a working encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from encoders import BertEncoder, FeatureEncoder, HashingEncoder, encode_items
from shopgym.data import schema as S

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPECTED = {"minilm": (BertEncoder, 384), "tiny_bert": (BertEncoder, 32), "features": (FeatureEncoder, None),
            "hashing": (HashingEncoder, 256)}


def test_every_encoder_file_is_tested() -> None:
    assert {p.stem for p in (CONF / "encoder").glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_instantiates(name: str) -> None:
    cfg = OmegaConf.load(CONF / "encoder" / f"{name}.yaml")
    encoder = instantiate(cfg)
    cls, dim = EXPECTED[name]
    assert isinstance(encoder, cls)
    if dim is not None:
        assert encoder.dim == dim


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_group_composes_through_hydra(name: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+encoder={name}"])
    assert isinstance(instantiate(cfg.encoder), EXPECTED[name][0])


def test_tiny_bert_config_encodes() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+encoder=tiny_bert", "encoder.model_path.seed=1", "encoder.pooling=cls"])
    encoder = instantiate(cfg.encoder)
    assert encoder.pooling == "cls"
    vectors = encoder.encode(["red shoe", "blue hat"])
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_features_config_encodes() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+encoder=features", "encoder.dim=8"])
    items = pd.DataFrame({S.ITEM_ID: ["a", "b"], S.TEXT: "", S.CATEGORY: ["x", "y"], S.PRICE: [1.0, 2.0]})
    assert encode_items(items, instantiate(cfg.encoder)).shape == (2, 8)
