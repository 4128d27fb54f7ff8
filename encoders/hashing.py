r"""`HashingEncoder`: a weight-free bag-of-words text encoder (signed feature hashing).

Deterministic, needs no model, and encodes ~10^5 short texts per second, which makes it the
stand-in for BERT in fast tests and simulator smoke runs. Vectors only capture shared words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from encoders._checks import check_texts
from encoders.base import l2_normalize
from shopgym.checks import check_int

#: a token is a run of word characters, optionally with an apostrophe part ("men's")
_TOKEN = r"\w+(?:'\w+)?"
#: at most this many texts hashed at a time: the pandas token lists and the float64 sums stay ~100 MB whatever
#: the catalog size (and about 1/16 of the input, but at least _MIN_CHUNK texts, for smaller inputs)
_CHUNK = 1 << 16
_MIN_CHUNK = 4096


class HashingEncoder:
    r"""Signed feature hashing of lower-cased word unigrams (and optionally bigrams) into ``dim`` buckets.

    Note:
        With :math:`h(w)` a 64-bit keyed SipHash of token :math:`w` (pandas ``hash_array``, key from
        ``seed``), bucket :math:`b(w) = h(w) \bmod d` and sign :math:`s(w) = \pm 1` from the top bit,

        .. math:: x_j = \sum_{w \in \text{text}:\, b(w) = j} s(w), \qquad v = x / \lVert x \rVert_2 .

        A text without any word character (e.g. ``""``) has no tokens and gets the zero vector
        (cosine 0 with everything): the one exception to unit-norm rows.

    Args:
        dim: number of buckets (output dimension), >= 2.
        seed: selects the hash key; different seeds give unrelated vectors.
        bigrams: also hash adjacent word pairs.
    """

    def __init__(self, dim: int = 256, seed: int = 0, bigrams: bool = False) -> None:
        self._dim = check_int(dim, "dim", min_value=2)
        self.seed = check_int(seed, "seed", min_value=0)
        self.bigrams = bool(bigrams)
        self._key = f"{self.seed:016d}"[-16:]

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self._dim}, seed={self.seed}, bigrams={self.bigrams})"

    @property
    def dim(self) -> int:
        """The output dimension."""
        return self._dim

    @property
    def identity(self) -> str:
        """``hashing/v1/dim=<d>/seed=<s>/bigrams=<b>``."""
        return f"hashing/v1/dim={self._dim}/seed={self.seed}/bigrams={self.bigrams}"

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode texts (``batch_size`` and ``show_progress`` are accepted and ignored).

        Args:
            texts: ``n >= 1`` strings.
            batch_size: ignored (the whole input is hashed at once).
            show_progress: ignored.

        Returns:
            (n, dim) float32; unit rows, zero rows for texts without tokens.

        Raises:
            EncoderInputError: ``texts`` is empty or holds a non-string.
        """
        items = check_texts(texts)
        out = np.empty((len(items), self._dim), dtype=np.float32)
        chunk = min(_CHUNK, max(_MIN_CHUNK, -(-len(items) // 16)))  # about 1/16 of the output's temporaries
        for start in range(0, len(items), chunk):  # chunks bound the tokenising temporaries; rows are independent
            out[start:start + chunk] = self._encode_chunk(items[start:start + chunk])
        return out

    def _encode_chunk(self, items: Sequence[str]) -> np.ndarray:
        """(m, dim) unit rows of ``items`` (float64 sums of +-1: exact)."""
        tokens = pd.Series(items, dtype=object).str.lower().str.findall(_TOKEN)
        exploded = tokens.explode().dropna()
        parts = [exploded]
        if self.bigrams:
            flat = exploded.to_numpy(dtype=object)
            rows = exploded.index.to_numpy()
            same = rows[1:] == rows[:-1]
            pairs = pd.Series(flat[:-1][same] + " " + flat[1:][same], index=rows[1:][same], dtype=object)
            parts.append(pairs)
        terms = pd.concat(parts) if len(parts) > 1 else exploded
        out = np.zeros((len(items), self._dim), dtype=np.float64)
        if len(terms):
            h = pd.util.hash_array(terms.to_numpy(dtype=object), hash_key=self._key, categorize=False)
            bucket = (h % np.uint64(self._dim)).astype(np.int64)
            sign = np.where(h >> np.uint64(63), -1.0, 1.0)
            flat_index = terms.index.to_numpy(dtype=np.int64) * self._dim + bucket
            out.reshape(-1)[:] = np.bincount(flat_index, weights=sign, minlength=out.size)
        return l2_normalize(out)
