"""CachedEncoder: zero forward passes on a re-run, atomic writes, corruption handling, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from encoders import (
    BertEncoder,
    CachedEncoder,
    CacheError,
    CacheWarning,
    EncoderInputError,
    HashingEncoder,
    tiny_bert,
)
from shopgym.errors import ConfigError

COLOURS = "black white navy red green pink grey brown beige yellow".split()
MATERIALS = "leather cotton linen wool silk denim suede canvas".split()
THINGS = "belt shirt trousers boots bag scarf jacket dress mug candle".split()


def make_titles(n: int, seed: int = 0) -> list[str]:
    """n distinct readable titles."""
    rng = np.random.default_rng(seed)
    c, m, t = (rng.choice(w, size=n) for w in (COLOURS, MATERIALS, THINGS))
    return [f"{a} {b} {d} no. {i}" for i, (a, b, d) in enumerate(zip(c, m, t, strict=True))]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def forward_calls() -> Iterator[list[int]]:
    """Counts every torch module forward call in this process while the test runs."""
    import torch

    calls = [0]

    def hook(module: torch.nn.Module, args: object, output: object) -> None:
        calls[0] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield calls
    handle.remove()


def shard_files(cache: CachedEncoder) -> list[Path]:
    return sorted(cache.folder.glob("*.npy"))


def test_rerun_runs_zero_forward_passes(tiny_dir: Path, tmp_path: Path, forward_calls: list[int]) -> None:
    texts = make_titles(1000)
    first = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path).encode(texts)
    assert forward_calls[0] > 0
    forward_calls[0] = 0
    again = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path)  # a fresh process would do the same
    second = again.encode(texts)
    assert forward_calls[0] == 0
    assert again.last_stats.n_hits == 1000 and again.last_stats.n_encoded == 0
    np.testing.assert_array_equal(first, second)
    assert again.encoder._model is None  # type: ignore[attr-defined]  # the model was never even loaded


def test_only_new_texts_are_encoded(tmp_path: Path) -> None:
    cache = CachedEncoder(HashingEncoder(32), tmp_path)
    old = make_titles(50)
    cache.encode(old)
    new = make_titles(60, seed=1)[:10]
    out = cache.encode([*old, *new, old[0], new[0]])  # repeats are encoded once
    assert cache.last_stats.n_unique == 60 and cache.last_stats.n_encoded == 10 and cache.last_stats.n_hits == 50
    np.testing.assert_array_equal(out, HashingEncoder(32).encode([*old, *new, old[0], new[0]]))
    assert cache.size() == 60


def test_exception_during_a_write_keeps_the_previous_cache(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forward_calls: list[int]
) -> None:
    texts = make_titles(200)
    cache = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path)
    before = cache.encode(texts)
    shards_before = shard_files(cache)

    def half_write(handle: object, array: np.ndarray, **kwargs: object) -> None:
        handle.write(array.tobytes()[: array.nbytes // 2])  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "save", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        cache.encode([*texts, *make_titles(20, seed=5)])
    monkeypatch.undo()

    assert shard_files(cache) == shards_before
    assert not [p for p in cache.folder.iterdir() if p.name.endswith(".tmp")]  # no debris
    forward_calls[0] = 0
    fresh = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        np.testing.assert_array_equal(fresh.encode(texts), before)
    assert forward_calls[0] == 0


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty", "garbage_header"])
def test_damaged_shard_is_reported_and_rebuilt(tmp_path: Path, damage: str) -> None:
    texts = make_titles(300)
    cache = CachedEncoder(HashingEncoder(48), tmp_path)
    expected = cache.encode(texts)
    (shard,) = shard_files(cache)
    raw = bytearray(shard.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip_byte":
        raw[-7] ^= 0xFF
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[:10] = b"NOT NUMPY!"
    shard.write_bytes(bytes(raw))

    fresh = CachedEncoder(HashingEncoder(48), tmp_path)
    with pytest.warns(CacheWarning, match=shard.name):
        out = fresh.encode(texts)
    np.testing.assert_array_equal(out, expected)  # never the damaged values
    assert fresh.last_stats.n_corrupt == 1 and fresh.last_stats.n_encoded == 300
    assert shard.exists()  # rebuilt: same content, same name
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        CachedEncoder(HashingEncoder(48), tmp_path).encode(texts)


def test_damage_after_verification_is_noticed(tmp_path: Path) -> None:
    texts = make_titles(40)
    cache = CachedEncoder(HashingEncoder(16), tmp_path, mmap=False)
    cache.encode(texts)
    (shard,) = shard_files(cache)
    shard.write_bytes(shard.read_bytes()[:-16])  # a new size: re-verified on the next call
    with pytest.warns(CacheWarning):
        cache.encode(texts)
    assert cache.last_stats.n_encoded == 40


def test_leftover_temporary_file_is_ignored(tmp_path: Path) -> None:
    cache = CachedEncoder(HashingEncoder(16), tmp_path)
    expected = cache.encode(make_titles(10))
    (cache.folder / ".abc.npy.tmp").write_bytes(b"half a shard from a killed process")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        np.testing.assert_array_equal(CachedEncoder(HashingEncoder(16), tmp_path).encode(make_titles(10)), expected)


def test_float16_storage(tiny_dir: Path, tmp_path: Path) -> None:
    texts = make_titles(100)
    exact = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path, dtype="float32").encode(texts)
    half = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path, dtype="float16")
    first = half.encode(texts)
    second = CachedEncoder(BertEncoder(tiny_dir, max_length=32), tmp_path, dtype="float16").encode(texts)
    np.testing.assert_array_equal(first, second)  # what is returned is what is read back later
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(first, exact, atol=2e-3)
    (shard,) = shard_files(half)
    assert np.load(shard)["vec"].dtype == np.float16


def test_memory_mapped_and_loaded_reads_agree(tmp_path: Path) -> None:
    texts = make_titles(500)
    CachedEncoder(HashingEncoder(64), tmp_path).encode(texts[:250])
    CachedEncoder(HashingEncoder(64), tmp_path).encode(texts[200:])
    mapped = CachedEncoder(HashingEncoder(64), tmp_path, mmap=True)
    loaded = CachedEncoder(HashingEncoder(64), tmp_path, mmap=False)
    np.testing.assert_array_equal(mapped.encode(texts), loaded.encode(texts))
    assert mapped.last_stats.n_shards == 2 and mapped.last_stats.n_encoded == 0
    assert isinstance(mapped._shards[shard_files(mapped)[0].stem].rows, np.memmap)


def test_compact_merges_shards(tmp_path: Path) -> None:
    texts = make_titles(90)
    cache = CachedEncoder(HashingEncoder(24), tmp_path)
    for start in range(0, 90, 30):
        cache.encode(texts[start : start + 30])
    assert len(shard_files(cache)) == 3
    before = cache.encode(texts)
    cache.compact()
    assert len(shard_files(cache)) == 1
    fresh = CachedEncoder(HashingEncoder(24), tmp_path)
    np.testing.assert_array_equal(fresh.encode(texts), before)
    assert fresh.last_stats.n_encoded == 0


def test_different_encoders_do_not_share_entries(tmp_path: Path) -> None:
    a = CachedEncoder(HashingEncoder(16, seed=0), tmp_path)
    b = CachedEncoder(HashingEncoder(16, seed=1), tmp_path)
    a.encode(["red shoe"])
    b.encode(["red shoe"])
    assert b.last_stats.n_encoded == 1 and a.folder != b.folder


class _LyingEncoder:
    """Claims the identity of HashingEncoder(16) but returns 8 dimensions."""

    dim = 8
    identity = HashingEncoder(16).identity

    def encode(self, texts: list[str], *, batch_size: int | None = None, show_progress: bool | None = None):
        return HashingEncoder(8).encode(texts)


def test_cached_dimension_differs_from_the_model(tmp_path: Path) -> None:
    CachedEncoder(HashingEncoder(16), tmp_path).encode(["red shoe"])
    with pytest.raises(CacheError, match="dim` is 8"):
        CachedEncoder(_LyingEncoder(), tmp_path).encode(["red shoe"])


def test_cached_dimension_differs_in_a_shard(tmp_path: Path) -> None:
    cache = CachedEncoder(HashingEncoder(16), tmp_path)
    cache.encode(["red shoe"])
    (cache.folder / "identity.json").unlink()  # only the shard is left to tell
    with pytest.raises(CacheError, match=r"shape \(16,\).*`dim` is 8"):
        CachedEncoder(_LyingEncoder(), tmp_path).encode(["red shoe"])


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`dtype` must be one of"):
        CachedEncoder(HashingEncoder(8), tmp_path, dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(EncoderInputError, match="is empty"):
        CachedEncoder(HashingEncoder(8), tmp_path).encode([])
    with pytest.raises(EncoderInputError, match=r"texts\[0\]"):
        CachedEncoder(HashingEncoder(8), tmp_path).encode([3])  # type: ignore[list-item]


# --------------------------------------------------------------------------- two processes at once
def _writer(cache_dir: str, worker: int, barrier: object, rounds: int) -> None:
    warnings.simplefilter("error", CacheWarning)  # a worker that meets a damaged shard fails
    pool = make_titles(400)
    rng = np.random.default_rng(worker)
    cache = CachedEncoder(HashingEncoder(32), cache_dir)
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(rounds):
        cache.encode([pool[i] for i in rng.choice(len(pool), size=60, replace=False)])
    cache.encode(pool)


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), w, barrier, 25)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    pool = make_titles(400)
    reader = CachedEncoder(HashingEncoder(32), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        out = reader.encode(pool)
    assert reader.last_stats.n_encoded == 0 and reader.last_stats.n_corrupt == 0
    assert reader.last_stats.n_shards > 2
    np.testing.assert_array_equal(out, HashingEncoder(32).encode(pool))
    assert not [p for p in reader.folder.iterdir() if p.name.endswith(".tmp")]
