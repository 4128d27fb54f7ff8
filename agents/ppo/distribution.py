"""Plackett-Luce over rankings as a SB3 ``Distribution``: action encoding, exact log-probability, entropy."""

from __future__ import annotations

import math

import torch
from stable_baselines3.common.distributions import Distribution
from torch import nn

from agents._checks import check_int
from agents.base import PolicyInputError


def encode_ranking(ranking: torch.Tensor, n_candidates: int) -> torch.Tensor:
    """(B, N) float32 env action that shows ``ranking`` (B, K) under top-K (see the module note)."""
    b, k = ranking.shape
    action = torch.full((b, n_candidates), -1.0, dtype=torch.float32, device=ranking.device)
    values = 1.0 - torch.arange(1, k + 1, dtype=torch.float32, device=ranking.device) / (k + 1)
    return action.scatter(1, ranking, values.expand(b, k).contiguous())


def decode_ranking(actions: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K) int64 ranking shown by ``actions`` (B, N): the first K of a stable descending argsort."""
    return torch.argsort(-actions, dim=1, stable=True)[:, :k]


def ranking_log_prob_entropy(logits: torch.Tensor, ranking: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Exact PL log-probability of ``ranking`` (B, K) under ``logits`` (B, N), and the chain-rule entropy estimate.

    Returns:
        log_prob: (B,) :math:`\sum_j z_{\sigma_j} - \log\sum_{l \notin \sigma_{<j}} e^{z_l}`.
        entropy: (B,) :math:`\sum_j H(\mathrm{softmax}(z_{l \notin \sigma_{<j}}))`.
    """
    chosen = logits.gather(1, ranking)
    taken = torch.zeros_like(logits, dtype=torch.bool)
    log_prob = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
    entropy = torch.zeros_like(log_prob)
    for j in range(ranking.shape[1]):
        masked = logits.masked_fill(taken, -math.inf)
        log_z = torch.logsumexp(masked, dim=1)
        log_p = (masked - log_z[:, None]).masked_fill(taken, 0.0)  # finite everywhere: no NaN gradients
        log_prob = log_prob + chosen[:, j] - log_z
        entropy = entropy - (log_p.exp() * log_p).sum(dim=1)
        taken = taken.scatter(1, ranking[:, j:j + 1], True)
    return log_prob, entropy


class PlackettLuceDistribution(Distribution):
    """Plackett-Luce over rankings of ``slate_size`` out of N candidates, as SB3 ``Box(-1, 1, (N,))`` actions.

    Samples by Gumbel-top-K with torch's global generator (seeded by SB3's ``seed``); actions are the
    score encoding of the module note.

    Args:
        slate_size: K, >= 1.
    """

    def __init__(self, slate_size: int) -> None:
        super().__init__()
        self.slate_size = check_int(slate_size, "slate_size", min_value=1)
        self.logits: torch.Tensor | None = None

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """The per-candidate logit head: ``Linear(latent_dim, 1)`` applied to every candidate."""
        return nn.Linear(latent_dim, 1)

    def proba_distribution(self, logits: torch.Tensor) -> PlackettLuceDistribution:
        """Set the (B, N) logits."""
        if logits.shape[1] < self.slate_size:
            raise PolicyInputError(f"Plackett-Luce needs N >= K={self.slate_size} candidates, got {logits.shape[1]}")
        self.logits = logits
        return self

    def _logits(self) -> torch.Tensor:
        if self.logits is None:
            raise RuntimeError("call proba_distribution(logits) first")
        return self.logits

    def sample_ranking(self) -> torch.Tensor:
        """(B, K) ranking by Gumbel-top-K."""
        logits = self._logits()
        gumbel = -torch.empty_like(logits).exponential_().log()
        return decode_ranking(logits.detach() + gumbel, self.slate_size)

    def mode_ranking(self) -> torch.Tensor:
        """(B, K) the K best logits (ties: lower index first)."""
        return decode_ranking(self._logits().detach(), self.slate_size)

    def sample(self) -> torch.Tensor:
        """(B, N) action encoding a sampled ranking."""
        return encode_ranking(self.sample_ranking(), self._logits().shape[1])

    def mode(self) -> torch.Tensor:
        """(B, N) action encoding the greedy ranking."""
        return encode_ranking(self.mode_ranking(), self._logits().shape[1])

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """(B,) exact log-probability of the rankings encoded by ``actions`` (B, N)."""
        return ranking_log_prob_entropy(self._logits(), decode_ranking(actions, self.slate_size))[0]

    def log_prob_and_entropy(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) log-probability of ``actions`` and (B,) the entropy estimate along their rankings."""
        return ranking_log_prob_entropy(self._logits(), decode_ranking(actions, self.slate_size))

    def entropy(self) -> torch.Tensor:
        """(B,) the chain-rule entropy estimate along the greedy ranking (a deterministic proxy)."""
        return ranking_log_prob_entropy(self._logits(), self.mode_ranking())[1]

    def actions_from_params(self, logits: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for ``logits`` (B, N)."""
        return self.proba_distribution(logits).get_actions(deterministic=deterministic)

    def log_prob_from_params(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled actions and their log-probability for ``logits`` (B, N)."""
        actions = self.actions_from_params(logits)
        return actions, self.log_prob(actions)
