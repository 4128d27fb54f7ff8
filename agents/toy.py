r"""A tiny contextual ranking problem with a known optimum, for tests, benchmarks and examples.

The shape of SB3's identity envs: small enough that a learner must solve it in a few hundred rounds, with
an exact oracle so that regret can be measured instead of guessed.

Note:
    Items and users are fixed unit vectors :math:`v_i, u_j \in \mathbb{R}^d`. The hidden click model is
    position-based, with examination :math:`e_k = k^{-\eta}` and attractiveness

    .. math:: \alpha(u, i) = \sigma\big(\beta_0 + a\, u^\top \mathrm{diag}(w)\, v_i + c\, \phi^\top v_i\big),
        \qquad P(\text{click at slot } k) = e_k\, \alpha(u, i_k),

    with hidden weights :math:`w \in [0.5, 1.5]^d` and item-quality direction :math:`\phi`. The best
    ranking shows the candidates by decreasing :math:`\alpha` (examination decreases with the slot),
    and the regret of a shown ranking :math:`\sigma` is

    .. math:: \mathrm{regret} = \sum_k e_k\,\big(\alpha(u, i^*_k) - \alpha(u, \sigma_k)\big) \ge 0 .

    The model is learnable by :class:`~agents.features.CandidateFeatures` (blocks ``ui`` and ``i``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit

from agents._checks import check_float, check_int
from agents.base import Feedback, Ranking, RankingContext, RankingPolicy
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError
from shopgym.numeric import topk, uniform_rankings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class ToyRankingProblem:
    """The toy problem (see the module docstring).

    Args:
        n_items: catalog size, >= n_candidates.
        n_users: number of users, >= 1.
        dim: embedding dimension d, >= 2.
        n_candidates: candidates per request N, >= 2.
        examination_eta: examination at slot k is k ** -eta, >= 0.
        bias: intercept beta_0 of the attractiveness logit.
        affinity: weight a of the user-item term.
        quality: weight c of the item-quality term.
        history_len: length H of ``ctx.history`` (filled by the caller, -1 padded), >= 1.
        seed: seeds the vectors and hidden weights.
    """

    n_items: int = 60
    n_users: int = 12
    dim: int = 8
    n_candidates: int = 12
    examination_eta: float = 1.0
    bias: float = -1.0
    affinity: float = 4.0
    quality: float = 1.0
    history_len: int = 5
    seed: int = 0
    item_vecs: np.ndarray = field(init=False, repr=False)
    user_vecs: np.ndarray = field(init=False, repr=False)
    weights: np.ndarray = field(init=False, repr=False)
    phi: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.n_users, "n_users", min_value=1)
        check_int(self.dim, "dim", min_value=2)
        check_int(self.n_candidates, "n_candidates", min_value=2)
        check_int(self.history_len, "history_len", min_value=1)
        if check_int(self.n_items, "n_items", min_value=1) < self.n_candidates:
            raise ConfigError(f"`n_items` must be >= `n_candidates` ({self.n_candidates}), got {self.n_items}")
        check_float(self.examination_eta, "examination_eta", min_value=0.0)
        for name in ("bias", "affinity", "quality"):
            check_float(getattr(self, name), name)
        rng = np.random.default_rng(np.random.SeedSequence([check_int(self.seed, "seed", min_value=0), 77]))
        object.__setattr__(self, "item_vecs", _unit(rng.standard_normal((self.n_items, self.dim))).astype(np.float32))
        object.__setattr__(self, "user_vecs", _unit(rng.standard_normal((self.n_users, self.dim))).astype(np.float32))
        object.__setattr__(self, "weights", rng.uniform(0.5, 1.5, self.dim))
        object.__setattr__(self, "phi", _unit(rng.standard_normal(self.dim)))

    # ------------------------------------------------------------------ the hidden model
    def examination(self, k: int) -> np.ndarray:
        """(k,) float64 true examination probabilities of slots 1..k."""
        return np.arange(1, k + 1, dtype=np.float64) ** -self.examination_eta

    def attractiveness(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, M) float64 true P(click | examined) of items (B, M) for users (B,)."""
        u = self.user_vecs[users].astype(np.float64)
        v = self.item_vecs[items].astype(np.float64)
        logit = (self.bias + self.affinity * np.einsum("bd,bmd->bm", u * self.weights, v)
                 + self.quality * (v @ self.phi))
        return expit(logit)

    def expected_reward(self, ctx: RankingContext, slots: np.ndarray) -> np.ndarray:
        """(B,) float64 expected clicks of showing ``slots`` (B, K) (column indices into the candidates)."""
        items = np.take_along_axis(ctx.candidates, slots, axis=1)
        return self.attractiveness(ctx.user_ids, items) @ self.examination(slots.shape[1])

    def oracle_slots(self, ctx: RankingContext, k: int) -> np.ndarray:
        """(B, k) int64 the best ranking: candidates by decreasing attractiveness."""
        alpha = self.attractiveness(ctx.user_ids, ctx.candidates)
        return topk(alpha, k)

    def regret(self, ctx: RankingContext, slots: np.ndarray) -> np.ndarray:
        """(B,) float64 expected reward of the oracle minus that of ``slots`` (B, K)."""
        best = self.oracle_slots(ctx, slots.shape[1])
        return self.expected_reward(ctx, best) - self.expected_reward(ctx, slots)

    # ------------------------------------------------------------------ sampling
    def sample_context(
        self, rng: np.random.Generator, batch: int, history: np.ndarray | None = None, known_users: bool = True
    ) -> RankingContext:
        """A batch of browsing requests from random users over random candidate sets.

        Args:
            rng: draws users and candidates.
            batch: number of requests B >= 1.
            history: (n_users, H) int64 per-user history (catalog indices, -1 padded), or None (all -1).
            known_users: whether ``user_ids`` are filled (else -1: cold users, profiles still given).
        """
        users = rng.integers(0, self.n_users, batch)
        candidates = uniform_rankings(rng, batch, self.n_items, self.n_candidates)
        hist = (np.full((batch, self.history_len), -1, dtype=np.int64) if history is None
                else np.asarray(history, dtype=np.int64)[users])
        return RankingContext(
            user=self.user_vecs[users],
            query=np.zeros((batch, self.dim), dtype=np.float32),
            is_search=np.zeros(batch, dtype=bool),
            candidates=candidates,
            candidate_vecs=self.item_vecs[candidates],
            user_ids=users.astype(np.int64) if known_users else np.full(batch, -1, dtype=np.int64),
            history=hist,
            extra=np.zeros((batch, self.n_candidates, 0), dtype=np.float32),
        )

    def feedback(self, ctx: RankingContext, ranking: Ranking, rng: np.random.Generator) -> Feedback:
        """Clicks drawn from the position-based model; reward = clicks (no carts or purchases)."""
        slots = np.asarray(ranking.slots)
        items = np.take_along_axis(ctx.candidates, slots, axis=1)
        p = self.attractiveness(ctx.user_ids, items) * self.examination(slots.shape[1])[None, :]
        clicked = (rng.random(p.shape) < p).astype(np.int8)
        zeros = np.zeros_like(clicked)
        return Feedback(clicked, zeros, zeros.copy(), clicked.astype(np.float64))

    def make_logs(
        self, rng: np.random.Generator, n_requests: int, k: int
    ) -> tuple[LoggedData, pd.Index, pd.Index, np.ndarray]:
        """Logs of a uniformly random logging policy, in the standard format.

        Returns:
            logs: the LoggedData (exact propensities 1/N);
            item_index: catalog item ids (position = catalog index);
            user_index: user ids (position = ``ctx.user_ids``);
            history: (n_users, H) int64 each user's last H clicked items (catalog indices, -1 padded).
        """
        ctx = self.sample_context(rng, n_requests)
        slots = uniform_rankings(rng, n_requests, self.n_candidates, k)
        fb = self.feedback(ctx, Ranking(slots, np.full(slots.shape, 1.0 / self.n_candidates), np.ones(n_requests)),
                           rng)
        items = np.take_along_axis(ctx.candidates, slots, axis=1)
        item_ids = np.array([f"i{j:04d}" for j in range(self.n_items)])
        user_ids = np.array([f"u{j:03d}" for j in range(self.n_users)])
        request = np.repeat(np.arange(n_requests), k)
        interactions = pd.DataFrame({
            S.REQUEST_ID: [f"r{j:06d}" for j in request],
            S.USER_ID: user_ids[ctx.user_ids[request]],
            S.TIMESTAMP: pd.Timestamp("2024-01-01") + pd.to_timedelta(request, unit="s"),
            S.POSITION: np.tile(np.arange(1, k + 1), n_requests),
            S.ITEM_ID: item_ids[items.ravel()],
            S.CLICKED: fb.clicked.ravel().astype(np.int64),
            S.PROPENSITY: 1.0 / self.n_candidates,
        })
        items_table = pd.DataFrame({S.ITEM_ID: item_ids, S.TEXT: [f"item {j}" for j in range(self.n_items)]})
        logs = LoggedData.from_frames(items_table, interactions, name="toy")
        # each user's last H clicked items, newest last (vectorised: rank clicks from the end per user)
        h = self.history_len
        click_users = ctx.user_ids[request][fb.clicked.ravel() == 1]
        click_items = items.ravel()[fb.clicked.ravel() == 1]
        order = np.argsort(click_users, kind="stable")
        cu, ci = click_users[order], click_items[order]
        counts = np.bincount(cu, minlength=self.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        from_end = counts[cu] - (np.arange(len(cu)) - starts[cu])  # 1 = newest
        keep = from_end <= h
        history = np.full((self.n_users, h), -1, dtype=np.int64)
        history[cu[keep], h - from_end[keep]] = ci[keep]
        return logs, pd.Index(item_ids), pd.Index(user_ids), history


@dataclass(frozen=True)
class OnlineTrace:
    """Per-round results of :func:`run_online`.

    Attributes:
        regret: (rounds,) float64 mean regret per request in each round.
        reward: (rounds,) float64 mean clicks per request in each round.
    """

    regret: np.ndarray
    reward: np.ndarray

    def thirds(self) -> tuple[float, float, float]:
        """Mean regret over the first, middle and last third of the rounds."""
        parts = np.array_split(self.regret, 3)
        return float(parts[0].mean()), float(parts[1].mean()), float(parts[2].mean())


def run_online(
    policy: RankingPolicy, problem: ToyRankingProblem, rounds: int, batch: int, k: int, seed: int = 0,
    history: np.ndarray | None = None,
) -> OnlineTrace:
    """Let ``policy`` rank ``rounds`` batches of ``batch`` requests, learning from each batch's clicks.

    Args:
        policy: the policy (its ``update`` is called after every batch).
        problem: the toy problem.
        rounds: number of batches, >= 1.
        batch: requests per batch, >= 1.
        k: slots per request.
        seed: seeds contexts, the policy's ``rank`` draws and the clicks (one stream each).
        history: optional (n_users, H) per-user history passed to the contexts.

    Returns:
        Mean regret and reward per request in each round.
    """
    ctx_seed, policy_seed, click_seed = np.random.SeedSequence(seed).spawn(3)
    ctx_rng, policy_rng, click_rng = (np.random.default_rng(s) for s in (ctx_seed, policy_seed, click_seed))
    regret = np.empty(rounds)
    reward = np.empty(rounds)
    for t in range(rounds):
        ctx = problem.sample_context(ctx_rng, batch, history)
        ranking = policy.rank(ctx, k, policy_rng)
        fb = problem.feedback(ctx, ranking, click_rng)
        regret[t] = problem.regret(ctx, ranking.slots).mean()
        reward[t] = fb.reward.sum(axis=1).mean()
        policy.update(ctx, ranking, fb)
    return OnlineTrace(regret, reward)
