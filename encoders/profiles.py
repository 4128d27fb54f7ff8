r"""User profiles: pooled item vectors from interaction history, in logs and online in a simulator.

One state serves both places. :class:`ProfileState` holds, per user, a weighted sum of item vectors
and the total weight; :func:`update` is the batched, pure online step and :func:`profiles_from_logs`
builds the same state for every user of a log at once (a sparse matrix product, no loop over
users). :func:`vector` turns a state into unit profile vectors, with a default for cold-start users.

Poolings (``w`` is an interaction's weight, ``v`` its item's vector):

* ``mean``: every engaged interaction (behaviour weight > 0) has weight 1;
* ``behaviour``: weight = :class:`BehaviourWeights` of the strongest signal (purchase > cart > click > shown);
* ``recency``: weight 1, decayed exponentially with age (half-life);
* ``behaviour_recency``: both.

Cold start: a user with no engaged interaction (total weight 0), or whose weighted sum is the zero
vector, gets the ``default`` vector. For recommendation :func:`profiles_from_logs` uses the
**population mean** (the normalised mean of the warm users' profiles); in search mode
:class:`CompositeProfile` simply drops the missing history, so a cold user is served by the query
(and attributes) alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from encoders.base import ZERO_NORM, l2_normalize
from shopgym.checks import check_choice, check_float
from shopgym.data import schema as S
from shopgym.data.logged import LoggedData
from shopgym.errors import ConfigError, DataFormatError

Pooling = Literal["mean", "behaviour", "recency", "behaviour_recency"]
POOLINGS: tuple[str, ...] = ("mean", "behaviour", "recency", "behaviour_recency")


@dataclass(frozen=True)
class BehaviourWeights:
    """Weight of an interaction by its strongest signal: purchase > cart > click > shown without click.

    Args:
        shown: weight of an item shown but not clicked, >= 0 (0: impressions are not history).
        click: weight of a click, >= 0.
        cart: weight of an add-to-cart, >= 0.
        purchase: weight of a purchase, >= 0.
    """

    shown: float = 0.0
    click: float = 1.0
    cart: float = 2.0
    purchase: float = 4.0

    def __post_init__(self) -> None:
        for name in ("shown", "click", "cart", "purchase"):
            check_float(getattr(self, name), name, min_value=0.0)

    def of(
        self, clicked: np.ndarray, carted: np.ndarray | None = None, purchased: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-interaction weights (any shape; ``carted``/``purchased`` None means never).

        Args:
            clicked: 0/1 flags of any shape.
            carted: 0/1 flags of the same shape, or None.
            purchased: 0/1 flags of the same shape, or None.

        Returns:
            float64 weights of the same shape.
        """
        clicked = np.asarray(clicked).astype(bool)
        weights = np.where(clicked, float(self.click), float(self.shown))
        if carted is not None:
            weights = np.where(np.asarray(carted).astype(bool), float(self.cart), weights)
        if purchased is not None:
            weights = np.where(np.asarray(purchased).astype(bool), float(self.purchase), weights)
        return weights.astype(np.float64)


def decay_from_half_life(half_life: float) -> float:
    r"""Per-step decay factor :math:`\gamma = 2^{-1/h}` for a half-life of ``h`` steps (> 0)."""
    h = check_float(half_life, "half_life", min_value=0.0, min_inclusive=False)
    return float(0.5 ** (1.0 / h))


@dataclass(frozen=True)
class ProfileState:
    r"""Batched profile state: weighted sums of item vectors and total weights.

    Attributes:
        sum: (B, d) float64, :math:`\sum_i w_i v_i` (with decay applied).
        weight: (B,) float64, :math:`\sum_i w_i`; 0 means no history (cold start).
    """

    sum: np.ndarray
    weight: np.ndarray

    def __post_init__(self) -> None:
        if self.sum.ndim != 2 or self.weight.shape != (self.sum.shape[0],):
            raise ConfigError(
                f"ProfileState needs `sum` (B, d) and `weight` (B,), got {self.sum.shape} and {self.weight.shape}"
            )

    @classmethod
    def zeros(cls, batch: int, dim: int) -> ProfileState:
        """An all-cold state for ``batch`` users and ``dim``-dimensional item vectors."""
        return cls(np.zeros((batch, dim), dtype=np.float64), np.zeros(batch, dtype=np.float64))

    @property
    def is_cold(self) -> np.ndarray:
        """(B,) bool: users without usable history."""
        return (self.weight <= 0) | (np.linalg.norm(self.sum, axis=1) <= ZERO_NORM)

    def take(self, rows: np.ndarray) -> ProfileState:
        """The state of the given users (e.g. to start simulator sessions from logged profiles).

        Args:
            rows: (n,) int row indices.

        Returns:
            A state with n users.
        """
        rows = np.asarray(rows, dtype=np.int64)
        return ProfileState(self.sum[rows].copy(), self.weight[rows].copy())


def update(state: ProfileState, item_vecs: np.ndarray, weights: np.ndarray, decay: float = 1.0) -> ProfileState:
    r"""One online step for a batch of users: decay the old state, add this step's weighted items.

    Note:
        .. math::
            s_b \leftarrow \gamma\, s_b + \sum_k w_{bk} v_{bk}, \qquad
            W_b \leftarrow \gamma\, W_b + \sum_k w_{bk}

        :math:`\gamma = 1` gives mean/behaviour pooling; :math:`\gamma < 1` recency weighting
        (see :func:`decay_from_half_life`). Pad unequal numbers of items with weight 0.

    Args:
        state: the current state, B users, dimension d.
        item_vecs: (B, k, d) vectors of the items each user interacted with at this step.
        weights: (B, k) non-negative weights (e.g. :meth:`BehaviourWeights.of` of the feedback).
        decay: :math:`\gamma` in (0, 1].

    Returns:
        The new state (the input is not modified).

    Raises:
        ConfigError: shapes disagree or ``decay``/``weights`` are out of range.
    """
    gamma = check_float(decay, "decay", min_value=0.0, max_value=1.0, min_inclusive=False)
    item_vecs = np.asarray(item_vecs, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    batch, dim = state.sum.shape
    if item_vecs.ndim != 3 or item_vecs.shape[0] != batch or item_vecs.shape[2] != dim:
        raise ConfigError(f"`item_vecs` must have shape ({batch}, k, {dim}), got {item_vecs.shape}")
    if weights.shape != item_vecs.shape[:2]:
        raise ConfigError(f"`weights` must have shape {item_vecs.shape[:2]}, got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ConfigError("`weights` must be finite and >= 0")
    added = np.einsum("bk,bkd->bd", weights, item_vecs)
    return ProfileState(gamma * state.sum + added, gamma * state.weight + weights.sum(axis=1))


def vector(state: ProfileState, default: np.ndarray) -> np.ndarray:
    r"""Unit profile vectors; cold users get ``default``.

    Note:
        .. math:: p_b = s_b / \lVert s_b \rVert_2 \ \text{if } W_b > 0 \text{ and } s_b \neq 0,
                  \quad \text{else } \text{default}_b / \lVert \text{default}_b \rVert_2

    Args:
        state: B users, dimension d.
        default: (d,) or (B, d) cold-start vector(s); a zero default leaves cold rows zero.

    Returns:
        (B, d) float32.
    """
    batch, dim = state.sum.shape
    default = np.asarray(default, dtype=np.float64)
    if default.shape not in ((dim,), (batch, dim)):
        raise ConfigError(f"`default` must have shape ({dim},) or ({batch}, {dim}), got {default.shape}")
    fallback = l2_normalize(np.broadcast_to(default, (batch, dim)))
    return np.where(state.is_cold[:, None], fallback, l2_normalize(state.sum)).astype(np.float32)


def population_default(profiles: np.ndarray, cold: np.ndarray, item_vectors: np.ndarray | None = None) -> np.ndarray:
    """The population-mean cold-start vector.

    Args:
        profiles: (n_users, d) unit profile vectors.
        cold: (n_users,) bool, True for users without history (left out of the mean).
        item_vectors: (n_items, d) used when no user is warm; None then gives the zero vector.

    Returns:
        (d,) float32: the normalised mean of the warm profiles (or of the items), or zeros.
    """
    warm = profiles[~np.asarray(cold, dtype=bool)]
    source = warm if len(warm) else item_vectors
    if source is None or len(source) == 0:
        return np.zeros(profiles.shape[1], dtype=np.float32)
    return l2_normalize(np.asarray(source, dtype=np.float64).mean(axis=0, keepdims=True))[0]


@dataclass(frozen=True)
class UserProfiles:
    """Profiles of the users of a log.

    Attributes:
        user_ids: (n_users,) index of user ids; ``user_ids.get_indexer(ids)`` gives state rows.
        state: the pooled state, one row per user.
        default: (d,) float32 cold-start vector (population mean unless given).
        pooling: the pooling used.
    """

    user_ids: pd.Index
    state: ProfileState
    default: np.ndarray
    pooling: str

    @property
    def vectors(self) -> np.ndarray:
        """(n_users, d) float32 unit profiles, ``default`` for cold users."""
        return vector(self.state, self.default)

    def lookup(self, user_ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """Profiles of the given users; users not in the log get ``default``.

        Args:
            user_ids: n user ids.

        Returns:
            (n, d) float32.
        """
        query = pd.Index(pd.array(np.asarray(user_ids, dtype=object).astype(str), dtype="string"))
        rows = self.user_ids.get_indexer(query)
        out = np.broadcast_to(l2_normalize(self.default[None, :]), (len(rows), self.default.shape[0])).copy()
        known = rows >= 0
        out[known] = self.vectors[rows[known]]
        return out


def interaction_weights(
    interactions: pd.DataFrame,
    pooling: Pooling = "mean",
    behaviour: BehaviourWeights | None = None,
    half_life: str | pd.Timedelta = "7D",
    user_column: str = S.USER_ID,
) -> np.ndarray:
    r"""Per-row pooling weights of an interactions table (see the module docstring).

    Note:
        Recency uses each user's most recent engaged interaction :math:`T_u` as reference,
        :math:`w_i \leftarrow w_i \cdot 2^{-(T_u - t_i) / h}`; since profiles are normalised, the
        reference only scales a user's weights, never the direction of the profile.

    Args:
        interactions: a validated interactions table.
        pooling: one of ``POOLINGS``.
        behaviour: behaviour weights; None means the defaults (shown 0, click 1, cart 2, purchase 4).
        half_life: recency half-life (a pandas Timedelta or string such as "7D").
        user_column: the column holding user ids.

    Returns:
        (n_rows,) float64.
    """
    pooling = check_choice(pooling, "pooling", POOLINGS)  # type: ignore[assignment]
    behaviour = BehaviourWeights() if behaviour is None else behaviour
    raw = behaviour.of(
        interactions[S.CLICKED].to_numpy(),
        interactions[S.CARTED].to_numpy() if S.CARTED in interactions.columns else None,
        interactions[S.PURCHASED].to_numpy() if S.PURCHASED in interactions.columns else None,
    )
    weights = raw if pooling.startswith("behaviour") else (raw > 0).astype(np.float64)
    if pooling.endswith("recency"):
        try:
            h = pd.Timedelta(half_life)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"`half_life` must be a duration such as '7D', got {half_life!r}") from exc
        if h <= pd.Timedelta(0):
            raise ConfigError(f"`half_life` must be positive, got {half_life!r}")
        seconds = (interactions[S.TIMESTAMP] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
        engaged_time = pd.Series(np.where(weights > 0, seconds, -np.inf))
        latest = engaged_time.groupby(interactions[user_column].to_numpy(), sort=False).transform("max").to_numpy()
        age = np.where(weights > 0, latest - seconds, 0.0)
        weights = weights * np.exp2(-age / h.total_seconds())
    return weights


def profiles_from_logs(
    log: LoggedData,
    item_vectors: np.ndarray,
    *,
    pooling: Pooling = "mean",
    behaviour: BehaviourWeights | None = None,
    half_life: str | pd.Timedelta = "7D",
    user_column: str = S.USER_ID,
    default: np.ndarray | None = None,
) -> UserProfiles:
    r"""Pool item vectors over each user's logged interactions.

    Note:
        With :math:`W \in \mathbb{R}^{U \times I}` the summed weights of user :math:`u`'s
        interactions with item :math:`i` (:func:`interaction_weights`) and :math:`V` the item vectors,

        .. math:: S = W V, \qquad p_u = S_u / \lVert S_u \rVert_2 .

    Args:
        log: the logged data.
        item_vectors: (n_items, d) float, row ``j`` for ``log.items`` row ``j``.
        pooling: "mean", "behaviour", "recency" or "behaviour_recency".
        behaviour: behaviour weights (default: shown 0, click 1, cart 2, purchase 4).
        half_life: recency half-life (e.g. "7D"), for the recency poolings.
        user_column: the column that identifies users (e.g. ``session_id`` for session profiles).
        default: (d,) cold-start vector; None uses the population mean.

    Returns:
        UserProfiles for every user in the log (users without engagement are cold).

    Raises:
        DataFormatError: the log has no ``user_column``.
        ConfigError: ``item_vectors`` does not have one row per item, or an option is invalid.
    """
    inter = log.interactions
    if user_column not in inter.columns:
        raise DataFormatError(
            log.name, f"user profiles need a user id column, but the interactions have none "
            f"(columns: {list(inter.columns)[:20]})", column=user_column,
            hint="pass user_column='session_id' for session profiles; logs such as OBD have no user ids",
        )
    item_vectors = np.asarray(item_vectors, dtype=np.float64)
    if item_vectors.ndim != 2 or item_vectors.shape[0] != len(log.items):
        raise ConfigError(
            f"`item_vectors` must have shape ({len(log.items)}, d), one row per item of the log, "
            f"got {item_vectors.shape}"
        )
    weights = interaction_weights(inter, pooling, behaviour, half_life, user_column)
    user_codes, user_ids = pd.factorize(inter[user_column], sort=True)
    item_rows = log.item_index().get_indexer(pd.Index(inter[S.ITEM_ID]))
    n_users = len(user_ids)
    matrix = sp.csr_matrix((weights, (user_codes, item_rows)), shape=(n_users, len(log.items)))
    state = ProfileState(
        np.asarray(matrix @ item_vectors, dtype=np.float64),
        np.bincount(user_codes, weights=weights, minlength=n_users).astype(np.float64),
    )
    if default is None:
        default = population_default(l2_normalize(state.sum), state.is_cold, item_vectors)
    default = np.asarray(default, dtype=np.float32)
    if default.shape != (item_vectors.shape[1],):
        raise ConfigError(f"`default` must have shape ({item_vectors.shape[1]},), got {default.shape}")
    return UserProfiles(pd.Index(user_ids, name=user_column), state, default, str(pooling))


@dataclass(frozen=True)
class CompositeProfile:
    r"""The search-mode profile :math:`P = a\,q + b\,\text{attr} + c\,h`, L2-normalised.

    Note:
        Each part is first normalised to unit length; a part that is None, or a row of it that is
        all zeros, is *missing* (an empty query, an item without attributes, a cold user's history)
        and is skipped, the remaining weights being renormalised to sum to 1:

        .. math::
            P_b = \frac{\sum_j \alpha_j m_{bj} \hat x_{bj}}{\sum_j \alpha_j m_{bj}}, \qquad
            \text{profile}_b = P_b / \lVert P_b \rVert_2,

        with :math:`\alpha = (a, b, c)` and :math:`m_{bj} \in \{0, 1\}` the presence mask. A row
        whose parts are all missing gets the ``default`` of :meth:`combine` (zero if None).

    Args:
        query: :math:`a`, weight of the query intent, >= 0.
        attributes: :math:`b`, weight of the item-attribute vector, >= 0.
        history: :math:`c`, weight of the interaction history, >= 0.
        name: a label for configs and reports.
    """

    query: float = 0.5
    attributes: float = 0.2
    history: float = 0.3
    name: str = "composite"

    def __post_init__(self) -> None:
        for field in ("query", "attributes", "history"):
            check_float(getattr(self, field), field, min_value=0.0)
        if self.query + self.attributes + self.history <= 0:
            raise ConfigError("at least one of `query`, `attributes`, `history` must be > 0, got all 0")

    def combine(
        self,
        query: np.ndarray | None = None,
        attributes: np.ndarray | None = None,
        history: np.ndarray | None = None,
        *,
        default: np.ndarray | None = None,
    ) -> np.ndarray:
        """Combine the parts (see the class note).

        Args:
            query: (B, d) query vectors, or None.
            attributes: (B, d) attribute vectors, or None.
            history: (B, d) history profiles (cold rows zero), or None.
            default: (d,) or (B, d) used where every part is missing; None leaves such rows zero.

        Returns:
            (B, d) float32 unit rows (zero only where everything is missing and ``default`` is None).

        Raises:
            ConfigError: no part is given, or the parts' shapes differ.
        """
        parts = [(w, x) for w, x in ((self.query, query), (self.attributes, attributes),
                                     (self.history, history)) if x is not None]
        if not parts:
            raise ConfigError("CompositeProfile.combine needs at least one of `query`, `attributes`, `history`")
        shapes = {np.shape(x) for _, x in parts}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ConfigError(f"the profile parts must all have the same (B, d) shape, got {sorted(shapes)}")
        batch, dim = next(iter(shapes))
        total = np.zeros((batch, dim), dtype=np.float64)
        mass = np.zeros(batch, dtype=np.float64)
        for weight, x in parts:
            unit = l2_normalize(np.asarray(x, dtype=np.float64)).astype(np.float64)
            present = np.linalg.norm(unit, axis=1) > 0.5
            total += weight * unit
            mass += weight * present
        combined = np.where(mass[:, None] > 0, total / np.maximum(mass, ZERO_NORM)[:, None], 0.0)
        out = l2_normalize(combined)
        if default is not None:
            fallback = l2_normalize(np.broadcast_to(np.asarray(default, dtype=np.float64), (batch, dim)))
            out = np.where((np.linalg.norm(out, axis=1) > 0)[:, None], out, fallback).astype(np.float32)
        return out
