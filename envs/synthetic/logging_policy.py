r"""The synthetic shop's logging policy: epsilon-mixed greedy ranking with exact propensities.

With probability ``1 - epsilon`` the policy shows the top-K candidates by its own (imperfect) score;
with probability ``epsilon`` it shows a uniformly random ranking of K of the N candidates. Both the
per-slot marginals and the whole-slate probability are then exact and cheap:

.. math::
    P(\text{item } n \text{ at slot } k) = (1-\epsilon)\,[\sigma^{greedy}_k = n] + \epsilon / N,
    \qquad
    P(\sigma) = (1-\epsilon)\,[\sigma = \sigma^{greedy}] + \epsilon \frac{(N-K)!}{N!}.

For every slot k the marginals sum to 1 over the request's N candidates. A Plackett-Luce policy
would look more like production systems, but its per-slot marginals have no closed form; exact
propensities matter more here because this world is the ground truth for off-policy evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.synthetic.world import Intent, SyntheticWorld
from shopgym.errors import ConfigError
from shopgym.numeric import (
    epsilon_mixture_propensities,
    topk,
    uniform_rankings,
)


@dataclass(frozen=True)
class LoggedSlates:
    """What the logging policy showed for a batch of requests.

    Attributes:
        slots: (B, K) column indices into the candidate matrix, top slot first.
        propensity: (B, K) exact marginal probability of each shown item at its slot.
        slate_propensity: (B,) exact probability of the whole shown ranking.
        explored: (B,) True where the uniformly random branch was taken.
        prefix_propensity: (B, K) exact probability of the shown slots 1..k (the last column is the slate's).
    """

    slots: np.ndarray
    propensity: np.ndarray
    slate_propensity: np.ndarray
    explored: np.ndarray
    prefix_propensity: np.ndarray


class EpsilonGreedyLoggingPolicy:
    """The logging policy of the synthetic shop (see the module docstring).

    Its score is a noisy copy of the true taste model: it knows the user's tastes up to a per-user,
    per-attribute error of scale ``noise``, half the items' latent quality and, for searches, the
    query; it does not know a browsing session's latent intent.

    Args:
        world: the synthetic world.
        epsilon: probability of showing a uniformly random ranking, in [0, 1].
        noise: scale of the policy's taste error, >= 0.
        seed: seeds the policy's fixed taste error (not the per-request randomness).
    """

    def __init__(self, world: SyntheticWorld, epsilon: float, noise: float, seed: int = 0) -> None:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ConfigError(f"`epsilon` must be in [0, 1], got {epsilon}")
        if float(noise) < 0.0:
            raise ConfigError(f"`noise` must be >= 0, got {noise}")
        self.world = world
        self.epsilon = float(epsilon)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self._tastes = tuple(t + rng.normal(0.0, noise, t.shape) for t in world.population.tastes)

    def scores(self, users: np.ndarray, candidates: np.ndarray, intent: Intent) -> np.ndarray:
        """(B, N) the policy's score of each candidate (higher is shown first)."""
        world = self.world
        items = np.asarray(candidates)
        users = np.asarray(users)
        score = 0.5 * world.catalog.quality[items] - (
            world.population.price_sensitivity[users][:, None] * world.catalog.price_level[items]
        )
        for g, taste in enumerate(self._tastes):
            score = score + taste[users[:, None], world.catalog.values[items, g]]
        visible = Intent(intent.category, intent.attr_group, intent.attr_value, intent.is_search)
        return score + np.where(intent.is_search[:, None], world.intent_logit(items, visible), 0.0)

    def greedy(self, users: np.ndarray, candidates: np.ndarray, intent: Intent, k: int) -> np.ndarray:
        """(B, k) column indices of the greedy ranking (ties broken by column order)."""
        return topk(self.scores(users, candidates, intent), k)

    def marginals(self, users: np.ndarray, candidates: np.ndarray, intent: Intent, k: int) -> np.ndarray:
        """(B, k, N) exact P(candidate n at slot j); each (b, j) row sums to 1."""
        n = candidates.shape[1]
        greedy = self.greedy(users, candidates, intent, k)
        probs = np.full((len(greedy), k, n), self.epsilon / n)
        rows = np.arange(len(greedy))[:, None]
        probs[rows, np.arange(k)[None, :], greedy] += 1.0 - self.epsilon
        return probs

    def slate_probability(self, shown: np.ndarray, greedy: np.ndarray, n: int) -> np.ndarray:
        """(B,) exact probability of showing ``shown`` (B, K) given the greedy ranking (B, K) over N."""
        return epsilon_mixture_propensities(shown, greedy, self.epsilon, n)[1][:, -1]

    def sample(
        self, rng: np.random.Generator, users: np.ndarray, candidates: np.ndarray, intent: Intent, k: int
    ) -> LoggedSlates:
        """Draw one ranking of ``k`` slots per request, with its exact propensities."""
        b, n = candidates.shape
        if not 1 <= k <= n:
            raise ConfigError(f"`k` must be in [1, {n}] (the number of candidates), got {k}")
        greedy = self.greedy(users, candidates, intent, k)
        explored = np.asarray(rng.random(b) < self.epsilon)
        random_rank = uniform_rankings(rng, b, n, k)
        slots = np.where(explored[:, None], random_rank, greedy)
        propensity, prefix = epsilon_mixture_propensities(slots, greedy, self.epsilon, n)
        return LoggedSlates(slots, propensity, prefix[:, -1], explored, prefix)
