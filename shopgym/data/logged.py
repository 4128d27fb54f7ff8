"""`LoggedData`: the validated items + interactions tables of one logged dataset."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopgym.data import schema as S
from shopgym.data.io import find_table, read_table, write_json, write_table
from shopgym.data.validation import validate_interactions, validate_items
from shopgym.errors import ConfigError, DataFormatError


@dataclass(frozen=True)
class DropReport:
    """Rows an adapter dropped on purpose, counted by reason (never silently).

    Attributes:
        total_in: rows read from the source.
        dropped: reason -> number of rows dropped for it (reasons are applied in order, so a row
            is counted once, under the first reason that applies).
    """

    total_in: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_dropped(self) -> int:
        """Rows dropped for any reason."""
        return int(sum(self.dropped.values()))

    def lines(self) -> list[str]:
        """Human-readable lines, one per reason."""
        if not self.dropped:
            return [f"rows read: {self.total_in:,}; none dropped"]
        out = [f"rows read: {self.total_in:,}; dropped {self.total_dropped:,}:"]
        out += [f"  - {reason}: {count:,}" for reason, count in self.dropped.items()]
        return out


@dataclass(frozen=True)
class DataSummary:
    """What a logged dataset holds (see :meth:`LoggedData.summary`)."""

    name: str
    n_rows: int
    n_requests: int
    n_users: int | None
    n_items: int
    n_items_shown: int
    start: str
    end: str
    ctr: float
    ctr_by_position: dict[int, float]
    rows_by_position: dict[int, int]
    cart_rate: float | None
    purchase_rate: float | None
    search_share: float | None
    propensity_share: float
    items_with_text_share: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)

    def to_text(self, max_positions: int = 10) -> str:
        """A short report for the terminal."""
        users = "n/a (no user_id column)" if self.n_users is None else f"{self.n_users:,}"
        lines = [
            f"dataset: {self.name}",
            f"  rows (shown slots): {self.n_rows:,}   requests: {self.n_requests:,}   users: {users}",
            f"  items: {self.n_items:,} ({self.n_items_shown:,} shown; "
            f"{self.items_with_text_share:.0%} with text)",
            f"  time: {self.start} .. {self.end}",
            f"  CTR: {self.ctr:.4f}"
            + ("" if self.cart_rate is None else f"   cart rate: {self.cart_rate:.4f}")
            + ("" if self.purchase_rate is None else f"   purchase rate: {self.purchase_rate:.4f}"),
            f"  rows with propensities: {self.propensity_share:.0%}"
            + ("" if self.search_share is None else f"   search requests: {self.search_share:.0%}"),
            "  CTR by position:",
        ]
        for position in sorted(self.ctr_by_position)[:max_positions]:
            lines.append(
                f"    {position:>3}: {self.ctr_by_position[position]:.4f}  ({self.rows_by_position[position]:,} rows)"
            )
        if len(self.ctr_by_position) > max_positions:
            lines.append(f"    ... {len(self.ctr_by_position) - max_positions} more positions")
        return "\n".join(lines)


@dataclass(frozen=True)
class LoggedData:
    """A validated logged dataset: items and interactions, typed, sorted by time.

    Build it with :meth:`from_frames` (validates) or :meth:`load` (reads a folder, validates).

    Attributes:
        items: one row per item (``item_id`` unique, ``text``, optional features).
        interactions: one row per shown slot, sorted by (timestamp, request_id, position).
        name: a label used in reports.
        drops: rows the producing adapter dropped on purpose, by reason.
        meta: free-form provenance (adapter, source files, generator config).
    """

    items: pd.DataFrame
    interactions: pd.DataFrame
    name: str = "logged"
    drops: DropReport = field(default_factory=DropReport)
    meta: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(
        cls,
        items: pd.DataFrame,
        interactions: pd.DataFrame,
        *,
        name: str = "logged",
        drops: DropReport | None = None,
        meta: Mapping[str, Any] | None = None,
        items_source: str = "items",
        interactions_source: str = "interactions",
    ) -> LoggedData:
        """Validate raw tables and build a dataset (raises DataFormatError on bad input)."""
        typed_items = validate_items(items, items_source)
        typed = validate_interactions(interactions, typed_items, interactions_source)
        typed = typed.sort_values([S.TIMESTAMP, S.REQUEST_ID, S.POSITION], kind="stable").reset_index(drop=True)
        return cls(typed_items, typed, name, drops or DropReport(total_in=len(interactions)), dict(meta or {}))

    @classmethod
    def load(cls, path: str | Path) -> LoggedData:
        """Load a dataset folder holding ``items.*``, ``interactions.*`` and optionally ``meta.json``.

        Raises:
            DataFormatError: a table is missing, unreadable or invalid (the message names the file).
        """
        folder = Path(path)
        if not folder.is_dir():
            raise DataFormatError(str(folder), "not a folder",
                                  hint="pass the folder holding items.* and interactions.* tables")
        items_path = find_table(folder, S.ITEMS_STEM)
        interactions_path = find_table(folder, S.INTERACTIONS_STEM)
        meta: dict[str, Any] = {}
        drops = None
        meta_path = folder / S.META_FILE
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataFormatError(str(meta_path), f"not valid JSON ({exc})",
                                      hint="delete it or restore it from the source") from exc
            if not isinstance(meta, dict):
                raise DataFormatError(str(meta_path), "expected a JSON object", hint="delete it")
            report = meta.get("drops")
            if isinstance(report, dict):
                drops = DropReport(int(report.get("total_in", 0)), dict(report.get("dropped", {})))
        items = read_table(items_path)
        interactions = read_table(interactions_path)
        return cls.from_frames(
            items, interactions, name=str(meta.get("name", folder.name)), drops=drops, meta=meta,
            items_source=str(items_path), interactions_source=str(interactions_path),
        )

    def save(self, folder: str | Path, *, fmt: str = "parquet") -> Path:
        """Write the dataset to ``folder`` (``fmt``: parquet, csv or csv.gz); each file atomically."""
        if fmt not in ("parquet", "csv", "csv.gz"):
            raise ConfigError(f"`fmt` must be 'parquet', 'csv' or 'csv.gz', got {fmt!r}")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for stem in (S.ITEMS_STEM, S.INTERACTIONS_STEM):
            for suffix in S.SUFFIXES:  # a stale table in another format would make load() ambiguous
                stale = out / f"{stem}{suffix}"
                if suffix != f".{fmt}" and stale.exists():
                    stale.unlink()
        write_table(self.items, out / f"{S.ITEMS_STEM}.{fmt}")
        write_table(self.interactions, out / f"{S.INTERACTIONS_STEM}.{fmt}")
        meta = dict(self.meta) | {
            "name": self.name,
            "drops": {"total_in": self.drops.total_in, "dropped": dict(self.drops.dropped)},
        }
        write_json(meta, out / S.META_FILE)
        return out

    # ------------------------------------------------------------------ properties
    @property
    def has_users(self) -> bool:
        """Whether interactions carry a ``user_id`` column."""
        return S.USER_ID in self.interactions.columns

    @property
    def has_propensities(self) -> bool:
        """Whether interactions carry logging propensities."""
        return S.PROPENSITY in self.interactions.columns

    @property
    def context_columns(self) -> list[str]:
        """Interaction columns outside the documented ones: user/request context features."""
        return [c for c in self.interactions.columns if c not in S.INTERACTION_KNOWN]

    @property
    def n_requests(self) -> int:
        """Number of distinct requests (slates)."""
        return int(self.interactions[S.REQUEST_ID].nunique())

    def item_index(self) -> pd.Index:
        """Index of item ids; ``item_index().get_indexer(ids)`` maps ids to row numbers of ``items``."""
        return pd.Index(self.items[S.ITEM_ID])

    # ------------------------------------------------------------------ reports and splits
    def summary(self) -> DataSummary:
        """Rows, requests, users, items, date range, CTR by position, purchase rate, propensity share."""
        inter = self.interactions
        clicked = inter[S.CLICKED].to_numpy(dtype=np.float64)
        positions = inter[S.POSITION].to_numpy()
        uniq, inverse = np.unique(positions, return_inverse=True)
        counts = np.bincount(inverse)
        clicks = np.bincount(inverse, weights=clicked)
        search_share = None
        if S.QUERY in inter.columns:
            is_search = inter[S.QUERY].str.len().fillna(0).to_numpy() > 0
            per_request = pd.Series(is_search).groupby(inter[S.REQUEST_ID].to_numpy()).max()
            search_share = float(per_request.mean())
        return DataSummary(
            name=self.name,
            n_rows=len(inter),
            n_requests=self.n_requests,
            n_users=int(inter[S.USER_ID].nunique()) if self.has_users else None,
            n_items=len(self.items),
            n_items_shown=int(inter[S.ITEM_ID].nunique()),
            start=str(inter[S.TIMESTAMP].min()),
            end=str(inter[S.TIMESTAMP].max()),
            ctr=float(clicked.mean()),
            ctr_by_position={int(p): float(c / n) for p, c, n in zip(uniq, clicks, counts, strict=True)},
            rows_by_position={int(p): int(n) for p, n in zip(uniq, counts, strict=True)},
            cart_rate=float(inter[S.CARTED].mean()) if S.CARTED in inter.columns else None,
            purchase_rate=float(inter[S.PURCHASED].mean()) if S.PURCHASED in inter.columns else None,
            search_share=search_share,
            propensity_share=float(inter[S.PROPENSITY].notna().mean()) if self.has_propensities else 0.0,
            items_with_text_share=float((self.items[S.TEXT].str.len() > 0).mean()),
        )

    def split_by_time(self, test_fraction: float = 0.2) -> tuple[LoggedData, LoggedData]:
        """Split by request start time: the earliest ``1 - test_fraction`` of requests train, the rest test.

        A request (slate) is never cut in two. Both parts keep the full items table.

        Args:
            test_fraction: share of requests in the later (test) part, in (0, 1).

        Returns:
            (train, test), each a LoggedData.
        """
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(f"`test_fraction` must be in (0, 1), got {test_fraction}")
        inter = self.interactions
        start = inter.groupby(S.REQUEST_ID, sort=False)[S.TIMESTAMP].min().sort_values(kind="stable")
        n_train = int(round(len(start) * (1.0 - float(test_fraction))))
        if n_train == 0 or n_train == len(start):
            raise ConfigError(
                f"`test_fraction`={test_fraction} leaves an empty part with {len(start)} requests"
            )
        train_ids = pd.Index(start.index[:n_train])
        in_train = inter[S.REQUEST_ID].isin(train_ids).to_numpy()
        cut = str(start.iloc[n_train])

        def part(mask: np.ndarray, label: str) -> LoggedData:
            meta = dict(self.meta) | {"split": label, "split_time": cut}
            return LoggedData(self.items, inter[mask].reset_index(drop=True), f"{self.name}[{label}]",
                              self.drops, meta)

        return part(in_train, "train"), part(~in_train, "test")
