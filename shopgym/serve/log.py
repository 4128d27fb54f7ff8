"""The served log: every page the server showed, with its propensities and feedback, in shopgym's data format.

The log folder is a dataset (``docs/data-format.md``) that ``shopgym data validate``, ``shopgym ope`` and
``shopgym fit`` read unchanged:

* ``items.parquet``: the exported catalog (copied at the first start; a later start with another catalog is
  refused);
* ``interactions/part-<n>.parquet``: one row per shown slot: ``request_id``, ``user_id`` (models fitted with user
  ids only; anonymous requests get ``anonymous-<request_id>``), ``timestamp`` (UTC, when served), ``position``,
  ``item_id``, ``propensity``, ``slate_propensity``, ``prefix_propensity``, ``query`` (empty when browsing),
  ``clicked``, ``carted``,
  ``purchased``, ``revenue``;
* ``meta.json``: what served it (export folder and its manifest's checksum, exploration, start times).

A page stays in memory for ``feedback_window`` seconds after it is served (its feedback joins it there), then
becomes ready; ready pages are published as one part when there are ``part_rows`` of them or ``flush_interval``
seconds have passed, and at shutdown every page is. Each part is written aside and renamed in
(:func:`shopgym.data.io.write_part`): a kill -9 loses at most the pages not yet published and never leaves a
part that fails validation. Feedback for a page already published is refused (HTTP 409), never silently dropped.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopgym.data import schema as S
from shopgym.data.io import PART_PREFIX, PART_SUFFIX, atomic_write, table_parts, write_json, write_part
from shopgym.errors import ConfigError


@dataclass
class Page:
    """One served page awaiting its feedback (arrays over its ``k`` slots)."""

    request_id: str
    served_at: float
    user_id: str | None
    query: str
    item_ids: list[str]
    propensity: np.ndarray
    prefix_propensity: np.ndarray  # the last prefix is the whole page: its slate propensity
    clicked: np.ndarray = field(init=False)
    carted: np.ndarray = field(init=False)
    purchased: np.ndarray = field(init=False)
    revenue: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        k = len(self.item_ids)
        self.clicked, self.carted, self.purchased = (np.zeros(k, np.int8) for _ in range(3))
        self.revenue = np.zeros(k, np.float64)


class FeedbackError(ConfigError):
    """Feedback that cannot be recorded; ``field`` names the request field, ``status`` the HTTP status."""

    def __init__(self, field_name: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.detail = message
        self.status = status


class ServedLog:
    """Pages served and their feedback, published as Parquet parts (module docstring).

    Args:
        folder: the log folder (created if missing).
        items: the exported catalog's ``items.parquet``.
        with_users: write a ``user_id`` column (the model knows user ids).
        feedback_window: seconds a page waits for feedback before it may be published, >= 0.
        part_rows: rows per part (a part is published once this many rows are ready), >= 1.
        flush_interval: seconds after which ready pages are published even if fewer than ``part_rows``, > 0.
        meta: what serves the log (recorded in ``meta.json``).

    Raises:
        ConfigError: the folder holds a log of another catalog.
    """

    def __init__(self, folder: str | Path, items: Path, *, with_users: bool, feedback_window: float = 60.0,
                 part_rows: int = 10_000, flush_interval: float = 30.0, meta: dict[str, Any] | None = None) -> None:
        if feedback_window < 0 or part_rows < 1 or flush_interval <= 0:
            raise ConfigError("the served log needs feedback_window >= 0, part_rows >= 1 and flush_interval > 0; "
                              f"got {feedback_window}, {part_rows}, {flush_interval}")
        self.folder = Path(folder)
        self.parts = self.folder / S.INTERACTIONS_STEM
        self.with_users = with_users
        self.feedback_window, self.part_rows, self.flush_interval = feedback_window, part_rows, flush_interval
        self._pages: dict[str, Page] = {}
        self._published: set[str] = set()
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self._prepare(items, meta or {})
        existing = table_parts(self.parts) if self.parts.is_dir() else []
        self._sequence = max((int(p.name[len(PART_PREFIX):-len(PART_SUFFIX)]) for p in existing), default=0)

    def _prepare(self, items: Path, meta: dict[str, Any]) -> None:
        import json

        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / "items.parquet"
        catalog = pd.read_parquet(items)
        if target.is_file():
            logged = pd.read_parquet(target, columns=[S.ITEM_ID])[S.ITEM_ID].astype(str)
            if not logged.equals(catalog[S.ITEM_ID].astype(str)):
                raise ConfigError(f"--log {self.folder}: holds the log of another catalog (its items.parquet "
                                  "differs from this export's); choose a new log folder")
        else:
            atomic_write(target, lambda tmp: catalog.to_parquet(tmp, index=False))
        meta_path = self.folder / S.META_FILE
        previous = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        servers = list(previous.get("served_by", [])) + [meta | {"started": pd.Timestamp.now("UTC").isoformat()}]
        write_json({"name": previous.get("name", self.folder.name), "source": "shopgym serve",
                    "served_by": servers}, meta_path)

    # ------------------------------------------------------------------ recording
    def new_request_id(self) -> str:
        """A fresh request id (random UUID, hex)."""
        return uuid.uuid4().hex

    def add(self, page: Page) -> None:
        """Hold a served page for its feedback."""
        with self._lock:
            self._pages[page.request_id] = page

    def feedback(self, request_id: str, position: int, *, clicked: bool = False, carted: bool = False,
                 purchased: bool = False, revenue: float = 0.0) -> None:
        """Record feedback on slot ``position`` (1-based) of a served page (events accumulate; revenue adds up).

        Raises:
            FeedbackError: unknown request id or position (422), a page already published (409).
        """
        with self._lock:
            page = self._pages.get(request_id)
            if page is None:
                if request_id in self._published:
                    raise FeedbackError("request_id", f"{request_id!r} was already written to the log (its "
                                        f"feedback window of {self.feedback_window:g} s had closed); send "
                                        "feedback sooner or start the server with a longer --feedback-window",
                                        status=409)
                raise FeedbackError("request_id", f"{request_id!r} was not served by this server")
            if not 1 <= position <= len(page.item_ids):
                raise FeedbackError("position", f"must be in [1, {len(page.item_ids)}] (the slots shown for "
                                    f"{request_id!r}), got {position}")
            j = position - 1
            page.clicked[j] |= int(clicked or carted or purchased)
            page.carted[j] |= int(carted or purchased)
            page.purchased[j] |= int(purchased)
            page.revenue[j] += revenue

    def position_of(self, request_id: str, item_id: str) -> int:
        """The slot (1-based) where ``item_id`` was shown on page ``request_id``.

        Raises:
            FeedbackError: unknown or already published page, or an item not shown on it.
        """
        with self._lock:
            page = self._pages.get(request_id)
            if page is not None:
                if item_id in page.item_ids:
                    return page.item_ids.index(item_id) + 1
                raise FeedbackError("item_id", f"{item_id!r} was not shown on page {request_id!r}")
        self.feedback(request_id, 1)  # raises the unknown/published error
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ publishing
    def pending(self) -> int:
        """Pages held in memory."""
        with self._lock:
            return len(self._pages)

    def _ready(self, everything: bool) -> list[Page]:
        """Pages whose feedback window has closed (all with ``everything``), in serving order."""
        cutoff = time.time() - self.feedback_window
        ready: list[Page] = []
        for page in self._pages.values():  # insertion order = serving order
            if not everything and page.served_at > cutoff:
                break
            ready.append(page)
        return ready

    def flush(self, *, everything: bool = False, force: bool = False) -> int:
        """Publish ready pages (all with ``everything``) in parts of at most ``part_rows`` rows; return rows written.

        Pages are published once ``part_rows`` rows are ready, the flush interval has passed, or with ``force``
        (a page is never split across parts).
        """
        with self._lock:
            now = time.monotonic()
            due = force or everything or now - self._last_flush >= self.flush_interval
            pages = self._ready(everything)
            ready_rows = sum(len(p.item_ids) for p in pages)
            if not ready_rows or not (due or ready_rows >= self.part_rows):
                return 0
            for page in pages:
                del self._pages[page.request_id]
                self._published.add(page.request_id)
            chunks: list[list[Page]] = [[]]
            rows = 0
            for page in pages:
                if chunks[-1] and rows + len(page.item_ids) > self.part_rows:
                    chunks.append([])
                    rows = 0
                chunks[-1].append(page)
                rows += len(page.item_ids)
            first = self._sequence + 1
            self._sequence += len(chunks)
            self._last_flush = now
        written = 0
        for offset, chunk in enumerate(chunks):
            frame = self.frame(chunk)
            write_part(frame, self.parts, first + offset)
            written += len(frame)
        self.rows_written += written
        return written

    def frame(self, pages: list[Page]) -> pd.DataFrame:
        """The interactions rows of ``pages`` (one per shown slot)."""
        sizes = np.array([len(p.item_ids) for p in pages])
        repeat = lambda values: np.repeat(np.asarray(values, dtype=object), sizes)  # noqa: E731
        columns: dict[str, Any] = {S.REQUEST_ID: repeat([p.request_id for p in pages])}
        if self.with_users:
            columns[S.USER_ID] = repeat([p.user_id or f"anonymous-{p.request_id}" for p in pages])
        columns |= {
            S.TIMESTAMP: pd.to_datetime(np.repeat([p.served_at for p in pages], sizes), unit="s", utc=True),
            S.POSITION: np.concatenate([np.arange(1, n + 1) for n in sizes]).astype(np.int64),
            S.ITEM_ID: np.concatenate([np.asarray(p.item_ids, dtype=object) for p in pages]),
            S.PROPENSITY: np.concatenate([p.propensity for p in pages]).astype(np.float64),
            S.SLATE_PROPENSITY: np.repeat([p.prefix_propensity[-1] for p in pages], sizes).astype(np.float64),
            S.PREFIX_PROPENSITY: np.concatenate([p.prefix_propensity for p in pages]).astype(np.float64),
            S.QUERY: repeat([p.query for p in pages]),
            S.CLICKED: np.concatenate([p.clicked for p in pages]).astype(np.int64),
            S.CARTED: np.concatenate([p.carted for p in pages]).astype(np.int64),
            S.PURCHASED: np.concatenate([p.purchased for p in pages]).astype(np.int64),
            S.REVENUE: np.concatenate([p.revenue for p in pages]),
        }
        return pd.DataFrame(columns)
