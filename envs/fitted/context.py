r"""Request context of the logs as model inputs: one-hot categoricals and standardised numerics.

Every interaction column the format does not name (:data:`shopgym.data.schema.INTERACTION_KNOWN`) is a
user/request context column (OBD: ``user_feature_0..3``, hashed categories). A request's context is the
value of its first row. :class:`ContextEncoding` learns, from the training requests,

* for a categorical column: its ``max_levels`` most frequent levels among those seen in at least
  ``min_count`` requests, each a 0/1 indicator (any other level, or a missing value, is all zeros);
* for a numeric column: its mean and standard deviation; the input is the z-score, clipped to [-5, 5]
  (missing: 0, the mean).

The encoding is saved with the model (plain JSON) so that the simulator encodes the contexts of the
sessions it starts (drawn from the logged requests) exactly as the fit did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shopgym.data import schema as S


@dataclass(frozen=True)
class ContextEncoding:
    """How context columns become a (n, m) float32 input (see the module docstring).

    Attributes:
        categorical: column -> its encoded levels, in order.
        numeric: column -> (mean, standard deviation).
    """

    categorical: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """m, the number of input columns."""
        return sum(len(levels) for levels in self.categorical.values()) + len(self.numeric)

    @property
    def columns(self) -> list[str]:
        """The context columns it reads."""
        return [*self.categorical, *self.numeric]

    @classmethod
    def fit(cls, requests: pd.DataFrame, *, min_count: int = 5, max_levels: int = 32) -> ContextEncoding:
        """Learn the encoding from one row per training request (the context columns of ``requests``)."""
        categorical: dict[str, list[str]] = {}
        numeric: dict[str, tuple[float, float]] = {}
        for column in context_columns(requests):
            values = requests[column]
            if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
                counts = values.dropna().astype(str).value_counts(sort=True)
                levels = counts[counts >= min_count].index[:max_levels].tolist()
                if levels:
                    categorical[column] = [str(level) for level in levels]
            else:
                x = values.to_numpy(dtype=np.float64)
                finite = x[np.isfinite(x)]
                if len(finite) and finite.std() > 0:
                    numeric[column] = (float(finite.mean()), float(finite.std()))
        return cls(categorical, numeric)

    def transform(self, requests: pd.DataFrame) -> np.ndarray:
        """(n, m) float32 inputs of ``requests`` (one row each; a missing column counts as missing values)."""
        n = len(requests)
        blocks = []
        for column, levels in self.categorical.items():
            if column in requests:
                codes = pd.Index(levels).get_indexer(pd.Index(requests[column].astype("string").fillna("\x00")))
            else:
                codes = np.full(n, -1)
            block = np.zeros((n, len(levels)), dtype=np.float32)
            seen = codes >= 0
            block[np.flatnonzero(seen), codes[seen]] = 1.0
            blocks.append(block)
        for column, (mean, std) in self.numeric.items():
            x = requests[column].to_numpy(dtype=np.float64) if column in requests else np.full(n, np.nan)
            z = np.clip((x - mean) / std, -5.0, 5.0)
            blocks.append(np.where(np.isfinite(z), z, 0.0).astype(np.float32)[:, None])
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON of the encoding."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> ContextEncoding:
        """The encoding saved by :meth:`to_json` (None: no context)."""
        if not raw:
            return cls()
        return cls({str(k): [str(v) for v in levels] for k, levels in raw.get("categorical", {}).items()},
                   {str(k): (float(v[0]), float(v[1])) for k, v in raw.get("numeric", {}).items()})


def context_columns(frame: pd.DataFrame) -> list[str]:
    """The interaction columns the format does not name: the user/request context columns."""
    return [str(c) for c in frame.columns if c not in S.INTERACTION_KNOWN]
