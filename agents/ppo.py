r"""PPO (stable-baselines3) with a permutation-equivariant Plackett-Luce ranking policy.

The policy scores every candidate with **one shared network** (the same weights for each of the N
candidates), so permuting the candidates permutes the scores (equivariance), and the critic pools over the
candidates, so the value does not depend on their order (invariance). Exploration samples whole rankings
from Plackett-Luce over the scores, with exact log-probabilities.

Pieces, from the bottom up:

* :class:`CandidateEncoder` (a SB3 ``BaseFeaturesExtractor``): unflattens the :class:`~envs.rerank.ReRankEnv`
  observation and maps each candidate to a ``H``-dim embedding with a shared MLP over
  ``[u, q, s, v_i, x_i, u * v_i, q * v_i, u.v_i, q.v_i]`` (profile, query, is-search, candidate vector,
  candidate extras, elementwise and dot products) plus the two dot products standardised over the request.
* :class:`PlackettLuceDistribution` (a SB3 ``Distribution``): rankings of ``K`` out of ``N`` sampled by
  Gumbel-top-K, their exact log-probability, and a chain-rule entropy estimate.
* :class:`PlackettLucePolicy` (a SB3 ``ActorCriticPolicy``): logits = a linear head on each candidate's
  embedding; value = an MLP on ``[mean_i h_i, max_i h_i, s, page]`` of a second (critic) encoder.
* :class:`PPORanker` (a :class:`~agents.base.RankingPolicy`): trains the policy with ``sb3.PPO`` on
  ``ReRankEnv`` s (:meth:`PPORanker.learn`), then scores and ranks from :class:`~agents.base.RankingContext`
  like every other agent, and saves as ``policy.json`` + ``state.safetensors`` (no pickle).

Note:
    **Action encoding.** The env takes one score per candidate and shows the top K. A sampled ranking
    :math:`\sigma = (\sigma_1, \dots, \sigma_K)` is emitted as the action

    .. math:: a_{\sigma_j} = 1 - \frac{j}{K + 1} \quad (j = 1..K), \qquad a_i = -1 \text{ otherwise},

    which lies inside the ``Box(-1, 1)`` (SB3's clipping leaves it unchanged), has distinct values on the
    shown slots, and decodes back to :math:`\sigma` as the first K entries of a stable descending argsort
    (the env's own top-K rule). The rollout buffer stores the action; :meth:`PlackettLucePolicy.evaluate_actions`
    decodes the ranking from it.

    **Log-probability** (exact):

    .. math:: \log P(\sigma) = \sum_{j=1}^{K} \Big( z_{\sigma_j} - \log \sum_{l \notin \sigma_{<j}} e^{z_l} \Big).

    **Entropy.** The entropy of a PL ranking has no closed form for K > 1 (a sum over N!/(N-K)! rankings).
    By the chain rule :math:`H(\sigma) = \sum_j \mathbb{E}\,[H(\sigma_j \mid \sigma_{<j})]`, so the sum
    of the conditional softmax entropies *along a sampled ranking* is an unbiased estimate of it. PPO's
    entropy bonus uses this estimate along the rollout's (recent-policy) rankings; it is exact for K = 1
    and a differentiable function of the logits (its gradient ignores the dependence of the sampled ranking
    on the logits, the usual approximation). ``Distribution.entropy()`` without a ranking evaluates it
    along the greedy ranking (a deterministic proxy, used only for logging).

    **Page.** The critic sees the page counter (remaining pages matter for the value); the actor does
    not, because a :class:`~agents.base.RankingContext` carries no page: the ranker's scores from a
    context are then exactly the scores the policy acted on in the env.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from agents._checks import check_bool, check_choice, check_float, check_int, check_k
from agents.base import Feedback, PolicyInputError, Ranking, RankingContext, RankingPolicy
from envs.core import EXTRA_FEATURES, Simulator, plackett_luce_log_prob
from shopgym.checks import torch_threads
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


# ---------------------------------------------------------------------- Plackett-Luce over rankings
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


# ---------------------------------------------------------------------- training curve
@dataclass(frozen=True)
class TrainingCurve:
    """Reward per page during training, one point per PPO rollout.

    Attributes:
        timesteps: (R,) int64 env steps (pages) done at the end of each rollout.
        reward_per_page: (R,) float64 mean env reward per page over the rollout (acting stochastically).
    """

    timesteps: np.ndarray
    reward_per_page: np.ndarray


class RewardPerPageCallback(BaseCallback):
    """Logs ``rollout/reward_per_page`` (mean raw env reward per step of each rollout) and keeps the curve."""

    def __init__(self) -> None:
        super().__init__()
        self._sum = 0.0
        self._count = 0
        self.timesteps: list[int] = []
        self.values: list[float] = []

    def _on_step(self) -> bool:
        rewards = np.asarray(self.locals["rewards"], dtype=np.float64)  # before SB3 adds truncation bootstraps
        self._sum += float(rewards.sum())
        self._count += rewards.size
        return True

    def _on_rollout_end(self) -> None:
        if self._count:
            value = self._sum / self._count
            self.logger.record("rollout/reward_per_page", value)
            self.timesteps.append(int(self.num_timesteps))
            self.values.append(value)
        self._sum, self._count = 0.0, 0


# ---------------------------------------------------------------------- the ranking policy
class PPORanker(RankingPolicy):
    """PPO-trained Plackett-Luce ranker behind the common :class:`~agents.base.RankingPolicy` interface.

    **How to run it** (compare job): PPO learns from whole sessions in the simulator, not from per-batch
    feedback, so :attr:`learns_online` is False and :meth:`update` does nothing. Train first with
    ``ranker.learn(sim, total_timesteps=T, seed=s, tensorboard_log=dir)`` (T env pages; the reward curve is
    logged as ``rollout/reward_per_page`` and kept in :attr:`curve`), then evaluate like any fixed policy:
    :meth:`rank` samples from the trained PL policy (what PPO optimised, with exact slate propensities),
    :meth:`score` gives the deterministic logits (top-K = the greedy policy).

    TensorBoard tags (SB3's plus ours): ``rollout/reward_per_page`` (mean page reward of each rollout),
    ``rollout/ep_rew_mean`` and ``rollout/ep_len_mean`` (session reward and pages, SB3 ``Monitor``),
    ``train/entropy_loss`` (minus the chain-rule entropy estimate), ``train/approx_kl``,
    ``train/clip_fraction``, ``train/value_loss``, ``train/explained_variance``.

    Args:
        hidden: encoder hidden sizes, each >= 1 (the last is the candidate embedding size H).
        critic_hidden: value MLP sizes after pooling, each >= 1.
        activation: "relu" or "tanh".
        learning_rate: Adam learning rate, > 0.
        n_steps: env steps per env per rollout, >= 2.
        batch_size: PPO minibatch size, >= 2.
        n_epochs: PPO epochs per rollout, >= 1.
        gamma: discount per page, in [0, 1].
        gae_lambda: GAE lambda, in [0, 1].
        clip_range: PPO ratio clip, > 0. The ratio is that of a whole ranking, a product of K per-slot
            ratios, so the usual 0.2 freezes learning at K = 10 (measured in
            docs/notes/agents-measurements.md): default 0.5.
        ent_coef: weight of the entropy estimate, >= 0.
        vf_coef: value-loss weight, >= 0.
        max_grad_norm: gradient-norm clip, > 0.
        n_envs: sessions stepped together when learning from a simulator (one batched
            :class:`~envs.sb3.SB3BatchedEnv`), or env copies in SB3's ``DummyVecEnv`` for an env factory, >= 1.
        estimate_propensity: Monte Carlo per-slot propensities in :meth:`rank` for slots 2..K (else NaN;
            slot 1 is always exact: the softmax of the logits).
        n_propensity_samples: draws per request for that estimate, >= 1.
        num_threads: torch threads (restored afterwards); None leaves torch's setting.
        seed: seeds the initial weights, PPO (torch, the envs' resets) and minibatches.
        dim: embedding dimension d (None: read from the first context or env; saved after that).
        n_extra: per-candidate extras F (None: as ``dim``).
        n_candidates: N the network was built for (informational: the network works for any N).
        slate_size: K the network was trained for (informational: :meth:`rank` takes any k).
    """

    name: ClassVar[str] = "ppo"
    learns_online: ClassVar[bool] = False

    def __init__(
        self, hidden: Sequence[int] = (64,), critic_hidden: Sequence[int] = (64,), activation: str = "relu",
        learning_rate: float = 1e-3, n_steps: int = 2, batch_size: int = 64, n_epochs: int = 3,
        gamma: float = 0.95, gae_lambda: float = 0.95, clip_range: float = 0.5, ent_coef: float = 0.001,
        vf_coef: float = 0.5, max_grad_norm: float = 0.5, n_envs: int = 64, estimate_propensity: bool = False,
        n_propensity_samples: int = 64, num_threads: int | None = 1, seed: int = 0, dim: int | None = None,
        n_extra: int | None = None, n_candidates: int | None = None, slate_size: int | None = None,
    ) -> None:
        self.hidden = _check_sizes(hidden, "hidden")
        self.critic_hidden = _check_sizes(critic_hidden, "critic_hidden")
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.learning_rate = check_float(learning_rate, "learning_rate", min_value=0.0, min_inclusive=False)
        self.n_steps = check_int(n_steps, "n_steps", min_value=2)
        self.batch_size = check_int(batch_size, "batch_size", min_value=2)
        self.n_epochs = check_int(n_epochs, "n_epochs", min_value=1)
        self.gamma = check_float(gamma, "gamma", min_value=0.0, max_value=1.0)
        self.gae_lambda = check_float(gae_lambda, "gae_lambda", min_value=0.0, max_value=1.0)
        self.clip_range = check_float(clip_range, "clip_range", min_value=0.0, min_inclusive=False)
        self.ent_coef = check_float(ent_coef, "ent_coef", min_value=0.0)
        self.vf_coef = check_float(vf_coef, "vf_coef", min_value=0.0)
        self.max_grad_norm = check_float(max_grad_norm, "max_grad_norm", min_value=0.0, min_inclusive=False)
        self.n_envs = check_int(n_envs, "n_envs", min_value=1)
        self.estimate_propensity = check_bool(estimate_propensity, "estimate_propensity")
        self.n_propensity_samples = check_int(n_propensity_samples, "n_propensity_samples", min_value=1)
        self.num_threads = None if num_threads is None else check_int(num_threads, "num_threads", min_value=1)
        self.seed = check_int(seed, "seed", min_value=0)
        self.dim = None if dim is None else check_int(dim, "dim", min_value=1)
        self.n_extra = None if n_extra is None else check_int(n_extra, "n_extra", min_value=0)
        self.n_candidates = None if n_candidates is None else check_int(n_candidates, "n_candidates", min_value=1)
        self.slate_size = None if slate_size is None else check_int(slate_size, "slate_size", min_value=1)
        if self.slate_size is not None and self.n_candidates is not None and self.slate_size > self.n_candidates:
            raise ConfigError(f"`slate_size` must be <= `n_candidates` ({self.n_candidates}), got {self.slate_size}")
        self.policy: PlackettLucePolicy | None = None
        self.num_timesteps = 0
        self.curve = TrainingCurve(np.zeros(0, np.int64), np.zeros(0))

    # ------------------------------------------------------------------ network
    def _policy_kwargs(self) -> dict[str, Any]:
        assert self.dim is not None and self.n_extra is not None and self.slate_size is not None
        return {"dim": self.dim, "slate_size": self.slate_size, "n_extra": self.n_extra, "hidden": self.hidden,
                "critic_hidden": self.critic_hidden, "activation": self.activation}

    def _set_shapes(self, dim: int, n_extra: int, n_candidates: int, slate_size: int) -> None:
        if self.policy is not None and (dim, n_extra) != (self.dim, self.n_extra):
            raise ConfigError(f"this PPORanker was built for d={self.dim}, F={self.n_extra} (embedding dim, extra "
                              f"features); the env has d={dim}, F={n_extra}")
        self.dim, self.n_extra = dim, n_extra
        if self.n_candidates is None:
            self.n_candidates = n_candidates
        if self.slate_size is None:
            self.slate_size = min(slate_size, self.n_candidates)

    def _build(self) -> PlackettLucePolicy:
        """Build the network (seeded by ``seed``) for the recorded shapes, without touching the global RNG."""
        if self.policy is None:
            assert self.dim is not None and self.n_extra is not None and self.n_candidates is not None
            n, d = self.n_candidates, self.dim
            obs_space = spaces.Box(-1.0, 1.0, (2 * d + 2 + n * (d + self.n_extra),), np.float32)
            act_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
            with torch.random.fork_rng(devices=[]), torch_threads(self.num_threads):
                torch.manual_seed(self.seed)
                self.policy = PlackettLucePolicy(obs_space, act_space, lambda _: self.learning_rate,
                                                 **self._policy_kwargs())
            self.policy.set_training_mode(False)
        return self.policy

    def _ensure_built(self, ctx: RankingContext) -> PlackettLucePolicy:
        if self.policy is None:
            self._set_shapes(ctx.dim, int(ctx.extra.shape[2]), ctx.n_candidates, ctx.n_candidates)
        elif (ctx.dim, int(ctx.extra.shape[2])) != (self.dim, self.n_extra):
            raise PolicyInputError(f"this PPORanker was built for d={self.dim}, F={self.n_extra} (embedding dim, "
                                   f"extra features); got a context with d={ctx.dim}, F={ctx.extra.shape[2]}")
        return self._build()

    # ------------------------------------------------------------------ RankingPolicy
    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 PL logits (deterministic; permutation-equivariant in the candidates)."""
        policy = self._ensure_built(ctx)
        obs = observation_from_context(ctx)
        with torch.no_grad(), torch_threads(self.num_threads):
            logits = policy.logits(torch.as_tensor(obs))
        return logits.numpy().astype(np.float64)

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        r"""Sample a ranking of ``k`` per request from Plackett-Luce(logits) (Gumbel-top-k with ``rng``).

        ``slate_propensity`` is exact. ``propensity[:, 0]`` is exact (:math:`\mathrm{softmax}(z)_{\sigma_1}`);
        slots 2..k are NaN, or with ``estimate_propensity`` Monte Carlo estimates :math:`(1 + c) / (S + 1)`
        from :math:`S` = ``n_propensity_samples`` further draws (never 0; crude when probabilities are small).
        """
        logits = self.score(ctx)
        k = check_k(k, ctx.n_candidates)
        slots = _gumbel_topk(logits, k, rng)
        slate = np.exp(plackett_luce_log_prob(logits, slots))
        prop = np.full(slots.shape, np.nan)
        z = logits - logits.max(axis=1, keepdims=True)
        first = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        prop[:, 0] = np.take_along_axis(first, slots[:, :1], axis=1)[:, 0]
        if self.estimate_propensity and k > 1:
            hits = np.zeros(slots.shape)
            for _ in range(self.n_propensity_samples):
                hits += _gumbel_topk(logits, k, rng) == slots
            prop[:, 1:] = ((1.0 + hits) / (self.n_propensity_samples + 1.0))[:, 1:]
        return Ranking(slots.astype(np.int64), prop, slate)

    def update(self, ctx: RankingContext, ranking: Ranking, feedback: Feedback) -> None:
        """No per-batch learning: PPO learns in :meth:`learn`."""
        del ctx, ranking, feedback

    # ------------------------------------------------------------------ training
    def learn(self, env: Simulator | gym.Env | Callable[[], gym.Env], total_timesteps: int, seed: int | None = None,
              tensorboard_log: str | None = None, callback: BaseCallback | list[BaseCallback] | None = None,
              progress_bar: bool = False) -> PPORanker:
        """Train with ``stable_baselines3.PPO`` on :class:`~envs.rerank.ReRankEnv` for ``total_timesteps`` pages.

        Training continues from the current network if there is one (loaded or trained before; the Adam
        state starts fresh). The reward curve is appended to :attr:`curve`.

        Args:
            env: a :class:`~envs.core.Simulator` (``n_envs`` sessions stepped as one batch), a ``ReRankEnv``
                (possibly wrapped; used alone), or a callable returning one (``n_envs`` copies). The env must
                use ``action_type="scores"`` and ``ranking_mode="topk"`` (the policy samples the ranking itself).
            total_timesteps: env steps (pages) to train for, >= 1.
            seed: seeds PPO and the env resets (the batch, or env i of a factory, gets ``seed + i``); None: ``seed``.
            tensorboard_log: folder for TensorBoard logs (run name ``ppo``), or None.
            callback: extra SB3 callbacks.
            progress_bar: show SB3's progress bar.

        Returns:
            self.

        Raises:
            ConfigError: the env is not a score-action, top-K ``ReRankEnv``, or its d / F differ from the network's.
        """
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import CallbackList
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

        from envs.rerank import ReRankVectorEnv
        from envs.sb3 import SB3BatchedEnv

        total_timesteps = check_int(total_timesteps, "total_timesteps", min_value=1)
        seed = self.seed if seed is None else check_int(seed, "seed", min_value=0)
        vec_env: VecEnv
        if isinstance(env, Simulator):
            # n_envs sessions in one array step of the batched env (not n_envs Python env copies)
            vec_env = VecMonitor(SB3BatchedEnv(ReRankVectorEnv(self.n_envs, simulator=env)))
            vec_env.seed(seed)
            base_sim = env
        elif isinstance(env, gym.Env):
            one = env
            vec_env = make_vec_env(lambda: one, n_envs=1, seed=seed, vec_env_cls=DummyVecEnv)
            base_sim = self._rerank_env(vec_env).sim
        elif callable(env):
            vec_env = make_vec_env(env, n_envs=self.n_envs, seed=seed, vec_env_cls=DummyVecEnv)
            base_sim = self._rerank_env(vec_env).sim
        else:
            raise ConfigError(f"`env` must be a Simulator, a ReRankEnv or a callable making one, got {type(env)}")
        cfg = base_sim.config
        if cfg.action_type != "scores" or cfg.ranking_mode != "topk":
            raise ConfigError("PPORanker samples rankings itself: the env needs action_type='scores' and "
                              f"ranking_mode='topk', got action_type={cfg.action_type!r}, "
                              f"ranking_mode={cfg.ranking_mode!r}")
        self._set_shapes(base_sim.space.dim, len(EXTRA_FEATURES), cfg.n_candidates, cfg.slate_size)
        self.n_candidates, self.slate_size = cfg.n_candidates, cfg.slate_size
        trained = self.policy
        with torch_threads(self.num_threads):
            model = PPO(PlackettLucePolicy, vec_env, learning_rate=self.learning_rate, n_steps=self.n_steps,
                        batch_size=self.batch_size, n_epochs=self.n_epochs, gamma=self.gamma,
                        gae_lambda=self.gae_lambda, clip_range=self.clip_range, ent_coef=self.ent_coef,
                        vf_coef=self.vf_coef, max_grad_norm=self.max_grad_norm,
                        policy_kwargs={**self._policy_kwargs(), "slate_size": cfg.slate_size},
                        tensorboard_log=tensorboard_log, seed=seed, device="cpu", verbose=0)
            if trained is not None:
                model.policy.load_state_dict(trained.state_dict())
            curve = RewardPerPageCallback()
            extra = [] if callback is None else callback if isinstance(callback, list) else [callback]
            model.learn(total_timesteps, callback=CallbackList([curve, *extra]), tb_log_name="ppo",
                        progress_bar=progress_bar)
        vec_env.close()
        policy = model.policy
        assert isinstance(policy, PlackettLucePolicy)
        policy.set_training_mode(False)
        self.policy = policy
        self.curve = TrainingCurve(
            np.concatenate([self.curve.timesteps, self.num_timesteps + np.asarray(curve.timesteps, np.int64)]),
            np.concatenate([self.curve.reward_per_page, np.asarray(curve.values, np.float64)]))
        self.num_timesteps += int(model.num_timesteps)
        return self

    @staticmethod
    def _rerank_env(vec_env: Any) -> Any:
        """The ``ReRankEnv`` under the first env of a ``DummyVecEnv`` (ConfigError if it is something else)."""
        from envs.rerank import ReRankEnv

        base = vec_env.envs[0].unwrapped
        if not isinstance(base, ReRankEnv):
            raise ConfigError(f"PPORanker learns on ReRankEnv, got {type(base).__name__}")
        return base

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON (shapes included once the network exists)."""
        return {
            "hidden": list(self.hidden), "critic_hidden": list(self.critic_hidden), "activation": self.activation,
            "learning_rate": self.learning_rate, "n_steps": self.n_steps, "batch_size": self.batch_size,
            "n_epochs": self.n_epochs, "gamma": self.gamma, "gae_lambda": self.gae_lambda,
            "clip_range": self.clip_range, "ent_coef": self.ent_coef, "vf_coef": self.vf_coef,
            "max_grad_norm": self.max_grad_norm, "n_envs": self.n_envs,
            "estimate_propensity": self.estimate_propensity, "n_propensity_samples": self.n_propensity_samples,
            "num_threads": self.num_threads, "seed": self.seed, "dim": self.dim, "n_extra": self.n_extra,
            "n_candidates": self.n_candidates, "slate_size": self.slate_size,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """The network's tensors (``policy.*``), the curve and the step count; empty before the network exists."""
        if self.policy is None:
            return {}
        out = {f"policy.{key}": value.detach().cpu().numpy().copy() for key, value in self.policy.state_dict().items()}
        out["num_timesteps"] = np.array([self.num_timesteps], np.int64)
        out["curve.timesteps"] = self.curve.timesteps.astype(np.int64)
        out["curve.reward_per_page"] = self.curve.reward_per_page.astype(np.float64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (the config must give ``dim``, ``n_extra`` and ``n_candidates``).

        Raises:
            ConfigError: tensors are missing or do not fit the configured network.
        """
        if not state:
            return
        if self.dim is None or self.n_extra is None or self.n_candidates is None or self.slate_size is None:
            raise ConfigError("PPORanker state needs `dim`, `n_extra`, `n_candidates` and `slate_size` in the config")
        policy = self._build()
        tensors = {key[len("policy."):]: torch.as_tensor(value) for key, value in state.items()
                   if key.startswith("policy.")}
        try:
            policy.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"PPORanker state does not fit the configured network: {exc}") from exc
        policy.set_training_mode(False)
        self.num_timesteps = int(state.get("num_timesteps", np.zeros(1, np.int64))[0])
        self.curve = TrainingCurve(np.asarray(state.get("curve.timesteps", np.zeros(0, np.int64)), np.int64),
                                   np.asarray(state.get("curve.reward_per_page", np.zeros(0)), np.float64))


def _gumbel_topk(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(B, k) Plackett-Luce sample of ``logits`` (B, N) by Gumbel-top-k."""
    keys = logits + rng.gumbel(size=logits.shape)
    return np.argsort(-keys, axis=1, kind="stable")[:, :k]
