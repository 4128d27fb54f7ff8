"""Strict validation of the items and interactions tables.

Each check is vectorised over the whole column and raises :class:`~shopgym.errors.DataFormatError`
naming the file, the column, the first offending rows and a hint. The validators return *typed copies*
(ids as strings, flags as int8, positions as int16/int32, timestamps as UTC datetimes); they never
drop or reorder rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopgym.data import schema as S
from shopgym.errors import DataFormatError

#: pandas nanosecond timestamps cover about +-292 years around 1970
_MAX_EPOCH_SECONDS = 9.2e9


def _bad_rows(mask: np.ndarray | pd.Series) -> np.ndarray:
    """0-based positions where ``mask`` is true."""
    return np.flatnonzero(np.asarray(mask, dtype=bool))


def _fail_if(mask: np.ndarray | pd.Series, source: str, column: str, problem: str, hint: str) -> None:
    rows = _bad_rows(mask)
    if len(rows):
        raise DataFormatError(source, problem, column=column, rows=rows[:5], n_bad=len(rows), hint=hint)


def _require_columns(frame: pd.DataFrame, required: tuple[str, ...], source: str, table: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(
            source,
            f"required column missing from the {table} table (found columns: {list(frame.columns)[:20]})",
            column=missing[0],
            hint=f"the {table} table needs columns {list(required)}; see docs/data-format.md, "
            "or use `shopgym data convert --format generic` with a column mapping",
        )
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataFormatError(source, "column appears more than once", column=str(duplicated[0]),
                              hint="rename or drop the duplicate column")


def _as_id(frame: pd.DataFrame, column: str, source: str, *, nullable: bool = False) -> pd.Series:
    series = frame[column].astype("string").str.strip()
    if not nullable:
        _fail_if(series.isna() | (series == ""), source, column, "missing (empty) ids",
                 "every row needs an id; fill or drop these rows before loading")
    return series


def _as_number(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """Column as float64; text that is not a number is an error (blanks become NaN)."""
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype("float64")
    values = pd.to_numeric(raw, errors="coerce")
    not_numeric = values.isna() & raw.notna()
    if pd.api.types.is_object_dtype(raw) or pd.api.types.is_string_dtype(raw):
        not_numeric &= raw.astype("string").str.strip().ne("").fillna(False)
    _fail_if(not_numeric, source, column, "non-numeric values", "the column must hold numbers")
    return values.astype("float64")


def _as_binary(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = _as_number(frame, column, source)
    _fail_if(values.isna(), source, column, "missing values in a 0/1 column", "fill with 0 or 1")
    _fail_if(~values.isin([0.0, 1.0]), source, column, "values other than 0 and 1",
             "use 1 for yes and 0 for no (counts such as quantities belong in another column)")
    return values.astype("int8")


#: a UTC offset ending a timestamp's text after its time of day: Z, +09:00, -0500, +09
_OFFSET = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)\s*$"


def _check_one_time_zone(text: pd.Series, source: str, column: str) -> None:
    """Refuse a text column whose timestamps carry different UTC offsets, or mix offsets with naive times.

    Naive times are read as UTC; beside ``+09:00`` times that silently moves them by hours (one request's
    slots could span 9 hours), so the column must use one zone.
    """
    offsets = text.str.extract(_OFFSET, expand=False).str.replace(":", "", regex=False)
    offsets = offsets.replace("Z", "+0000").where(offsets.str.len() != 3, offsets + "00").fillna("naive")
    counts = offsets.value_counts()
    if len(counts) > 1:
        found = ", ".join(f"{n:,} {'naive (no offset)' if zone == 'naive' else f'at {zone}'}"
                          for zone, n in counts.items())
        _fail_if(offsets.ne(counts.index[0]).to_numpy(), source, column, f"timestamps in mixed time zones ({found})",
                 "write every timestamp in one zone, UTC preferred (e.g. 2024-05-01 13:45:00+00:00); naive times "
                 "are read as UTC")


def _as_timestamp(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    raw = frame[column]
    _fail_if(raw.isna(), source, column, "missing timestamps", "every shown slot needs a timestamp")
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
    elif pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        seconds = raw.to_numpy(dtype="float64")
        in_range = np.isfinite(seconds) & (np.abs(seconds) < _MAX_EPOCH_SECONDS)
        _fail_if(~in_range, source, column, "numeric timestamps that are not finite seconds since the epoch "
                 "between 1677 and 2262", "use seconds since the epoch, or ISO 8601 text")
        parsed = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
    else:
        text = raw.astype("string")
        _check_one_time_zone(text, source, column)
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        retry = parsed.isna()
        if retry.any():
            parsed.loc[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    _fail_if(parsed.isna(), source, column, "unparsable timestamps",
             "use ISO 8601 (e.g. 2024-05-01 13:45:00+00:00) or seconds since the epoch")
    lo, hi = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
    _fail_if((parsed < lo) | (parsed > hi), source, column, "timestamps outside the years 1678-2261",
             "check the year; timestamps are stored with nanosecond resolution")
    return parsed.astype("datetime64[ns, UTC]")


def validate_items(frame: pd.DataFrame, source: str = "items") -> pd.DataFrame:
    """Validate and type the items table.

    Args:
        frame: the raw items table.
        source: the file name used in error messages.

    Returns:
        A typed copy: ``item_id`` string (unique), ``text`` string (nulls become ""), ``price`` float64.

    Raises:
        DataFormatError: on any violation of the format.
    """
    if len(frame) == 0:
        raise DataFormatError(source, "the items table has no rows", hint="check the export")
    _require_columns(frame, S.ITEM_REQUIRED, source, "items")
    out = frame.copy()
    out[S.ITEM_ID] = _as_id(frame, S.ITEM_ID, source)
    _fail_if(out[S.ITEM_ID].duplicated(keep="first"), source, S.ITEM_ID, "duplicate item ids",
             "each item appears once in the items table")
    text = frame[S.TEXT]  # titles that look like numbers (model numbers) are text too
    out[S.TEXT] = text.astype("string").fillna("").str.strip()
    if S.PRICE in frame.columns:
        price = _as_number(frame, S.PRICE, source)
        finite = np.isfinite(price.to_numpy())
        _fail_if(price.notna() & ~finite, source, S.PRICE, "infinite prices", "use finite prices")
        _fail_if(price < 0, source, S.PRICE, "negative prices", "prices are >= 0; leave unknown prices empty")
        out[S.PRICE] = price
    if S.CATEGORY in frame.columns:
        out[S.CATEGORY] = frame[S.CATEGORY].astype("string")
    return out.reset_index(drop=True)


def validate_interactions(
    frame: pd.DataFrame, items: pd.DataFrame, source: str = "interactions"
) -> pd.DataFrame:
    """Validate and type the interactions table against a validated items table.

    Args:
        frame: the raw interactions table, one row per shown slot.
        items: the items table returned by :func:`validate_items`.
        source: the file name used in error messages.

    Returns:
        A typed copy in the original row order.

    Raises:
        DataFormatError: on any violation of the format.
    """
    if len(frame) == 0:
        raise DataFormatError(source, "the interactions table has no rows", hint="check the export")
    _require_columns(frame, S.INTERACTION_REQUIRED, source, "interactions")
    out = frame.copy()
    out[S.REQUEST_ID] = _as_id(frame, S.REQUEST_ID, source)
    out[S.ITEM_ID] = _as_id(frame, S.ITEM_ID, source)
    for column in (S.USER_ID, S.SESSION_ID):
        if column in frame.columns:
            out[column] = _as_id(frame, column, source)

    position = _as_number(frame, S.POSITION, source)
    _fail_if(position.isna(), source, S.POSITION, "missing positions", "positions are 1-based integers")
    _fail_if(~np.isfinite(position) | (position != np.round(position)), source, S.POSITION,
             "non-integer positions", "positions are 1-based integers")
    _fail_if(position > np.iinfo(np.int32).max, source, S.POSITION, "positions too large",
             "positions are slot numbers on a page (1, 2, 3, ...)")
    _fail_if(position < 1, source, S.POSITION, "positions below 1", "positions are 1-based (top slot = 1)")
    out[S.POSITION] = position.astype("int32")

    for column in S.BINARY_COLUMNS:
        if column in frame.columns:
            out[column] = _as_binary(frame, column, source)

    if S.REVENUE in frame.columns:
        revenue = _as_number(frame, S.REVENUE, source).fillna(0.0)
        _fail_if(~np.isfinite(revenue.to_numpy()), source, S.REVENUE, "infinite revenue", "use finite amounts")
        _fail_if(revenue < 0, source, S.REVENUE, "negative revenue",
                 "refunds and cancellations are not purchases; drop them (and count them) before loading")
        out[S.REVENUE] = revenue

    for column in S.PROBABILITY_COLUMNS:
        if column in frame.columns:
            p = _as_number(frame, column, source)
            _fail_if(p.isna(), source, column, "missing (NaN) probabilities",
                     "fill them from the logging policy, or drop the whole column if they are unknown "
                     "(estimators that need propensities then refuse the log)")
            _fail_if((p <= 0) | (p > 1), source, column, "probabilities outside (0, 1]",
                     "a shown item had a positive probability of being shown; check the logging code")
            out[column] = p

    out[S.TIMESTAMP] = _as_timestamp(frame, S.TIMESTAMP, source)

    if S.QUERY in frame.columns:
        out[S.QUERY] = frame[S.QUERY].astype("string").fillna("")

    duplicated = out.duplicated([S.REQUEST_ID, S.POSITION], keep="first")
    _fail_if(duplicated, source, S.POSITION, "duplicate (request_id, position) pairs",
             "each slot of a request is logged once; de-duplicate the log")

    if S.USER_ID in out.columns:
        users_per_request = out.groupby(S.REQUEST_ID, sort=False)[S.USER_ID].transform("nunique")
        _fail_if(users_per_request > 1, source, S.USER_ID, "one request_id belongs to several users",
                 "a request is one page view of one user; check the request ids")

    known = pd.Index(items[S.ITEM_ID])
    _fail_if(~out[S.ITEM_ID].isin(known), source, S.ITEM_ID,
             "item ids not found in the items table",
             "add the missing items to the items table (text may be empty) or drop these rows")
    return out.reset_index(drop=True)
