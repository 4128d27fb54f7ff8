"""Run ranking policies through a simulator and measure them (vectorised over sessions).

Used by the fidelity report (true world vs fitted simulator) and by tests. A *scorer* maps the live
page state to (B, N) scores; the K best are shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.backends import TrueWorldBackend
from envs.core import PageState, Simulator
from envs.synthetic import SyntheticWorld, logging_policy_for

#: (simulator, page state, generator) -> (B, N) scores, or (B, K) slots when ``returns_slots``
Scorer = Callable[[Simulator, PageState, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class PolicyValue:
    """What a policy earned over ``n_sessions`` simulated sessions.

    Attributes:
        name: policy name.
        n_sessions: completed sessions.
        reward_per_session: mean total reward of a session.
        reward_se: its standard error.
        reward_per_page: mean page reward.
        ctr: clicks per shown slot.
        pages_per_session: mean session length.
        purchase_rate: purchases per shown slot.
    """

    name: str
    n_sessions: int
    reward_per_session: float
    reward_se: float
    reward_per_page: float
    ctr: float
    pages_per_session: float
    purchase_rate: float


def run_sessions(sim: Simulator, scorer: Scorer, n_sessions: int, *, seed: int, name: str = "policy",
                 batch: int = 512, slots_scorer: bool = False) -> PolicyValue:
    """Simulate ``n_sessions`` whole sessions (in batches of ``batch``) under ``scorer``."""
    rng = np.random.default_rng(seed)
    totals, pages, clicks, buys, slots_shown = [], 0, 0.0, 0.0, 0
    remaining = n_sessions
    k = sim.config.slate_size
    while remaining > 0:
        b = min(batch, remaining)
        state = sim.reset(rng, b)
        alive = np.arange(b)
        total = np.zeros(b)
        while len(alive):
            out = scorer(sim, state, rng)
            slots = out if slots_scorer else _topk(out, k)
            res = sim.step(state, slots, rng)
            total[alive] += res.reward
            pages += len(alive)
            slots_shown += len(alive) * k
            clicks += float(res.info["clicked"].sum())
            buys += float(res.info["purchased"].sum())
            keep = ~(res.terminated | res.truncated)
            alive = alive[keep]
            state = _take(res.state, np.flatnonzero(keep))
        totals.append(total)
        remaining -= b
    per_session = np.concatenate(totals)
    return PolicyValue(name, n_sessions, float(per_session.mean()),
                       float(per_session.std(ddof=1) / np.sqrt(len(per_session))),
                       float(per_session.sum() / pages), clicks / slots_shown, pages / n_sessions,
                       buys / slots_shown)


def session_lengths(sim: Simulator, scorer: Scorer, n_sessions: int, *, seed: int,
                    slots_scorer: bool = False) -> np.ndarray:
    """(n_sessions,) pages per simulated session under ``scorer``."""
    rng = np.random.default_rng(seed)
    state = sim.reset(rng, n_sessions)
    alive = np.arange(n_sessions)
    pages = np.zeros(n_sessions, dtype=np.int64)
    k = sim.config.slate_size
    while len(alive):
        out = scorer(sim, state, rng)
        res = sim.step(state, out if slots_scorer else _topk(out, k), rng)
        pages[alive] += 1
        keep = ~(res.terminated | res.truncated)
        alive = alive[keep]
        state = _take(res.state, np.flatnonzero(keep))
    return pages


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)
    return order[:, :k]


def _take(state: PageState, rows: np.ndarray) -> PageState:
    from encoders.profiles import ProfileState

    return PageState(state.sessions.take(rows), ProfileState(state.profile.sum[rows], state.profile.weight[rows]),
                     state.seen[rows], state.page[rows], state.candidates[rows])


# ---------------------------------------------------------------------- reference policies
def random_scorer(sim: Simulator, state: PageState, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random ranking."""
    return rng.random(state.candidates.shape)


def popularity_scorer(sim: Simulator, state: PageState, rng: np.random.Generator) -> np.ndarray:
    """Smoothed logged CTR of each candidate."""
    return sim.users.popularity[state.candidates]


def cosine_scorer(sim: Simulator, state: PageState, rng: np.random.Generator) -> np.ndarray:
    """cos(profile + query, item): the embedding baseline."""
    target = sim.profile_vectors(state).astype(np.float64) + sim.query_vectors(state)
    return np.einsum("bd,bnd->bn", target, sim.space.item_vecs[state.candidates])


def oracle_scorer(world: SyntheticWorld) -> Scorer:
    """Greedy by the *true* expected value of each candidate (needs world sessions)."""
    truth = TrueWorldBackend(world)

    def score(sim: Simulator, state: PageState, rng: np.random.Generator) -> np.ndarray:
        p = truth.probabilities(state.sessions, sim.profile_vectors(state), state.candidates)
        w = sim.config.reward
        return p[..., 0] * (w.click + p[..., 1] * (w.cart + p[..., 2] * (w.purchase + w.revenue
                                                                          * sim.prices[state.candidates])))

    return score


def logging_scorer(world: SyntheticWorld) -> Scorer:
    """The synthetic shop's own logging policy (returns slots: use ``slots_scorer=True``)."""
    policy = logging_policy_for(world)

    def rank(sim: Simulator, state: PageState, rng: np.random.Generator) -> np.ndarray:
        assert state.sessions.intent is not None
        return policy.sample(rng, state.sessions.world_user, state.candidates, state.sessions.intent,
                             sim.config.slate_size).slots

    return rank
