"""Response backends: who answers the simulated shopper's clicks.

* :class:`FittedBackend`: the user-response model fitted from logs (the simulator proper);
* :class:`TrueWorldBackend`: the synthetic shop's ground-truth model (the "true world"), so that the
  fitted simulator and the true world can be compared on the same policies.

Both expose the same batched interface over a :class:`Sessions` state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from envs.fitted import ResponseModel, page_features
from envs.space import ItemSpace
from envs.synthetic.world import Intent, SyntheticWorld


@dataclass(frozen=True)
class Sessions:
    """Who is shopping, for a batch of B sessions.

    Attributes:
        user: (B,) row in the env's user table, -1 for users unknown to the logs.
        world_user: (B,) user index in the synthetic world (true-world backend), else -1.
        intent: the sessions' intents (true-world backend), else None.
        query: (B,) query index in the item space, -1 when browsing.
        is_search: (B,) bool.
        fake: (B,) bool, fake users (robustness option) who click at random and never buy.
    """

    user: np.ndarray
    world_user: np.ndarray
    intent: Intent | None
    query: np.ndarray
    is_search: np.ndarray
    fake: np.ndarray

    def take(self, rows: np.ndarray) -> Sessions:
        """The sub-batch ``rows``."""
        return Sessions(self.user[rows], self.world_user[rows], None if self.intent is None else self.intent.take(rows),
                        self.query[rows], self.is_search[rows], self.fake[rows])


class Backend(Protocol):
    """What the env needs from a response model."""

    def examination(self, n_positions: int) -> np.ndarray:
        """(K,) examination probability of slots 1..K."""
        ...

    def probabilities(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """(B, K, 3): P(click | examined), P(cart | click), P(purchase | cart) of each shown item."""
        ...

    def continuation(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray, clicked: np.ndarray,
                     purchased: np.ndarray, repeat_share: np.ndarray, attract: np.ndarray,
                     page: np.ndarray) -> np.ndarray:
        """(B,) probability that each session goes on to another page."""
        ...


class FittedBackend:
    """Answers with a :class:`~envs.fitted.ResponseModel` fitted from logs."""

    def __init__(self, model: ResponseModel, space: ItemSpace) -> None:
        model.check_space(space)
        self.model = model
        self.space = space

    def examination(self, n_positions: int) -> np.ndarray:
        """Fitted position bias (power law beyond the logged positions)."""
        return self.model.examination(n_positions)

    def probabilities(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """Fitted attractiveness and conversion."""
        query = np.where(sessions.query[:, None] >= 0, self.space.query_vecs[np.maximum(sessions.query, 0)], 0.0) \
            if len(self.space.query_vecs) else np.zeros_like(profile)
        return self.model.predict(profile, self.space.item_vecs[shown], query, sessions.is_search, shown,
                                  sessions.user)

    def continuation(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray, clicked: np.ndarray,
                     purchased: np.ndarray, repeat_share: np.ndarray, attract: np.ndarray,
                     page: np.ndarray) -> np.ndarray:
        """Fitted continuation model on page features."""
        n_clicks = clicked.sum(axis=1)
        features = page_features(n_clicks > 0, n_clicks, np.asarray(purchased.any(axis=1)), repeat_share,
                                 attract[:, :3].mean(axis=1), sessions.is_search, page)
        return self.model.continuation(features)


class TrueWorldBackend:
    """Answers with the synthetic world's ground truth (needs ``Sessions.world_user`` and ``intent``)."""

    def __init__(self, world: SyntheticWorld) -> None:
        self.world = world

    def examination(self, n_positions: int) -> np.ndarray:
        """True examination k ** -eta."""
        return self.world.examination_probs(n_positions)

    def probabilities(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """True attractiveness and conversion."""
        assert sessions.intent is not None
        attract = self.world.attractiveness(sessions.world_user, shown, sessions.intent)
        cart, buy = self.world.conversion(sessions.world_user, shown)
        return np.stack([attract, cart, buy], axis=2)

    def continuation(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray, clicked: np.ndarray,
                     purchased: np.ndarray, repeat_share: np.ndarray, attract: np.ndarray,
                     page: np.ndarray) -> np.ndarray:
        """True continuation (patience, repetition, irrelevance, purchase exit)."""
        assert sessions.intent is not None
        return self.world.continuation(sessions.world_user, shown, repeat_share, np.asarray(purchased.any(axis=1)),
                                       sessions.intent)
