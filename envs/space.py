"""The embedding space the simulator works in: item vectors, query vectors, and the user table.

Built once from logs and an encoder, shared by the fitted response model, the candidate generator
and the envs, so that everything sees the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encoders.base import ItemEncoder, TextEncoder, l2_normalize
from encoders.items import encode_items
from encoders.profiles import BehaviourWeights, ProfileState
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.data.io import atomic_folder
from shopgym.errors import ConfigError
from shopgym.numeric import principal_directions

#: items of a user's history kept in the user table (newest last)
HISTORY_LENGTH = 20


@dataclass(frozen=True)
class ItemSpace:
    """Item and query vectors.

    Attributes:
        item_ids: catalog item ids; position = catalog index used everywhere in the simulator.
        item_vecs: (n_items, d) float32 (or float16, possibly memory-mapped: :meth:`build`'s ``dtype``,
            :meth:`load`) L2-normalised (zero rows for items with no information).
        query_texts: (Q,) distinct query strings (index = query index); never contains "".
        query_vecs: (Q, d) float32 L2-normalised.
        projection: (d_in, d) float32 PCA projection applied to encoder outputs, or None.
    """

    item_ids: pd.Index
    item_vecs: np.ndarray
    query_texts: np.ndarray
    query_vecs: np.ndarray
    projection: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self.item_vecs.shape[1])

    @property
    def n_items(self) -> int:
        """Catalog size."""
        return int(self.item_vecs.shape[0])

    def query_index(self, texts: Sequence[str] | np.ndarray) -> np.ndarray:
        """(n,) query indices of ``texts`` ("" -> -1).

        Raises:
            ConfigError: a non-empty text is not in the table.
        """
        lookup = pd.Index(self.query_texts)
        texts = np.asarray(texts, dtype=object)
        idx = lookup.get_indexer(texts)
        unknown = (idx < 0) & (texts != "")
        if unknown.any():
            raise ConfigError(f"queries not in the query table: {list(texts[unknown][:3])}")
        return idx.astype(np.int64)

    @classmethod
    def build(
        cls,
        items: pd.DataFrame,
        encoder: TextEncoder | ItemEncoder,
        queries: Sequence[str] = (),
        *,
        dim: int | None = None,
        attribute_weight: float = 0.0,
        show_progress: bool | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> ItemSpace:
        r"""Encode the catalog and the queries; optionally add item attributes and project by PCA.

        With ``attribute_weight`` :math:`a > 0`, each item vector becomes
        :math:`[e_i,\ a\, f_i] / \lVert\cdot\rVert` where :math:`e_i` is the text embedding and
        :math:`f_i` the unit-normalised one-hot/standardised attribute vector of the items table's
        feature columns (:class:`~encoders.features.FeatureEncoder`); a query's attribute block marks
        the attribute values its text names (e.g. "linen trousers" -> material=linen, category=trousers).
        Profiles pooled from these vectors then carry the user's attribute preferences too.

        Args:
            items: the items table (``item_id``, ``text``, features).
            encoder: a text encoder (titles; queries use it too) or an item encoder (no queries then).
            queries: query strings to encode ("" entries are ignored).
            dim: target dimension (< the encoder's); None keeps the encoder's.
            attribute_weight: weight of the attribute block, >= 0 (0: text embedding only).
            show_progress: progress bars while encoding.
            dtype: the item table's storage, float32 or float16 (half the memory; every consumer reads
                it in float32 slices, and unit vectors keep ~3 significant digits). Queries stay float32.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ConfigError(f"`dtype` must be float32 or float16, got {dtype}")
        item_vecs = np.asarray(encode_items(items, encoder, show_progress=show_progress), dtype=np.float32)
        texts = np.array(sorted({q for q in queries if q}), dtype=object)
        if len(texts):
            if not callable(getattr(encoder, "encode", None)):
                raise ConfigError("logs with search queries need a text encoder (queries are text)")
            query_vecs = np.asarray(encoder.encode(list(texts), show_progress=show_progress),  # type: ignore[union-attr]
                                    dtype=np.float32)
        else:
            query_vecs = np.zeros((0, item_vecs.shape[1]), dtype=np.float32)
        if attribute_weight < 0:
            raise ConfigError(f"`attribute_weight` must be >= 0, got {attribute_weight}")
        if attribute_weight > 0:
            item_attrs, query_attrs = attribute_blocks(items, texts)
            item_vecs = l2_normalize(np.concatenate([item_vecs, attribute_weight * item_attrs], axis=1))
            query_vecs = l2_normalize(np.concatenate([query_vecs, attribute_weight * query_attrs], axis=1))
            item_vecs, query_vecs = item_vecs.astype(np.float32), query_vecs.astype(np.float32)
        projection = None
        if dim is not None:
            if not 1 <= dim <= item_vecs.shape[1]:
                raise ConfigError(f"`dim` must be in [1, {item_vecs.shape[1]}] (the encoder's dim), got {dim}")
            projection = principal_directions(item_vecs, dim, fix_sign=True).T.astype(np.float32)
            item_vecs = l2_normalize(item_vecs @ projection).astype(np.float32)
            query_vecs = l2_normalize(query_vecs @ projection).astype(np.float32)
        return cls(pd.Index(items[S.ITEM_ID]), item_vecs.astype(dtype, copy=False), texts, query_vecs, projection)

    def save(self, directory: str | Path) -> Path:
        """Write the space to ``directory`` (``item_vecs.npy`` readable memory-mapped by :meth:`load`).

        Built aside and published with one rename (:func:`shopgym.data.io.atomic_folder`), so a kill leaves
        either the old folder or the new one, never a half-written one.
        """
        directory = Path(directory)
        with atomic_folder(directory) as tmp:
            np.save(tmp / "item_vecs.npy", np.ascontiguousarray(self.item_vecs), allow_pickle=False)
            np.save(tmp / "query_vecs.npy", self.query_vecs, allow_pickle=False)
            if self.projection is not None:
                np.save(tmp / "projection.npy", self.projection, allow_pickle=False)
            pd.DataFrame({"item_id": self.item_ids.astype(str)}).to_parquet(tmp / "item_ids.parquet", index=False)
            pd.DataFrame({"query": self.query_texts.astype(str)}).to_parquet(tmp / "queries.parquet", index=False)
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> ItemSpace:
        """A space written by :meth:`save`; ``mmap`` leaves the item table on disk, paged in as rows are read.

        Raises:
            ConfigError: the folder is missing a file :meth:`save` writes.
        """
        directory = Path(directory)
        names = ("item_vecs.npy", "query_vecs.npy", "item_ids.parquet", "queries.parquet")
        missing = [name for name in names if not (directory / name).is_file()]
        if missing:
            raise ConfigError(f"{directory} is not a saved item space (missing {', '.join(missing)}); "
                              "write one with ItemSpace.save")
        item_vecs = np.load(directory / "item_vecs.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        projection = np.load(directory / "projection.npy") if (directory / "projection.npy").is_file() else None
        item_ids = pd.Index(pd.read_parquet(directory / "item_ids.parquet")["item_id"].astype(str))
        queries = pd.read_parquet(directory / "queries.parquet")["query"].to_numpy(dtype=object)
        return cls(item_ids, item_vecs, queries, np.load(directory / "query_vecs.npy"), projection)


def attribute_blocks(items: pd.DataFrame, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit attribute vectors of items (n_items, F) and of queries (Q, F) (values named in the query text).

    Feature columns are those a default :class:`~encoders.features.FeatureEncoder` picks (every column but
    ``item_id`` and ``text``); one-hot categories are matched in queries as whole words.
    """
    from encoders.features import FeatureEncoder

    encoder = FeatureEncoder().fit(items)
    item_attrs = l2_normalize(encoder.raw_features(items)).astype(np.float32)
    query_attrs = np.zeros((len(queries), encoder.raw_dim), dtype=np.float32)
    padded = [f" {q.lower()} " for q in queries]
    for column in encoder.columns:  # columns x categories, at setup time only
        if column.kind != "onehot":
            continue
        for j, value in enumerate(column.vocabulary):
            needle = f" {value.lower()} "
            hits = [k for k, q in enumerate(padded) if needle in q]
            query_attrs[hits, column.offset + j] = 1.0
    return item_attrs, l2_normalize(query_attrs).astype(np.float32)


@dataclass(frozen=True)
class UserTable:
    """Users known to the simulator, with their logged history.

    Attributes:
        user_ids: (n_users,) ids as in the logs.
        history: (n_users, H) int64 catalog indices of engaged items (click/cart/purchase), newest last, -1 padded.
        history_weight: (n_users, H) float64 behaviour weights of those items (0 where padded).
        popularity: (n_items,) float64 smoothed click-through rate of each item in the logs.
    """

    user_ids: pd.Index
    history: np.ndarray
    history_weight: np.ndarray
    popularity: np.ndarray

    def profiles(self, rows: np.ndarray, item_vecs: np.ndarray) -> ProfileState:
        """Initial profile state of users ``rows`` (-1 = unknown user: cold)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.user_ids) == 0:  # logs without user ids: everyone is cold
            return ProfileState(np.zeros((len(rows), item_vecs.shape[1])), np.zeros(len(rows)))
        known = rows >= 0
        hist = np.where(known[:, None], self.history[np.maximum(rows, 0)], -1)
        weight = np.where(hist >= 0, self.history_weight[np.maximum(rows, 0)], 0.0)
        vecs = item_vecs[np.maximum(hist, 0)].astype(np.float64)
        return ProfileState(np.einsum("bh,bhd->bd", weight, vecs), weight.sum(axis=1))

    @classmethod
    def from_logs(
        cls, logs: LoggedData, item_ids: pd.Index, *, weights: BehaviourWeights | None = None,
        history_length: int = HISTORY_LENGTH, prior_views: float = 20.0,
    ) -> UserTable:
        """Histories (last ``history_length`` engaged items per user) and item popularity from ``logs``.

        Popularity is a Beta-smoothed CTR, (clicks + m * ctr) / (views + m), with the global CTR as the
        prior mean and ``m = prior_views`` pseudo-views; unseen items get the global CTR. On positives-only logs
        (every row clicked: purchases alone) a rate says nothing, and popularity is the item's count over the
        largest count.
        """
        inter = logs.interactions
        item = item_ids.get_indexer(pd.Index(inter[S.ITEM_ID]))
        if (item < 0).any():
            raise ConfigError("logs reference items missing from the item space; build the space from the same items")
        clicked = inter[S.CLICKED].to_numpy(dtype=np.float64)
        views = np.bincount(item, minlength=len(item_ids)).astype(np.float64)
        clicks = np.bincount(item, weights=clicked, minlength=len(item_ids))
        ctr = clicks.sum() / max(views.sum(), 1.0)
        popularity = (clicks + prior_views * ctr) / (views + prior_views)
        if len(clicked) and clicked.min() >= 1:  # positives only: every rate is 1, so the count is the signal
            popularity = views / max(float(views.max()), 1.0)
        if not logs.has_users:
            empty = np.zeros((0, history_length))
            return cls(pd.Index([], dtype="string"), empty.astype(np.int64), empty, popularity)
        w = (weights or BehaviourWeights()).of(
            inter[S.CLICKED].to_numpy(),
            inter[S.CARTED].to_numpy() if S.CARTED in inter else None,
            inter[S.PURCHASED].to_numpy() if S.PURCHASED in inter else None,
        )
        engaged = w > 0
        users = pd.Index(pd.unique(inter[S.USER_ID]))
        user = users.get_indexer(pd.Index(inter[S.USER_ID][engaged]))
        e_item, e_w = item[engaged], w[engaged]
        # rows are time-sorted; rank each engagement from the newest within its user
        order = np.lexsort((-np.arange(len(user)), user))
        user_sorted = user[order]
        first = np.r_[0, np.flatnonzero(np.diff(user_sorted)) + 1]
        start = np.repeat(first, np.diff(np.r_[first, len(user_sorted)]))
        age = np.arange(len(user_sorted)) - start  # 0 = newest
        keep = age < history_length
        history = np.full((len(users), history_length), -1, dtype=np.int64)
        history_weight = np.zeros((len(users), history_length))
        slot = history_length - 1 - age[keep]
        history[user_sorted[keep], slot] = e_item[order][keep]
        history_weight[user_sorted[keep], slot] = e_w[order][keep]
        return cls(users, history, history_weight, popularity)
