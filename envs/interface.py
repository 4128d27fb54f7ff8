"""The interface between the env and a ranking policy: what a policy sees, what it returns, what it learns from.

A policy sees a batch of ``B`` requests (:class:`RankingContext`), each with ``N`` candidate items, and
returns a ranking of ``K`` slots per request (:class:`Ranking`); online learners then get per-slot
:class:`Feedback`. These types live with the env (which builds them) so that the env does not depend on
the agents; :mod:`agents.base` re-exports them beside :class:`~agents.base.RankingPolicy`.

Shapes: ``B`` requests, ``N`` candidates, ``K`` slots, ``d`` embedding dims, ``H`` history length,
``F`` extra per-candidate features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shopgym.errors import ShopgymError

if TYPE_CHECKING:  # the env's own session type; imported for annotations only (it pulls in the backends)
    from envs.backends import Sessions


class PolicyInputError(ShopgymError, ValueError):
    """A policy was given arrays of the wrong shape, dtype or range."""


@dataclass(frozen=True)
class RankingContext:
    """One batch of ranking decisions.

    Attributes:
        user: (B, d) float32 user profile vectors (L2-normalised; zero rows for unknown users).
        query: (B, d) float32 query embeddings; zero rows when browsing.
        is_search: (B,) bool, whether the request is a search.
        candidates: (B, N) int64 catalog indices of the candidate items.
        candidate_vecs: (B, N, d) float32 candidate item embeddings (L2-normalised).
        user_ids: (B,) int64 user indices, -1 for users unknown to the logs (cold start).
        history: (B, H) int64 catalog indices of items the user interacted with, newest last, -1 padded.
        extra: (B, N, F) float32 per-candidate features (see the env docs: shown-before flag, popularity).
        sessions: the simulator's own record of who is shopping (:class:`envs.backends.Sessions`: in the
            synthetic world, the world's user and latent intent of each request; a simulator fitted from logs
            has neither), or None (the default) outside a simulator. Only reference policies that rank with
            the ground truth read it (the world's logging policy, the oracle); learning agents must not, as no
            real shop knows it.
    """

    user: np.ndarray
    query: np.ndarray
    is_search: np.ndarray
    candidates: np.ndarray
    candidate_vecs: np.ndarray
    user_ids: np.ndarray
    history: np.ndarray
    extra: np.ndarray
    sessions: Sessions | None = None

    def __post_init__(self) -> None:
        b, n, d = self.candidate_vecs.shape
        expected = {
            "user": (b, d), "query": (b, d), "is_search": (b,), "candidates": (b, n), "user_ids": (b,),
        }
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise PolicyInputError(f"RankingContext.{name} must have shape {shape}, got {got}")
        if self.history.ndim != 2 or self.history.shape[0] != b:
            raise PolicyInputError(f"RankingContext.history must have shape ({b}, H), got {self.history.shape}")
        if self.extra.ndim != 3 or self.extra.shape[:2] != (b, n):
            raise PolicyInputError(f"RankingContext.extra must have shape ({b}, {n}, F), got {self.extra.shape}")
        if self.sessions is not None and self.sessions.user.shape != (b,):
            raise PolicyInputError(f"RankingContext.sessions must describe the {b} requests, got "
                                   f"{self.sessions.user.shape[0]} sessions")

    @property
    def batch_size(self) -> int:
        """Batch size B."""
        return int(self.candidates.shape[0])

    @property
    def n_candidates(self) -> int:
        """Number of candidates N."""
        return int(self.candidates.shape[1])

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self.candidate_vecs.shape[2])

    def take(self, rows: np.ndarray) -> RankingContext:
        """The sub-batch ``rows``."""
        return RankingContext(self.user[rows], self.query[rows], self.is_search[rows], self.candidates[rows],
                              self.candidate_vecs[rows], self.user_ids[rows], self.history[rows], self.extra[rows],
                              None if self.sessions is None else self.sessions.take(rows))


@dataclass(frozen=True)
class Ranking:
    """What a policy shows.

    Attributes:
        slots: (B, K) int64 column indices into the candidates, top slot first, distinct per row.
        propensity: (B, K) float64 probability that the policy puts that candidate at that slot
            (the per-slot marginal; 1.0 for deterministic policies).
        slate_propensity: (B,) float64 probability of the whole ranking (1.0 for deterministic policies).
    """

    slots: np.ndarray
    propensity: np.ndarray
    slate_propensity: np.ndarray


@dataclass(frozen=True)
class Feedback:
    """What the shopper did with each shown slot.

    Attributes:
        clicked: (B, K) int8.
        carted: (B, K) int8.
        purchased: (B, K) int8.
        reward: (B, K) float64 per-slot reward (the env's reward weights applied per slot).
    """

    clicked: np.ndarray
    carted: np.ndarray
    purchased: np.ndarray
    reward: np.ndarray
