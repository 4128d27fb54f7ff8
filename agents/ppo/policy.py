"""The SB3 actor-critic policy: PL logits from the shared candidate encoder, a pooled critic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from agents._checks import check_choice, check_int
from agents.ppo.distribution import PlackettLuceDistribution
from agents.ppo.encoder import ACTIVATIONS, CandidateEncoder, _check_sizes, _mlp
from envs.core import EXTRA_FEATURES
from shopgym.errors import ConfigError


class PlackettLucePolicy(ActorCriticPolicy):
    """Actor-critic for :class:`~envs.rerank.ReRankEnv` (``action_type="scores"``, top-K) with PL exploration.

    Actor: :class:`CandidateEncoder` then a shared linear head, logits (B, N), permutation-equivariant.
    Critic: a second encoder, mean and max pooled over candidates, with is-search and page, then an MLP:
    permutation-invariant. Pass it to ``stable_baselines3.PPO`` with ``policy_kwargs`` (``dim``,
    ``slate_size``, ...).

    Args:
        observation_space: the env's flat ``Box`` observation space.
        action_space: ``Box(-1, 1, (N,))``.
        lr_schedule: learning-rate schedule (SB3).
        dim: embedding dimension d.
        slate_size: K, the env's slots per page.
        n_extra: per-candidate extra features F.
        hidden: encoder hidden sizes (actor and critic each have their own encoder).
        critic_hidden: sizes of the value MLP after pooling.
        activation: "relu" or "tanh".
        ortho_init: SB3's orthogonal initialisation (gain sqrt 2; 0.01 for the logit head, 1 for the value).
        **kwargs: other ``ActorCriticPolicy`` arguments (optimizer_class, optimizer_kwargs, ...).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, *,
                 dim: int, slate_size: int, n_extra: int = len(EXTRA_FEATURES), hidden: Sequence[int] = (64,),
                 critic_hidden: Sequence[int] = (64,), activation: str = "relu", ortho_init: bool = True,
                 **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise ConfigError(f"PlackettLucePolicy needs the env's score action Box(-1, 1, (N,)) "
                              f"(action_type='scores'), got {action_space}")
        self.slate_size = check_int(slate_size, "slate_size", min_value=1)
        self.critic_hidden = _check_sizes(critic_hidden, "critic_hidden")
        for key in ("features_extractor_class", "features_extractor_kwargs", "share_features_extractor", "net_arch"):
            if key in kwargs:
                raise ConfigError(f"PlackettLucePolicy builds its own networks; do not pass `{key}`")
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[],
                         activation_fn=ACTIVATIONS[check_choice(activation, "activation", tuple(ACTIVATIONS))],
                         ortho_init=ortho_init, features_extractor_class=CandidateEncoder,
                         features_extractor_kwargs={"dim": dim, "n_extra": n_extra, "hidden": tuple(hidden),
                                                    "activation": activation},
                         share_features_extractor=False, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        """Create the logit head, the value network and the optimizer."""
        self.pl_dist = PlackettLuceDistribution(self.slate_size)
        self.action_dist = self.pl_dist
        h = self.encoder.out_dim
        self.logit_head = self.pl_dist.proba_distribution_net(h)
        self.critic_body = nn.Sequential(*_mlp((2 * h + 2, *self.critic_hidden), self.activation_fn, True))
        self.value_head = nn.Linear(self.critic_hidden[-1], 1)
        if self.ortho_init:
            gains: tuple[tuple[nn.Module, float], ...] = (
                (self.pi_features_extractor, math.sqrt(2)), (self.vf_features_extractor, math.sqrt(2)),
                (self.critic_body, math.sqrt(2)), (self.value_head, 1.0), (self.logit_head, 0.01))
            for module, gain in gains:
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),  # type: ignore[call-arg]
                                              **self.optimizer_kwargs)

    @property
    def encoder(self) -> CandidateEncoder:
        """The actor's candidate encoder."""
        assert isinstance(self.pi_features_extractor, CandidateEncoder)
        return self.pi_features_extractor

    @property
    def critic_encoder(self) -> CandidateEncoder:
        """The critic's candidate encoder."""
        assert isinstance(self.vf_features_extractor, CandidateEncoder)
        return self.vf_features_extractor

    def _obs(self, obs: PyTorchObs) -> torch.Tensor:
        out = preprocess_obs(obs, self.observation_space, normalize_images=False)
        assert isinstance(out, torch.Tensor)
        return out

    def logits_from_embeddings(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N) logits from (B, N, H) actor embeddings."""
        return self.logit_head(h).squeeze(-1)

    def logits(self, obs: PyTorchObs) -> torch.Tensor:
        """(B, N) actor logits (PL scores) of flat observations (B, width)."""
        return self.logits_from_embeddings(self.encoder.encode(self._obs(obs)))

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """(B, 1) value estimates: invariant to the order of the candidates."""
        x = self._obs(obs)
        h = self.critic_encoder.encode(x)
        _, _, is_search, page, _, _ = self.critic_encoder.layout.split(x)
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1), is_search[:, None], page[:, None]], dim=1)
        return self.value_head(self.critic_body(pooled))

    def get_distribution(self, obs: PyTorchObs) -> PlackettLuceDistribution:
        """The PL distribution over rankings for ``obs``."""
        return self.pl_dist.proba_distribution(self.logits(obs))

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor,
                                                                                torch.Tensor]:
        """Actions (B, N) encoding sampled (or greedy) rankings, values (B, 1), log-probabilities (B,)."""
        dist = self.get_distribution(obs)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, self.predict_values(obs), dist.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor | None]:
        """Values (B, 1), exact log-probabilities (B,) of the stored rankings, entropy estimates (B,)."""
        log_prob, entropy = self.get_distribution(obs).log_prob_and_entropy(actions)
        return self.predict_values(obs), log_prob, entropy

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)
