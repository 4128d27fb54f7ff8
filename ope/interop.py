"""Import and export the Open Bandit Pipeline's (obp) logged-feedback dictionaries.

obp passes logged data around as plain dicts. Bandit feedback (``obp.dataset.OpenBanditDataset``,
``SyntheticBanditDataset``) has the keys ``n_rounds``, ``n_actions``, ``action`` (n,), ``position``
(n,) or None, ``reward`` (n,), ``pscore`` (n,), ``context`` (n, d) and ``action_context``
(n_actions, d_a); slate feedback (``SyntheticSlateBanditDataset``) is flattened to one entry per
slot with ``slate_id``, ``position``, ``action``, ``reward``, ``pscore`` (the slate's, repeated per
slot), ``pscore_item_position`` and ``pscore_cascade``, plus ``n_unique_action`` and ``context``.
These converters map both layouts to :class:`~ope.data.BanditLog` / :class:`~ope.data.SlateLog`
and back, so estimates can be checked side by side with obp (no obp import needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ope.checks import as_array
from ope.data import BanditLog, SlateLog
from ope.errors import OPEInputError

__all__ = [
    "bandit_log_from_obp",
    "bandit_log_to_obp",
    "slate_log_from_obp",
    "slate_log_to_obp",
]


def _require(feedback: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in feedback or feedback[k] is None]
    if missing:
        raise OPEInputError(
            f"`feedback` must hold the obp {what} keys {list(keys)}; missing {missing} "
            f"(found keys {sorted(feedback)})"
        )


def bandit_log_from_obp(feedback: Mapping[str, Any]) -> BanditLog:
    """Build a :class:`~ope.data.BanditLog` from an obp bandit-feedback dict.

    Args:
        feedback: dict with ``n_actions``, ``action``, ``reward`` and optionally ``n_rounds``,
            ``pscore``, ``position`` (0-based), ``context`` and ``action_context``. Other keys
            (``expected_reward``, ``pi_b``, ...) are ignored.

    Returns:
        The log.

    Raises:
        OPEInputError: missing keys, ``n_rounds`` inconsistent with the arrays, or invalid arrays.
    """
    _require(feedback, ("n_actions", "action", "reward"), "bandit-feedback")
    action = as_array(feedback["action"], "feedback['action']", ndim=1, kind="int")
    if feedback.get("n_rounds") is not None and int(feedback["n_rounds"]) != action.shape[0]:
        raise OPEInputError(
            f"`feedback['n_rounds']` must equal len(feedback['action']) = {action.shape[0]}; "
            f"found {feedback['n_rounds']}"
        )
    position = feedback.get("position")
    return BanditLog(
        reward=feedback["reward"], action=action, n_actions=int(feedback["n_actions"]),
        pscore=feedback.get("pscore"), position=position, context=feedback.get("context"),
        action_context=feedback.get("action_context"),
        n_positions=int(feedback["len_list"]) if feedback.get("len_list") is not None and position is not None
        else None,
    )


def bandit_log_to_obp(log: BanditLog) -> dict[str, Any]:
    """The obp bandit-feedback dict of ``log`` (absent fields are None; ``len_list`` = n_positions or 1)."""
    return {
        "n_rounds": log.n_rounds,
        "n_actions": log.n_actions,
        "action": log.action.copy(),
        "position": None if log.position is None else log.position.copy(),
        "reward": log.reward.copy(),
        "pscore": None if log.pscore is None else log.pscore.copy(),
        "context": None if log.context is None else log.context.copy(),
        "action_context": None if log.action_context is None else log.action_context.copy(),
        "len_list": int(log.n_positions or 1),
    }


def slate_log_from_obp(feedback: Mapping[str, Any]) -> SlateLog:
    """Build a :class:`~ope.data.SlateLog` from an obp slate-feedback dict (one entry per slot).

    Args:
        feedback: dict with ``slate_id``, ``position`` (0-based), ``action``, ``reward``, the number
            of actions as ``n_unique_action`` (or ``n_actions``), and optionally ``pscore``,
            ``pscore_item_position``, ``pscore_cascade`` and ``context`` (n_rounds, d).

    Returns:
        The log, slates ordered by ``slate_id`` and slots by ``position``.

    Raises:
        OPEInputError: missing keys, slates of different lengths, positions not 0..K-1 within a
            slate, or a slate ``pscore`` that varies within a slate.
    """
    _require(feedback, ("slate_id", "position", "action", "reward"), "slate-feedback")
    n_actions = feedback.get("n_unique_action", feedback.get("n_actions"))
    if n_actions is None:
        raise OPEInputError("`feedback` must hold 'n_unique_action' (or 'n_actions'); found neither")
    slate_id = as_array(feedback["slate_id"], "feedback['slate_id']", ndim=1, kind="int")
    position = as_array(feedback["position"], "feedback['position']", ndim=1, kind="int")
    m = slate_id.shape[0]
    order = np.lexsort((position, slate_id))
    ids, counts = np.unique(slate_id, return_counts=True)
    k = int(counts[0])
    if np.any(counts != k):
        raise OPEInputError(
            f"`feedback['slate_id']`: every slate must have the same number of slots; found sizes "
            f"{sorted(set(counts.tolist()))[:5]}"
        )
    n = ids.shape[0]
    pos_sorted = position[order].reshape(n, k)
    if np.any(pos_sorted != np.arange(k)[None, :]):
        raise OPEInputError(f"`feedback['position']` must be 0..{k - 1} exactly once within each slate")

    def per_slot(key: str) -> np.ndarray | None:
        value = feedback.get(key)
        if value is None:
            return None
        arr = np.asarray(value)
        if arr.shape != (m,):
            raise OPEInputError(f"`feedback['{key}']` must have shape ({m},) like `slate_id`; found {arr.shape}")
        return arr[order].reshape(n, k)

    slate_p = per_slot("pscore")
    slate_pscore = None
    if slate_p is not None:
        if np.any(~np.isclose(slate_p, slate_p[:, :1], rtol=1e-9, atol=0)):
            raise OPEInputError("`feedback['pscore']` (the slate's probability) must be constant within each slate")
        slate_pscore = slate_p[:, 0]
    return SlateLog(
        reward=per_slot("reward"),  # type: ignore[arg-type]
        slate=per_slot("action"),  # type: ignore[arg-type]
        n_actions=int(n_actions),
        slate_pscore=slate_pscore,
        marginal_pscore=per_slot("pscore_item_position"),
        cascade_pscore=per_slot("pscore_cascade"),
        context=feedback.get("context"),
    )


def slate_log_to_obp(log: SlateLog) -> dict[str, Any]:
    """The obp slate-feedback dict of ``log`` (one entry per slot; absent fields are None)."""
    n, k = log.n_rounds, log.slate_size

    def flat(arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else arr.reshape(n * k).copy()

    return {
        "n_rounds": n,
        "n_unique_action": log.n_actions,
        "len_list": k,
        "slate_id": np.repeat(np.arange(n), k),
        "position": np.tile(np.arange(k), n),
        "action": flat(log.slate),
        "reward": flat(log.reward),
        "pscore": None if log.slate_pscore is None else np.repeat(log.slate_pscore, k),
        "pscore_item_position": flat(log.marginal_pscore),
        "pscore_cascade": flat(log.cascade_pscore),
        "context": None if log.context is None else log.context.copy(),
    }
