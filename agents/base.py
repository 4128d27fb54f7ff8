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
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from envs.interface import Feedback, PolicyInputError, Ranking, RankingContext
from shopgym.data.io import atomic_write
from shopgym.errors import ConfigError
from shopgym.numeric import topk

__all__ = ["Feedback", "PolicyInputError", "Ranking", "RankingContext", "RankingPolicy", "deterministic_topk",
           "load_policy"]


def deterministic_topk(scores: np.ndarray, k: int) -> Ranking:
    """Top-``k`` columns of ``scores`` (B, N) by descending score (ties: lower column first), probability 1."""
    b, n = scores.shape
    if not 1 <= k <= n:
        raise PolicyInputError(f"`k` must be in [1, {n}] (the number of candidates), got {k}")
    if not np.isfinite(scores).all():
        bad = np.argwhere(~np.isfinite(scores))[0]
        raise PolicyInputError(f"scores must be finite; got {scores[tuple(bad)]} at (request {bad[0]}, "
                               f"candidate {bad[1]})")
    return Ranking(topk(scores, k), np.ones((b, k)), np.ones(b))


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
