"""Open Bandit Dataset (OBD) adapter.

The OBD (Saito et al., 2021; ZOZOTOWN fashion e-commerce) is logged bandit feedback: each row is one
impression of one item at one of three slots, with the click and the logging policy's propensity.
A campaign folder such as ``obd/random/all`` holds the log ``{campaign}.csv.gz`` (or ``.csv``) and
``item_context.csv``; both start with an unnamed index column.

Column mapping (log -> interactions):

=====================================  ==========================================================
OBD log column                         logged-data column
=====================================  ==========================================================
leading unnamed index column           ``request_id`` (one row per request: OBD rows are
                                       independent impressions, with no slate id and no user id)
``timestamp``                          ``timestamp``
``item_id``                            ``item_id``
``position`` (1/2/3 = left/centre/right) ``position``
``click``                              ``clicked``
``propensity_score``                   ``propensity``
``user_feature_0..3`` (hashed)         context columns of the same names (strings)
``user-item_affinity_0..K-1``          dropped by default (columns, not rows: recorded in
                                       ``meta["dropped_columns"]``); kept as context columns with
                                       ``include_affinity=True``
=====================================  ==========================================================

Items (``item_context.csv``): ``item_id``, ``text`` = "" (OBD has no item text), ``item_feature_0``
(float64) and ``item_feature_1..3`` (hashed categories, kept as strings). No row is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from shopgym.adapters._common import fail_if, require_source_columns
from shopgym.data import schema as S
from shopgym.data.io import read_table
from shopgym.data.logged import DropReport, LoggedData
from shopgym.errors import DataFormatError

ITEM_CONTEXT_FILE = "item_context.csv"
USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
ITEM_CATEGORICAL = tuple(f"item_feature_{i}" for i in range(1, 4))
ITEM_NUMERIC = "item_feature_0"
AFFINITY_PREFIX = "user-item_affinity_"
BEHAVIOR_POLICIES = ("random", "bts")
_LOG_RENAME = {"click": S.CLICKED, "propensity_score": S.PROPENSITY}
_LOG_REQUIRED = ("timestamp", "item_id", "position", "click", "propensity_score", *USER_FEATURES)
_HINT = "pass an OBD campaign folder such as obd/random/all, as shipped with the Open Bandit Pipeline"


def find_obd_log(folder: Path) -> Path:
    """Return the single log file (``*.csv.gz`` or ``*.csv`` other than ``item_context.csv``) in ``folder``.

    Raises:
        DataFormatError: the folder is missing, or holds no log or several logs.
    """
    if not folder.is_dir():
        raise DataFormatError(str(folder), "not a folder", hint=_HINT)
    candidates = sorted(
        p for p in [*folder.glob("*.csv.gz"), *folder.glob("*.csv")]
        if p.is_file() and p.name != ITEM_CONTEXT_FILE
    )
    if len(candidates) != 1:
        found = [p.name for p in candidates]
        raise DataFormatError(
            str(folder),
            f"expected exactly one log file '{{campaign}}.csv.gz' beside {ITEM_CONTEXT_FILE}, found {found}",
            hint=_HINT,
        )
    return candidates[0]


def _index_column(frame: pd.DataFrame, source: str) -> str:
    """Name pandas gave the leading unnamed index column, or raise."""
    first = str(frame.columns[0])
    if not (first.startswith("Unnamed: 0") or first == ""):
        raise DataFormatError(
            source, f"expected a leading unnamed index column, found first column {first!r}",
            column=first, hint="the OBD files start with an index column with an empty header",
        )
    return first


def load_obd(folder: str | Path, *, include_affinity: bool = False) -> LoggedData:
    """Load one OBD campaign folder (e.g. ``.../obd/random/all``) as a validated dataset.

    Args:
        folder: the campaign folder holding ``{campaign}.csv.gz`` and ``item_context.csv``.
        include_affinity: keep the ``user-item_affinity_*`` columns as context columns (they are
            dropped by default: one float column per item, 80 for the ``all`` campaign).

    Returns:
        A LoggedData with one interaction row per log row (none dropped) and one item per
        ``item_context.csv`` row. ``meta`` holds ``adapter`` ("obd"), ``source`` (both paths),
        ``campaign`` (the log's file stem), ``behavior_policy`` ("random" or "bts", from the parent
        folder name; None when the path does not say) and ``dropped_columns``.

    Raises:
        DataFormatError: a file is missing or unreadable, a column is missing, the index column is
            not unique, or validation fails (the message names the file, column and rows).
    """
    folder = Path(folder)
    log_path = find_obd_log(folder)
    items_path = folder / ITEM_CONTEXT_FILE
    if not items_path.is_file():
        raise DataFormatError(str(items_path), "file not found", hint=_HINT)
    log_src, items_src = str(log_path), str(items_path)

    log = read_table(log_path)
    require_source_columns(log, _LOG_REQUIRED, log_src, hint=_HINT)
    index_col = _index_column(log, log_src)
    index = log[index_col]
    fail_if(index.isna(), log_src, index_col, "missing values in the index column (used as request_id)",
            "every OBD row carries its row index")
    fail_if(index.duplicated(keep="first"), log_src, index_col,
            "duplicate values in the index column (used as request_id: one row per request)",
            "OBD rows are independent impressions; the index must be unique")

    affinity = [c for c in log.columns if str(c).startswith(AFFINITY_PREFIX)]
    keep = [S.TIMESTAMP, "item_id", "position", "click", "propensity_score", *USER_FEATURES]
    if include_affinity:
        keep += affinity
    interactions = log[keep].rename(columns=_LOG_RENAME)
    interactions.insert(0, S.REQUEST_ID, _as_id_strings(index))
    for column in USER_FEATURES:
        interactions[column] = interactions[column].astype("string")

    raw_items = read_table(items_path)
    require_source_columns(raw_items, (S.ITEM_ID, ITEM_NUMERIC, *ITEM_CATEGORICAL), items_src, hint=_HINT)
    items = pd.DataFrame({S.ITEM_ID: raw_items[S.ITEM_ID], S.TEXT: ""})
    items[ITEM_NUMERIC] = pd.to_numeric(raw_items[ITEM_NUMERIC], errors="coerce")
    fail_if(items[ITEM_NUMERIC].isna() & raw_items[ITEM_NUMERIC].notna(), items_src, ITEM_NUMERIC,
            "non-numeric values", "item_feature_0 is a float feature")
    for column in ITEM_CATEGORICAL:
        items[column] = raw_items[column].astype("string")

    policy = folder.parent.name if folder.parent.name in BEHAVIOR_POLICIES else None
    campaign = log_path.name.removesuffix(".gz").removesuffix(".csv")
    meta: dict[str, Any] = {
        "adapter": "obd",
        "source": {"interactions": log_src, "items": items_src},
        "campaign": campaign,
        "behavior_policy": policy,
        "request_id": f"the log's leading index column ({index_col!r}); one row per request",
        "dropped_columns": {
            "columns": [] if include_affinity else affinity,
            "count": 0 if include_affinity else len(affinity),
            "reason": "" if include_affinity else
            f"{AFFINITY_PREFIX}* (one float per item) dropped by default; use include_affinity=True",
        },
    }
    name = f"obd-{policy or 'unknown'}-{campaign}"
    return LoggedData.from_frames(
        items, interactions, name=name, drops=DropReport(total_in=len(log), dropped={}), meta=meta,
        items_source=items_src, interactions_source=log_src,
    )


def _as_id_strings(series: pd.Series) -> pd.Series:
    """Index values as id strings (integral floats lose their ``.0``)."""
    if pd.api.types.is_float_dtype(series) and bool((series == series.round()).all()):
        series = series.astype("int64")
    return series.astype("string")
