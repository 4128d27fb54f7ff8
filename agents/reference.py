r"""Reference policies of the synthetic world, which rank with its ground truth: its logging policy and the oracle.

They are yardsticks, not agents a real shop could run: both read the true shopper of each request
(``ctx.sessions``: the world's user and the session's latent intent), which only a synthetic-world
simulator provides (:meth:`envs.core.Simulator.context` fills it); any other context makes them raise
:class:`~agents.base.PolicyInputError`.

* :class:`LoggingPolicy`: the world's own logging policy (:func:`envs.synthetic.logging_policy_for`), the
  policy that wrote the logs everything else is fitted on, with its exact propensities.
* :class:`OracleGreedyPolicy`: greedy by the true expected reward of each candidate.

What they need from the world (the world itself; the oracle also the env's reward weights) is given to the
constructor at build time, e.g. ``instantiate(cfg, world=world, reward=env_config.reward)`` for the configs
``conf/agent/logging_policy.yaml`` and ``conf/agent/oracle.yaml``. They have no settings of their own, so
they are rebuilt from the world rather than saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agents._checks import check_candidates, check_k
from agents.base import PolicyInputError, Ranking, RankingContext, RankingPolicy
from envs.backends import Sessions
from envs.reward import RewardWeights
from envs.synthetic import SyntheticWorld, logging_policy_for
from envs.synthetic.world import Intent
from shopgym.errors import ConfigError


class WorldReferencePolicy(RankingPolicy):
    """A policy that ranks with the synthetic world's ground truth (see the module docstring).

    Args:
        world: the synthetic world (injected at build time).
    """

    def __init__(self, world: SyntheticWorld) -> None:
        if not isinstance(world, SyntheticWorld):
            raise ConfigError(f"{type(self).__name__} needs the synthetic world it ranks in: `world` must be a "
                              f"SyntheticWorld (inject it at build time), got {type(world).__name__}")
        self.world = world

    def true_shoppers(self, ctx: RankingContext) -> tuple[np.ndarray, Intent]:
        """The world's user (B,) int64 and the intent of every request, checked against the world.

        Raises:
            PolicyInputError: ``ctx.sessions`` is missing or carries no world shoppers (not a synthetic-world
                simulator's context), or its users or candidates are outside the world.
        """
        owner = type(self).__name__
        sessions: Sessions | None = ctx.sessions
        if sessions is None or sessions.intent is None:
            found = "None" if sessions is None else "sessions without intents (a simulator fitted from logs)"
            raise PolicyInputError(f"{owner} ranks with the true shopper of each request: `ctx.sessions` must hold "
                                   f"the synthetic world's users and intents (a context from a synthetic-world "
                                   f"simulator, Simulator.context), got {found}")
        users = np.asarray(sessions.world_user)
        n_users = self.world.population.n_users
        if users.size and (int(users.min()) < 0 or int(users.max()) >= n_users):
            bad = int(np.flatnonzero((users < 0) | (users >= n_users))[0])
            raise PolicyInputError(f"{owner}: `ctx.sessions.world_user` must be world user indices in "
                                   f"[0, {n_users}), got {int(users[bad])} at request {bad}")
        check_candidates(ctx, self.world.catalog.n_items, owner)
        return users, sessions.intent

    def save(self, path: str | Path) -> Path:
        """Refuse: a reference policy has nothing of its own to save; rebuild it from its world.

        Raises:
            ConfigError: always.
        """
        raise ConfigError(f"{type(self).__name__} is not saved: it is the synthetic world's own; rebuild it "
                          f"from the world (it was asked to save to {path})")


class LoggingPolicy(WorldReferencePolicy):
    r"""The synthetic shop's logging policy, with the exact propensities of what it shows.

    Note:
        With probability :math:`1-\epsilon` it shows the top-K of its own noisy scores, else a uniformly
        random ranking (:class:`envs.synthetic.EpsilonGreedyLoggingPolicy`):

        .. math::
            P(\text{item } n \text{ at slot } k) = (1-\epsilon)\,[\sigma^{greedy}_k = n] + \epsilon / N,
            \qquad P(\sigma) = (1-\epsilon)\,[\sigma = \sigma^{greedy}] + \epsilon \frac{(N-K)!}{N!}.

        :math:`\epsilon`, the noise of its scores and their seed come from ``world.config``.

    Args:
        world: the synthetic world whose logging policy this is (injected at build time).
    """

    name: ClassVar[str] = "logging_policy"

    def __init__(self, world: SyntheticWorld) -> None:
        super().__init__(world)
        self._policy = logging_policy_for(world)

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 the logging policy's own scores (its greedy ranking shows the top-K)."""
        users, intent = self.true_shoppers(ctx)
        return np.asarray(self._policy.scores(users, ctx.candidates, intent), dtype=np.float64)

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """Draw one ranking of ``k`` slots per request as the logs were drawn, with its exact propensities."""
        k = check_k(k, ctx.n_candidates)
        users, intent = self.true_shoppers(ctx)
        shown = self._policy.sample(rng, users, ctx.candidates, intent, k)
        return Ranking(shown.slots.astype(np.int64), shown.propensity, shown.slate_propensity)


class OracleGreedyPolicy(WorldReferencePolicy):
    r"""Greedy by the true expected reward of each candidate if examined.

    Note:
        With the world's true click, cart and purchase probabilities :math:`a, c, p` of candidate :math:`i`
        for the request's shopper and intent, the env's reward weights :math:`w` and the item's price,

        .. math:: v_i = a_i \big(w_{click} + c_i (w_{cart} + p_i (w_{purchase} + w_{revenue}\,\text{price}_i))\big),

        the K candidates of highest :math:`v_i` are shown, best first (ties: lower column first). As
        examination falls with the slot, this maximises the page's expected reward; it is greedy per page
        (it ignores what the page does to the rest of the session).

    Args:
        world: the synthetic world (injected at build time); its truth and its catalog's prices give
            :math:`v_i` (:meth:`envs.synthetic.SyntheticWorld.item_value`).
        reward: the env's reward weights (injected at build time from the env config), as RewardWeights
            or a mapping of its fields.
    """

    name: ClassVar[str] = "oracle"

    def __init__(self, world: SyntheticWorld, reward: RewardWeights | Mapping[str, float]) -> None:
        super().__init__(world)
        if isinstance(reward, Mapping):
            unknown = set(reward) - set(asdict(RewardWeights()))
            if unknown:
                raise ConfigError(f"`reward` takes the fields of RewardWeights {sorted(asdict(RewardWeights()))}, "
                                  f"got unknown {sorted(unknown)}")
            reward = RewardWeights(**{key: float(value) for key, value in reward.items()})
        if not isinstance(reward, RewardWeights):
            raise ConfigError(f"`reward` must be the env's RewardWeights (inject it at build time), got "
                              f"{type(reward).__name__}")
        self.reward = reward

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 the true expected reward of each candidate if examined."""
        users, intent = self.true_shoppers(ctx)
        return np.asarray(self.world.item_value(users, ctx.candidates, intent, self.reward), dtype=np.float64)

    def config(self) -> dict[str, Any]:
        """Nothing of its own: the world and the reward weights are the env's (injected at build time)."""
        return {}
