"""Export a trained agent to ONNX: a scoring graph, its item vocabulary, a manifest and a parity proof.

``shopgym export SRC --out DIR``. SRC is a saved agent folder inside a compare run
(``<run>/agents/<agent>/seed<k>``), a compare run folder (``--agent NAME``, ``--seed K``), or a sweep folder
(``--best``: the agent its ``best.json`` names). The run's ``config.yaml`` rebuilds the simulator the agent was
trained in (from the caches), which gives the item table and the contexts of the parity check.

The export folder, written aside and renamed in (it appears complete or not at all):

* ``model.onnx``: the agent's greedy scores (:mod:`shopgym.app.export_graphs`), tables inside;
* ``item_ids.json``: the catalog item ids in graph order (candidate ``i`` of the graph is ``item_ids[i]``);
* ``user_ids.json``: the user ids the agent was fitted with (input ``user_ids``: a position in it, -1 if absent);
* ``serving.safetensors``: what the server needs to build the graph's inputs from a request
  (:data:`SERVING_TABLES`): item vectors and popularity feature, the known users' logged histories, the
  cold-start profile, the query table (``queries.json``: its texts) and the space's projection;
* ``items.parquet``: the catalog (shopgym's items table), copied into the served log so it reads as a dataset;
* ``encoder/``: the text encoder as ONNX with its tokenizer (BERT encoders; :mod:`shopgym.app.export_encoder`);
* ``manifest.json``: versions, the agent and its config, the run and its resolved-config hash, the metrics the
  agent earned, the graph's inputs and output, the encoder, the vocabulary (count and SHA-256), the opset, the
  exploration it ships with, the parity figures, and the SHA-256 of every other file.

Parity: ONNX Runtime against the in-process agent's greedy score (:func:`greedy_scores`) on ``contexts``
(>= 1,000) request contexts recorded from the simulator while the agent ranks (without learning): the largest
absolute score difference must be <= :data:`PARITY_TOLERANCE` and the top-K orders must agree (ties by lower
candidate column, as :func:`agents.base.deterministic_topk`) except between items whose scores are within the
tolerance (:func:`orders_agree`); the share of exactly identical orders is reported too. Otherwise the export
fails and leaves no folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agents.base import RankingContext, RankingPolicy, load_policy
from shopgym.data.io import atomic_folder, write_json
from shopgym.errors import ConfigError
from shopgym.serve.manifest import EXPORT_FORMAT, MANIFEST, sha256

#: arrays of ``serving.safetensors``: name -> meaning
SERVING_TABLES = {
    "item_vecs": "(n_items, d) float32 unit item vectors (catalog order = item_ids.json)",
    "popularity": "(n_items,) float32 the popularity feature of input `extra` (smoothed CTR / its maximum)",
    "default_profile": "(d,) float32 the cold-start profile",
    "user_history": "(n_users, H) int64 each known user's logged engaged items, newest last, -1 padded",
    "user_history_weight": "(n_users, H) float32 their behaviour weights (0 where padded)",
    "query_vecs": "(Q, d) float32 vectors of the queries in queries.json",
    "projection": "(d_in, d) float32 the space's PCA projection of encoder outputs (identity if none)",
}
#: largest absolute score difference ONNX Runtime vs the agent
PARITY_TOLERANCE = 1e-5
#: the ONNX opset of the graphs
OPSET = 18


@dataclass(frozen=True)
class ExportSource:
    """What to export: the agent's folder, its run folder and config, its name and seed."""

    agent_folder: Path
    run_folder: Path
    config: DictConfig
    agent: str
    seed: int


def resolve_source(src: str | Path, agent: str | None = None, seed: int | None = None,
                   best: bool = False) -> ExportSource:
    """The agent folder and run of ``src`` (see the module docstring).

    Raises:
        ConfigError: nothing exportable found there, naming what to pass.
    """
    folder = Path(src)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; give a saved agent, a compare run or a sweep folder")
    if best:
        best_file = folder / "best.json"
        if not best_file.is_file():
            raise ConfigError(f"{folder}: no best.json (--best needs a sweep folder: run `shopgym sweep report "
                              f"{folder}` first)")
        chosen = json.loads(best_file.read_text(encoding="utf-8"))
        if not chosen.get("agent_folder"):
            raise ConfigError(f"{best_file}: the best agent was not saved (a run from before agents were kept)")
        folder = folder / chosen["agent_folder"]
    elif not (folder / "policy.json").is_file():
        if not (folder / "agents").is_dir():
            raise ConfigError(f"{folder}: neither a saved agent (policy.json) nor a run with trained agents "
                              "(agents/); for a sweep pass --best")
        names = sorted(p.name for p in (folder / "agents").iterdir() if p.is_dir())
        if agent is None or agent not in names:
            raise ConfigError(f"{folder}: pass --agent with one of {names}" if agent is None else
                              f"--agent {agent!r} was not trained in {folder}; trained: {names}")
        seeds = sorted(int(p.name[4:]) for p in (folder / "agents" / agent).glob("seed*"))
        chosen_seed = seeds[0] if seed is None else seed
        if chosen_seed not in seeds:
            raise ConfigError(f"--seed {seed} was not run for {agent} in {folder}; seeds: {seeds}")
        folder = folder / "agents" / agent / f"seed{chosen_seed}"
    if not (folder / "policy.json").is_file():
        raise ConfigError(f"{folder}: not a saved agent (no policy.json)")
    run = folder.parent.parent.parent
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{folder}: its run's config.yaml ({config_file}) is missing; export agents saved by "
                          "`shopgym compare` (they sit in <run>/agents/<agent>/seed<k>)")
    cfg = OmegaConf.load(config_file)
    assert isinstance(cfg, DictConfig)
    return ExportSource(folder, run, cfg, folder.parent.name, int(folder.name.removeprefix("seed")))


def record_contexts(agent: RankingPolicy, sim: Any, n: int, seed: int = 0,
                    batch_size: int = 64) -> list[RankingContext]:
    """At least ``n`` request contexts (batches of ``batch_size``) from ``sim`` while ``agent`` ranks, not learning."""
    from envs.rerank import ReRankVectorEnv
    from shopgym.app.rollout import EnvPages, rollout

    env = ReRankVectorEnv(batch_size, simulator=sim, observation="ids")  # agents rank from the context
    env.reset(seed=seed)
    steps = -(-n // batch_size)
    return [step.ctx for step in rollout(agent, EnvPages(env), np.random.default_rng([seed, 11]), steps=steps,
                                         learn=False)]


def feeds(ctx: RankingContext, names: list[str]) -> dict[str, np.ndarray]:
    """The graph inputs ``names`` of a context (see :data:`shopgym.app.export_graphs.INPUTS`)."""
    values: dict[str, np.ndarray] = {
        "user": np.asarray(ctx.user, np.float32), "query": np.asarray(ctx.query, np.float32),
        "is_search": np.asarray(ctx.is_search, np.float32), "candidates": np.asarray(ctx.candidates, np.int64),
        "history": np.asarray(ctx.history, np.int64), "user_ids": np.asarray(ctx.user_ids, np.int64),
        "extra": np.asarray(ctx.extra, np.float32)}
    return {name: values[name] for name in names}


def topk_order(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, k) columns of the top-k scores, descending, ties by lower column (a stable sort)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def greedy_scores(agent: RankingPolicy, ctx: RankingContext) -> np.ndarray:
    """(B, N) the score an export ships: the linear bandits' posterior mean (no UCB bonus, no posterior draw)."""
    from agents.linear import LinearBandit

    return agent.mean_scores(ctx) if isinstance(agent, LinearBandit) else agent.score(ctx)


def orders_agree(got: np.ndarray, expected: np.ndarray, k: int, tolerance: float) -> np.ndarray:
    """(B,) bool: the top-``k`` orders of ``got`` and ``expected`` agree up to near-ties.

    Position by position, the item ``got`` puts there must be the one ``expected`` puts there, or score within
    ``tolerance`` of it under ``expected`` (two scores that close cannot define an order across float32 and
    float64 arithmetic: a batched product rounds the same vector differently at different positions).
    """
    mine, theirs = topk_order(got, k), topk_order(expected, k)
    rows = np.arange(len(got))[:, None]
    gap = np.abs(expected[rows, mine] - expected[rows, theirs])
    return ((mine == theirs) | (gap <= tolerance)).all(axis=1)


def check_parity(agent: RankingPolicy, session: Any, contexts: list[RankingContext], k: int) -> dict[str, Any]:
    """An ONNX Runtime ``session`` vs the agent's :func:`greedy_scores` on ``contexts``: the manifest's figures.

    Returns:
        ``contexts`` (requests compared), ``max_abs_diff``, ``topk_identical`` (share of requests whose top-``k``
        orders match), ``topk_agree_up_to_near_ties`` (:func:`orders_agree`), ``k``, ``tolerance``, ``passed``
        and ``onnxruntime_seconds`` (ONNX Runtime's total inference time).
    """
    names = [i.name for i in session.get_inputs()]
    worst, same, agree, total, seconds = 0.0, 0, 0, 0, 0.0
    for ctx in contexts:
        expected = np.asarray(greedy_scores(agent, ctx), dtype=np.float64)
        started = time.perf_counter()
        got = session.run(None, feeds(ctx, names))[0].astype(np.float64)
        seconds += time.perf_counter() - started
        worst = max(worst, float(np.abs(got - expected).max()))
        same += int((topk_order(got, k) == topk_order(expected, k)).all(axis=1).sum())
        agree += int(orders_agree(got, expected, k, PARITY_TOLERANCE).sum())
        total += ctx.batch_size
    return {"contexts": total, "max_abs_diff": worst, "topk_identical": same / max(total, 1),
            "topk_agree_up_to_near_ties": agree / max(total, 1), "k": k, "tolerance": PARITY_TOLERANCE,
            "passed": worst <= PARITY_TOLERANCE and agree == total, "onnxruntime_seconds": seconds}


def export_graph(graph: Any, example: RankingContext, path: Path) -> None:
    """Write ``graph`` as ONNX (dynamo exporter; dynamic batch, candidate and history axes)."""
    import torch

    from shopgym.app.export_graphs import INPUTS, OUTPUT

    batch, cands, hist = torch.export.Dim("batch"), torch.export.Dim("candidates"), torch.export.Dim("history")
    axes = {"user": {0: batch}, "query": {0: batch}, "is_search": {0: batch},
            "candidates": {0: batch, 1: cands}, "history": {0: batch, 1: hist}, "user_ids": {0: batch},
            "extra": {0: batch, 1: cands}}
    values = feeds(example, [name for name, _, _ in INPUTS])
    args = tuple(torch.from_numpy(values[name]) for name, _, _ in INPUTS)
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the exporter's notes (no torchvision ops, merged axis names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, args, dynamo=True, input_names=[n for n, _, _ in INPUTS],
                                        output_names=[OUTPUT], dynamic_shapes=tuple(axes[n] for n, _, _ in INPUTS),
                                        opset_version=OPSET, verbose=False)
    finally:
        quiet.setLevel(level)
    assert program is not None
    program.save(str(path))


def earned_metrics(source: ExportSource) -> dict[str, float]:
    """What the agent earned in its run: its seed's row of the run's ``runs.csv`` (``seed_<metric>``)."""
    import pandas as pd

    out: dict[str, float] = {}
    runs = source.run_folder / "runs.csv"
    if runs.is_file():
        table = pd.read_csv(runs)
        row = table[(table["agent"] == source.agent) & (table["seed"] == source.seed)]
        for column in ("cumulative_reward", "true_cumulative_reward", "ctr", "purchase_rate"):
            if column in row and len(row) and np.isfinite(row[column].iloc[0]):
                out[f"seed_{column}"] = float(row[column].iloc[0])
    return out


def export(src: str | Path, out: str | Path, *, agent: str | None = None, seed: int | None = None,
           best: bool = False, contexts: int = 1000, force: bool = False) -> Path:
    """Export an agent (see the module docstring); return the export folder.

    Raises:
        ConfigError: a bad source, an agent that cannot be exported, an existing ``out`` (without ``force``),
            or failed parity (nothing is written then).
    """
    import onnxruntime as ort

    from shopgym import __version__
    from shopgym.app.config import simulator_spec
    from shopgym.app.export_encoder import export_text_encoder
    from shopgym.app.export_graphs import INPUTS, OUTPUT, graph_for
    from shopgym.app.sweep import config_key

    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"--out {out}: exists; choose a new folder or pass --force to replace it")
    if contexts < 1000:
        raise ConfigError(f"--contexts must be >= 1000 (the parity proof's floor), got {contexts}")
    source = resolve_source(src, agent, seed, best)
    policy = load_policy(source.agent_folder)
    from envs.build import build_simulator

    built = build_simulator(simulator_spec(source.config, progress=False))
    sim = built.sim
    k = int(sim.config.slate_size)
    graph = graph_for(policy, sim.space.item_vecs)
    recorded = record_contexts(policy, sim, contexts)
    with atomic_folder(out) as tmp:
        export_graph(graph, recorded[0], tmp / "model.onnx")
        session = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
        parity = check_parity(policy, session, recorded, k)
        if not parity["passed"]:
            raise ConfigError(f"parity failed: ONNX Runtime vs {source.agent} on {parity['contexts']} contexts: max "
                              f"|difference| {parity['max_abs_diff']:.3g} (tolerance {PARITY_TOLERANCE}), top-{k} "
                              f"orders agreeing up to near-ties for "
                              f"{parity['topk_agree_up_to_near_ties']:.2%}; nothing was exported")
        ids = [str(i) for i in sim.space.item_ids]
        write_json(ids, tmp / "item_ids.json")
        user_index = getattr(getattr(sim, "users", None), "user_ids", None)
        users = [] if user_index is None else [str(u) for u in user_index]
        write_json(users, tmp / "user_ids.json")
        write_serving_tables(sim, built.inputs, tmp)
        built.inputs.logs.items.to_parquet(tmp / "items.parquet", index=False)
        texts = [str(t) for t in built.inputs.logs.items["text"].iloc[:1000]] + \
            [str(q) for q in sim.space.query_texts[:200]]
        encoder_used = built.spec.encoder
        if str(getattr(encoder_used, "identity", "")) != built.inputs.encoder_identity:
            encoder_used = built.inputs.encoder_identity  # items without text: the space came from their features
        text_encoder = export_text_encoder(encoder_used, tmp, texts, OPSET)
        files = {str(path.relative_to(tmp)): sha256(path) for path in sorted(tmp.rglob("*"))
                 if path.is_file() and path.name != MANIFEST}
        declared = {i.name for i in session.get_inputs()}
        header = json.loads((source.agent_folder / "policy.json").read_text(encoding="utf-8"))
        encoder = OmegaConf.to_container(source.config.get("encoder"), resolve=True) \
            if isinstance(source.config.get("encoder"), DictConfig) else source.config.get("encoder")
        manifest = {
            "format": EXPORT_FORMAT, "shopgym_version": __version__, "created": time.time(),
            "agent": {"name": source.agent, "class": header["class"], "config": header.get("config", {}),
                      "seed": source.seed, "folder": str(source.agent_folder)},
            "run": {"folder": str(source.run_folder), "config_sha256": config_key(source.config),
                    "data": str(source.config.data.kind), "backend": str(source.config.backend)},
            "metrics": earned_metrics(source),
            "inputs": [{"name": name, "rank": rank, "dtype": dtype} for name, rank, dtype in INPUTS
                       if name in declared],
            "output": {"name": OUTPUT, "shape": ["batch", "candidates"], "dtype": "float32"},
            "dims": {"embedding": int(sim.space.dim), "extra": int(recorded[0].extra.shape[2]), "slate_size": k},
            "encoder": {"config": encoder, "item_table_sha256": hashlib.sha256(
                np.ascontiguousarray(sim.space.item_vecs, np.float32).tobytes()).hexdigest(),
                "attribute_weight": float(built.inputs.attribute_weight)},
            "text_encoder": text_encoder,
            "serving": {"tables": SERVING_TABLES, "history_length": int(recorded[0].history.shape[1]),
                        "behaviour_weights": {"click": float(sim.behaviour.click), "cart": float(sim.behaviour.cart),
                                              "purchase": float(sim.behaviour.purchase)},
                        "queries": len(sim.space.query_texts)},
            "items": {"count": len(ids), "sha256": files["item_ids.json"]},
            "users": {"count": len(users), "sha256": files["user_ids.json"],
                      "note": "input user_ids: a user's position in user_ids.json, -1 for anyone else"},
            "opset": OPSET,
            "exploration": {"mode": "greedy", "note": "the agent's greedy score; the server adds exploration"},
            "parity": parity,
            "files": files,
        }
        write_json(manifest, tmp / MANIFEST)
    return out


def write_serving_tables(sim: Any, inputs: Any, folder: Path) -> None:
    """``serving.safetensors`` and ``queries.json`` of ``sim`` (see :data:`SERVING_TABLES`)."""
    from safetensors.numpy import save_file

    space, users = sim.space, sim.users
    d = space.dim
    history = np.asarray(users.history, np.int64)  # (n_users, H); (0, H) for logs without user ids
    weight = np.asarray(users.history_weight, np.float32).reshape(history.shape)
    projection = space.projection if space.projection is not None else np.eye(d, dtype=np.float32)
    tables = {"item_vecs": space.item_vecs, "popularity": sim.popularity_feature,
              "default_profile": sim.default_profile, "user_history": history, "user_history_weight": weight,
              "query_vecs": np.asarray(space.query_vecs).reshape(-1, d), "projection": projection}
    save_file({name: np.ascontiguousarray(value, dtype=np.int64 if name == "user_history" else np.float32)
               for name, value in tables.items()}, str(folder / "serving.safetensors"))
    write_json([str(q) for q in space.query_texts], folder / "queries.json")
