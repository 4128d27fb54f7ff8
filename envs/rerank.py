"""Gymnasium re-ranking envs over the batched simulator: one shopper session per episode.

Both envs drive the same pure transition (:class:`envs.core.Simulator`); the vector env simply runs
``num_envs`` sessions per call as array operations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.core import EXTRA_FEATURES, EnvConfig, PageState, Simulator, StepResult
from envs.interface import RankingContext
from shopgym.errors import ConfigError

if TYPE_CHECKING:
    from encoders.base import TextEncoder
    from envs.synthetic import WorldConfig


def _simulator(simulator: Simulator | None, world_config: WorldConfig | None, encoder: str | TextEncoder,
               env_config: EnvConfig | None) -> Simulator:
    """``simulator`` itself, or the built-in synthetic shop with its true response model."""
    if simulator is not None:
        set_args = (("world_config", world_config is not None), ("encoder", encoder != "hashing"),
                    ("env_config", env_config is not None))
        given = [name for name, is_set in set_args if is_set]
        if given:
            raise ConfigError(
                f"pass either `simulator` or the arguments that build the default one, not both; got `simulator` "
                f"and {', '.join(f'`{name}`' for name in given)} (a simulator already holds its world, encoder and "
                "env config)"
            )
        return simulator
    from envs.build import QuickWorld, setup_world, world_simulator

    setup = setup_world(world_config if world_config is not None else QuickWorld().config, encoder=encoder)
    return world_simulator(setup, env_config, backend="true")


Observation = Literal["flat", "ids"]
OBSERVATIONS: tuple[str, ...] = ("flat", "ids")


def _check_observation(observation: str) -> Observation:
    if observation not in OBSERVATIONS:
        raise ConfigError(f"`observation` must be one of {list(OBSERVATIONS)}, got {observation!r}")
    return observation  # type: ignore[return-value]


def _spaces(sim: Simulator, observation: Observation) -> tuple[spaces.Space[Any], spaces.Space[Any]]:
    cfg = sim.config
    if observation == "flat":
        obs: spaces.Space[Any] = spaces.Box(-1.0, 1.0, (sim.obs_dim,), np.float32)
    else:
        d, n, f = sim.space.dim, cfg.n_candidates, len(EXTRA_FEATURES)
        obs = spaces.Dict({
            "user": spaces.Box(-1.0, 1.0, (d,), np.float32), "query": spaces.Box(-1.0, 1.0, (d,), np.float32),
            "is_search": spaces.Box(0.0, 1.0, (1,), np.float32), "page": spaces.Box(0.0, 1.0, (1,), np.float32),
            "candidates": spaces.MultiDiscrete(np.full(n, sim.space.n_items, dtype=np.int64)),
            "extra": spaces.Box(0.0, 1.0, (n, f), np.float32),
        })
    if cfg.action_type == "scores":
        action: spaces.Space[Any] = spaces.Box(-1.0, 1.0, (cfg.n_candidates,), np.float32)
    else:
        action = spaces.MultiDiscrete(np.full(cfg.slate_size, cfg.n_candidates))
    return obs, action


def _observe(sim: Simulator, state: PageState, observation: Observation) -> Any:
    """(B, obs_dim) flat observations, or the dict of arrays of ``observation="ids"``."""
    return sim.observe(state) if observation == "flat" else sim.observe_ids(state)


def _row(obs: Any, i: int) -> Any:
    """Row ``i`` of a batched observation (flat array or dict of arrays)."""
    return {key: value[i] for key, value in obs.items()} if isinstance(obs, dict) else obs[i]


def flatten_ids_observation(obs: dict[str, np.ndarray], item_table: np.ndarray) -> np.ndarray:
    """The flat observation (``observation="flat"`` layout) materialised from an ``"ids"`` observation.

    Args:
        obs: an ``"ids"`` observation, batched (leading B axis on every key) or single.
        item_table: (n_items, d) the env's :attr:`~envs.core.Simulator.item_table`.

    Returns:
        (B, 2d + 2 + N d + N F) float32, or (2d + 2 + N d + N F,) for a single observation.
    """
    single = obs["candidates"].ndim == 1
    batch = {k: np.asarray(v)[None] for k, v in obs.items()} if single else obs
    b = len(batch["candidates"])
    out = np.concatenate([batch["user"], batch["query"], batch["is_search"].reshape(b, 1),
                          batch["page"].reshape(b, 1), item_table[batch["candidates"]].reshape(b, -1),
                          batch["extra"].reshape(b, -1)], axis=1).astype(np.float32, copy=False)
    return out[0] if single else out


class ReRankEnv(gym.Env[Any, np.ndarray]):
    """Re-rank the candidates of an e-commerce page for one simulated shopper session.

    ## Description
    Each episode is a shopper session (browse or search). Each step the shopper sees a page of ``K`` slots
    chosen by the agent from ``N`` candidates (from the candidate generator: popular, CF neighbours of the
    history, query matches, random and cold-start items). Feedback (clicks, add-to-cart, purchases) is
    sampled from the response backend: the model fitted from logs, or the synthetic world's ground truth.
    Made without a ``simulator``, the env builds the small built-in synthetic shop (``QuickWorld``: 300
    items, 500 shoppers) answered by its true response model, with the hashing text encoder.

    ## Observation Space
    ``observation="flat"`` (default, what SB3's policies take): ``Box(-1, 1, (2d + 2 + N d + 2 N,), float32)``:
    the user's profile (d, updated from this session's feedback), the query vector (d, zeros when browsing),
    is-search, pages shown / max pages, the N candidate vectors (N x d), then per candidate (N x 2): shown
    earlier in this session, popularity scaled to [0, 1]. ``d`` is the simulator's embedding size (326 for the
    default world and encoder).

    ``observation="ids"``: the same content by reference, ``Dict(user: Box(d), query: Box(d), is_search:
    Box(1), page: Box(1), candidates: MultiDiscrete([n_items] * N), extra: Box(N, 2))``: candidates are
    catalog indices into the one shared table :attr:`item_table` (n_items x d) instead of N x d copied
    vectors per step; :func:`flatten_ids_observation` materialises the flat layout when asked.

    ## Action Space
    ``action_type="scores"`` (default): ``Box(-1, 1, (N,), float32)``, one score per candidate; the K best
    scores are shown (ties to the lower index), or with ``ranking_mode="plackett_luce"`` a ranking is sampled
    from Plackett-Luce(scores / temperature). ``action_type="ranking"``: ``MultiDiscrete([N] * K)``, the
    candidates for slots 1..K (distinct). Invalid actions raise ``InvalidActionError``.

    ## Rewards
    Sum over slots of ``w_click * click + w_cart * cart + w_purchase * purchase + w_revenue * price * purchase``,
    minus the optional repetition and diversity penalties (weights: ``EnvConfig.reward``).

    ## Starting State
    A new session: a shopper drawn by activity, a browse or search intent (with its query), and the first
    page's N candidates; all drawn from ``np_random`` (seeded by ``reset(seed=...)``).

    ## Episode End
    Termination: the shopper leaves (continuation model). Truncation: ``EnvConfig.max_pages`` pages.

    ## Info
    ``reset``: ``is_search``, ``user`` (user index), ``candidates`` (N catalog indices). ``step``: ``shown``
    (K catalog indices), ``slots`` (K candidate columns), ``ranking_probability`` (probability of the shown
    ranking under the acting policy given the action: 1 for top-K), per-slot ``clicked``, ``carted``,
    ``purchased``, ``slot_reward``, ``repeat``; page ``diversity``; with ``track_values``:
    ``expected_reward`` of the shown page, ``oracle_reward`` (best achievable from these candidates) and
    ``candidate_values`` under the backend.

    ## Arguments
    ``import shopgym`` registers the id ``"shopgym/ReRank-v0"``; ``gym.make`` passes its keyword arguments
    here:

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import shopgym
    >>> from envs.core import EnvConfig
    >>> env = gym.make("shopgym/ReRank-v0", env_config=EnvConfig(n_candidates=20, slate_size=5))
    >>> env
    <OrderEnforcing<PassiveEnvChecker<ReRankEnv<shopgym/ReRank-v0>>>>
    >>> env.observation_space
    Box(-1.0, 1.0, (7214,), float32)
    >>> env.action_space
    Box(-1.0, 1.0, (20,), float32)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(np.linspace(1, -1, 20, dtype=np.float32))
    >>> info["slots"], info["shown"], info["ranking_probability"]
    (array([0, 1, 2, 3, 4]), array([192,  61, 298, 245,   4]), 1.0)

    Args:
        simulator: the simulator to drive (e.g. from :func:`envs.build.world_simulator` or
            :func:`envs.build.log_simulator`); None builds the default synthetic shop from the three
            arguments below, which must then be left at their defaults.
        render_mode: None or ``"ansi"`` (:meth:`render` returns the last page as text).
        world_config: the synthetic world of the default simulator; None: ``QuickWorld().config``.
        encoder: the default simulator's text encoder: a name (``"hashing"``, ``"bert"``) or a
            :class:`~encoders.base.TextEncoder`.
        env_config: page size, candidates, rewards, session length and action type
            (:class:`envs.core.EnvConfig`); None: ``EnvConfig()`` (N=50, K=10, 20 pages).
        observation: ``"flat"`` (one float32 vector) or ``"ids"`` (a dict; candidates by catalog index).

    Raises:
        ConfigError: ``simulator`` is given together with a default-simulator argument, or
            ``render_mode`` or ``observation`` is not a supported value.

    ## Vectorized environment
    :class:`ReRankVectorEnv` runs many sessions per call as array operations; ``gym.make_vec`` uses it
    (the id's ``vector_entry_point``).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, simulator: Simulator | None = None, render_mode: str | None = None, *,
                 world_config: WorldConfig | None = None, encoder: str | TextEncoder = "hashing",
                 env_config: EnvConfig | None = None, observation: Observation = "flat") -> None:
        modes = self.metadata["render_modes"]
        if render_mode is not None and render_mode not in modes:
            raise ConfigError(f"`render_mode` must be None or one of {modes}, got {render_mode!r}")
        self.observation = _check_observation(observation)
        self.sim = _simulator(simulator, world_config, encoder, env_config)
        self.observation_space, self.action_space = _spaces(self.sim, self.observation)
        self.render_mode = render_mode
        self._state: PageState | None = None
        self._last: StepResult | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start a new shopper session."""
        super().reset(seed=seed)
        self._state = self.sim.reset(self.np_random, 1)
        info = {"is_search": bool(self._state.sessions.is_search[0]), "user": int(self._state.sessions.user[0]),
                "candidates": self._state.candidates[0].copy()}
        return _row(_observe(self.sim, self._state, self.observation), 0), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Show a page chosen by ``action``; returns obs, reward, terminated, truncated, info."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        slots, prob = self.sim.slots_from_action(np.asarray(action)[None, ...], self.np_random)
        result = self.sim.step(self._state, slots, self.np_random)
        self._state, self._last = result.state, result
        info: dict[str, Any] = {key: value[0] for key, value in result.info.items()}
        info["ranking_probability"] = float(prob[0])
        return (_row(_observe(self.sim, result.state, self.observation), 0), float(result.reward[0]),
                bool(result.terminated[0]),
                bool(result.truncated[0]), info)

    @property
    def item_table(self) -> np.ndarray:
        """(n_items, d) float32 item vectors that ``observation="ids"``'s candidate indices refer to."""
        return self.sim.item_table

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
    observations, one row per True entry of ``info["_final_obs"]`` (in batch order; with ``observation="ids"``
    a dict of such arrays). With ``num_envs=1``
    and the same seed, the trajectory equals :class:`ReRankEnv`'s (the same generator calls in the same order).
    Spaces, rewards and info are :class:`ReRankEnv`'s with a leading batch axis.

    >>> vec = gym.make_vec("shopgym/ReRank-v0", num_envs=8, env_config=EnvConfig(n_candidates=20, slate_size=5))
    >>> vec
    ReRankVectorEnv(shopgym/ReRank-v0, num_envs=8)
    >>> vec.action_space
    Box(-1.0, 1.0, (8, 20), float32)
    >>> obs, info = vec.reset(seed=0)
    >>> obs.shape
    (8, 7214)
    >>> obs, reward, terminated, truncated, info = vec.step(np.tile(np.linspace(1, -1, 20, dtype=np.float32), (8, 1)))
    >>> reward
    array([0., 0., 0., 0., 0., 1., 0., 0.])

    Args:
        num_envs: sessions run side by side, >= 1.
        simulator: the simulator to drive; None builds the default synthetic shop (see :class:`ReRankEnv`).
        world_config: the synthetic world of the default simulator; None: ``QuickWorld().config``.
        encoder: the default simulator's text encoder (a name or a :class:`~encoders.base.TextEncoder`).
        env_config: :class:`envs.core.EnvConfig` of the default simulator; None: ``EnvConfig()``.
        observation: ``"flat"`` or ``"ids"`` (see :class:`ReRankEnv`); ``"ids"`` copies no candidate
            vector, and loops that rank from :meth:`ranking_context` (the bandits) want it.

    Raises:
        ValueError: ``num_envs`` < 1.
        ConfigError: ``simulator`` is given together with a default-simulator argument, or ``observation``
            is not a supported value.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, simulator: Simulator | None = None, *,
                 world_config: WorldConfig | None = None, encoder: str | TextEncoder = "hashing",
                 env_config: EnvConfig | None = None, observation: Observation = "flat") -> None:
        if int(num_envs) < 1:
            raise ValueError(f"`num_envs` must be >= 1, got {num_envs}")
        self.observation = _check_observation(observation)
        self.sim = _simulator(simulator, world_config, encoder, env_config)
        self.num_envs = int(num_envs)
        self.single_observation_space, self.single_action_space = _spaces(self.sim, self.observation)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._state: PageState | None = None
        self.np_random, _ = gym.utils.seeding.np_random(None)

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start ``num_envs`` new sessions."""
        if seed is not None:
            if not isinstance(seed, int):
                raise ValueError("ReRankVectorEnv takes one integer seed for the whole batch")
            self.np_random, _ = gym.utils.seeding.np_random(seed)
        self._state = self.sim.reset(self.np_random, self.num_envs)
        return _observe(self.sim, self._state, self.observation), {"is_search": self._state.sessions.is_search.copy()}

    @property
    def state(self) -> PageState:
        """The live sessions."""
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() first")
        return self._state

    @property
    def item_table(self) -> np.ndarray:
        """(n_items, d) float32 item vectors that ``observation="ids"``'s candidate indices refer to."""
        return self.sim.item_table

    def ranking_context(self) -> RankingContext:
        """The structured context of the current pages, for agents of ``agents/``."""
        return self.sim.context(self.state)

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Show one page per session; ended sessions restart in the same step."""
        slots, prob = self.sim.slots_from_action(actions, self.np_random)
        return self.step_slots(slots, prob)

    def step_slots(self, slots: np.ndarray, probability: np.ndarray | None = None
                   ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Like :meth:`step`, with the (B, K) candidate columns given directly (agents that rank themselves)."""
        result = self.sim.step(self.state, slots, self.np_random)
        info: dict[str, Any] = dict(result.info)
        info["ranking_probability"] = np.ones(self.num_envs) if probability is None else probability
        done = result.terminated | result.truncated
        state = result.state
        if done.any():
            rows = np.flatnonzero(done)
            info["final_obs"] = _observe(self.sim, state.take(rows), self.observation)
            info["_final_obs"] = done.copy()
            state = self.sim.replace_rows(state, rows, self.sim.reset(self.np_random, len(rows)))
        obs = _observe(self.sim, state, self.observation)
        self._state = state
        return obs, result.reward.astype(np.float64), result.terminated, result.truncated, info
