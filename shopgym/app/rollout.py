r"""Run a ranking policy through the simulator, page by page: the one step loop of every job.

:func:`rollout` is the loop: the policy ranks each live page (``policy.rank(sim.context(state), k, rng)``),
the simulator shows it, the policy learns from the feedback, and the step is handed to the caller. Where
the pages come from decides what is measured:

* :class:`EnvPages`: a :class:`~envs.rerank.ReRankVectorEnv` of ``B`` live sessions that restart as they
  end, for a fixed number of steps. :func:`run_agent` records the online learning curves of
  ``shopgym compare`` from it (:class:`RunTrace`).
* :class:`SessionPages`: ``B`` new sessions, each followed until it ends. :func:`value_policy` values a
  policy over ``n`` whole sessions from it (:class:`PolicyValue`, with the pages-per-session distribution):
  the reference policies of the fidelity report.

Shapes: ``B`` live sessions, ``N`` candidates, ``K`` slots.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from tqdm.auto import tqdm

from agents.base import Feedback, Ranking, RankingContext, RankingPolicy
from envs.backends import TrueWorldBackend
from envs.core import PageState, Simulator
from envs.rerank import ReRankVectorEnv
from envs.synthetic import SyntheticWorld
from shopgym.checks import check_int

#: the per-step metrics of :func:`run_agent`
METRICS = ("reward", "ctr", "purchase_rate", "regret", "ndcg", "coverage", "diversity")


# ---------------------------------------------------------------------- the one loop
@dataclass(frozen=True)
class PageStep:
    """One page shown to every live session of a batch.

    Attributes:
        t: step index, from 0.
        state: the live sessions before the page was shown (B rows).
        ctx: what the policy saw.
        ranking: what it showed.
        reward: (B,) float64 page rewards.
        info: the simulator's step info: ``clicked``, ``carted``, ``purchased`` (B, K) int8, ``slot_reward``
            (B, K) float64, ``shown`` (B, K) catalog indices, ``diversity`` (B,), ``candidate_values`` (B, N)
            when the env tracks values, ...
        sessions: (B,) int64 the index of each row's session among the pages' sessions.
        ended: (B,) bool, the session ended with this page (the shopper left or ``max_pages`` was reached).
    """

    t: int
    state: PageState
    ctx: RankingContext
    ranking: Ranking
    reward: np.ndarray
    info: dict[str, Any]
    sessions: np.ndarray
    ended: np.ndarray


class Shown(NamedTuple):
    """What showing one page did (see :class:`PageStep` for the fields)."""

    reward: np.ndarray
    info: dict[str, Any]
    sessions: np.ndarray
    ended: np.ndarray


class Pages(Protocol):
    """Where the pages of a rollout come from: live sessions, their context, and showing a ranking."""

    @property
    def slate_size(self) -> int:
        """K, slots per page."""
        ...

    @property
    def live(self) -> bool:
        """Whether any session still waits for a page."""
        ...

    @property
    def state(self) -> PageState:
        """The live sessions."""
        ...

    def context(self) -> RankingContext:
        """What the policy sees of the live sessions."""
        ...

    def show(self, ranking: Ranking) -> Shown:
        """Show ``ranking`` to the live sessions and move on."""
        ...


class EnvPages:
    """The pages of a vector env: ``num_envs`` live sessions, each restarting as it ends (never runs out).

    Args:
        env: a reset :class:`~envs.rerank.ReRankVectorEnv` (its own generator drives the shoppers).
    """

    def __init__(self, env: ReRankVectorEnv) -> None:
        self.env = env

    @property
    def slate_size(self) -> int:
        """K."""
        return self.env.sim.config.slate_size

    @property
    def live(self) -> bool:
        """Always: ended sessions restart in the same step."""
        return True

    @property
    def state(self) -> PageState:
        """The env's live sessions."""
        return self.env.state

    def context(self) -> RankingContext:
        """The env's ranking context."""
        return self.env.ranking_context()

    def show(self, ranking: Ranking) -> Shown:
        """Step the env with the ranking's slots (and its slate probability)."""
        _, reward, terminated, truncated, info = self.env.step_slots(ranking.slots, ranking.slate_propensity)
        return Shown(reward, info, np.arange(self.env.num_envs), terminated | truncated)


class SessionPages:
    """``n_sessions`` new sessions of ``sim``, each followed until it ends; ended sessions leave the batch.

    Args:
        sim: the simulator.
        n_sessions: sessions to start, >= 1.
        rng: drives the shoppers (and is the generator the rollout gives the policy).
    """

    def __init__(self, sim: Simulator, n_sessions: int, rng: np.random.Generator) -> None:
        self.sim = sim
        self.rng = rng
        self._state = sim.reset(rng, check_int(n_sessions, "n_sessions", min_value=1))
        self._alive = np.arange(n_sessions)

    @property
    def slate_size(self) -> int:
        """K."""
        return self.sim.config.slate_size

    @property
    def live(self) -> bool:
        """Whether a session has not ended yet."""
        return len(self._alive) > 0

    @property
    def state(self) -> PageState:
        """The sessions not ended yet."""
        return self._state

    def context(self) -> RankingContext:
        """The simulator's context of the live sessions."""
        return self.sim.context(self._state)

    def show(self, ranking: Ranking) -> Shown:
        """Step the simulator; sessions that end leave the batch."""
        result = self.sim.step(self._state, ranking.slots, self.rng)
        rows = self._alive
        ended = result.terminated | result.truncated
        keep = np.flatnonzero(~ended)
        self._alive = rows[keep]
        self._state = result.state.take(keep)
        return Shown(result.reward, result.info, rows, ended)


def rollout(policy: RankingPolicy, pages: Pages, rng: np.random.Generator, *, steps: int | None = None,
            learn: bool = True) -> Iterator[PageStep]:
    """Show the policy's rankings of ``pages`` until they run out (or for ``steps`` steps), one step at a time.

    Each step: ``ctx = pages.context()``, ``ranking = policy.rank(ctx, K, rng)``, ``pages.show(ranking)``,
    then (with ``learn``) ``policy.update(ctx, ranking, feedback)``; the step is yielded after the update.

    Args:
        policy: the ranking policy.
        pages: where the pages come from (:class:`EnvPages`, :class:`SessionPages`).
        rng: the policy's generator.
        steps: stop after this many steps (None: when the pages run out).
        learn: let the policy learn online from each page's feedback.

    Yields:
        One :class:`PageStep` per page step.
    """
    k = pages.slate_size
    t = 0
    while pages.live and (steps is None or t < steps):
        state = pages.state
        ctx = pages.context()
        ranking = policy.rank(ctx, k, rng)
        reward, info, sessions, ended = pages.show(ranking)
        if learn:
            policy.update(ctx, ranking, Feedback(info["clicked"], info["carted"], info["purchased"],
                                                 info["slot_reward"]))
        yield PageStep(t, state, ctx, ranking, reward, info, sessions, ended)
        t += 1


# ---------------------------------------------------------------------- whole sessions
@dataclass(frozen=True)
class PolicyValue:
    r"""What a policy earned over ``n_sessions`` simulated sessions.

    Note:
        With :math:`R_s` the total reward of session :math:`s`, :math:`P_s` its pages and :math:`K` slots
        per page,

        .. math::
            \text{reward\_per\_session} = \bar R, \quad \text{reward\_se} = \frac{\text{sd}(R)}{\sqrt{n}}, \quad
            \text{reward\_per\_page} = \frac{\sum_s R_s}{\sum_s P_s}, \quad
            \text{ctr} = \frac{\text{clicks}}{K \sum_s P_s}.

    Attributes:
        name: policy name.
        n_sessions: completed sessions n.
        reward_per_session: mean total reward of a session.
        reward_se: its standard error.
        reward_per_page: mean page reward.
        ctr: clicks per shown slot.
        pages_per_session: mean session length.
        purchase_rate: purchases per shown slot.
        session_pages: (n_sessions,) int64 pages of each session (the pages-per-session distribution).
    """

    name: str
    n_sessions: int
    reward_per_session: float
    reward_se: float
    reward_per_page: float
    ctr: float
    pages_per_session: float
    purchase_rate: float
    session_pages: np.ndarray = field(repr=False, compare=False)


def value_policy(sim: Simulator, policy: RankingPolicy, n_sessions: int, *, seed: int, name: str | None = None,
                 batch: int = 512, learn: bool = False) -> PolicyValue:
    """Simulate ``n_sessions`` whole sessions under ``policy`` (``batch`` at a time) and value it.

    One generator, ``default_rng(seed)``, drives the shoppers and the policy, so every policy valued with
    the same seed in the same simulator meets the same first pages.

    Args:
        sim: the simulator.
        policy: the ranking policy.
        n_sessions: sessions to simulate, >= 2 (for the standard error).
        seed: seeds the run.
        name: the name in the result (default: ``policy.name``).
        batch: sessions simulated together, >= 1.
        learn: let the policy learn online from the feedback (default: value it as it is).

    Returns:
        The policy's :class:`PolicyValue`.
    """
    n_sessions = check_int(n_sessions, "n_sessions", min_value=2)
    batch = check_int(batch, "batch", min_value=1)
    rng = np.random.default_rng(seed)
    reward = np.zeros(n_sessions)
    pages = np.zeros(n_sessions, dtype=np.int64)
    clicks = purchases = 0.0
    for start in range(0, n_sessions, batch):
        size = min(batch, n_sessions - start)
        for step in rollout(policy, SessionPages(sim, size, rng), rng, learn=learn):
            rows = start + step.sessions
            reward[rows] += step.reward
            pages[rows] += 1
            clicks += float(step.info["clicked"].sum())
            purchases += float(step.info["purchased"].sum())
    total_pages = int(pages.sum())
    slots = total_pages * sim.config.slate_size
    return PolicyValue(policy.name if name is None else name, n_sessions, float(reward.mean()),
                       float(reward.std(ddof=1) / np.sqrt(n_sessions)), float(reward.sum() / total_pages),
                       clicks / slots, total_pages / n_sessions, purchases / slots, pages)


# ---------------------------------------------------------------------- online learning curves
@dataclass
class RunTrace:
    """Per-step metrics of one agent on one seed (arrays of length ``steps``)."""

    agent: str
    seed: int
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


class RunSetup(Protocol):
    """What :func:`run_agent` runs in: the simulator, and the synthetic world when there is one."""

    @property
    def sim(self) -> Simulator:
        """The simulator."""
        ...

    @property
    def world(self) -> SyntheticWorld | None:
        """The ground truth (regret and NDCG are measured against it), or None for a user's own logs."""
        ...


def _ndcg(values: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(B,) NDCG@K of rankings ``slots`` (B, K) against gains ``values`` (B, N)."""
    k = slots.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = np.take_along_axis(values, slots, axis=1) @ discount
    ideal = -np.sort(-values, axis=1)[:, :k] @ discount
    return np.where(ideal > 0, dcg / np.maximum(ideal, 1e-12), 0.0)


def run_agent(agent: RankingPolicy, prep: RunSetup, *, steps: int, batch_size: int, seed: int,
              writer: Any | None = None, log_every: int = 5, progress: bool = False,
              report: Callable[[float], None] | None = None,
              on_step: Callable[[int, float], None] | None = None) -> RunTrace:
    """Run ``agent`` online for ``steps`` batched page steps and record the per-step metrics.

    ``batch_size`` live sessions (a :class:`~envs.rerank.ReRankVectorEnv` seeded with ``seed``) each get a
    page per step, ranked with the generator ``default_rng([seed, 7])``; the agent learns from every page.
    ``report(fraction)`` (optional) is told the share done after every step; an agent trained on the simulator
    first (PPO) counts its training pages as ``steps`` more steps. ``on_step(t, reward)`` (optional) gets each
    step's mean page reward as it is recorded (the learning curve, e.g. for an early-stopping scheduler).
    """
    sim = prep.sim
    started = time.perf_counter()
    train: Any = getattr(agent, "learn", None)
    curve = None
    trains_first = callable(train) and not agent.learns_online
    units = 2 * steps if trains_first else steps
    if trains_first:
        # trained on the simulator first (e.g. PPO), on as many pages as the online learners see;
        # its reward per step below is this training curve, the other metrics are the trained policy's
        extra: dict[str, Any] = {}
        if report is not None and "callback" in inspect.signature(train).parameters:
            extra["callback"] = _training_progress(lambda pages: report(pages / (batch_size * units)))
        train(sim, total_timesteps=steps * batch_size, seed=seed,
              tensorboard_log=None if writer is None else str(Path(writer.log_dir) / "sb3"), **extra)
        pages = np.asarray(agent.curve.timesteps, dtype=np.float64)  # type: ignore[attr-defined]
        values = np.asarray(agent.curve.reward_per_page, dtype=np.float64)  # type: ignore[attr-defined]
        if len(values):
            curve = np.interp((np.arange(steps) + 1) * batch_size, pages, values)
    env = ReRankVectorEnv(batch_size, simulator=sim, observation="ids")  # agents rank from the context
    env.reset(seed=seed)
    rng = np.random.default_rng([seed, 7])
    truth = TrueWorldBackend(prep.world) if prep.world is not None else None
    k = sim.config.slate_size
    exam_true = truth.examination(k) if truth is not None else None
    seen = np.zeros(sim.space.n_items, dtype=bool)
    trace = {m: np.zeros(steps) for m in METRICS}
    cum_regret = 0.0
    for step in tqdm(rollout(agent, EnvPages(env), rng, steps=steps), total=steps, desc=f"{agent.name}",
                     leave=False, disable=not progress):
        t, info, ranking = step.t, step.info, step.ranking
        seen[info["shown"].ravel()] = True
        trace["reward"][t] = step.reward.mean() if curve is None else curve[t]
        trace["ctr"][t] = info["clicked"].mean()
        trace["purchase_rate"][t] = info["purchased"].mean()
        trace["diversity"][t] = info["diversity"].mean()
        trace["coverage"][t] = seen.mean()
        if truth is not None and exam_true is not None:
            values = true_candidate_values(sim, truth, step.state, info)
            shown_value = np.take_along_axis(values, ranking.slots, axis=1) @ exam_true
            best = -np.sort(-values, axis=1)[:, :k] @ exam_true
            cum_regret += float((best - shown_value).mean())
            trace["regret"][t] = cum_regret
            trace["ndcg"][t] = _ndcg(values, ranking.slots).mean()
        else:
            trace["regret"][t] = np.nan
            trace["ndcg"][t] = np.nan
        if writer is not None and (t % log_every == 0 or t == steps - 1):
            writer.add_scalar("rollout/reward", trace["reward"][t], t)
            writer.add_scalar("rollout/ctr", trace["ctr"][t], t)
            writer.add_scalar("rollout/purchase_rate", trace["purchase_rate"][t], t)
            writer.add_scalar("eval/coverage", trace["coverage"][t], t)
            writer.add_scalar("eval/diversity", trace["diversity"][t], t)
            if truth is not None:
                writer.add_scalar("eval/cumulative_regret", trace["regret"][t], t)
                writer.add_scalar("eval/ndcg", trace["ndcg"][t], t)
        if report is not None:
            report((units - steps + t + 1) / units)
        if on_step is not None:
            on_step(t, float(trace["reward"][t]))
    return RunTrace(agent.name, seed, trace, time.perf_counter() - started)


def _training_progress(report: Callable[[int], None]) -> Any:
    """A Stable-Baselines3 callback calling ``report(pages trained so far)`` after every rollout."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TrainingProgress(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            report(int(self.num_timesteps))

    return TrainingProgress()


def true_candidate_values(sim: Simulator, truth: TrueWorldBackend, state: PageState,
                          info: dict[str, Any]) -> np.ndarray:
    """(B, N) true expected reward of each candidate if examined (regret and NDCG are measured against it).

    The step's own ``candidate_values`` are reused only when the simulator's backend *is* the truth (not the
    fitted model, not the segment reference, whose values differ from the truth).
    """
    if type(sim.backend) is TrueWorldBackend and "candidate_values" in info:
        return np.asarray(info["candidate_values"])
    return _true_values(sim, truth, state)


def _true_values(sim: Simulator, truth: TrueWorldBackend, state: PageState) -> np.ndarray:
    p = truth.probabilities(state.sessions, sim.profile_vectors(state), state.candidates)
    return sim.config.reward.value_of(p, sim.prices[state.candidates])
