"""Logged-feedback containers for OPE: :class:`BanditLog` (one action per round) and :class:`SlateLog`.

Both are frozen dataclasses validated once in ``__post_init__``; the arrays they hold are converted
(float64 rewards and probabilities, int64 actions and positions) but not copied when already of
the right dtype, so treat them as read-only. Positions are **0-based** here (obp's convention),
while the logged-data format (:mod:`shopgym.data.schema`) numbers them from 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ope.checks import (
    as_array,
    check_finite,
    check_int_range,
    check_probabilities,
    check_scalar,
    check_shape,
)
from ope.errors import OPEInputError

_RTOL = 1e-6
_ATOL = 1e-12


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class BanditLog:
    """Logged bandit feedback: in round ``i`` the logging policy chose ``action[i]`` and saw ``reward[i]``.

    When the log has positions (e.g. one row per shown slot of a ranking, as in the Open Bandit
    Dataset), each row is a round, and ``position[i]`` is part of its context: the evaluation
    policy's probabilities may depend on it (``action_dist`` of shape (n, n_actions, n_positions)).

    Attributes:
        reward: (n_rounds,) float64, finite.
        action: (n_rounds,) int64 in [0, n_actions).
        n_actions: number of actions (items), >= 1.
        pscore: (n_rounds,) float64 in (0, 1]: the logging policy's probability of the logged
            action (at the logged position), or None when the log has no propensities.
        position: (n_rounds,) int64 in [0, n_positions), or None.
        context: (n_rounds, dim_context) float64, finite, or None.
        action_context: (n_actions, dim_action_context) float64 item features (e.g. text
            embeddings), or None.
        n_positions: number of positions; inferred as ``position.max() + 1`` when None; 0 when the
            log has no positions.

    Raises:
        OPEInputError: on any invalid field (the message names it, the expectation and what was found).
    """

    reward: np.ndarray
    action: np.ndarray
    n_actions: int
    pscore: np.ndarray | None = None
    position: np.ndarray | None = None
    context: np.ndarray | None = None
    action_context: np.ndarray | None = None
    n_positions: int | None = None

    def __post_init__(self) -> None:
        check_scalar(self.n_actions, "n_actions", int, min_val=1)
        reward = as_array(self.reward, "reward", ndim=1)
        n = reward.shape[0]
        if n == 0:
            raise OPEInputError("`reward` must hold at least one round; found an empty array")
        check_finite(reward, "reward")
        action = as_array(self.action, "action", ndim=1, kind="int")
        check_shape(action, "action", (n,), "(n_rounds,), like `reward`")
        check_int_range(action, "action", 0, int(self.n_actions), "action indices, 0-based")
        _set(self, "reward", reward)
        _set(self, "action", action)
        _set(self, "n_actions", int(self.n_actions))
        if self.pscore is not None:
            pscore = as_array(self.pscore, "pscore", ndim=1)
            check_shape(pscore, "pscore", (n,), "(n_rounds,), like `reward`")
            check_probabilities(
                pscore, "pscore", allow_zero=False,
                meaning="the logging policy's probability of the logged action; drop rows without "
                "one, or pass pscore=None if the log has none",
            )
            _set(self, "pscore", pscore)
        if self.position is not None:
            position = as_array(self.position, "position", ndim=1, kind="int")
            check_shape(position, "position", (n,), "(n_rounds,), like `reward`")
            n_positions = int(position.max()) + 1 if self.n_positions is None else self.n_positions
            check_scalar(n_positions, "n_positions", int, min_val=1)
            check_int_range(position, "position", 0, int(n_positions), "slot indices, 0-based")
            _set(self, "position", position)
            _set(self, "n_positions", int(n_positions))
        else:
            if self.n_positions not in (None, 0):
                raise OPEInputError(
                    f"`n_positions` must be None or 0 when `position` is None; found {self.n_positions!r}"
                )
            _set(self, "n_positions", 0)
        if self.context is not None:
            context = as_array(self.context, "context", ndim=2)
            if context.shape[0] != n:
                raise OPEInputError(
                    f"`context` must have shape (n_rounds={n}, dim_context); found shape {context.shape}"
                )
            check_finite(context, "context")
            _set(self, "context", context)
        if self.action_context is not None:
            action_context = as_array(self.action_context, "action_context", ndim=2)
            if action_context.shape[0] != self.n_actions:
                raise OPEInputError(
                    f"`action_context` must have shape (n_actions={self.n_actions}, dim_action_context); "
                    f"found shape {action_context.shape}"
                )
            check_finite(action_context, "action_context")
            _set(self, "action_context", action_context)

    @property
    def n_rounds(self) -> int:
        """Number of logged rounds."""
        return int(self.reward.shape[0])

    @property
    def has_pscore(self) -> bool:
        """Whether the log carries the logging policy's propensities."""
        return self.pscore is not None

    @property
    def logged_mean(self) -> float:
        """Mean logged reward: the on-policy value estimate of the logging policy."""
        return float(self.reward.mean())

    def subset(self, rows: np.ndarray) -> BanditLog:
        """The log restricted to (or resampled at) ``rows``: (m,) int indices or (n_rounds,) bool mask."""
        idx = np.asarray(rows)

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[idx]

        return BanditLog(
            reward=self.reward[idx], action=self.action[idx], n_actions=self.n_actions,
            pscore=pick(self.pscore), position=pick(self.position), context=pick(self.context),
            action_context=self.action_context, n_positions=self.n_positions or None,
        )


def _check_slate_probs(
    slate: np.ndarray | None,
    marginal: np.ndarray | None,
    cascade: np.ndarray | None,
    names: tuple[str, str, str],
) -> None:
    """Identities every ranking policy satisfies; a violation means mislabelled propensities."""
    slate_name, marginal_name, cascade_name = names
    if cascade is not None and cascade.shape[1] > 1:
        rising = cascade[:, 1:] > cascade[:, :-1] * (1 + _RTOL) + _ATOL
        if rising.any():
            i, k = np.argwhere(rising)[0]
            raise OPEInputError(
                f"`{cascade_name}` must be non-increasing along positions (the probability of a longer "
                f"prefix of the slate cannot be larger); found {int(rising.sum())} increases, first in "
                f"round {i}: {cascade[i, k]:.6g} at slot {k} then {cascade[i, k + 1]:.6g} at slot {k + 1}"
            )
    if cascade is not None and marginal is not None:
        bad = ~np.isclose(cascade[:, 0], marginal[:, 0], rtol=_RTOL, atol=_ATOL)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise OPEInputError(
                f"`{cascade_name}[:, 0]` must equal `{marginal_name}[:, 0]` (both are the probability of "
                f"the first slot's item); found {int(bad.sum())} rounds that differ, first round {i}: "
                f"{cascade[i, 0]:.6g} vs {marginal[i, 0]:.6g}"
            )
    if cascade is not None and slate is not None:
        bad = ~np.isclose(cascade[:, -1], slate, rtol=_RTOL, atol=_ATOL)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise OPEInputError(
                f"`{cascade_name}[:, -1]` must equal `{slate_name}` (the full prefix is the whole slate); "
                f"found {int(bad.sum())} rounds that differ, first round {i}: {cascade[i, -1]:.6g} vs "
                f"{slate[i]:.6g}"
            )
    if marginal is not None and slate is not None:
        bad = slate[:, None] > marginal * (1 + _RTOL) + _ATOL
        if bad.any():
            i, k = np.argwhere(bad)[0]
            raise OPEInputError(
                f"`{slate_name}` must not exceed `{marginal_name}` at any slot (the whole slate is rarer "
                f"than one of its items at its slot); found {int(bad.any(axis=1).sum())} rounds that do, "
                f"first round {i}: {slate[i]:.6g} > {marginal[i, k]:.6g} at slot {k}"
            )


@dataclass(frozen=True)
class SlateLog:
    """Logged rankings: in round ``i`` the logging policy showed ``slate[i]`` (K slots) and saw ``reward[i]``.

    Attributes:
        reward: (n_rounds, slate_size) float64 per-slot rewards (e.g. clicks), finite.
        slate: (n_rounds, slate_size) int64 action shown in each slot, in [0, n_actions).
        n_actions: number of actions (items), >= 1.
        slate_pscore: (n_rounds,) probability of the whole logged slate under the logging policy,
            in (0, 1], or None.
        marginal_pscore: (n_rounds, slate_size) probability that the logging policy puts the logged
            item of slot k at slot k (position-wise marginal), in (0, 1], or None.
        cascade_pscore: (n_rounds, slate_size) probability of the logged prefix (slots 0..k), in
            (0, 1], non-increasing along k, or None.
        context: (n_rounds, dim_context) float64, or None.

    Raises:
        OPEInputError: on any invalid field, or when the propensities contradict each other
            (e.g. ``cascade_pscore[:, -1] != slate_pscore``).
    """

    reward: np.ndarray
    slate: np.ndarray
    n_actions: int
    slate_pscore: np.ndarray | None = None
    marginal_pscore: np.ndarray | None = None
    cascade_pscore: np.ndarray | None = None
    context: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_scalar(self.n_actions, "n_actions", int, min_val=1)
        reward = as_array(self.reward, "reward", ndim=2)
        n, k = reward.shape
        if n == 0 or k == 0:
            raise OPEInputError(f"`reward` must have shape (n_rounds >= 1, slate_size >= 1); found {reward.shape}")
        check_finite(reward, "reward")
        slate = as_array(self.slate, "slate", ndim=2, kind="int")
        check_shape(slate, "slate", (n, k), "(n_rounds, slate_size), like `reward`")
        check_int_range(slate, "slate", 0, int(self.n_actions), "action indices, 0-based")
        _set(self, "reward", reward)
        _set(self, "slate", slate)
        _set(self, "n_actions", int(self.n_actions))
        meaning = "the logging policy's probability of what was logged; pass None if unknown"
        if self.slate_pscore is not None:
            p = as_array(self.slate_pscore, "slate_pscore", ndim=1)
            check_shape(p, "slate_pscore", (n,), "(n_rounds,)")
            check_probabilities(p, "slate_pscore", allow_zero=False, meaning=meaning)
            _set(self, "slate_pscore", p)
        for name in ("marginal_pscore", "cascade_pscore"):
            value = getattr(self, name)
            if value is not None:
                p = as_array(value, name, ndim=2)
                check_shape(p, name, (n, k), "(n_rounds, slate_size), like `reward`")
                check_probabilities(p, name, allow_zero=False, meaning=meaning)
                _set(self, name, p)
        _check_slate_probs(self.slate_pscore, self.marginal_pscore, self.cascade_pscore,
                           ("slate_pscore", "marginal_pscore", "cascade_pscore"))
        if self.context is not None:
            context = as_array(self.context, "context", ndim=2)
            if context.shape[0] != n:
                raise OPEInputError(
                    f"`context` must have shape (n_rounds={n}, dim_context); found shape {context.shape}"
                )
            check_finite(context, "context")
            _set(self, "context", context)

    @property
    def n_rounds(self) -> int:
        """Number of logged slates."""
        return int(self.reward.shape[0])

    @property
    def slate_size(self) -> int:
        """Number of slots per slate (K)."""
        return int(self.reward.shape[1])

    @property
    def logged_mean(self) -> float:
        """Mean over rounds of the summed slot rewards: the logging policy's on-policy value."""
        return float(self.reward.sum(axis=1).mean())

    def subset(self, rows: np.ndarray) -> SlateLog:
        """The log restricted to (or resampled at) ``rows``: (m,) int indices or (n_rounds,) bool mask."""
        idx = np.asarray(rows)

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[idx]

        return SlateLog(
            reward=self.reward[idx], slate=self.slate[idx], n_actions=self.n_actions,
            slate_pscore=pick(self.slate_pscore), marginal_pscore=pick(self.marginal_pscore),
            cascade_pscore=pick(self.cascade_pscore), context=pick(self.context),
        )


@dataclass(frozen=True)
class SlateTarget:
    """The evaluation policy's probabilities of each logged slate, as the slate estimators need them.

    Attributes:
        slate_prob: (n_rounds,) probability of the whole logged slate (standard slate IPS), or None.
        marginal_prob: (n_rounds, slate_size) probability of the logged item at its slot
            (independent IPS), or None.
        cascade_prob: (n_rounds, slate_size) probability of the logged prefix up to each slot
            (reward-interaction IPS), or None.

    Build it with :func:`ope.targets.slate_target_from_position_dist` or
    :func:`ope.targets.slate_target_plackett_luce`, or from your policy's own computation.

    Raises:
        OPEInputError: a field is outside [0, 1], has the wrong shape, or contradicts another.
    """

    slate_prob: np.ndarray | None = None
    marginal_prob: np.ndarray | None = None
    cascade_prob: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.slate_prob is None and self.marginal_prob is None and self.cascade_prob is None:
            raise OPEInputError(
                "`SlateTarget` needs at least one of `slate_prob`, `marginal_prob`, `cascade_prob`; found none"
            )
        meaning = "the evaluation policy's probability of what was logged"
        if self.slate_prob is not None:
            p = as_array(self.slate_prob, "slate_prob", ndim=1)
            check_probabilities(p, "slate_prob", meaning=meaning)
            _set(self, "slate_prob", p)
        shape: tuple[int, ...] | None = None
        for name in ("marginal_prob", "cascade_prob"):
            value = getattr(self, name)
            if value is not None:
                p = as_array(value, name, ndim=2)
                if shape is not None:
                    check_shape(p, name, shape, "like `marginal_prob`")
                shape = p.shape
                check_probabilities(p, name, meaning=meaning)
                _set(self, name, p)
        lengths = {a.shape[0] for a in (self.slate_prob, self.marginal_prob, self.cascade_prob) if a is not None}
        if len(lengths) > 1:
            raise OPEInputError(
                f"`SlateTarget` fields must cover the same rounds; found lengths {sorted(lengths)}"
            )
        _check_slate_probs(self.slate_prob, self.marginal_prob, self.cascade_prob,
                           ("slate_prob", "marginal_prob", "cascade_prob"))

    @property
    def n_rounds(self) -> int:
        """Number of rounds covered."""
        for arr in (self.slate_prob, self.marginal_prob, self.cascade_prob):
            if arr is not None:
                return int(arr.shape[0])
        raise AssertionError("unreachable: validated in __post_init__")
