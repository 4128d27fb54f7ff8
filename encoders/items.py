r"""Item vectors from an items table: `TextItemEncoder` (the empty-text rule) and `encode_items`.

The empty-text rule
-------------------
An item's text is its ``text`` column, stripped (missing values count as empty). With the default
``empty="features"``:

1. an item with non-empty text is encoded from its text;
2. an item with empty text is encoded from its feature columns rendered as text
   (:func:`~encoders.features.render_features`, e.g. ``"category: shoes; price: 12.5"``);
3. an item with neither text nor any feature value gets the **zero vector**: it carries no
   information, has cosine 0 with every query and item, and adds nothing to a user profile.

With ``empty="zero"``, step 2 is skipped (empty text -> zero vector). With ``source="features"``
every item is rendered from its features (for catalogs such as OBD that have no titles).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
import pandas as pd

from encoders.base import ItemEncoder, TextEncoder
from encoders.errors import EncoderInputError
from encoders.features import FeatureEncoder, render_features
from shopgym.checks import check_choice
from shopgym.data import schema as S
from shopgym.errors import DataFormatError

TextSource = Literal["text", "features"]
EmptyTextRule = Literal["features", "zero"]


def item_texts(items: pd.DataFrame, source: str = "items") -> np.ndarray:
    """The stripped ``text`` column as an object array of str (missing -> "").

    Args:
        items: the items table.
        source: the table name used in error messages.

    Returns:
        (n,) object array of str.

    Raises:
        DataFormatError: the column is missing or holds non-strings (the rows are named).
    """
    if S.TEXT not in items.columns:
        raise DataFormatError(source, "required column missing", column=S.TEXT,
                              hint="add a text column (it may be empty) or use source='features'")
    column = items[S.TEXT]
    if not (pd.api.types.is_string_dtype(column) and pd.api.types.infer_dtype(column, skipna=True)
            in ("string", "empty")):
        bad = ~column.isna() & ~column.map(lambda v: isinstance(v, str)).astype(bool)
        rows = np.flatnonzero(bad.to_numpy())
        if len(rows):
            raise DataFormatError(source, "text values that are not strings", column=S.TEXT, rows=rows[:5],
                                  n_bad=len(rows), hint="store titles as strings; use '' for no text")
    return column.astype("string").fillna("").str.strip().to_numpy(dtype=object)


class TextItemEncoder:
    """Encode items with a :class:`~encoders.base.TextEncoder`, applying the empty-text rule (module doc).

    Args:
        encoder: the text encoder (e.g. a :class:`~encoders.cache.CachedEncoder` around a
            :class:`~encoders.bert.BertEncoder`).
        source: "text" (the ``text`` column) or "features" (render every item's features as text).
        empty: what an empty text becomes: "features" (render the features; zero vector if there
            are none) or "zero" (the zero vector).
        feature_columns: columns rendered as text; None means all but ``item_id`` and ``text``.
        batch_size: passed to ``encoder.encode``.
        show_progress: passed to ``encoder.encode``.

    Raises:
        ConfigError: ``source`` or ``empty`` is not one of the listed values.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        source: TextSource = "text",
        empty: EmptyTextRule = "features",
        feature_columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.encoder = encoder
        self.source: TextSource = check_choice(source, "source", ("text", "features"))  # type: ignore[assignment]
        self.empty: EmptyTextRule = check_choice(empty, "empty", ("features", "zero"))  # type: ignore[assignment]
        self.feature_columns = None if feature_columns is None else list(feature_columns)
        self.batch_size = batch_size
        self.show_progress = show_progress

    def __repr__(self) -> str:
        return f"TextItemEncoder({self.encoder!r}, source={self.source!r}, empty={self.empty!r})"

    @property
    def dim(self) -> int:
        """The text encoder's dimension."""
        return int(self.encoder.dim)

    @property
    def identity(self) -> str:
        """The text encoder's identity plus the text source and empty-text rule."""
        columns = "all" if self.feature_columns is None else ",".join(self.feature_columns)
        return f"{self.encoder.identity}/items(source={self.source},empty={self.empty},columns={columns})"

    def texts(self, items: pd.DataFrame) -> np.ndarray:
        """The text each item is encoded from ("" -> zero vector).

        Args:
            items: the items table.

        Returns:
            (n,) object array of str.
        """
        if self.source == "features":
            return np.asarray(render_features(items, self.feature_columns), dtype=object)
        texts = item_texts(items)
        empty = texts == ""
        if self.empty == "features" and empty.any():
            has_features = self.feature_columns is None and any(c not in (S.ITEM_ID, S.TEXT) for c in items.columns)
            if has_features or self.feature_columns:
                rendered = np.asarray(render_features(items[empty], self.feature_columns), dtype=object)
                texts = texts.copy()
                texts[empty] = rendered
        return texts

    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        """Encode items (see the module docstring for the empty-text rule).

        Args:
            items: the items table, ``n >= 1`` rows.

        Returns:
            (n, dim) float32; unit rows, zero rows for items with no text and no features.

        Raises:
            EncoderInputError: ``items`` is empty.
            DataFormatError: the ``text`` column is missing or holds non-strings.
        """
        if not isinstance(items, pd.DataFrame) or len(items) == 0:
            raise EncoderInputError(f"`items` must be a non-empty DataFrame, got {type(items).__name__}")
        texts = self.texts(items)
        has_text = texts != ""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if has_text.any():
            out[has_text] = self.encoder.encode(
                texts[has_text].tolist(), batch_size=self.batch_size, show_progress=self.show_progress
            )
        n_zero = int((~has_text).sum())
        if n_zero == len(items):
            warnings.warn(
                f"none of the {len(items)} items has text or feature values; every item vector is zero. "
                "Check the `text` column, or use a FeatureEncoder",
                UserWarning,
                stacklevel=2,
            )
        return out


def encode_items(
    items: pd.DataFrame,
    encoder: TextEncoder | ItemEncoder,
    *,
    source: TextSource = "text",
    empty: EmptyTextRule = "features",
    feature_columns: Sequence[str] | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> np.ndarray:
    """Item vectors, one row per row of ``items``, from a text encoder or an item encoder.

    A text encoder goes through :class:`TextItemEncoder` (the empty-text rule of this module); an
    item encoder (e.g. :class:`~encoders.features.FeatureEncoder`) is used as is, after fitting it
    on ``items`` if it is an unfitted FeatureEncoder.

    Args:
        items: the items table, ``n >= 1`` rows.
        encoder: a TextEncoder or an ItemEncoder.
        source: see :class:`TextItemEncoder` (text encoders only).
        empty: see :class:`TextItemEncoder` (text encoders only).
        feature_columns: see :class:`TextItemEncoder` (text encoders only).
        batch_size: see :class:`TextItemEncoder` (text encoders only).
        show_progress: see :class:`TextItemEncoder` (text encoders only).

    Returns:
        (n_items, dim) float32.
    """
    if isinstance(encoder, FeatureEncoder) and not encoder.is_fitted:
        encoder.fit(items)
    if callable(getattr(type(encoder), "encode_items", None)):  # an ItemEncoder (checked on the type:
        return cast(ItemEncoder, encoder).encode_items(items)  # no property of an unfitted encoder runs)
    wrapped = TextItemEncoder(cast(TextEncoder, encoder), source=source, empty=empty, feature_columns=feature_columns,
                              batch_size=batch_size, show_progress=show_progress)
    return wrapped.encode_items(items)
