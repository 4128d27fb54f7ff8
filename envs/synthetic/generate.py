"""Generate logged data from the synthetic shop world (vectorised over sessions).

Sessions are simulated in chunks: every page step handles all still-active sessions of a chunk at
once (candidate retrieval, logging-policy ranking, clicks, carts, purchases, continuation), so the
Python loop runs over page steps, never over users or items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from envs.synthetic.logging_policy import EpsilonGreedyLoggingPolicy
from envs.synthetic.world import SyntheticWorld
from shopgym.data import LoggedData
from shopgym.data import schema as S

#: sessions simulated together; bounds memory to chunk x n_items booleans for the repetition mask
CHUNK_SESSIONS = 2048
MEAN_PAGE_SECONDS = 40.0
CLICK_SECONDS = 15.0


@dataclass
class _Pages:
    """Per-page arrays collected while simulating (concatenated at the end)."""

    session: list[np.ndarray]
    time: list[np.ndarray]
    shown: list[np.ndarray]
    clicked: list[np.ndarray]
    carted: list[np.ndarray]
    purchased: list[np.ndarray]
    propensity: list[np.ndarray]
    slate_propensity: list[np.ndarray]
    prefix_propensity: list[np.ndarray]


def logging_policy_for(world: SyntheticWorld) -> EpsilonGreedyLoggingPolicy:
    """The world's logging policy, as configured in ``world.config``."""
    cfg = world.config
    return EpsilonGreedyLoggingPolicy(world, cfg.logging_epsilon, cfg.logging_noise, seed=cfg.seed)


def generate_logs(world: SyntheticWorld, n_slots: int | None = None, *, progress: bool = False) -> LoggedData:
    """Simulate shoppers under the logging policy and return the logs in the standard format.

    Args:
        world: the synthetic world (its config gives seed, sizes and the logging policy).
        n_slots: shown slots to generate (default ``world.config.n_slots``); whole sessions are kept,
            so the result has between ``n_slots`` and ``n_slots + max_pages * slate_size`` rows.
        progress: show a progress bar.

    Returns:
        A validated LoggedData whose ``meta["world"]`` holds the config needed to rebuild the world.
    """
    cfg = world.config
    target = cfg.n_slots if n_slots is None else int(n_slots)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
    policy = logging_policy_for(world)
    k, n = cfg.slate_size, cfg.n_candidates
    exam = world.examination_probs(k)
    pages = _Pages([], [], [], [], [], [], [], [], [])
    session_users: list[np.ndarray] = []
    session_queries: list[np.ndarray] = []
    produced = 0
    n_sessions = 0
    bar = tqdm(total=target, desc="generating logs", unit="slot", disable=not progress)
    horizon = cfg.days * 86_400.0
    while produced < target:
        users, intent = world.sample_sessions(rng, CHUNK_SESSIONS)
        session_users.append(users)
        session_queries.append(world.query_text(intent))
        clock = rng.uniform(0.0, horizon, CHUNK_SESSIONS)
        seen = np.zeros((CHUNK_SESSIONS, world.catalog.n_items), dtype=bool)
        active = np.arange(CHUNK_SESSIONS)
        for _page in range(cfg.max_pages):
            if len(active) == 0:
                break
            u = users[active]
            it = intent.take(active)
            candidates = world.sample_candidates(rng, u, it, n)
            logged = policy.sample(rng, u, candidates, it, k)
            shown = np.take_along_axis(candidates, logged.slots, axis=1)
            attract = world.attractiveness(u, shown, it)
            clicked = rng.random(shown.shape) < exam * attract
            cart_p, buy_p = world.conversion(u, shown)
            carted = clicked & (rng.random(shown.shape) < cart_p)
            purchased = carted & (rng.random(shown.shape) < buy_p)
            repeat_share = seen[active[:, None], shown].mean(axis=1)
            seen[active[:, None], shown] = True

            pages.session.append(active + n_sessions)
            pages.time.append(clock[active].copy())
            pages.shown.append(shown)
            pages.clicked.append(clicked)
            pages.carted.append(carted)
            pages.purchased.append(purchased)
            pages.propensity.append(logged.propensity)
            pages.slate_propensity.append(logged.slate_propensity)
            pages.prefix_propensity.append(logged.prefix_propensity)

            dwell = rng.exponential(MEAN_PAGE_SECONDS, len(active)) + CLICK_SECONDS * clicked.sum(axis=1)
            clock[active] += dwell
            cont = world.continuation(u, shown, repeat_share, purchased.any(axis=1), it)
            active = active[rng.random(len(active)) < cont]
            step = len(shown) * k
            produced += step
            bar.update(min(step, max(target - produced + step, 0)))
        n_sessions += CHUNK_SESSIONS
    bar.close()
    return _to_logged(world, pages, np.concatenate(session_users), np.concatenate(session_queries), target)


def _to_logged(
    world: SyntheticWorld, pages: _Pages, session_users: np.ndarray, session_queries: np.ndarray, target: int
) -> LoggedData:
    cfg = world.config
    k = cfg.slate_size
    session = np.concatenate(pages.session)
    # keep whole sessions, in session order, until the target is reached
    per_session = np.bincount(session, minlength=len(session_users)) * k
    n_keep = int(np.searchsorted(np.cumsum(per_session), target) + 1)
    keep = session < n_keep
    session = session[keep]
    time = np.concatenate(pages.time)[keep]
    order = np.lexsort((session, time))  # requests numbered by time
    session, time = session[order], time[order]
    n_req = len(session)

    def slots(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)[keep][order].reshape(-1)

    start = pd.Timestamp(cfg.start, tz="UTC")
    timestamps = start + pd.to_timedelta(np.round(time, 3), unit="s")
    item_ids = world.item_ids()
    user_ids = world.user_ids()
    request = np.repeat(np.arange(n_req), k)
    purchased = slots(pages.purchased).astype(np.int8)
    shown = slots(pages.shown)
    width = len(str(len(session_users) - 1))
    interactions = pd.DataFrame({
        S.REQUEST_ID: request,
        S.USER_ID: user_ids[session_users[session]][request],
        S.SESSION_ID: np.char.add("s", np.char.zfill(session.astype(str), width))[request],
        S.TIMESTAMP: np.repeat(timestamps, k),
        S.POSITION: np.tile(np.arange(1, k + 1, dtype=np.int32), n_req),
        S.ITEM_ID: item_ids[shown],
        S.CLICKED: slots(pages.clicked).astype(np.int8),
        S.CARTED: slots(pages.carted).astype(np.int8),
        S.PURCHASED: purchased,
        S.REVENUE: np.where(purchased == 1, world.catalog.price[shown], 0.0),
        S.QUERY: session_queries[session][request],
        S.PROPENSITY: slots(pages.propensity),
        S.SLATE_PROPENSITY: np.repeat(np.concatenate(pages.slate_propensity)[keep][order], k),
        S.PREFIX_PROPENSITY: slots(pages.prefix_propensity),
    })
    meta = {
        "generator": "shopgym synthetic shop world",
        "world": cfg.to_dict(),
        "logging_policy": {"kind": "epsilon-greedy ranking", "epsilon": cfg.logging_epsilon,
                           "noise": cfg.logging_noise},
    }
    return LoggedData.from_frames(world.items_table(), interactions, name=f"synthetic-seed{cfg.seed}", meta=meta)
