"""Checks specific to the agents (slates, candidates, feedback), built on the generic :mod:`shopgym.checks`."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np

from agents.base import Feedback, PolicyInputError, Ranking, RankingContext

# the generic checks live in shopgym.checks; re-exported for the agents that import them from here
from shopgym.checks import check_bool as check_bool
from shopgym.checks import check_choice as check_choice
from shopgym.checks import check_float as check_float
from shopgym.checks import check_int as check_int
from shopgym.errors import ConfigError, ShopgymError


class NotFittedError(ShopgymError, RuntimeError):
    """A policy that learns from logs was asked to score before :meth:`fit` was called."""


def check_examination(value: Sequence[float] | np.ndarray | None, name: str = "examination") -> np.ndarray | None:
    """Per-slot examination probabilities: None, or a non-empty 1-d sequence of values in (0, 1].

    Returns:
        (K_max,) float64 copy, or None.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise ConfigError(f"`{name}` must be a sequence of probabilities in (0, 1], got a string {value!r}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"`{name}` must be a sequence of probabilities in (0, 1], got {value!r}") from exc
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"`{name}` must be a non-empty 1-d sequence of probabilities, got shape {array.shape}")
    bad = np.flatnonzero(~(np.isfinite(array) & (array > 0.0) & (array <= 1.0)))
    if bad.size:
        raise ConfigError(f"`{name}` must hold probabilities in (0, 1]; slot {bad[0] + 1} has {array[bad[0]]}")
    return array.copy()


def examination_for(examination: np.ndarray | None, k: int) -> np.ndarray:
    """(k,) float64 examination probabilities of slots 1..k (all ones when ``examination`` is None)."""
    if examination is None:
        return np.ones(k)
    if k > examination.size:
        raise PolicyInputError(
            f"the ranking has {k} slots but `examination` gives probabilities for only {examination.size}; "
            f"pass one probability per slot"
        )
    return examination[:k]


def check_k(k: Any, n_candidates: int) -> int:
    """Validate the slate size ``k`` against the number of candidates."""
    if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= int(k) <= n_candidates:
        raise PolicyInputError(f"`k` must be an int in [1, {n_candidates}] (the number of candidates), got {k!r}")
    return int(k)


def check_candidates(ctx: RankingContext, n_items: int, owner: str) -> None:
    """Raise PolicyInputError unless every candidate is a catalog index in [0, n_items)."""
    cands = ctx.candidates
    if cands.size and (int(cands.min()) < 0 or int(cands.max()) >= n_items):
        bad = np.argwhere((cands < 0) | (cands >= n_items))[0]
        raise PolicyInputError(
            f"ctx.candidates must be catalog indices in [0, {n_items}) (the item_index {owner} was fitted "
            f"with); got {cands[tuple(bad)]} at (request {bad[0]}, candidate {bad[1]})"
        )


def check_feedback(ctx: RankingContext, ranking: Ranking, feedback: Feedback) -> int:
    """Validate a (context, ranking, feedback) triple for ``update``; return the number of slots K."""
    slots = np.asarray(ranking.slots)
    b, n = ctx.batch_size, ctx.n_candidates
    if slots.ndim != 2 or slots.shape[0] != b:
        raise PolicyInputError(f"ranking.slots must have shape ({b}, K), got {slots.shape}")
    k = slots.shape[1]
    if not 1 <= k <= n:
        raise PolicyInputError(f"ranking.slots must have between 1 and {n} columns (slots), got {k}")
    if not np.issubdtype(slots.dtype, np.integer):
        raise PolicyInputError(f"ranking.slots must be integer column indices, got dtype {slots.dtype}")
    if slots.min() < 0 or slots.max() >= n:
        bad = np.argwhere((slots < 0) | (slots >= n))[0]
        raise PolicyInputError(
            f"ranking.slots must be column indices in [0, {n}); got {slots[tuple(bad)]} at "
            f"(request {bad[0]}, slot {bad[1]})"
        )
    for field in ("clicked", "carted", "purchased", "reward"):
        value = np.asarray(getattr(feedback, field))
        if value.shape != (b, k):
            raise PolicyInputError(f"feedback.{field} must have shape ({b}, {k}) like ranking.slots, got {value.shape}")
    if not np.isfinite(np.asarray(feedback.reward, dtype=np.float64)).all():
        raise PolicyInputError("feedback.reward must be finite")
    return k
