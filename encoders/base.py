"""The encoder interfaces: :class:`TextEncoder` (texts -> vectors) and :class:`ItemEncoder` (items -> vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

#: rows whose norm is below this are treated as zero-information (left at zero, never divided)
ZERO_NORM = 1e-12


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to L2-normalised vectors.

    Attributes:
        dim: the embedding dimension ``d``.
        identity: a stable string that changes whenever the vectors would change (model checksum,
            pooling, maximum length, ...); :class:`~encoders.cache.CachedEncoder` uses it as the cache key.
    """

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        ...

    @property
    def identity(self) -> str:
        """A stable cache key for this encoder's outputs."""
        ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode texts.

        Args:
            texts: ``n >= 1`` strings.
            batch_size: texts per forward pass; None uses the encoder's default.
            show_progress: show a progress bar; None decides from the input size.

        Returns:
            (n, dim) float32, L2-normalised rows, in the order of ``texts``.
        """
        ...


@runtime_checkable
class ItemEncoder(Protocol):
    """Maps rows of an items table (``item_id``, ``text``, feature columns) to vectors.

    Attributes:
        dim: the embedding dimension ``d``.
        identity: a stable string that changes whenever the vectors would change.
    """

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        ...

    @property
    def identity(self) -> str:
        """A stable key for this encoder's outputs."""
        ...

    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        """Encode items.

        Args:
            items: an items table (see ``docs/data-format.md``), ``n >= 1`` rows.

        Returns:
            (n, dim) float32, one row per item in table order; rows are unit-norm, or all-zero for an
            item that carries no information (see each encoder's empty-input rule).
        """
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm; rows with norm below ``ZERO_NORM`` stay zero.

    Args:
        x: (n, d) float array.

    Returns:
        (n, d) float32.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    safe = np.where(norms > ZERO_NORM, norms, 1.0).astype(np.float32)
    return np.where(norms > ZERO_NORM, x / safe, 0.0).astype(np.float32)
