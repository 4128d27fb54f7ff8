"""The simulator's pure, batched transition: one function shared by the single and the vector env.

A :class:`Simulator` holds what does not change (item space, user table, candidate generator, response
backend, config). A :class:`PageState` holds a batch of B live sessions. :meth:`Simulator.reset` and
:meth:`Simulator.step` are pure in the state: they take a state, an action and a generator and return
a new state, never mutating their inputs, so a batch of 1 and a batch of 1,024 run the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from encoders.profiles import BehaviourWeights, ProfileState, update, vector
from envs.backends import Backend, Sessions
from envs.candidates import CandidateConfig, CandidateGenerator
from envs.interface import RankingContext
from envs.reward import RewardWeights
from envs.space import ItemSpace, UserTable
from envs.synthetic.world import SyntheticWorld
from shopgym.errors import ConfigError, ShopgymError
from shopgym.numeric import plackett_luce_log_prob, plackett_luce_sample, topk

#: per-candidate extra features in observations and contexts: shown earlier in the session, popularity
EXTRA_FEATURES = ("shown_before", "popularity")


class InvalidActionError(ShopgymError, ValueError):
    """An action does not fit the env's action space (shape, NaN, duplicate or out-of-range items)."""


@dataclass(frozen=True)
class EnvConfig:
    """Options of the re-ranking env.

    Args:
        n_candidates: N, candidates per page.
        slate_size: K, slots shown per page (<= N).
        max_pages: pages per session before truncation.
        reward: weights of click, cart, purchase and revenue in the reward.
        repetition_penalty: subtracted per shown item already shown earlier in the session.
        diversity_penalty: subtracted times (1 - intra-list diversity) of the page.
        candidates: candidate-source shares.
        fake_user_share: share of sessions from fake users who click at random and never buy.
        fake_click_prob: a fake user's click probability per shown slot.
        click_spam_rate: probability that a real shopper's non-clicked slot gets a spam click (no conversion).
        profile_decay: per-page decay of the in-session profile (1 = no decay).
        action_type: "scores" (Box, one score per candidate; top-K shown) or "ranking" (MultiDiscrete, K items).
        ranking_mode: with scores, "topk" shows the K best-scored candidates (probability 1);
            "plackett_luce" samples the ranking from Plackett-Luce(scores / temperature) and reports
            its exact probability.
        temperature: Plackett-Luce temperature, > 0.
        track_values: compute the backend's expected value of every candidate each step (oracle, regret, NDCG).
    """

    n_candidates: int = 50
    slate_size: int = 10
    max_pages: int = 20
    reward: RewardWeights = field(default_factory=RewardWeights)
    repetition_penalty: float = 0.0
    diversity_penalty: float = 0.0
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    fake_user_share: float = 0.0
    fake_click_prob: float = 0.3
    click_spam_rate: float = 0.0
    profile_decay: float = 1.0
    action_type: Literal["scores", "ranking"] = "scores"
    ranking_mode: Literal["topk", "plackett_luce"] = "topk"
    temperature: float = 0.1
    track_values: bool = True

    def __post_init__(self) -> None:
        for name in ("n_candidates", "slate_size", "max_pages"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"`{name}` must be an integer >= 1, got {value!r}")
        if self.slate_size > self.n_candidates:
            raise ConfigError(f"`slate_size` ({self.slate_size}) must be <= `n_candidates` ({self.n_candidates})")
        for name in ("fake_user_share", "fake_click_prob", "click_spam_rate"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"`{name}` must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.profile_decay <= 1.0:
            raise ConfigError(f"`profile_decay` must be in (0, 1], got {self.profile_decay}")
        if self.ranking_mode not in ("topk", "plackett_luce"):
            raise ConfigError(f"`ranking_mode` must be 'topk' or 'plackett_luce', got {self.ranking_mode!r}")
        if not self.temperature > 0:
            raise ConfigError(f"`temperature` must be > 0, got {self.temperature}")
        if self.action_type not in ("scores", "ranking"):
            raise ConfigError(f"`action_type` must be 'scores' or 'ranking', got {self.action_type!r}")


@dataclass(frozen=True)
class PageState:
    """B live sessions, each looking at a page of N candidates.

    Attributes:
        sessions: who is shopping.
        profile: in-session profile state (logged history + this session's feedback).
        seen: (B, max_pages * K) catalog indices shown so far in the session, -1 padded.
        page: (B,) pages shown so far.
        candidates: (B, N) catalog indices of this page's candidates.
    """

    sessions: Sessions
    profile: ProfileState
    seen: np.ndarray
    page: np.ndarray
    candidates: np.ndarray

    @property
    def batch_size(self) -> int:
        """B."""
        return len(self.page)

    def take(self, rows: np.ndarray) -> PageState:
        """The sub-batch ``rows`` (e.g. the sessions still live after a step)."""
        return PageState(self.sessions.take(rows), ProfileState(self.profile.sum[rows], self.profile.weight[rows]),
                         self.seen[rows], self.page[rows], self.candidates[rows])


@dataclass(frozen=True)
class StepResult:
    """What one page step returns (arrays over the batch)."""

    state: PageState
    reward: np.ndarray  # (B,)
    terminated: np.ndarray  # (B,) the shopper left
    truncated: np.ndarray  # (B,) max_pages reached
    info: dict[str, np.ndarray]


class SessionSource:
    """Draws new sessions: from the synthetic world (true intents) or from the logs' session starts.

    Args:
        space: item/query vectors.
        users: the env's user table.
        world: draw from this synthetic world (users by activity, intents from tastes), or
        log_starts: (user row, query index) pairs of the logged sessions' first requests, drawn uniformly.
        log_context: (n_starts, m) encoded request context of those first requests (the session keeps it), or
            None.
        logged_only: with ``world``, draw only the shoppers of the user table (those of the logs it was built
            from), at their activity renormalised; False draws every shopper of the world, and those the logs
            never saw are unknown users (row -1).
    """

    def __init__(self, space: ItemSpace, users: UserTable, *, world: SyntheticWorld | None = None,
                 log_starts: tuple[np.ndarray, np.ndarray] | None = None, logged_only: bool = False,
                 log_context: np.ndarray | None = None) -> None:
        if (world is None) == (log_starts is None):
            raise ConfigError("give exactly one of `world` or `log_starts`")
        self.space, self.users, self.world, self.log_starts = space, users, world, log_starts
        if log_context is not None and (log_starts is None or len(log_context) != len(log_starts[0])):
            raise ConfigError("`log_context` needs `log_starts` and one row per logged session start")
        self.log_context = log_context
        self._activity: np.ndarray | None = None
        if world is not None:
            self._world_to_row = users.user_ids.get_indexer(pd.Index(world.user_ids()))
            if logged_only:
                rate = np.where(self._world_to_row >= 0, world.population.activity, 0.0)
                if rate.sum() <= 0:
                    raise ConfigError("`logged_only`: none of the world's shoppers is in the logs' user table")
                self._activity = rate / rate.sum()

    def sample(self, rng: np.random.Generator, n: int, fake_share: float) -> Sessions:
        """``n`` new sessions."""
        fake = rng.random(n) < fake_share
        if self.world is not None:
            world_user, intent = self.world.sample_sessions(rng, n, activity=self._activity)
            query = self.space.query_index(self.world.query_text(intent))
            return Sessions(self._world_to_row[world_user], world_user, intent, query, intent.is_search, fake)
        assert self.log_starts is not None
        user, query = self.log_starts
        pick = rng.integers(0, len(user), n)
        return Sessions(user[pick], np.full(n, -1), None, query[pick], query[pick] >= 0, fake,
                        None if self.log_context is None else self.log_context[pick])


class Simulator:
    """Batched session simulator (see the module docstring).

    Args:
        space: item and query vectors.
        users: user table (histories, popularity).
        generator: candidate generator.
        backend: response model (fitted or true world).
        source: session source.
        config: env options.
        prices: (n_items,) prices for revenue rewards (zeros if unknown).
        default_profile: (d,) cold-start profile.
    """

    def __init__(self, space: ItemSpace, users: UserTable, generator: CandidateGenerator, backend: Backend,
                 source: SessionSource, config: EnvConfig, prices: np.ndarray, default_profile: np.ndarray) -> None:
        if config.n_candidates > space.n_items:
            raise ConfigError(f"`n_candidates` ({config.n_candidates}) exceeds the catalog size ({space.n_items})")
        self.space, self.users, self.generator, self.backend, self.source = space, users, generator, backend, source
        self.config = config
        self.prices = np.asarray(prices, dtype=np.float64)
        self.default_profile = np.asarray(default_profile, dtype=np.float64)
        self.behaviour = BehaviourWeights()
        self.examination = backend.examination(config.slate_size)
        pop = users.popularity
        self._pop_feature = (pop / max(pop.max(), 1e-12)).astype(np.float32)
        self._obs_item_vecs: np.ndarray | None = None  # built on first use (see item_table)

    # ------------------------------------------------------------------ shapes
    @property
    def popularity_feature(self) -> np.ndarray:
        """(n_items,) float32 the popularity column of :meth:`extra_features` (smoothed CTR over its maximum)."""
        return self._pop_feature

    @property
    def obs_dim(self) -> int:
        """Length of a flat observation: profile, query, is_search, page, N candidate vectors, N x F extras."""
        d, n = self.space.dim, self.config.n_candidates
        return 2 * d + 2 + n * d + n * len(EXTRA_FEATURES)

    # ------------------------------------------------------------------ transitions
    def reset(self, rng: np.random.Generator, n: int) -> PageState:
        """``n`` fresh sessions on their first page."""
        sessions = self.source.sample(rng, n, self.config.fake_user_share)
        profile = self.users.profiles(sessions.user, self.space.item_vecs)
        seen = np.full((n, self.config.max_pages * self.config.slate_size), -1, dtype=np.int64)
        page = np.zeros(n, dtype=np.int64)
        candidates = self._candidates(rng, sessions, profile)
        return PageState(sessions, profile, seen, page, candidates)

    def _history(self, sessions: Sessions) -> np.ndarray:
        rows = sessions.user
        if len(self.users.history) == 0:
            return np.full((len(rows), 1), -1, dtype=np.int64)
        return np.where(rows[:, None] >= 0, self.users.history[np.maximum(rows, 0)], -1)

    def _candidates(self, rng: np.random.Generator, sessions: Sessions, profile: ProfileState) -> np.ndarray:
        del profile
        return self.generator.sample(rng, self.config.n_candidates, sessions.query, self._history(sessions))

    def slots_from_action(self, action: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(B, K) candidate columns and (B,) their probability, from a batch of actions.

        Raises:
            InvalidActionError: wrong shape or dtype, NaN/inf scores, out-of-range or duplicate items.
        """
        cfg = self.config
        action = np.asarray(action)
        b = action.shape[0] if action.ndim else 0
        if cfg.action_type == "scores":
            if action.ndim != 2 or action.shape[1] != cfg.n_candidates:
                raise InvalidActionError(f"action must hold one score per candidate: shape (B, {cfg.n_candidates}) "
                                         f"(or ({cfg.n_candidates},) for the single env), got {action.shape}")
            if not np.isfinite(action).all():
                raise InvalidActionError("action scores must be finite; got NaN or inf "
                                         f"at candidate {int(np.argwhere(~np.isfinite(action))[0][1])}")
            if cfg.ranking_mode == "plackett_luce":
                logits = action / cfg.temperature
                slots = plackett_luce_sample(rng, logits, cfg.slate_size)
                return slots, np.exp(plackett_luce_log_prob(logits, slots))
            return topk(action, cfg.slate_size), np.ones(b)
        if action.ndim != 2 or action.shape[1] != cfg.slate_size:
            raise InvalidActionError(f"a ranking action lists {cfg.slate_size} candidate indices: shape "
                                     f"(B, {cfg.slate_size}), got {action.shape}")
        if not np.issubdtype(action.dtype, np.integer):
            raise InvalidActionError(f"a ranking action holds integer candidate indices, got dtype {action.dtype}")
        if (action < 0).any() or (action >= cfg.n_candidates).any():
            raise InvalidActionError(f"ranking entries must be in [0, {cfg.n_candidates}), got {action.min()}.."
                                     f"{action.max()}")
        srt = np.sort(action, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise InvalidActionError(f"a ranking shows each candidate at most once; row {row} repeats "
                                     f"{int(srt[row, 1:][srt[row, 1:] == srt[row, :-1]][0])}: {action[row].tolist()}")
        return action.astype(np.int64), np.ones(b)

    def item_values(self, state: PageState, items: np.ndarray, profile_vecs: np.ndarray | None = None) -> np.ndarray:
        """(B, M) backend's expected reward of each item in ``items`` (B, M) if examined (real shoppers)."""
        profile_vecs = self.profile_vectors(state) if profile_vecs is None else profile_vecs
        p = self.backend.probabilities(state.sessions, profile_vecs, items)
        return self.config.reward.value_of(p, self.prices[items])

    def profile_vectors(self, state: PageState) -> np.ndarray:
        """(B, d) unit profile vectors (cold users: the default profile)."""
        return vector(state.profile, self.default_profile)

    def step(self, state: PageState, slots: np.ndarray, rng: np.random.Generator) -> StepResult:
        """Show ``slots`` (B, K candidate columns) and simulate the shoppers' response."""
        cfg = self.config
        b, k = slots.shape
        rows = np.arange(b)[:, None]
        shown = state.candidates[rows, slots]
        profile_vecs = self.profile_vectors(state)
        probs = self.backend.probabilities(state.sessions, profile_vecs, shown)
        attract, cart_p, buy_p = probs[..., 0], probs[..., 1], probs[..., 2]
        fake = state.sessions.fake[:, None]
        u = rng.random((3, b, k))
        single_choice = bool(getattr(self.backend, "single_choice", False))
        if single_choice:  # at most one purchase per page (purchase-only logs): one multinomial-logit draw
            choice_p = choice_probabilities(attract, self.examination[:k])
            pick = (u[0][:, :1] >= np.cumsum(choice_p, axis=1)).sum(axis=1)  # k: the outside option
            real_click = np.arange(k)[None, :] == pick[:, None]
        else:
            real_click = u[0] < self.examination[None, :k] * attract
        spam = rng.random((b, k)) < cfg.click_spam_rate
        clicked = np.where(fake, u[0] < cfg.fake_click_prob, real_click | spam)
        carted = real_click & ~fake & (u[1] < cart_p)
        purchased = carted & (u[2] < buy_p)
        slot_reward = cfg.reward.slot_reward(clicked, carted, purchased, self.prices[shown])
        repeat = in_row_sets(shown, state.seen)
        repeat_share = repeat.mean(axis=1)
        vecs = self.space.item_vecs[shown].astype(np.float64)
        diversity = intra_list_diversity(vecs)
        reward = slot_reward.sum(axis=1) - cfg.repetition_penalty * repeat.sum(axis=1) \
            - cfg.diversity_penalty * (1.0 - diversity)
        info: dict[str, Any] = {
            "shown": shown, "slots": slots, "clicked": clicked.astype(np.int8), "carted": carted.astype(np.int8),
            "purchased": purchased.astype(np.int8), "slot_reward": slot_reward.astype(np.float64),
            "repeat": repeat, "diversity": diversity,
        }
        if cfg.track_values:
            exam = self.examination[:k]
            if single_choice:  # the oracle shows the K largest odds x reward (exact when purchases are worth alike)
                p = self.backend.probabilities(state.sessions, profile_vecs, state.candidates)
                cand = p[..., 0]
                worth = cfg.reward.item_value(np.ones_like(cand), p[..., 1], p[..., 2], self.prices[state.candidates])
                values = cand * worth
                best = np.argsort(-values / np.maximum(1.0 - cand, 1e-300), axis=1, kind="stable")[:, :k]
                info["candidate_values"] = values
                info["expected_reward"] = (choice_p * worth[rows, slots]).sum(axis=1)  # the shown page's draw
                info["oracle_reward"] = choice_page_value(cand[rows, best], worth[rows, best], exam)
            else:
                values = self.item_values(state, state.candidates, profile_vecs)
                info["candidate_values"] = values
                info["expected_reward"] = cfg.reward.page_value(values[rows, slots], exam)
                info["oracle_reward"] = cfg.reward.page_value(-np.sort(-values, axis=1)[:, :k], exam)
        cont = self.backend.continuation(state.sessions, profile_vecs, shown, clicked, purchased, repeat_share,
                                         attract, state.page)
        terminated = rng.random(b) >= cont
        page = state.page + 1
        truncated = ~terminated & (page >= cfg.max_pages)
        seen = state.seen.copy()
        cols = (state.page[:, None] * k + np.arange(k)[None, :]).clip(max=seen.shape[1] - 1)
        seen[rows, cols] = shown
        weights = self.behaviour.of(clicked & ~fake, carted, purchased)
        profile = update(state.profile, vecs, weights, decay=cfg.profile_decay)
        candidates = self._candidates(rng, state.sessions, profile)
        new_state = PageState(state.sessions, profile, seen, page, candidates)
        return StepResult(new_state, reward, terminated, truncated, info)

    def replace_rows(self, state: PageState, rows: np.ndarray, fresh: PageState) -> PageState:
        """``state`` with sessions ``rows`` replaced by ``fresh`` (same length as rows): autoreset."""
        def put(a: np.ndarray, v: np.ndarray) -> np.ndarray:
            out = a.copy()
            out[rows] = v
            return out

        s, f = state.sessions, fresh.sessions
        intent = None
        if s.intent is not None and f.intent is not None:
            intent = type(s.intent)(put(s.intent.category, f.intent.category),
                                    put(s.intent.attr_group, f.intent.attr_group),
                                    put(s.intent.attr_value, f.intent.attr_value),
                                    put(s.intent.is_search, f.intent.is_search))
        sessions = Sessions(put(s.user, f.user), put(s.world_user, f.world_user), intent, put(s.query, f.query),
                            put(s.is_search, f.is_search), put(s.fake, f.fake),
                            None if s.context is None or f.context is None else put(s.context, f.context))
        profile = ProfileState(put(state.profile.sum, fresh.profile.sum), put(state.profile.weight,
                                                                                 fresh.profile.weight))
        return replace(state, sessions=sessions, profile=profile, seen=put(state.seen, fresh.seen),
                       page=put(state.page, fresh.page), candidates=put(state.candidates, fresh.candidates))

    # ------------------------------------------------------------------ views for agents
    def extra_features(self, state: PageState) -> np.ndarray:
        """(B, N, F) float32: shown earlier in the session, scaled popularity."""
        shown_before = in_row_sets(state.candidates, state.seen)
        return np.stack([shown_before.astype(np.float32), self._pop_feature[state.candidates]], axis=2)

    def query_vectors(self, state: PageState) -> np.ndarray:
        """(B, d) query vectors (zero rows when browsing)."""
        q = state.sessions.query
        out = np.zeros((len(q), self.space.dim), dtype=np.float32)
        if len(self.space.query_vecs):
            out[q >= 0] = self.space.query_vecs[q[q >= 0]]
        return out

    def context(self, state: PageState) -> RankingContext:
        """The structured view agents rank from (``sessions`` carries the true shoppers, for reference policies)."""
        return RankingContext(
            user=self.profile_vectors(state), query=self.query_vectors(state), is_search=state.sessions.is_search,
            candidates=state.candidates, candidate_vecs=None,  # type: ignore[arg-type]  # gathered on first read
            user_ids=state.sessions.user, history=self._history(state.sessions), extra=self.extra_features(state),
            sessions=state.sessions, item_table=self.space.item_vecs,
        )

    def observe_ids(self, state: PageState) -> dict[str, np.ndarray]:
        """The observation by reference (``observation="ids"``): no candidate vector is copied.

        Keys (batch axis first): ``user`` (B, d) and ``query`` (B, d) float32 as in :meth:`observe`,
        ``is_search`` (B, 1) float32 (1 for a search), ``page`` (B, 1) float32 pages shown / max pages,
        ``candidates`` (B, N) int64 catalog indices into :attr:`item_table`, ``extra`` (B, N, F) float32.
        """
        return {"user": np.clip(self.profile_vectors(state), -1.0, 1.0).astype(np.float32),
                "query": np.clip(self.query_vectors(state), -1.0, 1.0),
                "is_search": state.sessions.is_search.astype(np.float32)[:, None],
                "page": (state.page / self.config.max_pages).astype(np.float32)[:, None],
                "candidates": state.candidates.copy(), "extra": self.extra_features(state)}

    @property
    def item_table(self) -> np.ndarray:
        """(n_items, d) float32 item vectors within [-1, 1]: the table ``observe_ids``' candidates index.

        The item space's own table when it is float32 and within range (unit rows: no copy), else a clipped
        float32 copy made on first use.
        """
        if self._obs_item_vecs is None:
            vecs = self.space.item_vecs
            in_range = vecs.dtype == np.float32 and float(np.abs(vecs).max(initial=0.0)) <= 1.0
            self._obs_item_vecs = vecs if in_range else np.clip(vecs, -1.0, 1.0).astype(np.float32)
        return self._obs_item_vecs

    def observe(self, state: PageState) -> np.ndarray:
        """(B, obs_dim) float32 flat observations (layout in :attr:`obs_dim`), values in [-1, 1]."""
        b, d, n = state.batch_size, self.space.dim, self.config.n_candidates
        out = np.empty((b, self.obs_dim), dtype=np.float32)
        out[:, :d] = self.profile_vectors(state)
        out[:, d:2 * d] = self.query_vectors(state)
        out[:, 2 * d] = state.sessions.is_search
        out[:, 2 * d + 1] = state.page / self.config.max_pages
        start = 2 * d + 2
        out[:, start:start + n * d] = self.item_table[state.candidates].reshape(b, n * d)
        out[:, start + n * d:] = self.extra_features(state).reshape(b, -1)
        np.clip(out[:, :2 * d], -1.0, 1.0, out=out[:, :2 * d])  # float rounding of unit vectors
        return out


def choice_probabilities(attract: np.ndarray, examination: np.ndarray) -> np.ndarray:
    r"""(B, K) probability that each slot's item is the page's one purchase (multinomial logit, outside option).

    .. math::
        P_j = \frac{o_j}{1 + \sum_l o_l}, \qquad o_j = \theta_j \frac{\alpha_j}{1 - \alpha_j},

    with :math:`\alpha_j` the item's purchase probability were it shown alone (attract, (B, K)) and
    :math:`\theta_j` the slot's examination (K,); :math:`1 - \sum_j P_j` is the outside option's share.
    """
    odds = examination[None, : attract.shape[1]] * attract / np.maximum(1.0 - attract, 1e-300)
    odds = np.minimum(odds, 1e300)
    return odds / (1.0 + odds.sum(axis=1, keepdims=True))


def choice_page_value(attract: np.ndarray, worth: np.ndarray, examination: np.ndarray) -> np.ndarray:
    r"""(B,) expected reward :math:`\sum_j P_j w_j` of a single-choice page; worth (B, K): rewards if bought."""
    return (choice_probabilities(attract, examination) * worth).sum(axis=1)


def in_row_sets(values: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """(B, M) bool: whether ``values[b, m]`` (>= 0) is among ``sets[b]`` ((B, S) catalog indices, -1 padded).

    Each row's set is sorted and offset by ``row * (max + 2)``, so that the concatenated rows form one sorted
    array and every membership is one binary search: O(B S log S + B M log(B S)), instead of the
    (B, M, S) comparison of the broadcast form. Only the columns of ``sets`` holding any entry are read.
    """
    b = len(values)
    filled = np.flatnonzero((sets >= 0).any(axis=0))
    if len(filled) == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    keys = np.sort(sets[:, : filled[-1] + 1], axis=1) + 1  # padding -> 0, never a value's key
    stride = int(max(keys.max(), values.max() + 1)) + 1
    offset = (np.arange(b, dtype=np.int64) * stride)[:, None]
    keys = (keys + offset).ravel()
    wanted = (values + 1 + offset).ravel()
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return (keys[pos] == wanted).reshape(values.shape)


def intra_list_diversity(vecs: np.ndarray) -> np.ndarray:
    r"""(B,) mean pairwise cosine distance of each page's items (vecs: (B, K, d), unit rows).

    .. math:: ILD = \frac{1}{K(K-1)} \sum_{j \ne l} (1 - \cos(v_j, v_l))
    """
    k = vecs.shape[1]
    if k < 2:
        return np.zeros(len(vecs))
    total = np.einsum("bkd,bd->b", vecs, vecs.sum(axis=1))  # sum over all pairs incl. self of cos
    self_sim = np.einsum("bkd,bkd->b", vecs, vecs)
    return 1.0 - (total - self_sim) / (k * (k - 1))
