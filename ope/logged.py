"""Build OPE logs from a :class:`~shopgym.data.LoggedData` (the project's logged-data format).

* :func:`bandit_log_from_logged`: one round per interaction row (shown slot), as obp treats the
  Open Bandit Dataset: action = the item's row in ``data.items``, position = ``position - 1``,
  reward = ``clicked`` (or another column), pscore = ``propensity`` (None if the log has none),
  context = the interaction context columns (numbers as they are, text/categories one-hot).
* :func:`slate_log_from_logged`: one round per request with exactly the slots 1..K.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ope.data import BanditLog, SlateLog
from ope.errors import OPEDataWarning, OPEInputError
from shopgym.data import schema as S
from shopgym.data.logged import LoggedData

__all__ = ["bandit_log_from_logged", "context_matrix", "slate_log_from_logged"]


def context_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray | None:
    """Context features from ``columns`` of ``frame``: numeric columns as float64, others one-hot.

    Args:
        frame: the interactions (or per-request) table.
        columns: the context columns to use (may be empty).

    Returns:
        (len(frame), d) float64, or None when ``columns`` is empty.

    Raises:
        OPEInputError: a column is missing, or a numeric column holds missing or infinite values.
    """
    if not columns:
        return None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise OPEInputError(
            f"`context_columns` must name interaction columns; missing {missing} (found {list(frame.columns)[:20]})"
        )
    parts: list[np.ndarray] = []
    for c in columns:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            parts.append(pd.get_dummies(col.astype("string").fillna("<missing>"), dtype=np.float64).to_numpy())
            continue
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.flatnonzero(bad)[:3].tolist()
            raise OPEInputError(
                f"`context_columns`: column {c!r} must be finite numbers; found {int(bad.sum())} missing or "
                f"infinite values (first rows {rows}); fill or drop them, or leave the column out"
            )
        parts.append(values[:, None])
    return np.hstack(parts)


def bandit_log_from_logged(
    data: LoggedData,
    *,
    reward: str = S.CLICKED,
    context_columns: Sequence[str] | None = None,
    action_context: np.ndarray | None = None,
    use_propensity: bool = True,
) -> BanditLog:
    """One bandit round per shown slot of ``data``.

    Args:
        data: the validated logged dataset.
        reward: the reward column of the interactions (``clicked``, ``purchased``, ``revenue``, ...).
        context_columns: interaction columns used as context (default: ``data.context_columns``,
            i.e. every column outside the documented ones; pass ``[]`` for none).
        action_context: (n_items, d) item features in the row order of ``data.items`` (e.g. text
            embeddings from an encoder), or None.
        use_propensity: take ``pscore`` from the ``propensity`` column when present (False: pscore=None).

    Returns:
        The log: ``n_actions = len(data.items)``, 0-based positions, ``n_positions`` = the largest
        logged position.

    Raises:
        OPEInputError: the reward column is missing or not finite, or bad context/action_context.
    """
    inter = data.interactions
    if reward not in inter.columns:
        raise OPEInputError(
            f"`reward` must name an interactions column; found {reward!r} missing (columns: {list(inter.columns)[:20]})"
        )
    action = data.item_index().get_indexer(pd.Index(inter[S.ITEM_ID]))
    if (action < 0).any():  # LoggedData validation makes this impossible; keep the guarantee explicit
        raise OPEInputError("`data`: some interaction item ids are not in the items table")
    pscore = None
    if use_propensity and data.has_propensities:
        pscore = inter[S.PROPENSITY].to_numpy(dtype=np.float64)
    columns = data.context_columns if context_columns is None else list(context_columns)
    position = inter[S.POSITION].to_numpy(dtype=np.int64) - 1
    return BanditLog(
        reward=inter[reward].to_numpy(dtype=np.float64, na_value=np.nan),
        action=action,
        n_actions=len(data.items),
        pscore=pscore,
        position=position,
        context=context_matrix(inter, columns),
        action_context=action_context,
        n_positions=int(position.max()) + 1,
    )


def slate_log_from_logged(
    data: LoggedData,
    *,
    slate_size: int | None = None,
    reward: str = S.CLICKED,
    context_columns: Sequence[str] | None = None,
) -> SlateLog:
    """One slate per request whose slots are exactly positions 1..K.

    Requests with other slot sets (shorter, longer, or with gaps) are dropped, and an
    :class:`~ope.errors.OPEDataWarning` says how many.

    Args:
        data: the validated logged dataset.
        slate_size: K (default: the most common number of slots per request).
        reward: the per-slot reward column.
        context_columns: request-level context columns (default: ``data.context_columns``); the
            value of each request's first slot is used.

    Returns:
        The slate log: ``slate_pscore`` from ``slate_propensity`` (must be constant within a
        request), ``marginal_pscore`` from ``propensity`` and ``cascade_pscore`` from
        ``prefix_propensity``, when present.

    Raises:
        OPEInputError: missing reward column, no complete request, or a varying slate propensity.
    """
    inter = data.interactions
    if reward not in inter.columns:
        raise OPEInputError(f"`reward` must name an interactions column; found {reward!r} missing")
    inter = inter.sort_values([S.REQUEST_ID, S.POSITION], kind="stable")
    req = inter[S.REQUEST_ID].to_numpy()
    pos = inter[S.POSITION].to_numpy(dtype=np.int64)
    codes, uniques = pd.factorize(req, sort=False)
    size = np.bincount(codes)
    k = int(np.bincount(size).argmax()) if slate_size is None else int(slate_size)
    if k < 1:
        raise OPEInputError(f"`slate_size` must be >= 1; found {slate_size}")
    max_pos = np.zeros(len(uniques), dtype=np.int64)
    np.maximum.at(max_pos, codes, pos)
    complete = (size == k) & (max_pos == k)  # positions are unique per request, so 1..K exactly
    keep = complete[codes]
    n_dropped = int((~complete).sum())
    if n_dropped:
        warnings.warn(
            f"slate_log_from_logged: dropped {n_dropped:,} of {len(uniques):,} requests whose slots are not "
            f"exactly positions 1..{k} ({int((~keep).sum()):,} rows); the slate estimates describe the "
            "remaining requests only",
            OPEDataWarning, stacklevel=2,
        )
    rows = inter[keep]
    n = int(complete.sum())
    if n == 0:
        raise OPEInputError(f"`data`: no request has exactly the slots 1..{k}; pass another `slate_size`")
    action = data.item_index().get_indexer(pd.Index(rows[S.ITEM_ID])).reshape(n, k)
    slate_pscore = marginal = None
    if S.SLATE_PROPENSITY in rows.columns:
        sp = rows[S.SLATE_PROPENSITY].to_numpy(dtype=np.float64).reshape(n, k)
        if np.any(~np.isclose(sp, sp[:, :1], rtol=1e-9, atol=0)):
            raise OPEInputError(f"`{S.SLATE_PROPENSITY}` must be constant within each request")
        slate_pscore = sp[:, 0]
    if S.PROPENSITY in rows.columns:
        marginal = rows[S.PROPENSITY].to_numpy(dtype=np.float64).reshape(n, k)
    cascade = None
    if S.PREFIX_PROPENSITY in rows.columns:
        cascade = rows[S.PREFIX_PROPENSITY].to_numpy(dtype=np.float64).reshape(n, k)
    columns = data.context_columns if context_columns is None else list(context_columns)
    first = rows.iloc[::k]
    return SlateLog(
        reward=rows[reward].to_numpy(dtype=np.float64, na_value=np.nan).reshape(n, k),
        slate=action,
        n_actions=len(data.items),
        slate_pscore=slate_pscore,
        marginal_pscore=marginal,
        cascade_pscore=cascade,
        context=context_matrix(first, columns),
    )
