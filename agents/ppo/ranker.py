"""The :class:`PPORanker` agent (training with ``sb3.PPO``, scoring, ranking, persistence) and its curve."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from scipy.special import softmax
from stable_baselines3.common.callbacks import BaseCallback

from agents._checks import check_bool, check_choice, check_float, check_int, check_k
from agents.base import Feedback, PolicyInputError, Ranking, RankingContext, RankingPolicy
from agents.ppo.encoder import ACTIVATIONS, _check_sizes, observation_from_context
from agents.ppo.policy import PlackettLucePolicy
from envs.core import EXTRA_FEATURES, Simulator
from shopgym.errors import ConfigError
from shopgym.numeric import plackett_luce_log_prob, plackett_luce_sample
from shopgym.threads import torch_threads


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
        slots = plackett_luce_sample(rng, logits, k)
        slate = np.exp(plackett_luce_log_prob(logits, slots))
        prop = np.full(slots.shape, np.nan)
        first = softmax(logits, axis=1)
        prop[:, 0] = np.take_along_axis(first, slots[:, :1], axis=1)[:, 0]
        if self.estimate_propensity and k > 1:
            hits = np.zeros(slots.shape)
            for _ in range(self.n_propensity_samples):
                hits += plackett_luce_sample(rng, logits, k) == slots
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
            if tensorboard_log is None:  # else SB3 makes an empty SB3-<time> folder in the temp folder per run
                from stable_baselines3.common.logger import Logger

                model.set_logger(Logger(folder=None, output_formats=[]))
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
