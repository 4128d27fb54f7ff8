"""The exported text encoder: tokenizers + ONNX Runtime give the PyTorch encoder's vectors; the server embeds an
unseen query with it; exports of logs without text or users serve what they can and refuse the rest."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

TITLES = ["WHITE HANGING HEART T-LIGHT HOLDER", "regency cakestand 3 tier", "Jumbo Bag Red Retrospot",
          "a very long title " * 40, "", "ÉCHARPE en laine mérinos — 100 %", "12 pencils small tube skull"]


def test_a_bert_encoder_exports_to_onnx_with_its_tokenizer(tmp_path: Path) -> None:
    from encoders import BertEncoder, tiny_bert
    from shopgym.app.export_encoder import ENCODER_MIN_COSINE, export_text_encoder
    from shopgym.serve.text import text_encoder_from_manifest

    encoder = BertEncoder(tiny_bert(), max_length=16)
    spec = export_text_encoder(encoder, tmp_path, TITLES, 18)
    assert spec["kind"] == "onnx" and spec["parity"]["passed"] and spec["parity"]["texts"] == 6  # "" skipped
    assert spec["parity"]["min_cosine"] > ENCODER_MIN_COSINE and spec["parity"]["max_abs_diff"] <= 1e-4
    served = text_encoder_from_manifest(tmp_path, spec)
    assert served is not None
    # other texts than the parity check's, truncated at max_length like the PyTorch encoder
    texts = ["blue linen trousers", "x " * 50]
    np.testing.assert_allclose(served.encode(texts), encoder.encode(texts, show_progress=False), atol=1e-4)


def test_other_encoders_ship_settings_or_nothing() -> None:
    from encoders import HashingEncoder
    from shopgym.app.export_encoder import export_text_encoder
    from shopgym.serve.text import text_encoder_from_manifest

    hashing = HashingEncoder(dim=64, seed=3)
    spec = export_text_encoder(hashing, Path("unused"), TITLES, 18)
    assert spec == {"kind": "hashing", "identity": hashing.identity, "dim": 64, "seed": 3, "bigrams": False}
    served = text_encoder_from_manifest(Path("unused"), spec)
    np.testing.assert_array_equal(served.encode(TITLES[:3]), hashing.encode(TITLES[:3], show_progress=False))
    none = export_text_encoder("features/v1", Path("unused"), TITLES, 18)
    assert none["kind"] == "none" and none["identity"] == "features/v1"
    assert text_encoder_from_manifest(Path("unused"), none) is None


@pytest.mark.slow
@pytest.mark.shared_data
def test_minilm_exports_within_1e4_on_real_product_titles(shared_data: Path, tmp_path: Path) -> None:
    """The packaged all-MiniLM-L6-v2 on 1,000 real product descriptions (UCI Online Retail)."""
    from encoders import BertEncoder
    from shopgym.app.export_encoder import export_text_encoder

    frame = pd.read_csv(shared_data / "online_retail" / "online_retail.csv.gz", usecols=["Description"],
                        nrows=60_000, encoding="latin-1")
    titles = [str(t) for t in frame["Description"].dropna().unique()[:1000]]
    assert len(titles) == 1000
    spec = export_text_encoder(BertEncoder(), tmp_path, titles, 18)
    parity = spec["parity"]
    assert parity["passed"] and parity["texts"] == 1000
    assert parity["max_abs_diff"] <= 1e-4 and parity["min_cosine"] > 0.9999


def test_serving_tables_of_a_log_without_user_ids(tmp_path: Path) -> None:
    """Logs without user ids (OBD): an empty user table exports and the server reads it."""
    from safetensors.numpy import load_file

    from shopgym.app.export import write_serving_tables

    vecs = np.eye(4, dtype=np.float32)
    space = SimpleNamespace(dim=4, item_vecs=vecs, projection=None, query_vecs=np.zeros((0, 4), np.float32),
                            query_texts=np.array([], dtype=object))
    users = SimpleNamespace(user_ids=pd.Index([]), history=np.zeros((0, 20), np.int64),
                            history_weight=np.zeros((0, 20)))
    sim = SimpleNamespace(space=space, users=users, popularity_feature=np.ones(4, np.float32),
                          default_profile=np.full(4, 0.5))
    write_serving_tables(sim, None, tmp_path)
    tables = load_file(str(tmp_path / "serving.safetensors"))
    assert tables["user_history"].shape == (0, 20) and tables["query_vecs"].shape == (0, 4)
    np.testing.assert_array_equal(tables["projection"], np.eye(4))
    assert json.loads((tmp_path / "queries.json").read_text()) == []
