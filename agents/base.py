"""The one ranking-policy interface shared by every agent and baseline.

A policy sees a batch of ``B`` requests, each with ``N`` candidate items, and returns a ranking of ``K``
slots per request. Stochastic policies also return the probability of what they showed (needed by
logging and off-policy evaluation). Online learners update from per-slot feedback.

Shapes: ``B`` requests, ``N`` candidates, ``K`` slots, ``d`` embedding dims, ``H`` history length,
``F`` extra per-candidate features.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shopgym.data.io import atomic_write
from shopgym.errors import ConfigError, ShopgymError


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
    """

    user: np.ndarray
    query: np.ndarray
    is_search: np.ndarray
    candidates: np.ndarray
    candidate_vecs: np.ndarray
    user_ids: np.ndarray
    history: np.ndarray
    extra: np.ndarray

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
                              self.candidate_vecs[rows], self.user_ids[rows], self.history[rows], self.extra[rows])


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


def deterministic_topk(scores: np.ndarray, k: int) -> Ranking:
    """Top-``k`` columns of ``scores`` (B, N) by descending score (ties: lower column first), probability 1."""
    b, n = scores.shape
    if not 1 <= k <= n:
        raise PolicyInputError(f"`k` must be in [1, {n}] (the number of candidates), got {k}")
    if not np.isfinite(scores).all():
        bad = np.argwhere(~np.isfinite(scores))[0]
        raise PolicyInputError(f"scores must be finite; got {scores[tuple(bad)]} at (request {bad[0]}, "
                               f"candidate {bad[1]})")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (b, 1))
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    slots = np.take_along_axis(part, order, axis=1)
    return Ranking(slots.astype(np.int64), np.ones((b, k)), np.ones(b))


class RankingPolicy(ABC):
    """Base class of every agent and baseline: score candidates, rank, learn online, save/load.

    Subclasses implement :meth:`score`; stochastic ones override :meth:`rank`; learners override
    :meth:`update`; anything with learned state implements :meth:`state_dict` / :meth:`load_state_dict`
    and :meth:`config` (plain JSON) so that :meth:`save` / :meth:`load` need no pickle.
    """

    #: short name used in results tables and TensorBoard tags
    name: ClassVar[str] = "policy"
    #: whether :meth:`update` learns anything
    learns_online: ClassVar[bool] = False

    @abstractmethod
    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 scores, higher shown first."""

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """Rank ``k`` slots per request; the default shows the top-``k`` scores deterministically."""
        del rng
        return deterministic_topk(self.score(ctx), k)

    def update(self, ctx: RankingContext, ranking: Ranking, feedback: Feedback) -> None:  # noqa: B027
        """Learn from the feedback to ``ranking`` (default: nothing to learn)."""

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON (used by :meth:`save`)."""
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Learned arrays (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore learned arrays (default: none expected)."""
        if state:
            raise ConfigError(f"{type(self).__name__} has no learned state, got keys {sorted(state)}")

    def save(self, path: str | Path) -> Path:
        """Save to ``path`` (a folder): ``policy.json`` (class + config) and ``state.safetensors``, atomically."""
        from safetensors.numpy import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {key: np.ascontiguousarray(value) for key, value in self.state_dict().items()}
        atomic_write(folder / "state.safetensors", lambda tmp: save_file(state, str(tmp)))
        header = {"class": f"{type(self).__module__}.{type(self).__qualname__}", "name": self.name,
                  "config": self.config()}
        text = json.dumps(header, indent=2, sort_keys=True)
        atomic_write(folder / "policy.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return folder


def load_policy(path: str | Path) -> RankingPolicy:
    """Load a policy saved with :meth:`RankingPolicy.save`.

    Only classes defined in shopgym's ``agents`` package are constructed (no arbitrary imports, no pickle).

    Raises:
        ConfigError: the folder is not a saved policy, or names a class outside ``agents``.
    """
    import importlib

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(path)
    header_path = folder / "policy.json"
    if not header_path.is_file():
        raise ConfigError(f"{folder}: not a saved policy (no policy.json); save one with RankingPolicy.save")
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
        module_name, _, class_name = str(header["class"]).rpartition(".")
        config = dict(header.get("config", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{header_path}: unreadable policy header ({exc}); re-save the policy") from exc
    if not module_name.startswith("agents."):
        raise ConfigError(f"{header_path}: class {header['class']!r} is not a shopgym agent")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, RankingPolicy)):
        raise ConfigError(f"{header_path}: {header['class']!r} is not a RankingPolicy")
    policy = cls(**config)
    state_path = folder / "state.safetensors"
    try:
        state = load_file(str(state_path)) if state_path.is_file() else {}
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{state_path}: corrupted policy state ({exc}); re-train or restore it") from exc
    policy.load_state_dict(state)
    return policy
