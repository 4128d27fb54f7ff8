"""The permutation-equivariant candidate encoder and the flat observation layout it reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents._checks import check_choice, check_int
from agents.base import PolicyInputError, RankingContext
from envs.core import EXTRA_FEATURES
from shopgym.errors import ConfigError

#: activations by config name
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


# ---------------------------------------------------------------------- observation layout
@dataclass(frozen=True)
class ObsLayout:
    """Where things are in a flat :class:`~envs.rerank.ReRankEnv` observation.

    ``[profile d | query d | is_search 1 | page 1 | N x d candidate vectors | N x F extras]``; N is read
    from the width, so one layout (and one network) serves any number of candidates.

    Args:
        dim: embedding dimension d, >= 1.
        n_extra: per-candidate extra features F, >= 0.
    """

    dim: int
    n_extra: int

    def n_candidates(self, width: int) -> int:
        """N for an observation of ``width`` floats.

        Raises:
            PolicyInputError: ``width`` is not ``2d + 2 + N (d + F)`` for an integer N >= 1.
        """
        d, f = self.dim, self.n_extra
        n, rest = divmod(width - 2 * d - 2, d + f)
        if rest or n < 1:
            raise PolicyInputError(f"observation width must be 2d + 2 + N (d + F) with d={d}, F={f} and N >= 1, "
                                   f"got {width}")
        return n

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Unflatten ``obs`` (B, width): user, query (B, d), is_search, page (B,), cand (B, N, d), extra (B, N, F)."""
        b, width = obs.shape
        d, f = self.dim, self.n_extra
        n = self.n_candidates(width)
        start = 2 * d + 2
        cand = obs[:, start:start + n * d].reshape(b, n, d)
        extra = obs[:, start + n * d:].reshape(b, n, f)
        return obs[:, :d], obs[:, d:2 * d], obs[:, 2 * d], obs[:, 2 * d + 1], cand, extra


def observation_from_context(ctx: RankingContext, page: np.ndarray | None = None) -> np.ndarray:
    """(B, 2d + 2 + N (d + F)) float32 flat observations rebuilt from ``ctx`` (the env's layout, clipped to [-1, 1]).

    Args:
        ctx: the ranking context.
        page: (B,) pages shown / max pages; None gives zeros (the actor does not read it).
    """
    b = ctx.batch_size
    page_col = np.zeros((b, 1), np.float32) if page is None else np.asarray(page, np.float32).reshape(b, 1)
    parts = [ctx.user, ctx.query, ctx.is_search.astype(np.float32)[:, None], page_col,
             ctx.candidate_vecs.reshape(b, -1), ctx.extra.reshape(b, -1)]
    return np.clip(np.concatenate(parts, axis=1), -1.0, 1.0).astype(np.float32)


def _mlp(sizes: Sequence[int], activation: type[nn.Module], last_activation: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(activation())
    return layers


class CandidateEncoder(BaseFeaturesExtractor):
    r"""Shared per-candidate MLP over the user, the context and the candidate (permutation-equivariant).

    Each candidate i gets :math:`h_i = \mathrm{MLP}([u, q, s, v_i, x_i, u \odot v_i, q \odot v_i, c_i, \hat c_i])`
    with the same weights for every i, where :math:`c_i = (u^\top v_i, q^\top v_i)` and :math:`\hat c_i` is
    :math:`c_i` standardised over the request's candidates (mean 0, unit spread: the logits only matter
    relative to each other, and the raw cosines of one request differ by a few hundredths). The first layer
    is split into a context part (computed once per request) and a candidate part (identical to one linear
    layer on the concatenation).
    As a SB3 features extractor it returns the (B, N * H) flattened embeddings; :meth:`encode` keeps the
    (B, N, H) shape and accepts any N.

    Args:
        observation_space: the env's flat ``Box`` observation space (N is read from it for ``features_dim``).
        dim: embedding dimension d, >= 1.
        n_extra: per-candidate extra features F, >= 0.
        hidden: hidden sizes, each >= 1; the last is H.
        activation: "relu" or "tanh".
    """

    def __init__(self, observation_space: spaces.Box, dim: int, n_extra: int = len(EXTRA_FEATURES),
                 hidden: Sequence[int] = (64,), activation: str = "relu") -> None:
        layout = ObsLayout(check_int(dim, "dim", min_value=1), check_int(n_extra, "n_extra", min_value=0))
        n = layout.n_candidates(int(observation_space.shape[0]))
        hidden = _check_sizes(hidden, "hidden")
        super().__init__(observation_space, n * hidden[-1])
        self.layout = layout
        self.out_dim = hidden[-1]
        act = ACTIVATIONS[check_choice(activation, "activation", tuple(ACTIVATIONS))]
        d = layout.dim
        self.context_in = nn.Linear(2 * d + 1, hidden[0])
        self.candidate_in = nn.Linear(3 * d + layout.n_extra + 4, hidden[0], bias=False)
        self.act = act()
        self.body = nn.Sequential(*_mlp(hidden, act, last_activation=True))

    def encode_parts(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, cand: torch.Tensor,
                     extra: torch.Tensor) -> torch.Tensor:
        """(B, N, H) embeddings from user, query (B, d), is_search (B,), cand (B, N, d), extra (B, N, F)."""
        context = self.context_in(torch.cat([user, query, is_search[:, None]], dim=1))  # (B, H0)
        uv = cand * user[:, None, :]
        qv = cand * query[:, None, :]
        dots = torch.stack([uv.sum(-1), qv.sum(-1)], dim=2)  # (B, N, 2) cosines with the profile and query
        per_item = torch.cat([cand, extra, uv, qv, dots, _standardise_over_candidates(dots)], dim=2)
        return self.body(self.act(context[:, None, :] + self.candidate_in(per_item)))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, N, H) embeddings of the candidates of flat observations ``obs`` (B, width)."""
        user, query, is_search, _, cand, extra = self.layout.split(obs)
        return self.encode_parts(user, query, is_search, cand, extra)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """(B, N * H) flattened candidate embeddings."""
        return self.encode(observations).flatten(1)


def _standardise_over_candidates(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``x`` (B, N, C) centred and scaled over the N candidates of each request (equivariant; constant -> 0)."""
    centred = x - x.mean(dim=1, keepdim=True)
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


def _check_sizes(sizes: Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(sizes, str | int) or not len(sizes):
        raise ConfigError(f"`{name}` must be a non-empty list of layer sizes, got {sizes!r}")
    return tuple(check_int(h, name, min_value=1) for h in sizes)
