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
import scipy.sparse as sp
from scipy.special import expit, softmax

from envs.fitted import ResponseModel, page_features
from envs.space import ItemSpace
from envs.synthetic import vocab
from envs.synthetic.world import Intent, SyntheticWorld
from shopgym.errors import ConfigError


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
        context: (B, m) encoded request context of each session (from the logged request it started from), or
            None (the fitted model then uses its training mean).
    """

    user: np.ndarray
    world_user: np.ndarray
    intent: Intent | None
    query: np.ndarray
    is_search: np.ndarray
    fake: np.ndarray
    context: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Sessions:
        """The sub-batch ``rows``."""
        return Sessions(self.user[rows], self.world_user[rows], None if self.intent is None else self.intent.take(rows),
                        self.query[rows], self.is_search[rows], self.fake[rows],
                        None if self.context is None else self.context[rows])


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
    """Answers with a :class:`~envs.fitted.ResponseModel` fitted from logs.

    Args:
        model: the fitted model.
        space: the item space it was fitted on.
        purchases: (n_users, n_items) the env's known shoppers' purchase counts in the training logs, the repeat
            feature of a purchase-choice model (:mod:`envs.fitted.choice`); None: no repeats.
    """

    def __init__(self, model: ResponseModel, space: ItemSpace, purchases: sp.csr_array | None = None) -> None:
        model.check_space(space)
        self.model = model
        self.space = space
        self.purchases = purchases

    @property
    def single_choice(self) -> bool:
        """Whether each page ends in at most one purchase (a purchase-choice model)."""
        return self.model.single_choice

    def repeats(self, user: np.ndarray, shown: np.ndarray) -> np.ndarray | None:
        """(B, K) earlier purchases of each shown item by its shopper (unknown shoppers: 0), or None."""
        if self.purchases is None or not self.model.single_choice:
            return None
        rows = np.broadcast_to(np.maximum(user, 0)[:, None], shown.shape)
        counts = np.asarray(self.purchases[rows.reshape(-1), shown.reshape(-1)]).reshape(shown.shape)
        return np.where(user[:, None] >= 0, counts, 0.0)

    def examination(self, n_positions: int) -> np.ndarray:
        """Fitted position bias (power law beyond the logged positions)."""
        return self.model.examination(n_positions)

    def probabilities(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """Fitted attractiveness and conversion."""
        query = np.where(sessions.query[:, None] >= 0, self.space.query_vecs[np.maximum(sessions.query, 0)], 0.0) \
            if len(self.space.query_vecs) else np.zeros_like(profile)
        return self.model.predict(profile, self.space.item_vecs[shown], query, sessions.is_search, shown,
                                  sessions.user, sessions.context, self.repeats(sessions.user, shown))

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


class SegmentReferenceBackend(TrueWorldBackend):
    r"""The synthetic world's shoppers as seen by a model that knows each shopper's *segment* exactly, nothing more.

    A reference for the fidelity report: how close to the truth could a simulator fitted from logs get if it
    identified every shopper's taste segment perfectly, but knew nothing of their individual deviations from
    it, nor of a browsing session's latent intent? Each shopper answers like the average of ``n_peers`` fixed
    (seeded) random members of their segment:

    .. math::
        \bar\alpha(u, i) = \frac1M \sum_{m=1}^{M} \Big[\pi_{u_m}(c_i)\, \sigma(\ell_{u_m i} + \beta)
        + (1 - \pi_{u_m}(c_i))\, \sigma(\ell_{u_m i})\Big]

    when browsing, where :math:`\ell` is the true logit without the intent term, :math:`\pi_{u}(c)` the
    probability that a browsing session of :math:`u` intends category :math:`c` (the softmax of
    :math:`u`'s category tastes, as sessions are drawn) and :math:`\beta` the browse-intent bonus. For a
    search the query is observable, so the peers answer with the true intent term. Cart and purchase are
    the peers' mean conversion; session continuation is the real shopper's (patience is individual).
    A model fitted from logs can beat this reference only by learning individual tastes from the logs.

    Args:
        world: the synthetic world.
        n_peers: segment members averaged per shopper (M).
        seed: seeds the choice of peers.
    """

    def __init__(self, world: SyntheticWorld, n_peers: int = 16, seed: int = 0) -> None:
        super().__init__(world)
        if int(n_peers) < 1:
            raise ConfigError(f"`n_peers` must be >= 1, got {n_peers}")
        segment = world.population.segment
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        order = np.argsort(segment, kind="stable")
        counts = np.bincount(segment, minlength=int(segment.max()) + 1)
        start = np.r_[0, np.cumsum(counts)[:-1]]
        # peer m of user u: a uniformly random member of u's segment (possibly u itself)
        draws = (rng.random((len(segment), int(n_peers))) * counts[segment][:, None]).astype(np.int64)
        self.peers = order[start[segment][:, None] + draws]  # (n_users, M) user indices

    def probabilities(self, sessions: Sessions, profile: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """Peers' mean attractiveness (browse intent marginalised) and conversion, (B, K, 3)."""
        assert sessions.intent is not None
        world = self.world
        b, k = shown.shape
        m = self.peers.shape[1]
        peers = self.peers[sessions.world_user].reshape(-1)  # (B*M,)
        items = np.repeat(shown, m, axis=0)  # (B*M, K)
        intent = sessions.intent.take(np.repeat(np.arange(b), m))
        logit = world.config.click_bias + world.taste_logit(peers, items)
        search_attract = expit(logit + world.intent_logit(items, intent))
        category = vocab.GROUPS.index("category")
        category_taste = world.population.tastes[category][peers]  # (B*M, n_categories)
        pi = softmax(category_taste, axis=1)
        p_cat = np.take_along_axis(pi, world.catalog.values[items, category], axis=1)
        bonus = world.params.browse_intent_bonus
        browse_attract = p_cat * expit(logit + bonus) + (1.0 - p_cat) * expit(logit)
        attract = np.where(intent.is_search[:, None], search_attract, browse_attract)
        cart, buy = world.conversion(peers, items)
        out = np.stack([attract, cart, buy], axis=2).reshape(b, m, k, 3)
        return out.mean(axis=1)

