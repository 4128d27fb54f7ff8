r"""Items without (useful) text: `FeatureEncoder` and `render_features` (features as text for BERT).

OBD items, for instance, carry one numeric and three hashed categorical features and no title.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from encoders.base import l2_normalize
from encoders.errors import EncoderInputError
from shopgym.checks import check_int
from shopgym.data import schema as S
from shopgym.errors import ConfigError

#: columns never treated as features
NON_FEATURE_COLUMNS = (S.ITEM_ID, S.TEXT)


@dataclass(frozen=True)
class FeatureColumn:
    """How one fitted column is encoded.

    Attributes:
        name: the column.
        kind: "onehot" (a slot per category seen in fit), "hashed" (signed hashing into ``width``
            slots) or "numeric" (one standardised slot).
        offset: first slot of this column in the raw feature vector.
        width: number of slots.
        vocabulary: the categories seen in fit, sorted ("onehot" only).
        mean: fit mean ("numeric" only).
        std: fit standard deviation, 1.0 when it was 0 ("numeric" only).
    """

    name: str
    kind: Literal["onehot", "hashed", "numeric"]
    offset: int
    width: int
    vocabulary: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0


def _feature_columns(items: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return [str(c) for c in items.columns if c not in NON_FEATURE_COLUMNS]
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise ConfigError(
            f"feature column {missing[0]!r} is not in the items table (columns: {list(items.columns)[:20]})"
        )
    return list(columns)


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _as_category_strings(series: pd.Series) -> pd.Series:
    """Categorical values as stripped strings, missing or blank values as <NA>."""
    text = series.astype("string").str.strip()
    return text.mask(text == "")


class FeatureEncoder:
    r"""Encode items from their feature columns: categoricals one-hot or hashed, numerics standardised.

    Fit it on the items table (:meth:`fit`), then :meth:`encode_items` any table with those columns.

    Note:
        Each item's raw vector concatenates one block per column: a one-hot block for a categorical
        with at most ``max_onehot`` categories in the fitted table (unseen or missing -> all zeros), a
        signed-hashing block of ``hash_buckets`` slots for a larger one (missing -> zeros), and
        :math:`z = (x - \mu) / \sigma` for a numeric column (missing -> 0, the mean). With
        ``dim`` set, the raw vector :math:`r \in \mathbb{R}^{D}` is projected by a seeded Gaussian
        matrix :math:`R \in \mathbb{R}^{D \times d}`, :math:`R_{ij} \sim \mathcal{N}(0, 1/d)`; finally
        :math:`v = r R / \lVert r R \rVert_2`. An item whose raw vector is zero (every feature missing
        and every numeric at its mean) gets the zero vector.

    Args:
        categorical: categorical columns; None with ``numeric`` None picks every column except
            ``item_id`` and ``text`` by dtype (numbers -> numeric, anything else -> categorical).
        numeric: numeric columns (see ``categorical``).
        max_onehot: largest number of categories encoded one-hot, >= 1.
        hash_buckets: slots of a hashed categorical block, >= 2.
        dim: output dimension of the random projection; None keeps the raw dimension.
        seed: seeds the projection and the category hash.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        categorical: Sequence[str] | None = None,
        numeric: Sequence[str] | None = None,
        max_onehot: int = 32,
        hash_buckets: int = 64,
        dim: int | None = None,
        seed: int = 0,
    ) -> None:
        self.categorical = None if categorical is None else [str(c) for c in categorical]
        self.numeric = None if numeric is None else [str(c) for c in numeric]
        self.max_onehot = check_int(max_onehot, "max_onehot", min_value=1)
        self.hash_buckets = check_int(hash_buckets, "hash_buckets", min_value=2)
        self.out_dim = None if dim is None else check_int(dim, "dim", min_value=1)
        self.seed = check_int(seed, "seed", min_value=0)
        self.columns: tuple[FeatureColumn, ...] = ()
        self._projection: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"FeatureEncoder(categorical={self.categorical}, numeric={self.numeric}, max_onehot={self.max_onehot}, "
            f"hash_buckets={self.hash_buckets}, dim={self.out_dim}, seed={self.seed})"
        )

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return bool(self.columns)

    @property
    def raw_dim(self) -> int:
        """Width of the concatenated blocks before projection."""
        self._require_fitted()
        return sum(c.width for c in self.columns)

    @property
    def dim(self) -> int:
        """The output dimension (``dim`` if given, else :attr:`raw_dim`); known after :meth:`fit`."""
        return self.out_dim if self.out_dim is not None else self.raw_dim

    @property
    def identity(self) -> str:
        """``features/v1/<hash of the fitted columns, projection and seed>``."""
        self._require_fitted()
        state = {"columns": [asdict(c) for c in self.columns], "dim": self.out_dim, "seed": self.seed}
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]
        return f"features/v1/{digest}"

    def _require_fitted(self) -> None:
        if not self.columns:
            raise ConfigError("this FeatureEncoder is not fitted; call `.fit(items)` on the items table first")

    def fit(self, items: pd.DataFrame) -> FeatureEncoder:
        """Learn vocabularies, means and standard deviations from an items table.

        Args:
            items: the items table, ``n >= 1`` rows.

        Returns:
            self, fitted.

        Raises:
            EncoderInputError: ``items`` is empty or has no feature columns.
            ConfigError: a named column is missing.
        """
        if not isinstance(items, pd.DataFrame) or len(items) == 0:
            raise EncoderInputError(f"`items` must be a non-empty DataFrame, got {type(items).__name__} "
                                    f"with {len(items) if hasattr(items, '__len__') else '?'} rows")
        if self.categorical is None and self.numeric is None:
            names = _feature_columns(items, None)
            categorical = [c for c in names if not _is_numeric(items[c])]
            numeric = [c for c in names if _is_numeric(items[c])]
        else:
            categorical = _feature_columns(items, self.categorical or [])
            numeric = _feature_columns(items, self.numeric or [])
        if not categorical and not numeric:
            raise EncoderInputError(
                f"`items` has no feature columns to encode (columns: {list(items.columns)[:20]}); "
                "pass `categorical`/`numeric`, or encode the text with a TextEncoder instead"
            )
        columns: list[FeatureColumn] = []
        offset = 0
        for name in categorical:
            seen = _as_category_strings(items[name]).dropna()
            vocabulary = tuple(sorted(seen.unique().tolist()))
            if len(vocabulary) <= self.max_onehot:
                column = FeatureColumn(name, "onehot", offset, max(len(vocabulary), 1), vocabulary)
            else:
                column = FeatureColumn(name, "hashed", offset, self.hash_buckets)
            columns.append(column)
            offset += column.width
        for name in numeric:
            try:
                numbers = pd.to_numeric(items[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise EncoderInputError(f"numeric feature column {name!r} holds non-numbers ({exc})") from exc
            finite = numbers[np.isfinite(numbers)]
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std(ddof=0)) if len(finite) else 1.0
            columns.append(FeatureColumn(name, "numeric", offset, 1, mean=mean, std=std if std > 0 else 1.0))
            offset += 1
        self.columns = tuple(columns)
        if self.out_dim is not None:
            rng = np.random.default_rng(self.seed)
            self._projection = rng.normal(0.0, 1.0 / np.sqrt(self.out_dim), size=(offset, self.out_dim))
        return self

    def raw_features(self, items: pd.DataFrame) -> np.ndarray:
        """The concatenated blocks before projection and normalisation.

        Args:
            items: a table holding the fitted columns.

        Returns:
            (n, raw_dim) float64.
        """
        self._require_fitted()
        missing = [c.name for c in self.columns if c.name not in items.columns]
        if missing:
            raise ConfigError(f"the items table lacks fitted feature column {missing[0]!r}")
        n = len(items)
        raw = np.zeros((n, self.raw_dim), dtype=np.float64)
        rows = np.arange(n)
        key = f"{self.seed:016d}"[-16:]
        for column in self.columns:
            series = items[column.name]
            if column.kind == "numeric":
                values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                z = (values - column.mean) / column.std
                raw[:, column.offset] = np.where(np.isfinite(z), z, 0.0)
                continue
            text = _as_category_strings(series)
            present = text.notna().to_numpy()
            if column.kind == "onehot":
                codes = pd.Index(list(column.vocabulary), dtype="string").get_indexer(pd.Index(text))
                ok = codes >= 0
                raw[rows[ok], column.offset + codes[ok]] = 1.0
            else:
                values = text[present].to_numpy(dtype=object)
                h = pd.util.hash_array(values, hash_key=key, categorize=True)
                slot = (h % np.uint64(column.width)).astype(np.int64)
                raw[rows[present], column.offset + slot] = np.where(h >> np.uint64(63), -1.0, 1.0)
        return raw

    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        """Encode items from their fitted feature columns.

        Args:
            items: a table holding the fitted columns, ``n >= 1`` rows.

        Returns:
            (n, dim) float32; unit rows, zero rows for items without any information.

        Raises:
            ConfigError: not fitted, or a fitted column is missing.
            EncoderInputError: ``items`` is empty.
        """
        if not isinstance(items, pd.DataFrame) or len(items) == 0:
            raise EncoderInputError(f"`items` must be a non-empty DataFrame, got {type(items).__name__}")
        raw = self.raw_features(items)
        if self._projection is not None:
            raw = raw @ self._projection
        return l2_normalize(raw)


def render_features(
    items: pd.DataFrame, columns: Sequence[str] | None = None, *, separator: str = "; "
) -> list[str]:
    """Render feature columns as text for a text encoder: ``"category: shoes; price: 12.5"``.

    Underscores in column names become spaces; missing or blank values are left out; numbers are
    written with ``%g``. An item without any feature value renders as ``""``.

    Args:
        items: the items table.
        columns: columns to render; None means every column except ``item_id`` and ``text``.
        separator: put between ``name: value`` parts.

    Returns:
        n strings, one per item.

    Raises:
        ConfigError: a named column is missing.
    """
    names = _feature_columns(items, columns)
    n = len(items)
    out = np.full(n, "", dtype=object)
    for name in names:
        series = items[name]
        if _is_numeric(series):
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            present = np.isfinite(values)
            shown = np.full(n, "", dtype=object)
            shown[present] = np.char.mod("%g", values[present]).astype(object)
        else:
            text = _as_category_strings(series)
            present = text.notna().to_numpy()
            shown = text.fillna("").to_numpy(dtype=object)
        label = str(name).replace("_", " ").strip() + ": "
        joiner = np.where((out != "") & present, separator, "").astype(object)
        out = np.where(present, out + joiner + label + shown, out)
    return [str(s) for s in out.tolist()]
