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


class _CandidateVectors:
    """Data descriptor of :attr:`RankingContext.candidate_vecs`: given, or gathered from the item table on first read.

    A context built with ``candidate_vecs=None`` and an ``item_table`` holds only the candidates' catalog
    indices; policies that never read the vectors (popularity, random, buy-again, ...) then cost no (B, N, d)
    copy, and those that do pay it once (the gather is cached on the context).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, obj: RankingContext | None, objtype: type | None = None) -> np.ndarray:
        if obj is None:  # read on the class: no default, so the dataclass field stays a required one
            raise AttributeError(self._slot)
        vecs = obj.__dict__.get(self._slot)
        if vecs is None:
            if obj.item_table is None:
                raise PolicyInputError("RankingContext needs `candidate_vecs` or an `item_table` to gather them from")
            vecs = obj.item_table[obj.candidates].astype(np.float32, copy=False)
            obj.__dict__[self._slot] = vecs
        return vecs

    def __set__(self, obj: RankingContext, value: np.ndarray | None) -> None:
        obj.__dict__[self._slot] = value


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
        candidate_vecs: (B, N, d) float32 candidate item embeddings (L2-normalised); None with an ``item_table``
            (then ``item_table[candidates]``, gathered on first read and kept).
        user_ids: (B,) int64 user indices, -1 for users unknown to the logs (cold start).
        history: (B, H) int64 catalog indices of items the user interacted with, newest last, -1 padded.
        extra: (B, N, F) float32 per-candidate features (see the env docs: shown-before flag, popularity).
        sessions: the simulator's own record of who is shopping (:class:`envs.backends.Sessions`: in the
            synthetic world, the world's user and latent intent of each request; a simulator fitted from logs
            has neither), or None (the default) outside a simulator. Only reference policies that rank with
            the ground truth read it (the world's logging policy, the oracle); learning agents must not, as no
            real shop knows it.
        item_table: (n_items, d) float32 the catalog's embeddings that ``candidates`` index, or None. The
            simulator passes it (one shared table, no per-request copy); policies may score against it
            directly (e.g. a linear model's per-request weight vector against the table's rows).
    """

    user: np.ndarray
    query: np.ndarray
    is_search: np.ndarray
    candidates: np.ndarray
    candidate_vecs: np.ndarray = _CandidateVectors()  # type: ignore[assignment]
    user_ids: np.ndarray  # type: ignore[misc]  # candidate_vecs has no default (see _CandidateVectors)
    history: np.ndarray  # type: ignore[misc]
    extra: np.ndarray  # type: ignore[misc]
    sessions: Sessions | None = None
    item_table: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.candidates.ndim != 2:
            raise PolicyInputError(f"RankingContext.candidates must have shape (B, N), got {self.candidates.shape}")
        b, n = self.candidates.shape
        given = self.__dict__.get("_candidate_vecs")
        if given is not None:
            if given.ndim != 3 or given.shape[:2] != (b, n):
                raise PolicyInputError(f"RankingContext.candidate_vecs must have shape ({b}, {n}, d), got "
                                       f"{given.shape}")
            d = int(given.shape[2])
        elif self.item_table is not None and self.item_table.ndim == 2:
            d = int(self.item_table.shape[1])
        else:
            raise PolicyInputError("RankingContext needs `candidate_vecs` (B, N, d) or an `item_table` (n_items, d)")
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
        return int(self.user.shape[1])

    @property
    def has_candidate_vecs(self) -> bool:
        """Whether the (B, N, d) candidate vectors exist already (given, or gathered by an earlier read)."""
        return self.__dict__.get("_candidate_vecs") is not None

    def take(self, rows: np.ndarray) -> RankingContext:
        """The sub-batch ``rows``."""
        vecs = self.__dict__.get("_candidate_vecs")
        return RankingContext(self.user[rows], self.query[rows], self.is_search[rows], self.candidates[rows],
                              None if vecs is None else vecs[rows], self.user_ids[rows],  # type: ignore[arg-type]
                              self.history[rows], self.extra[rows],
                              None if self.sessions is None else self.sessions.take(rows), self.item_table)


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
