"""The project's exception types.

Every error a user can cause with bad input is a :class:`ShopgymError`; the CLI prints its message
and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_ROWS_SHOWN = 5


class ShopgymError(Exception):
    """Base class of every error shopgym raises on purpose (bad input, bad configuration)."""


class DataFormatError(ShopgymError, ValueError):
    """A logged-data file or table does not follow the documented format.

    The message names the file, the column, the first offending rows (0-based data rows; in a CSV
    file the line number is row + 2 because of the header) and a hint on what to do.

    Attributes:
        source: the file (or table name) the problem was found in.
        column: the offending column, or None for whole-file problems.
        rows: the first offending 0-based data rows (at most five are kept).
        n_bad: how many rows are affected in total.
    """

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        column: str | None = None,
        rows: Sequence[int] | np.ndarray = (),
        n_bad: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.source = source
        self.column = column
        self.rows = [int(r) for r in list(rows)[:MAX_ROWS_SHOWN]]
        self.n_bad = len(rows) if n_bad is None else int(n_bad)
        self.hint = hint
        parts = [f"{source}:"]
        if column is not None:
            parts.append(f"column '{column}':")
        parts.append(problem)
        message = " ".join(parts)
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows)
            more = f" (of {self.n_bad} rows)" if self.n_bad > len(self.rows) else ""
            message += f"; first offending rows: {shown}{more} (0-based data rows; CSV line = row + 2)"
        if hint:
            message += f". Hint: {hint}"
        super().__init__(message)


class ConfigError(ShopgymError, ValueError):
    """An argument or configuration value is out of its documented range."""
