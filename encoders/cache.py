r"""`CachedEncoder`: an on-disk embedding cache that any :class:`~encoders.base.TextEncoder` can sit behind.

Layout (see ``docs/encoders.md``)::

    cache_dir/
      <key>/                    key = sha256(identity + storage dtype)[:24]
        identity.json           {"identity", "dim", "dtype", "format"}, written atomically
        <sha256 of payload>.npy one *shard* per write: a structured array of rows
                                (hash: S16 = blake2b-128 of the UTF-8 text, vec: (dim,) float32|float16)

A shard is written to a temporary file in the same folder and renamed onto its final name with
``os.replace``; its name is the SHA-256 of its rows, so a reader detects a truncated or corrupted
shard by re-hashing it. Writers never modify an existing file, so two processes writing at once (a
sweep) can only add shards; a reader takes the union of the valid shards. A bad shard is reported
(:class:`~encoders.errors.CacheWarning`), deleted and its texts are encoded again, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from encoders._checks import check_texts
from encoders.base import TextEncoder, l2_normalize
from encoders.errors import CacheError, CacheWarning
from shopgym.checks import check_choice
from shopgym.data.io import atomic_write

FORMAT_VERSION = 1
_HASH_DTYPE = "S16"
#: temporary files older than this (seconds) were left by a killed writer and are removed
_STALE_TMP_SECONDS = 24 * 3600

StorageDtype = Literal["float32", "float16"]


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """128-bit BLAKE2b digests of the UTF-8 texts.

    Args:
        texts: n strings.

    Returns:
        (n,) ``S16`` array (compare, sort and ``np.unique`` work on it directly).
    """
    joined = b"".join([hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts])
    return np.frombuffer(joined, dtype=_HASH_DTYPE).copy()


@dataclass(frozen=True)
class CacheStats:
    """What the last :meth:`CachedEncoder.encode` call did.

    Attributes:
        n_texts: texts asked for.
        n_unique: distinct texts among them.
        n_hits: distinct texts found in the cache.
        n_encoded: distinct texts sent to the wrapped encoder (0 when everything was cached).
        n_shards: valid shards read.
        n_corrupt: shards found truncated or corrupted, removed and re-encoded.
    """

    n_texts: int = 0
    n_unique: int = 0
    n_hits: int = 0
    n_encoded: int = 0
    n_shards: int = 0
    n_corrupt: int = 0


@dataclass(frozen=True)
class _Shard:
    name: str
    stamp: tuple[int, int]  # (size, mtime_ns) when verified; a change means re-verify
    hashes: np.ndarray  # (m,) S16
    rows: np.ndarray  # (m,) structured, memory-mapped unless mmap=False


class CachedEncoder:
    r"""Wrap a :class:`~encoders.base.TextEncoder` with an on-disk cache keyed by its ``identity``.

    Only texts not already cached reach the wrapped encoder (once each, even if repeated in the
    input); with everything cached, the wrapped encoder is not even loaded. Returned arrays are
    exactly what a later read of the cache gives, so repeated calls return identical arrays.

    Args:
        encoder: the encoder to cache; its ``identity`` must change whenever its vectors would.
        cache_dir: the cache root, shared safely by several encoders and processes.
        dtype: storage precision. "float16" halves the disk size; vectors are re-normalised in
            float32 after reading (cosines change by ~1e-3).
        mmap: read shards memory-mapped (only the rows needed are paged in) instead of loading them.

    Raises:
        ConfigError: ``dtype`` is not "float32" or "float16".
        CacheError: the folder was written for the same identity with another dimension.
    """

    def __init__(
        self, encoder: TextEncoder, cache_dir: str | Path, dtype: StorageDtype = "float32", mmap: bool = True
    ) -> None:
        self.encoder = encoder
        self.cache_dir = Path(cache_dir).expanduser()
        self.dtype: StorageDtype = check_choice(dtype, "dtype", ("float32", "float16"))  # type: ignore[assignment]
        self.mmap = bool(mmap)
        self.last_stats = CacheStats()
        self._shards: dict[str, _Shard] = {}
        self._lookup: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._folder: Path | None = None
        self._row_dtype = np.dtype([("hash", _HASH_DTYPE), ("vec", np.dtype(self.dtype).newbyteorder("<"),
                                                            (self.dim,))])

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, cache_dir={str(self.cache_dir)!r}, dtype={self.dtype!r})"

    @property
    def dim(self) -> int:
        """The wrapped encoder's dimension."""
        return int(self.encoder.dim)

    @property
    def identity(self) -> str:
        """The wrapped encoder's identity (storage precision does not change the key of the *encoder*)."""
        return str(self.encoder.identity)

    @property
    def folder(self) -> Path:
        """This encoder's cache folder, ``cache_dir/<key>`` (created and checked on first use)."""
        if self._folder is None:
            key = hashlib.sha256(f"{self.identity}\0{self.dtype}".encode()).hexdigest()[:24]
            folder = self.cache_dir / key
            folder.mkdir(parents=True, exist_ok=True)
            self._check_header(folder)
            self._folder = folder
        return self._folder

    # ------------------------------------------------------------------ header and shards
    def _check_header(self, folder: Path) -> None:
        header = folder / "identity.json"
        expected = {"identity": self.identity, "dim": self.dim, "dtype": self.dtype, "format": FORMAT_VERSION}
        if header.is_file():
            try:
                found = json.loads(header.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                found = None  # unreadable header: rewrite it below
            if isinstance(found, dict) and found.get("identity") == self.identity and found.get("dim") != self.dim:
                raise CacheError(
                    f"cache {str(folder)!r} holds {found.get('dim')}-dimensional vectors for identity "
                    f"{self.identity!r}, but the encoder's `dim` is {self.dim}; the encoder's identity must "
                    "change when its output changes. Delete the folder to rebuild the cache"
                )
            if found == expected:
                return
        text = json.dumps(expected, indent=2, sort_keys=True) + "\n"
        atomic_write(header, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _read_shard(self, path: Path) -> _Shard | Literal["gone", "corrupt"]:
        """Open and verify one shard; a bad one is reported (CacheWarning) and deleted."""
        try:
            stat = path.stat()
            rows = np.load(path, mmap_mode="r" if self.mmap else None, allow_pickle=False)
        except FileNotFoundError:  # removed by another process (compact) after the listing
            return "gone"
        except (OSError, ValueError, EOFError) as exc:
            return self._discard(path, f"unreadable ({type(exc).__name__}: {exc})")
        if rows.dtype.names != ("hash", "vec") or rows.ndim != 1:
            return self._discard(path, f"not a cache shard (dtype {rows.dtype}, shape {rows.shape})")
        if rows.dtype["vec"].shape != (self.dim,):
            raise CacheError(
                f"cache shard {str(path)!r} holds vectors of shape {rows.dtype['vec'].shape}, but the "
                f"encoder's `dim` is {self.dim} (identity {self.identity!r}); the encoder's identity must "
                f"change when its output changes. Delete {str(path.parent)!r} to rebuild the cache"
            )
        if rows.dtype != self._row_dtype:
            return self._discard(path, f"of dtype {rows.dtype}, expected {self._row_dtype}")
        if _payload_digest(rows) != path.stem:
            return self._discard(path, "truncated or corrupted (checksum mismatch)")
        return _Shard(path.stem, (stat.st_size, stat.st_mtime_ns), np.array(rows["hash"]), rows)

    @staticmethod
    def _discard(path: Path, problem: str) -> Literal["corrupt"]:
        warnings.warn(
            f"embedding cache shard {str(path)!r} is {problem}; it was removed and its texts will be "
            "encoded again",
            CacheWarning,
            stacklevel=5,
        )
        path.unlink(missing_ok=True)
        return "corrupt"

    def _refresh(self) -> int:
        """Pick up shards written since the last call (by any process); return the number of bad ones."""
        names: dict[str, Path] = {}
        stamps: dict[str, tuple[int, int]] = {}
        now = time.time()
        for entry in os.scandir(self.folder):
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            if entry.name.endswith(".npy") and not entry.name.startswith("."):
                names[entry.name[:-4]] = Path(entry.path)
                stamps[entry.name[:-4]] = (stat.st_size, stat.st_mtime_ns)
            elif entry.name.startswith(".") and entry.name.endswith(".tmp") and (
                now - stat.st_mtime > _STALE_TMP_SECONDS
            ):
                Path(entry.path).unlink(missing_ok=True)
        n_bad = 0
        changed = self._lookup is None
        for name, shard in list(self._shards.items()):
            if stamps.get(name) != shard.stamp:  # gone, or rewritten since it was verified
                del self._shards[name]
                changed = True
        for name in sorted(set(names) - set(self._shards)):
            changed = True
            read = self._read_shard(names[name])
            if isinstance(read, _Shard):
                self._shards[name] = read
            elif read == "corrupt":
                n_bad += 1
        if changed:
            self._build_lookup()
        return n_bad

    def _build_lookup(self) -> None:
        """Sorted unique hashes -> (shard number, row); the first shard in name order wins a duplicate."""
        shards = [self._shards[name] for name in sorted(self._shards)]
        if not shards:
            self._lookup = (np.empty(0, _HASH_DTYPE), np.empty(0, np.int64), np.empty(0, np.int64))
            return
        hashes = np.concatenate([s.hashes for s in shards])
        shard_of = np.repeat(np.arange(len(shards)), [len(s.hashes) for s in shards])
        row_of = np.concatenate([np.arange(len(s.hashes)) for s in shards])
        unique, first = np.unique(hashes, return_index=True)
        self._lookup = (unique, shard_of[first], row_of[first])

    def _write_shard(self, hashes: np.ndarray, vectors: np.ndarray) -> str:
        """Write one shard atomically; return its name."""
        rows = np.empty(len(hashes), dtype=self._row_dtype)
        rows["hash"] = hashes
        rows["vec"] = vectors
        name = _payload_digest(rows)
        path = self.folder / f"{name}.npy"

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.save(handle, rows, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())

        atomic_write(path, write)
        return name

    def _finish(self, stored: np.ndarray) -> np.ndarray:
        """Stored rows -> returned float32 rows (float16 rows are re-normalised)."""
        out = np.asarray(stored, dtype=np.float32)
        return l2_normalize(out) if self.dtype == "float16" else out.copy()

    # ------------------------------------------------------------------ public
    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode texts, reading cached vectors and encoding (then caching) only the new ones.

        Args:
            texts: ``n >= 1`` strings.
            batch_size: passed to the wrapped encoder for the new texts.
            show_progress: passed to the wrapped encoder for the new texts.

        Returns:
            (n, dim) float32, L2-normalised rows, in the order of ``texts``.

        Raises:
            EncoderInputError: ``texts`` is empty or holds a non-string.
            CacheError: the cache holds vectors of another dimension.
        """
        items = check_texts(texts)
        hashes = text_hashes(items)
        unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        n_bad = self._refresh()
        assert self._lookup is not None
        known, shard_of, row_of = self._lookup
        pos = np.searchsorted(known, unique)
        pos_clipped = np.minimum(pos, max(len(known) - 1, 0))
        hit = (pos < len(known)) & (known[pos_clipped] == unique) if len(known) else np.zeros(len(unique), bool)
        out_unique = np.empty((len(unique), self.dim), dtype=np.float32)

        shards = [self._shards[name] for name in sorted(self._shards)]
        hit_idx = np.flatnonzero(hit)
        which = shard_of[pos_clipped[hit_idx]] if len(hit_idx) else np.empty(0, np.int64)
        for s in np.unique(which):
            sel = hit_idx[which == s]
            out_unique[sel] = self._finish(shards[s].rows["vec"][row_of[pos_clipped[sel]]])

        miss_idx = np.flatnonzero(~hit)
        if len(miss_idx):
            new_texts = [items[i] for i in first[miss_idx]]
            vectors = self.encoder.encode(new_texts, batch_size=batch_size, show_progress=show_progress)
            vectors = _check_encoder_output(vectors, len(new_texts), self.dim, self.encoder)
            self._write_shard(unique[miss_idx], vectors)
            out_unique[miss_idx] = self._finish(vectors.astype(self.dtype))
        self.last_stats = CacheStats(
            n_texts=len(items), n_unique=len(unique), n_hits=int(hit.sum()), n_encoded=len(miss_idx),
            n_shards=len(shards), n_corrupt=n_bad,
        )
        return out_unique[inverse.reshape(-1)]

    def size(self) -> int:
        """Distinct texts currently cached for this encoder (all processes' shards)."""
        self._refresh()
        assert self._lookup is not None
        return len(self._lookup[0])

    def compact(self) -> None:
        """Merge all valid shards into one (atomically), then remove the merged ones.

        Safe while other processes read or write: the merged shard appears before the old ones go,
        and shards written meanwhile are left alone.
        """
        self._refresh()
        if len(self._shards) <= 1:
            return
        assert self._lookup is not None
        unique, shard_of, row_of = self._lookup
        shards = [self._shards[name] for name in sorted(self._shards)]
        vectors = np.empty((len(unique), self.dim), dtype=self.dtype)
        for s, shard in enumerate(shards):
            sel = np.flatnonzero(shard_of == s)
            vectors[sel] = shard.rows["vec"][row_of[sel]]
        merged = self._write_shard(unique, vectors)
        for shard in shards:
            if shard.name != merged:
                (self.folder / f"{shard.name}.npy").unlink(missing_ok=True)
        self._shards.clear()
        self._lookup = None
        self._refresh()


def _payload_digest(rows: np.ndarray) -> str:
    """SHA-256 (hex) of a structured array's raw bytes."""
    raw = np.ascontiguousarray(rows).reshape(-1).view(np.uint8)
    return hashlib.sha256(raw.data).hexdigest()


def _check_encoder_output(vectors: object, n: int, dim: int, encoder: object) -> np.ndarray:
    """The wrapped encoder must return (n, dim) finite floats."""
    array = np.asarray(vectors)
    if array.shape != (n, dim):
        raise CacheError(f"{encoder!r}.encode returned shape {array.shape}, expected ({n}, {dim})")
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise CacheError(f"{encoder!r}.encode returned non-finite or non-float values (dtype {array.dtype})")
    return array.astype(np.float32, copy=False)
