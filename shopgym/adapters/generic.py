"""Generic adapter: any Parquet/CSV interactions table (and optional items table) plus a column mapping.

A mapping renames source columns to the standard names of :mod:`shopgym.data.schema` (source name ->
standard name); unmapped columns keep their names (a column that is not a standard name becomes a
context column). Nothing is dropped: rows that break the format raise a
:class:`~shopgym.errors.DataFormatError` naming the file, the column and the rows.

Without an items table, the items are the distinct item ids of the interactions (in order of first
appearance) with empty text; ``meta["items_derived"]`` is then True.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from shopgym.adapters._common import require_source_columns
from shopgym.data import schema as S
from shopgym.data.io import read_table
from shopgym.data.logged import DropReport, LoggedData
from shopgym.errors import ConfigError, DataFormatError


def parse_mapping(pairs: Iterable[str], *, option: str = "--map") -> dict[str, str]:
    """Parse ``["user=user_id", "ts=timestamp"]`` into ``{"user": "user_id", "ts": "timestamp"}``.

    Each pair is ``SOURCE=STANDARD``; spaces around either name are stripped.

    Args:
        pairs: the pairs as typed on the command line.
        option: the option name used in error messages.

    Returns:
        source column name -> standard column name, in the order given.

    Raises:
        ConfigError: a pair has no ``=``, an empty side, or repeats a source or a target name.
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = str(pair).partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target or "=" in target:
            raise ConfigError(f"`{option}` expects SOURCE=STANDARD pairs such as 'user=user_id', got {pair!r}")
        if source in mapping:
            raise ConfigError(f"`{option}` maps source column {source!r} twice "
                              f"(to {mapping[source]!r} and {target!r})")
        mapping[source] = target
    _check_targets(mapping, option)
    return mapping


def _check_targets(mapping: Mapping[str, str], what: str) -> None:
    targets = list(mapping.values())
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        sources = [s for s, t in mapping.items() if t == repeated[0]]
        raise ConfigError(f"`{what}` maps several source columns {sources} to {repeated[0]!r}")


def _apply_mapping(frame: pd.DataFrame, mapping: Mapping[str, str], source: str, what: str) -> pd.DataFrame:
    """Rename ``frame``'s columns by ``mapping``, with errors naming the file and the columns."""
    _check_targets(mapping, what)
    require_source_columns(
        frame, mapping.keys(), source,
        hint=f"`{what}` maps source names to standard names; fix the source name or the file",
    )
    renamed = set(mapping)
    clashes = [t for t in mapping.values() if t in frame.columns and t not in renamed]
    if clashes:
        raise DataFormatError(
            source, f"`{what}` renames a column to {clashes[0]!r}, which the file already has",
            column=clashes[0], hint=f"map or drop the existing {clashes[0]!r} column first",
        )
    return frame.rename(columns=dict(mapping))


def _id_sources(mapping: Mapping[str, str]) -> set[str]:
    """Source columns to read as strings: the standard id names and whatever maps onto them."""
    return set(S.ID_COLUMNS) | {s for s, t in mapping.items() if t in S.ID_COLUMNS}


def load_generic(
    interactions: str | Path,
    items: str | Path | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    item_mapping: Mapping[str, str] | None = None,
    name: str | None = None,
) -> LoggedData:
    """Load an interactions table (and optionally an items table) in any column naming.

    Args:
        interactions: a Parquet, CSV or gzipped CSV file, one row per shown slot.
        items: the items table, or None to derive items from the interactions (empty text).
        mapping: interactions source column -> standard name, e.g. ``{"ts": "timestamp"}``.
        item_mapping: items source column -> standard name, e.g. ``{"sku": "item_id"}``.
        name: dataset label; defaults to the interactions file name without its suffix.

    Returns:
        The validated dataset; ``drops`` records zero dropped rows.

    Raises:
        ConfigError: ``item_mapping`` without an items file, or a mapping with repeated targets.
        DataFormatError: a file is unreadable, a mapped source column is missing, a renamed column
            clashes with an existing one, or validation fails (the message names the file).
    """
    mapping = dict(mapping or {})
    item_mapping = dict(item_mapping or {})
    if items is None and item_mapping:
        raise ConfigError("`item_mapping` was given without an items file; pass `items` or drop the mapping")
    inter_path = Path(interactions)
    inter_src = str(inter_path)
    frame = _apply_mapping(read_table(inter_path, id_columns=_id_sources(mapping)), mapping, inter_src,
                           "mapping")
    if items is None:
        require_source_columns(frame, (S.ITEM_ID,), inter_src,
                               hint="map the item id column with mapping={'<source>': 'item_id'}")
        ids = frame[S.ITEM_ID].astype("string").str.strip()
        present = ids[ids.notna() & (ids != "")]
        item_frame = pd.DataFrame({S.ITEM_ID: present.drop_duplicates().reset_index(drop=True), S.TEXT: ""})
        items_src = f"{inter_src} (items derived from {S.ITEM_ID})"
    else:
        items_path = Path(items)
        items_src = str(items_path)
        item_frame = _apply_mapping(read_table(items_path, id_columns=_id_sources(item_mapping)),
                                    item_mapping, items_src, "item_mapping")
    meta: dict[str, Any] = {
        "adapter": "generic",
        "source": {"interactions": inter_src, "items": None if items is None else items_src},
        "mapping": mapping,
        "item_mapping": item_mapping,
        "items_derived": items is None,
    }
    if items is None:
        meta["items_note"] = "no items file: items are the distinct item ids of the interactions, empty text"
    label = name or inter_path.name.split(".")[0]
    return LoggedData.from_frames(
        item_frame, frame, name=label, drops=DropReport(total_in=len(frame), dropped={}), meta=meta,
        items_source=items_src, interactions_source=inter_src,
    )
