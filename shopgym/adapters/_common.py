"""Helpers shared by the adapters: column checks, ordered drop rules, numeric parsing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from shopgym.errors import DataFormatError


def require_source_columns(frame: pd.DataFrame, columns: Iterable[str], source: str, *, hint: str) -> None:
    """Raise if any of ``columns`` is absent from ``frame`` (a table read from ``source``).

    Args:
        frame: the raw table.
        columns: the source column names the adapter needs.
        source: the file the table was read from (named in the error).
        hint: what the user should do.

    Raises:
        DataFormatError: naming the file, the first missing column and the columns found.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [str(c) for c in frame.columns[:20]]
        more = f" (+{len(frame.columns) - 20} more)" if len(frame.columns) > 20 else ""
        raise DataFormatError(
            source,
            f"required source column missing (all missing: {missing}; found columns: {found}{more})",
            column=missing[0],
            hint=hint,
        )


def fail_if(mask: np.ndarray | pd.Series, source: str, column: str, problem: str, hint: str) -> None:
    """Raise a DataFormatError listing the rows where ``mask`` is true, if any.

    Args:
        mask: (n_rows,) bool, true on offending rows of the source table (0-based data rows).
        source: the file named in the error.
        column: the offending column.
        problem: what is wrong.
        hint: what to do about it.
    """
    rows = np.flatnonzero(np.asarray(mask, dtype=bool))
    if len(rows):
        raise DataFormatError(source, problem, column=column, rows=rows[:5], n_bad=len(rows), hint=hint)


def numeric_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """Column as float64; missing or non-numeric cells are an error.

    Args:
        frame: the raw table.
        column: the column to parse.
        source: the file named in the error.

    Returns:
        (n_rows,) float64.

    Raises:
        DataFormatError: naming the rows that are empty or not numbers.
    """
    values = pd.to_numeric(frame[column], errors="coerce")
    fail_if(values.isna(), source, column, "missing or non-numeric values",
            "every row needs a number here; fix the export")
    return values.to_numpy(dtype=np.float64)


def apply_drop_rules(
    rules: Sequence[tuple[str, np.ndarray]], n_rows: int
) -> tuple[np.ndarray, dict[str, int], dict[str, int]]:
    """Apply drop rules in order; each dropped row is counted once, under the first rule that matches.

    Args:
        rules: (reason, mask) pairs; each mask is (n_rows,) bool, true where the rule matches.
        n_rows: rows in the source table.

    Returns:
        ``(keep, dropped, matches)``: ``keep`` (n_rows,) bool of the rows that survive every rule;
        ``dropped`` reason -> rows dropped for it (exclusive, in rule order, zeros included);
        ``matches`` reason -> rows the rule matches on its own (not exclusive, for reports).
    """
    keep = np.ones(n_rows, dtype=bool)
    dropped: dict[str, int] = {}
    matches: dict[str, int] = {}
    for reason, mask in rules:
        hit = np.asarray(mask, dtype=bool)
        if hit.shape != (n_rows,):
            raise ValueError(f"mask of rule {reason!r} has shape {hit.shape}, expected ({n_rows},)")
        matches[reason] = int(hit.sum())
        dropped[reason] = int((keep & hit).sum())
        keep &= ~hit
    return keep, dropped, matches
