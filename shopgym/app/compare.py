"""The main job: run every agent online in the simulator over several seeds and compare them.

``compare(cfg)`` is a plain function of a Hydra config (``conf/compare.yaml``); ``shopgym compare`` is a
thin wrapper. For each seed and agent it runs ``steps`` batched page steps of ``batch_size`` live shopper
sessions, lets the agent learn online from the feedback, logs TensorBoard scalars, saves the trained agent
(``agents/<agent>/seed<k>/``: ``policy.json`` + ``state.safetensors``, :func:`agents.base.load_policy` reads it),
and finally writes ``results.csv`` (per agent, mean and 95% CI over seeds), ``runs.csv`` (per agent and seed),
``results.md`` and ``learning_curves.png`` and prints the table.

TensorBoard tags (one run folder per agent and seed, ``tensorboard/<agent>/seed<k>``):

* ``rollout/reward``: mean page reward of the step's batch;
* ``rollout/ctr``, ``rollout/purchase_rate``: clicks and purchases per shown slot;
* ``eval/cumulative_regret``: summed (oracle page value - shown page value) under the true model, per session
  slot of the batch (synthetic world only);
* ``eval/ndcg``: NDCG@K of the shown ranking against the true item values (synthetic world only);
* ``eval/coverage``: share of the catalog shown so far;
* ``eval/diversity``: intra-list diversity (mean pairwise cosine distance) of the shown pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy import stats
from tqdm.auto import tqdm

from agents.base import RankingPolicy
from envs.build import BuiltSimulator
from envs.core import Simulator
from envs.synthetic import SyntheticWorld
from shopgym.app.config import backend_name, seed_list, simulator_spec
from shopgym.app.rollout import RunTrace, run_agent
from shopgym.data import LoggedData
from shopgym.data.io import atomic_write, write_json
from shopgym.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """The simulator and what agents are fitted on."""

    sim: Simulator
    train: LoggedData
    world: SyntheticWorld | None
    examination: np.ndarray
    built: BuiltSimulator | None = None
    #: bootstrap refits of the fitted simulator: seed i runs in ``(self, *members)[i mod (1 + len)]``
    members: tuple[Prepared, ...] = ()

    def for_seed(self, position: int) -> tuple[Prepared, int]:
        """The simulator the seed at ``position`` of the seed list runs in, and its model's number (0: the fit)."""
        model = position % (1 + len(self.members))
        return (self, *self.members)[model], model


def blas_threads(limit: int | None) -> Any:
    """Context limiting the BLAS thread pools (NumPy's and SciPy's each bundle their own OpenBLAS) to ``limit``.

    The agents alternate many small NumPy and SciPy linear-algebra calls; two multi-threaded OpenBLAS pools
    then spin against each other on a small machine (measured on 2 cores: LinUCB 7.5 s -> 2.7 s per 100
    steps with one thread, identical numbers). None leaves the pools alone.
    """
    from contextlib import nullcontext

    if check_blas_threads(limit) is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="blas")


def check_blas_threads(limit: Any) -> int | None:
    """The ``blas_threads`` option, checked (an integer >= 1 or None) without touching any thread pool."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"`blas_threads` must be an integer >= 1 or null, got {limit!r}")
    return limit


# ---------------------------------------------------------------------- setup
def examination_estimate(train: LoggedData, slate_size: int) -> np.ndarray:
    """(K,) examination estimates the agents get: from the logs' propensities, else 1/k; non-increasing."""
    from envs.fitted import examination_from_propensities

    exam = examination_from_propensities(train) if train.has_propensities else None
    examination = np.arange(1, slate_size + 1, dtype=np.float64) ** -1.0
    if exam is not None:
        m = min(slate_size, len(exam))
        examination[:m] = exam[:m]
    return np.minimum.accumulate(examination)


def prepare(cfg: DictConfig) -> Prepared:
    """Build the simulator the agents will run in (:func:`envs.build.build_simulator`; fitted at most once)."""
    from envs.build import build_simulator

    built = build_simulator(simulator_spec(cfg))
    return prepared_from(built, built.sim)


def with_members(cfg: DictConfig, prep: Prepared) -> Prepared:
    """``prep`` with the bootstrap refits of its fitted model (``cfg.bootstrap``; see :class:`RunSchema`)."""
    from dataclasses import replace as replace_fields

    from envs.build import bootstrap_models, simulator_for_model

    built = prep.built
    if built is None or built.model is None:
        return prep
    count = bootstrap_members(cfg.get("bootstrap"), (built.model.report or {}).get("fit_seconds"),
                              len(seed_list(cfg.seeds)))
    if count == 0:
        return prep
    members = bootstrap_models(built.inputs, built.spec, count)
    return replace_fields(prep, members=tuple(prepared_from(built, simulator_for_model(built, m)) for m in members))


#: the fit time under which ``bootstrap: null`` refits the simulator once per seed beyond the first
QUICK_FIT_SECONDS = 30.0


def bootstrap_members(option: Any, fit_seconds: float | None, n_seeds: int) -> int:
    """The ``bootstrap`` option resolved: an int >= 0 as given; None: ``n_seeds - 1`` when the fit is quick, else 0.

    Raises:
        ConfigError: not an integer >= 0 or null.
    """
    if option is None:
        return max(n_seeds - 1, 0) if fit_seconds is not None and fit_seconds < QUICK_FIT_SECONDS else 0
    if isinstance(option, bool) or not isinstance(option, int) or option < 0:
        raise ConfigError(f"`bootstrap` must be an integer >= 0 or null, got {option!r}")
    return int(option)


def prepared_from(built: BuiltSimulator, sim: Simulator) -> Prepared:
    """The :class:`Prepared` of ``sim`` (one of ``built``'s backends)."""
    inputs = built.inputs
    return Prepared(sim, inputs.train, inputs.world, examination_estimate(inputs.train, sim.config.slate_size),
                    built)


def make_agent(name: str, node: DictConfig, prep: Prepared, seed: int) -> RankingPolicy:
    """Instantiate an agent from its config, give it the env's examination estimates, fit it on the logs.

    On the built-in world the reference agents (the logging policy, the oracle) also get the world and the
    env's reward weights (:func:`shopgym.app.reference.instantiate_agent`).
    """
    from shopgym.app.reference import instantiate_agent

    node = node.copy()
    if "seed" in node:
        node.seed = int(seed)
    if "examination" in node and node.examination is None:
        node.examination = prep.examination.tolist()
    supplies = {} if prep.world is None else {"world": prep.world, "reward": prep.sim.config.reward}
    return instantiate_agent(node, supplies, prep.train, prep.sim, name=name)


# ---------------------------------------------------------------------- results
def run_metrics(trace: RunTrace) -> dict[str, float]:
    """The headline metrics of one run (an agent and a seed) from its per-step curves."""
    steps = trace.steps
    return {
        "cumulative_reward": float(steps["reward"].sum()),
        "final_reward": float(steps["reward"][-max(len(steps["reward"]) // 5, 1):].mean()),
        "ctr": float(steps["ctr"].mean()),
        "purchase_rate": float(steps["purchase_rate"].mean()),
        "cumulative_regret": float(steps["regret"][-1]),
        "ndcg": float(np.nanmean(steps["ndcg"])) if np.isfinite(steps["ndcg"]).any() else np.nan,
        "coverage": float(steps["coverage"][-1]),
        "diversity": float(steps["diversity"].mean()),
        "seconds": float(trace.seconds),
    }


def per_run(traces: list[RunTrace]) -> pd.DataFrame:
    """One row per run (``agent``, ``seed``) with :func:`run_metrics`: ``runs.csv``, what sweeps pool over seeds."""
    return pd.DataFrame([{"agent": t.agent, "seed": int(t.seed), **run_metrics(t)} for t in traces])


def summarise(traces: list[RunTrace]) -> pd.DataFrame:
    """One row per agent: mean and 95% CI over seeds of the headline metrics."""
    runs = per_run(traces)
    rows = []
    for agent in dict.fromkeys(t.agent for t in traces):
        mine = runs[runs["agent"] == agent]
        row: dict[str, Any] = {"agent": agent, "seeds": len(mine)}
        for metric in mine.columns.drop(["agent", "seed"]):
            mean, half = mean_ci(mine[metric].to_numpy(dtype=np.float64))
            row[metric] = mean
            row[f"{metric}_ci95"] = half
        rows.append(row)
    return pd.DataFrame(rows).sort_values("cumulative_reward", ascending=False).reset_index(drop=True)


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    r"""Mean and half-width of the Student-t confidence interval over seeds.

    .. math:: \bar x \pm t_{(1+\ell)/2,\, S-1}\, s / \sqrt{S}
    """
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float("nan")
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def _cell(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4g} ± {half:.2g}" if np.isfinite(half) else f"{mean:.4g}"


def to_markdown(table: pd.DataFrame, *, backend: str | None = None, agreement: Agreement | None = None) -> str:
    """Markdown table of mean ± 95% CI over seeds; with the true world's values, the agreement line below."""
    cols = ["cumulative_reward", "final_reward", "ctr", "purchase_rate", "cumulative_regret", "ndcg", "coverage",
            "diversity"]
    has_truth = "true_cumulative_reward" in table
    names = [f"cumulative_reward ({backend} simulator)" if has_truth and backend else "cumulative_reward",
             *(["true_cumulative_reward", "error"] if has_truth else []), *cols[1:]]
    head = "| agent | " + " | ".join(names) + " | s/run |\n|---|" + "---|" * (len(names) + 1) + "\n"
    lines = []
    for _, row in table.iterrows():
        cells = [_cell(row["cumulative_reward"], row["cumulative_reward_ci95"])]
        if has_truth:
            cells.append(_cell(row["true_cumulative_reward"], row["true_cumulative_reward_ci95"]))
            cells.append(f"{row['relative_error']:+.1%}" if np.isfinite(row["relative_error"]) else "n/a")
        cells += [_cell(row[c], row[f"{c}_ci95"]) for c in cols[1:]]
        lines.append(f"| {row['agent']} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    text = head + "\n".join(lines) + "\n"
    if len(table) and int(table["seeds"].max()) < 2:
        text += ("\nOne seed: no 95% intervals (an interval over seeds needs at least 2; e.g. seeds=3 runs seeds "
                 "0, 1, 2).\n")
    if agreement is not None:
        text += (f"\nSimulator vs true world over {agreement.n_agents} agents (cumulative reward): Kendall tau "
                 f"{agreement.kendall_tau:.2f}, mean absolute relative error "
                 f"{agreement.mean_abs_relative_error:.1%}.\n")
    defined = [("cumulative_reward", "sum over the online steps of the mean page reward (reward: env.reward weights)"),
               *([("true_cumulative_reward", "the same agent, seeds and sessions run against the true shoppers"),
                  ("error", "(simulated - true) / true")] if has_truth else []),
               ("final_reward", "mean page reward over the last 20% of the steps"),
               ("ctr", "clicks per shown slot"), ("purchase_rate", "purchases per shown slot"),
               ("cumulative_regret", "summed (oracle page value - shown page value) under the true model (built-in "
                "world only)"),
               ("ndcg", "NDCG@K of the shown ranking against the true item values (built-in world only)"),
               ("coverage", "share of the catalog shown at least once"),
               ("diversity", "mean pairwise cosine distance of a page's items"),
               ("s/run", "wall seconds per agent and seed")]
    text += "\nColumns: mean ± half-width of the 95% Student-t interval over seeds.\n" + "".join(
        f"* {name}: {meaning}\n" for name, meaning in defined)
    return text


def plot_curves(traces: list[RunTrace], path: Path, window: int = 10) -> None:
    """Learning curves (smoothed page reward) and cumulative regret, mean over seeds with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_regret = any(np.isfinite(t.steps["regret"]).all() for t in traces)
    fig, axes = plt.subplots(1, 2 if has_regret else 1, figsize=(13 if has_regret else 7, 4.5), squeeze=False)
    kernel = np.ones(window) / window
    # 10 distinct hues; past 10 agents the hues repeat dashed, then dotted (a light shade of a hue was too close
    # to its dark one: random and PPO were hard to tell apart)
    colours = list(plt.get_cmap("tab10").colors)  # type: ignore[attr-defined]
    for n, agent in enumerate(dict.fromkeys(t.agent for t in traces)):
        colour, style = colours[n % len(colours)], ("-", "--", ":")[(n // len(colours)) % 3]
        runs = [t for t in traces if t.agent == agent]
        panels = [("reward", True)] + ([("regret", False)] if has_regret else [])
        for ax, (metric, smooth) in zip(axes[0], panels, strict=True):
            curves = np.stack([r.steps[metric] for r in runs])
            if smooth and curves.shape[1] >= window:
                curves = np.stack([np.convolve(c, kernel, mode="valid") for c in curves])
            x = np.arange(curves.shape[1]) + (window - 1 if smooth and len(runs[0].steps[metric]) >= window else 0)
            mean = curves.mean(axis=0)
            ax.plot(x, mean, label=agent, color=colour, linestyle=style)
            if len(runs) > 1:
                half = stats.t.ppf(0.975, len(runs) - 1) * curves.std(axis=0, ddof=1) / np.sqrt(len(runs))
                ax.fill_between(x, mean - half, mean + half, alpha=0.12, color=colour)
    axes[0][0].set(title=f"page reward ({window}-step moving average)", xlabel="online step", ylabel="reward / page")
    if has_regret:
        axes[0][1].set(title="cumulative regret vs the true oracle", xlabel="online step", ylabel="regret")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# ---------------------------------------------------------------------- the job
def wants_truth(cfg: DictConfig, prep: Prepared) -> bool:
    """Whether to run every agent in the true world too.

    ``cfg.truth`` decides; by default (None) whenever a world exists and the simulator is not already the truth.
    """
    option = cfg.get("truth")
    possible = prep.world is not None and backend_name(cfg.backend) != "true"
    if option and prep.world is None:
        raise ConfigError("`truth=true` needs the built-in world (data=synthetic): a user's logs have no true world")
    return possible if option is None else bool(option) and possible


#: ``on_step(run, t, reward)``: a run's step ``t`` recorded its mean page reward (see :func:`run_agents`)
StepHook = Callable[["RunJob", int, float], None]


def run_agents(cfg: DictConfig, names: list[str], preps: dict[str, Prepared], out: Path,
               on_step: StepHook | None = None) -> tuple[dict[str, list[RunTrace]], dict[str, str]]:
    """Run every agent of ``names`` over every seed in each simulator of ``preps``; resume what a killed run finished.

    ``preps`` maps a tag to a simulator: ``""`` the simulator compared, ``"-true"`` the true world. The runs
    go to ``cfg.jobs`` worker processes (:func:`shopgym.app.jobs.run_parallel`; None: one per CPU); each uses
    one torch thread and ``cfg.blas_threads`` BLAS threads and seeds torch with its seed, so the numbers do
    not depend on ``jobs``.

    TensorBoard goes under ``out/tensorboard/<agent>/seed<k><tag>``. Each finished run's trace is saved as
    ``out/traces/<agent>-seed<k><tag>.json`` (atomically, after its TensorBoard events are closed): a rerun
    into the same folder reads the finished runs back instead of running them again, and restarts an
    unfinished one from a clean TensorBoard folder, so no event file is duplicated.

    ``on_step(run, t, reward)`` (optional) is called after every step of every run, in the process that runs it
    (this one only with ``jobs=1``): the learning curves as they grow, e.g. for an early-stopping scheduler.

    Returns:
        The traces per tag (in the order of ``names`` and the seeds) and the agents skipped, with the reason.
    """
    from shopgym.app.jobs import run_parallel, worker_count

    seeds = seed_list(cfg.seeds)
    backend = backend_name(cfg.backend)
    worlds = {"": "true world" if backend == "true" else f"{backend} simulator", "-true": "true world"}
    jobs = [RunJob(name, int(seed), tag, _model_label(worlds[tag], preps[tag], position))
            for tag in preps for position, seed in enumerate(seeds) for name in names]
    done: dict[RunJob, RunTrace] = {}
    for job in jobs:
        path = out / "traces" / f"{job.key}.json"
        if path.is_file():
            done[job] = read_trace(path)
    skipped: dict[str, str] = {}

    def on_result(job: RunJob, result: RunTrace | str, seconds: float) -> None:
        if isinstance(result, str):  # the logs cannot support this agent (e.g. ALS without user ids)
            if job.name not in skipped:
                skipped[job.name] = result
                tqdm.write(f"skipping agent {job.name!r}: {result}")
                log.info("skipping agent %r: %s", job.name, result)
            return
        write_json({"agent": job.name, "seed": job.seed, "seconds": result.seconds,
                    "steps": {m: v.tolist() for m, v in result.steps.items()}}, out / "traces" / f"{job.key}.json")
        done[job] = result
        log.info("finished %s: cumulative reward %.2f in %.1f s", job.label, float(result.steps["reward"].sum()),
                 result.seconds)

    todo = [job for job in jobs if job not in done]
    check_blas_threads(cfg.get("blas_threads", 1))  # before any run (applying it here would limit this process)

    def execute(job: RunJob, report: Any) -> RunTrace | str:
        prep, _ = preps[job.tag].for_seed(seeds.index(job.seed))
        hook = None if on_step is None else (lambda t, reward: on_step(job, t, reward))
        return _execute_run(job, cfg, prep, out, report, hook)

    run_parallel(todo, execute, on_result, workers=worker_count(cfg.get("jobs"), len(todo)),
                 kind=lambda job: (job.name, job.tag), label=lambda job: job.label, desc="compare",
                 progress=bool(cfg.progress))
    traces = {tag: [done[job] for job in jobs if job.tag == tag and job in done] for tag in preps}
    return traces, skipped


def _model_label(world: str, prep: Prepared, position: int) -> str:
    """What the progress line calls the world of the seed at ``position`` (its bootstrap model, if any)."""
    _, model = prep.for_seed(position)
    return f"{world}, bootstrap model {model}" if model else world


@dataclass(frozen=True)
class RunJob:
    """One run of ``shopgym compare``: an agent, a seed and a world (tag ``""``: the simulator; ``"-true"``)."""

    name: str
    seed: int
    tag: str = ""
    #: what the progress line and the log call the world the run is in
    world: str = "simulator"

    @property
    def key(self) -> str:
        """The run's file stem, ``<agent>-seed<k><tag>``."""
        return f"{self.name}-seed{self.seed}{self.tag}"

    @property
    def label(self) -> str:
        """What the progress line says."""
        return f"{self.name} seed {self.seed} ({self.world})"


def _execute_run(job: RunJob, cfg: DictConfig, prep: Prepared, out: Path, report: Any,
                 on_step: Callable[[int, float], None] | None = None) -> RunTrace | str:
    """One run (in a worker process or inline): the trace, or why the logs cannot support the agent."""
    import shutil

    import torch
    from torch.utils.tensorboard import SummaryWriter

    from shopgym.threads import torch_threads

    with torch_threads(1), blas_threads(cfg.get("blas_threads", 1)):
        torch.manual_seed(job.seed)
        try:
            agent = make_agent(job.name, cfg.agents[job.name], prep, job.seed)
        except DataFormatError as exc:
            return str(exc)
        events = out / "tensorboard" / job.name / f"seed{job.seed}{job.tag}"
        shutil.rmtree(events, ignore_errors=True)  # an unfinished run's events: it starts again
        writer = SummaryWriter(str(events))
        try:
            trace = run_agent(agent, prep, steps=int(cfg.steps), batch_size=int(cfg.batch_size), seed=job.seed,
                              writer=writer, log_every=int(cfg.log_every), report=report, on_step=on_step)
        finally:
            writer.close()
        if not job.tag:
            save_trained(agent, out / agent_folder(job.name, job.seed))
    trace.agent = job.name
    return trace


def agent_folder(name: str, seed: int) -> str:
    """Where a run folder keeps the agent ``name`` trained in the simulator with ``seed``: ``agents/<name>/seed<k>``."""
    return f"agents/{name}/seed{seed}"


def save_trained(agent: RankingPolicy, folder: Path) -> Path | None:
    """Save a trained agent (``policy.json`` + ``state.safetensors``); None for the world's own reference policies.

    The files are written into a folder aside and renamed in (:func:`shopgym.data.io.atomic_folder`), so
    ``folder`` is either complete or absent.
    """
    from agents.reference import WorldReferencePolicy
    from shopgym.data.io import atomic_folder

    if isinstance(agent, WorldReferencePolicy):
        return None  # the logging policy and the oracle are the world's, rebuilt from it, never trained
    with atomic_folder(folder) as tmp:
        agent.save(tmp)
    return folder


def read_trace(path: Path) -> RunTrace:
    """A finished run's trace saved by :func:`run_agents`."""
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return RunTrace(str(raw["agent"]), int(raw["seed"]),
                        {m: np.asarray(v, dtype=np.float64) for m, v in raw["steps"].items()}, float(raw["seconds"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable trace of a finished run ({exc}); delete it to run that agent again") \
            from exc


#: run options that change neither what is run nor its numbers: a rerun may change them and still resume
SPEED_ONLY_KEYS = ("jobs", "progress")


def essential_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` resolved to plain data without :data:`SPEED_ONLY_KEYS`: what decides a run's numbers."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items() if k not in SPEED_ONLY_KEYS}


def check_resumable(out: Path, cfg: DictConfig) -> None:
    """Refuse to resume into ``out`` a run of another config (its finished traces would be mixed in).

    The configs are compared without :data:`SPEED_ONLY_KEYS`.
    """
    saved = out / "config.yaml"
    if not ((out / "traces").is_dir() and saved.is_file()):
        return
    saved_cfg = OmegaConf.load(saved)
    assert isinstance(saved_cfg, DictConfig)
    if essential_config(saved_cfg) != essential_config(cfg):
        raise ConfigError(f"{out} holds a run of another config (its config.yaml differs); rerun into it only "
                          "with the same options to resume, or choose another folder (hydra.run.dir=...)")


@dataclass(frozen=True)
class Agreement:
    r"""How the simulator ranks and values the agents against the true world (cumulative reward, P agents).

    Attributes:
        kendall_tau: rank agreement over agents, in [-1, 1].
        mean_abs_relative_error: :math:`\frac1P\sum_p |\hat v_p - v_p| / v_p`.
        n_agents: P.
    """

    kendall_tau: float
    mean_abs_relative_error: float
    n_agents: int


def with_truth(table: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, Agreement | None]:
    """``table`` with each agent's true cumulative reward (and 95% CI) and relative error; the agreement."""
    from envs.fidelity import policy_agreement

    true = truth.set_index("agent")
    out = table.copy()
    out["true_cumulative_reward"] = out["agent"].map(true["cumulative_reward"])
    out["true_cumulative_reward_ci95"] = out["agent"].map(true["cumulative_reward_ci95"])
    true_value = out["true_cumulative_reward"]
    out["relative_error"] = (out["cumulative_reward"] - true_value) / true_value
    both = out.dropna(subset=["true_cumulative_reward"])
    if len(both) < 2:
        return out, None
    tau, mare = policy_agreement(both["true_cumulative_reward"].to_numpy(), both["cumulative_reward"].to_numpy())
    return out, Agreement(tau, mare, len(both))


def compare(cfg: DictConfig, out: Path | None = None, *, echo: bool = True,
            on_step: StepHook | None = None) -> pd.DataFrame:
    """Run the comparison described by ``cfg``; write results under ``out``; return the table (printed if ``echo``).

    On the built-in world with a fitted (or segment) backend the agents also run in the true world (same
    seeds and sessions): the table then holds, per agent, its simulated and true cumulative reward, and
    ``results.md`` the agreement (Kendall tau, mean absolute relative error over agents).
    """
    seed_list(cfg.seeds)  # bad seeds fail before the logs are made
    out = Path(out or Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    check_resumable(out, cfg)
    atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(resolved, encoding="utf-8"))
    names = list(cfg.agents) if cfg.only is None else [str(n) for n in cfg.only]
    unknown = [n for n in names if n not in cfg.agents]
    if unknown:
        raise ConfigError(f"`only` names unknown agents {unknown}; configured: {list(cfg.agents)}")
    prep = with_members(cfg, prepare(cfg))
    preps = {"": prep}
    if wants_truth(cfg, prep):
        assert prep.built is not None
        preps["-true"] = prepared_from(prep.built, prep.built.with_backend("true"))
    backend = backend_name(cfg.backend)
    runs, skipped = run_agents(cfg, names, preps, out, on_step)
    traces = runs[""]
    if not traces:
        raise ConfigError("no agent could run on these logs: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    table = summarise(traces)
    agreement = None
    if "-true" in runs:
        true_traces = runs["-true"]
        table, agreement = with_truth(table, summarise(true_traces))
        write_json({f"{t.agent}/seed{t.seed}": {m: v.tolist() for m, v in t.steps.items()} for t in true_traces},
                   out / "curves_true.json")
    runs_table = per_run(traces)
    if "-true" in runs:
        true_runs = per_run(runs["-true"])[["agent", "seed", "cumulative_reward"]]
        runs_table = runs_table.merge(true_runs.rename(columns={"cumulative_reward": "true_cumulative_reward"}),
                                      on=["agent", "seed"], how="left")
    atomic_write(out / "runs.csv", lambda tmp: runs_table.to_csv(tmp, index=False))
    atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
    markdown = to_markdown(table, backend=backend, agreement=agreement) + interval_note(prep, len(seed_list(cfg.seeds)))
    if skipped:
        markdown += "\nSkipped (the logs cannot support them):\n\n" + "".join(
            f"* {name}: {reason}\n" for name, reason in skipped.items())
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    if agreement is not None:
        write_json(asdict(agreement), out / "agreement.json")
    curves = {f"{t.agent}/seed{t.seed}": {m: v.tolist() for m, v in t.steps.items()} for t in traces}
    write_json(curves, out / "curves.json")
    plot_curves(traces, out / "learning_curves.png")
    done = (f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'learning_curves.png'}; "
            f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    if echo:
        print(markdown)
        print(done)
    log.info("%s\n%s", markdown, done)  # compare.log in the run folder (Hydra's file handler)
    return table


def interval_note(prep: Prepared, n_seeds: int) -> str:
    """What the intervals over seeds cover: with bootstrap refits, the model's uncertainty too."""
    if prep.built is None or prep.built.model is None:
        return ""
    models = min(1 + len(prep.members), n_seeds)
    if models > 1:
        return (f"\nThe seeds ran in {models} fitted models (the fit and {models - 1} refits on bootstrap reweightings "
                "of the training logs, seed i in model i mod the number of models): the simulated intervals "
                "include the model's uncertainty, not only the simulation's and the agents' randomness.\n")
    return ("\nEvery seed ran in the same fitted model: the simulated intervals cover the simulation's and the "
            "agents' randomness, not the model's uncertainty (bootstrap=2 runs seeds in bootstrap refits).\n")


def headline(table: pd.DataFrame) -> float:
    """The number a sweeper optimises: the best agent's mean cumulative reward in the simulator."""
    return float(table["cumulative_reward"].max())
