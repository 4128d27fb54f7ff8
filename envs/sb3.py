"""Stable-Baselines3's ``VecEnv`` API over the natively batched :class:`~envs.rerank.ReRankVectorEnv`.

SB3 does not take gymnasium's vector API: its algorithms step a ``stable_baselines3.common.vec_env.VecEnv``
(``DummyVecEnv`` loops over single envs in Python, one transition per env). :class:`SB3BatchedEnv` adapts
one :class:`~envs.rerank.ReRankVectorEnv` instead, so ``num_envs`` shopper sessions advance in one array
step of the shared transition, which is what makes PPO on the simulator as fast as the bandits' loop.

Conversions (gymnasium SAME_STEP autoreset -> SB3):

* ``dones = terminated | truncated``; ``infos[i]["TimeLimit.truncated"] = truncated and not terminated``
  (SB3 bootstraps the value of truncated sessions from ``infos[i]["terminal_observation"]``);
* the observation returned for an ended session is already the next session's first page (both APIs
  agree), and ``infos[i]["terminal_observation"]`` is the ended session's last observation;
* ``seed(s)`` seeds the next ``reset`` of the whole batch with ``s`` (one generator for all sessions; the
  per-env seeds SB3 computes, ``s + i``, are not used separately).

Per-env ``infos`` carry the scalar ``page_reward`` only (SB3 copies infos every step; the per-slot arrays of
the vector env stay in :attr:`SB3BatchedEnv.last_info`). Wrap in SB3's ``VecMonitor`` for episode statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from envs.rerank import ReRankVectorEnv


class SB3BatchedEnv(VecEnv):
    """``num_envs`` sessions of a :class:`~envs.rerank.ReRankVectorEnv` behind SB3's ``VecEnv``.

    Args:
        vector_env: the batched env (its ``num_envs`` becomes this VecEnv's).
    """

    render_mode: str | None = None

    def __init__(self, vector_env: ReRankVectorEnv) -> None:
        self.vector_env = vector_env
        self._actions: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> np.ndarray:
        """Start ``num_envs`` sessions (seeded by the last :meth:`seed` call, if any)."""
        seed = self._seeds[0]
        obs, info = self.vector_env.reset(seed=None if seed is None else int(seed))
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store (num_envs, N) score actions for :meth:`step_wait`."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One page for every session: observations, rewards (float32), dones and per-env infos."""
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        obs, reward, terminated, truncated, info = self.vector_env.step(self._actions)
        self._actions = None
        self.last_info = info
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{"page_reward": float(r)} for r in reward]
        if dones.any():
            rows = np.flatnonzero(dones)
            final = info["final_obs"]
            for j, i in enumerate(rows):
                infos[i]["terminal_observation"] = final[j]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        """Close the vector env."""
        self.vector_env.close()

    # ------------------------------------------------------------------ attribute access (one shared env)
    def _indices(self, indices: None | int | Iterable[int]) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: None | int | Iterable[int] = None) -> list[Any]:
        """The vector env's attribute, once per requested index (every session shares one env)."""
        value = getattr(self, attr_name) if attr_name == "render_mode" else getattr(self.vector_env, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: None | int | Iterable[int] = None) -> None:
        """Set an attribute of the shared vector env."""
        setattr(self.vector_env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: None | int | Iterable[int] = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of the shared vector env once, and repeat its result per requested index."""
        result = getattr(self.vector_env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: None | int | Iterable[int] = None) -> list[bool]:
        """False: the sessions are not gymnasium-wrapped envs."""
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering."""
        return [None for _ in range(self.num_envs)]
