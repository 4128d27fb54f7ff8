"""The main job: run every agent online in the simulator over several seeds and compare them.

``compare(cfg)`` is a plain function of a Hydra config (``conf/compare.yaml``); ``shopgym compare`` is a
thin wrapper. For each seed and agent it runs ``steps`` batched page steps of ``batch_size`` live shopper
sessions, lets the agent learn online from the feedback, logs TensorBoard scalars, and finally writes
``results.csv``, ``results.md`` and ``learning_curves.png`` and prints the table.

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy import stats
from tqdm.auto import tqdm

from agents.base import RankingPolicy
from envs.core import EnvConfig, Simulator
from envs.fitted import FitConfig
from envs.synthetic import RewardWeights, SyntheticWorld
from shopgym.app.rollout import RunTrace, run_agent
from shopgym.data import LoggedData
from shopgym.data.io import atomic_write, write_json
from shopgym.errors import ConfigError, DataFormatError


@dataclass(frozen=True)
class Prepared:
    """The simulator and what agents are fitted on."""

    sim: Simulator
    train: LoggedData
    world: SyntheticWorld | None
    examination: np.ndarray


def blas_threads(limit: int | None) -> Any:
    """Context limiting the BLAS thread pools (NumPy's and SciPy's each bundle their own OpenBLAS) to ``limit``.

    The agents alternate many small NumPy and SciPy linear-algebra calls; two multi-threaded OpenBLAS pools
    then spin against each other on a small machine (measured on 2 cores: LinUCB 7.5 s -> 2.7 s per 100
    steps with one thread, identical numbers). None leaves the pools alone.
    """
    from contextlib import nullcontext

    if limit is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"`blas_threads` must be an integer >= 1 or null, got {limit!r}")
    return threadpool_limits(limits=limit, user_api="blas")


# ---------------------------------------------------------------------- setup
def env_config(cfg: DictConfig, slate_cap: int | None = None) -> EnvConfig:
    """EnvConfig from the ``env`` group (slate size capped by the logs' deepest position if given)."""
    from envs.candidates import CandidateConfig

    e: dict[str, Any] = dict(OmegaConf.to_container(cfg.env, resolve=True))  # type: ignore[arg-type]
    reward = RewardWeights(**e.pop("reward"))
    candidates = CandidateConfig(**e.pop("candidates"))
    if slate_cap is not None:
        e["slate_size"] = min(int(e["slate_size"]), slate_cap)
    return EnvConfig(reward=reward, candidates=candidates, **e)


def fit_config(cfg: DictConfig) -> FitConfig:
    """The response model's FitConfig from the ``fit`` group (defaults when the config has none)."""
    options = OmegaConf.to_container(cfg.fit, resolve=True) if "fit" in cfg else None
    return FitConfig.from_options(options)  # type: ignore[arg-type]


def prepare(cfg: DictConfig, out: Path) -> Prepared:
    """Build (or fit) the simulator the agents will run in."""
    from envs.build import check_shoppers, log_simulator, make_encoder, setup_world, world_simulator
    from envs.fitted import examination_from_propensities, fit_response_model
    from envs.space import ItemSpace
    from envs.synthetic import WorldConfig

    fit = fit_config(cfg)  # a bad fit option fails here, before the logs are made or read
    shoppers = check_shoppers(str(cfg.get("shoppers", "all")))  # so does a bad `shoppers`
    kind = str(cfg.data.kind)
    if kind == "synthetic":
        setup = setup_world(WorldConfig(**OmegaConf.to_container(cfg.world, resolve=True)),  # type: ignore[arg-type]
                            encoder=str(cfg.encoder), attribute_weight=float(cfg.attribute_weight),
                            test_fraction=float(cfg.test_fraction), cache_dir=cfg.cache_dir, progress=cfg.progress)
        config = env_config(cfg)
        model = None
        backend = backend_name(cfg.backend)
        if backend == "fitted":
            model = fit_response_model(setup.train, setup.space, fit, progress=cfg.progress)
            model.save(out / "response_model")
        sim = world_simulator(setup, config, backend=backend, model=model,  # type: ignore[arg-type]
                              shoppers=shoppers)
        train, world = setup.train, setup.world
    else:
        logs = load_data(cfg)
        train, _ = logs.split_by_time(float(cfg.test_fraction))
        has_text = bool((logs.items["text"].str.len() > 0).any())
        encoder = make_encoder(str(cfg.encoder), cfg.cache_dir) if has_text else _feature_encoder()
        queries = logs.interactions["query"].unique().tolist() if "query" in logs.interactions else []
        space = ItemSpace.build(logs.items, encoder, queries, attribute_weight=float(cfg.attribute_weight),
                                show_progress=cfg.progress)
        model = fit_response_model(train, space, fit, progress=cfg.progress)
        model.save(out / "response_model")
        config = env_config(cfg, slate_cap=int(logs.interactions["position"].max()))
        config = EnvConfig(**{**config.__dict__, "n_candidates": min(config.n_candidates, space.n_items)})
        sim = log_simulator(train, space, model, config)
        world = None
    exam = examination_from_propensities(train) if train.has_propensities else None
    k = sim.config.slate_size
    examination = np.arange(1, k + 1, dtype=np.float64) ** -1.0
    if exam is not None:
        m = min(k, len(exam))
        examination[:m] = exam[:m]
    return Prepared(sim, train, world, np.minimum.accumulate(examination))


def backend_name(value: Any) -> str:
    """The ``backend`` option as "true", "segment" or "fitted".

    On the command line Hydra reads ``backend=true`` as the boolean True (YAML), so that is accepted too.
    """
    from envs.build import WORLD_BACKENDS

    name = "true" if value is True else str(value)
    if name not in WORLD_BACKENDS:
        raise ConfigError(f"`backend` must be one of {', '.join(map(repr, WORLD_BACKENDS))}, got {value!r}")
    return name


def _feature_encoder() -> Any:
    from encoders.features import FeatureEncoder

    return FeatureEncoder()


def load_data(cfg: DictConfig) -> LoggedData:
    """The user's logs named by the ``data`` group."""
    from shopgym.adapters import convert

    kind, path = str(cfg.data.kind), Path(str(cfg.data.path))
    if kind == "folder":
        return LoggedData.load(path)
    if kind in ("obd", "online-retail"):
        return convert(kind, path)
    raise ConfigError(f"data.kind must be synthetic, folder, obd or online-retail; got {kind!r}")


def make_agent(name: str, node: DictConfig, prep: Prepared, seed: int) -> RankingPolicy:
    """Instantiate an agent from its config, give it the env's examination estimates, fit it on the logs."""
    from hydra.utils import instantiate

    node = node.copy()
    if "seed" in node:
        node.seed = int(seed)
    if "examination" in node and node.examination is None:
        node.examination = prep.examination.tolist()
    agent = instantiate(node, _convert_="all")
    if not isinstance(agent, RankingPolicy):
        raise ConfigError(f"agent {name!r} builds {type(agent).__name__}, not a RankingPolicy")
    fit = getattr(agent, "fit", None)
    if callable(fit):
        fit(prep.train, prep.sim.space.item_ids, prep.sim.users.user_ids)
    return agent


# ---------------------------------------------------------------------- results
def summarise(traces: list[RunTrace]) -> pd.DataFrame:
    """One row per agent: mean and 95% CI over seeds of the headline metrics."""
    rows = []
    for agent in dict.fromkeys(t.agent for t in traces):
        runs = [t for t in traces if t.agent == agent]
        per_seed = {
            "cumulative_reward": [float(r.steps["reward"].sum()) for r in runs],
            "final_reward": [float(r.steps["reward"][-max(len(r.steps["reward"]) // 5, 1):].mean()) for r in runs],
            "ctr": [float(r.steps["ctr"].mean()) for r in runs],
            "purchase_rate": [float(r.steps["purchase_rate"].mean()) for r in runs],
            "cumulative_regret": [float(r.steps["regret"][-1]) for r in runs],
            "ndcg": [float(np.nanmean(r.steps["ndcg"])) if np.isfinite(r.steps["ndcg"]).any() else np.nan
                     for r in runs],
            "coverage": [float(r.steps["coverage"][-1]) for r in runs],
            "diversity": [float(r.steps["diversity"].mean()) for r in runs],
            "seconds": [r.seconds for r in runs],
        }
        row: dict[str, Any] = {"agent": agent, "seeds": len(runs)}
        for metric, values in per_seed.items():
            mean, half = mean_ci(np.asarray(values))
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


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown table of mean ± 95% CI."""
    cols = ["cumulative_reward", "final_reward", "ctr", "purchase_rate", "cumulative_regret", "ndcg", "coverage",
            "diversity"]
    head = "| agent | " + " | ".join(cols) + " | s/run |\n|---|" + "---|" * (len(cols) + 1) + "\n"
    lines = []
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            mean, half = row[c], row[f"{c}_ci95"]
            if not np.isfinite(mean):
                cells.append("n/a")
            elif np.isfinite(half):
                cells.append(f"{mean:.4g} ± {half:.2g}")
            else:
                cells.append(f"{mean:.4g}")
        lines.append(f"| {row['agent']} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    return head + "\n".join(lines) + "\n"


def plot_curves(traces: list[RunTrace], path: Path, window: int = 10) -> None:
    """Learning curves (smoothed page reward) and cumulative regret, mean over seeds with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_regret = any(np.isfinite(t.steps["regret"]).all() for t in traces)
    fig, axes = plt.subplots(1, 2 if has_regret else 1, figsize=(13 if has_regret else 7, 4.5), squeeze=False)
    kernel = np.ones(window) / window
    palette = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]  # 10 hue pairs: dark, then light
    colours = list(palette[0::2]) + list(palette[1::2])
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
def compare(cfg: DictConfig, out: Path | None = None) -> pd.DataFrame:
    """Run the comparison described by ``cfg``; write results under ``out``; return the table."""
    out = Path(out or Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(resolved, encoding="utf-8"))
    names = list(cfg.agents) if cfg.only is None else [str(n) for n in cfg.only]
    unknown = [n for n in names if n not in cfg.agents]
    if unknown:
        raise ConfigError(f"`only` names unknown agents {unknown}; configured: {list(cfg.agents)}")
    prep = prepare(cfg, out)
    from torch.utils.tensorboard import SummaryWriter

    traces: list[RunTrace] = []
    skipped: dict[str, str] = {}
    jobs = [(seed, name) for seed in cfg.seeds for name in names]
    with blas_threads(cfg.get("blas_threads", 1)):
        for seed, name in tqdm(jobs, desc="compare", disable=not cfg.progress):
            if name in skipped:
                continue
            try:
                agent = make_agent(name, cfg.agents[name], prep, int(seed))
            except DataFormatError as exc:  # the logs cannot support this agent (e.g. ALS without user ids)
                skipped[name] = str(exc)
                tqdm.write(f"skipping agent {name!r}: {exc}")
                continue
            writer = SummaryWriter(str(out / "tensorboard" / name / f"seed{seed}"))
            try:
                trace = run_agent(agent, prep, steps=int(cfg.steps), batch_size=int(cfg.batch_size),
                                  seed=int(seed), writer=writer, log_every=int(cfg.log_every),
                                  progress=bool(cfg.progress))
            finally:
                writer.close()
            trace.agent = name
            traces.append(trace)
    if not traces:
        raise ConfigError("no agent could run on these logs: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    table = summarise(traces)
    atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
    markdown = to_markdown(table)
    if skipped:
        markdown += "\nSkipped (the logs cannot support them):\n\n" + "".join(
            f"* {name}: {reason}\n" for name, reason in skipped.items())
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    curves = {f"{t.agent}/seed{t.seed}": {m: v.tolist() for m, v in t.steps.items()} for t in traces}
    write_json(curves, out / "curves.json")
    plot_curves(traces, out / "learning_curves.png")
    print(markdown)
    print(f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'learning_curves.png'}; "
          f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    return table
