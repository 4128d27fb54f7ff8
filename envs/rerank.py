"""Gymnasium re-ranking envs over the batched simulator: one shopper session per episode.

Both envs drive the same pure transition (:class:`envs.core.Simulator`); the vector env simply runs
``num_envs`` sessions per call as array operations.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.core import PageState, Simulator, StepResult
from envs.interface import RankingContext


def _default_simulator(**kwargs: Any) -> Simulator:
    """The built-in synthetic shop (small) with its true response model and a fast hashing encoder."""
    from envs.build import QuickWorld, setup_world, world_simulator

    setup = setup_world(kwargs.pop("world_config", QuickWorld().config), encoder=kwargs.pop("encoder", "hashing"))
    return world_simulator(setup, kwargs.pop("env_config", None), backend="true")


def _spaces(sim: Simulator) -> tuple[spaces.Box, spaces.Space[Any]]:
    cfg = sim.config
    obs = spaces.Box(-1.0, 1.0, (sim.obs_dim,), np.float32)
    if cfg.action_type == "scores":
        action: spaces.Space[Any] = spaces.Box(-1.0, 1.0, (cfg.n_candidates,), np.float32)
    else:
        action = spaces.MultiDiscrete(np.full(cfg.slate_size, cfg.n_candidates))
    return obs, action


class ReRankEnv(gym.Env[np.ndarray, np.ndarray]):
    """Re-rank the candidates of an e-commerce page for one simulated shopper session.

    ## Description
    Each episode is a shopper session (browse or search). Each step the shopper sees a page of ``K`` slots
    chosen by the agent from ``N`` candidates (from the candidate generator: popular, CF neighbours of the
    history, query matches, random and cold-start items). Feedback (clicks, add-to-cart, purchases) is
    sampled from the response backend: the model fitted from logs, or the synthetic world's ground truth.

    ## Observation Space
    ``Box(-1, 1, (2d + 2 + N d + 2 N,), float32)``: the user's profile (d, updated from this session's
    feedback), the query vector (d, zeros when browsing), is-search, pages shown / max pages, the N candidate
    vectors (N x d), then per candidate (N x 2): shown earlier in this session, popularity scaled to [0, 1].

    ## Action Space
    ``action_type="scores"`` (default): ``Box(-1, 1, (N,), float32)``, one score per candidate; the K best
    scores are shown (ties to the lower index), or with ``ranking_mode="plackett_luce"`` a ranking is sampled
    from Plackett-Luce(scores / temperature). ``action_type="ranking"``: ``MultiDiscrete([N] * K)``, the
    candidates for slots 1..K (distinct). Invalid actions raise ``InvalidActionError``.

    ## Rewards
    Sum over slots of ``w_click * click + w_cart * cart + w_purchase * purchase + w_revenue * price * purchase``,
    minus the optional repetition and diversity penalties.

    ## Episode End
    Termination: the shopper leaves (continuation model). Truncation: ``max_pages`` pages.

    ## Info
    ``shown`` (K catalog indices), ``slots`` (K candidate columns), ``ranking_probability`` (probability of the
    shown ranking under the acting policy given the action: 1 for top-K), per-slot ``clicked``, ``carted``,
    ``purchased``, ``slot_reward``, ``repeat``; page ``diversity``; with ``track_values``: ``expected_reward``
    of the shown page, ``oracle_reward`` (best achievable from these candidates) and ``candidate_values``
    under the backend.

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, simulator: Simulator | None = None, render_mode: str | None = None, **kwargs: Any) -> None:
        self.sim = simulator if simulator is not None else _default_simulator(**kwargs)
        self.observation_space, self.action_space = _spaces(self.sim)
        self.render_mode = render_mode
        self._state: PageState | None = None
        self._last: StepResult | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new shopper session."""
        super().reset(seed=seed)
        self._state = self.sim.reset(self.np_random, 1)
        info = {"is_search": bool(self._state.sessions.is_search[0]), "user": int(self._state.sessions.user[0]),
                "candidates": self._state.candidates[0].copy()}
        return self.sim.observe(self._state)[0], info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Show a page chosen by ``action``; returns obs, reward, terminated, truncated, info."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        slots, prob = self.sim.slots_from_action(np.asarray(action)[None, ...], self.np_random)
        result = self.sim.step(self._state, slots, self.np_random)
        self._state, self._last = result.state, result
        info: dict[str, Any] = {key: value[0] for key, value in result.info.items()}
        info["ranking_probability"] = float(prob[0])
        return (self.sim.observe(result.state)[0], float(result.reward[0]), bool(result.terminated[0]),
                bool(result.truncated[0]), info)

    def ranking_context(self) -> RankingContext:
        """The structured context of the current page (batch of 1), for agents of ``agents/``."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() first")
        return self.sim.context(self._state)

    def render(self) -> str | None:
        """Text view of the last page (``render_mode="ansi"``)."""
        if self.render_mode != "ansi" or self._last is None:
            return None
        info = self._last.info
        lines = [f"page reward {self._last.reward[0]:.2f}"]
        for k, item in enumerate(info["shown"][0]):
            flags = "".join(f for f, v in (("C", info["clicked"][0, k]), ("A", info["carted"][0, k]),
                                           ("P", info["purchased"][0, k])) if v)
            lines.append(f"{k + 1:>3}. {self.sim.space.item_ids[item]} {flags}")
        return "\n".join(lines)


class ReRankVectorEnv(VectorEnv):
    """``num_envs`` shopper sessions per call, as array operations (same transition as :class:`ReRankEnv`).

    Sessions that end are replaced in the same step (``autoreset_mode = SAME_STEP``): the returned
    observation is the new session's first page; ``info["final_obs"]`` holds the ended sessions' last
    observations, one row per True entry of ``info["_final_obs"]`` (in batch order). With ``num_envs=1``
    and the same seed, the trajectory equals :class:`ReRankEnv`'s (the same generator calls in the same order).
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, simulator: Simulator | None = None, **kwargs: Any) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"`num_envs` must be >= 1, got {num_envs}")
        self.sim = simulator if simulator is not None else _default_simulator(**kwargs)
        self.num_envs = int(num_envs)
        self.single_observation_space, self.single_action_space = _spaces(self.sim)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._state: PageState | None = None
        self.np_random, _ = gym.utils.seeding.np_random(None)

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start ``num_envs`` new sessions."""
        if seed is not None:
            if not isinstance(seed, int):
                raise ValueError("ReRankVectorEnv takes one integer seed for the whole batch")
            self.np_random, _ = gym.utils.seeding.np_random(seed)
        self._state = self.sim.reset(self.np_random, self.num_envs)
        return self.sim.observe(self._state), {"is_search": self._state.sessions.is_search.copy()}

    @property
    def state(self) -> PageState:
        """The live sessions."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() first")
        return self._state

    def ranking_context(self) -> RankingContext:
        """The structured context of the current pages, for agents of ``agents/``."""
        return self.sim.context(self.state)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Show one page per session; ended sessions restart in the same step."""
        slots, prob = self.sim.slots_from_action(actions, self.np_random)
        return self.step_slots(slots, prob)

    def step_slots(self, slots: np.ndarray, probability: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Like :meth:`step`, with the (B, K) candidate columns given directly (agents that rank themselves)."""
        result = self.sim.step(self.state, slots, self.np_random)
        info: dict[str, Any] = dict(result.info)
        info["ranking_probability"] = np.ones(self.num_envs) if probability is None else probability
        done = result.terminated | result.truncated
        state = result.state
        obs = self.sim.observe(state)
        if done.any():
            rows = np.flatnonzero(done)
            info["final_obs"] = obs[rows].copy()
            info["_final_obs"] = done.copy()
            fresh = self.sim.reset(self.np_random, len(rows))
            state = self.sim.replace_rows(state, rows, fresh)
            obs[rows] = self.sim.observe(fresh)
        self._state = state
        return obs, result.reward.astype(np.float64), result.terminated, result.truncated, info
