"""Scoring speed of exported agents: ONNX Runtime's ``InferenceSession.run`` against the agent's own ``score``.

A small compare run on the built-in world (``experiment=quick``, N=100 candidates, K=10 slots) trains the agents;
each is exported (``shopgym.app.export.export``, with its parity check) and then both scorers rank the same
recorded request contexts, one request at a time (B=1, a serving request) and in batches of 64. Reported per
agent and batch size: microseconds per request for the agent (NumPy / PyTorch in process) and for ONNX Runtime
(one thread), and their ratio, measured in the same run. Run it alone on an idle machine.

Usage:
    python benchmarks/bench_export.py [--agents cosine,popularity,linucb] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

AGENTS = ["cosine", "popularity", "item_knn", "als", "linucb", "lin_ts", "neural_linear", "logistic", "ppo"]


def per_request(fn, batches: list, repeats: int) -> float:
    """Best-of-``repeats`` microseconds per request of ``fn`` over ``batches``."""
    requests = sum(b.batch_size for b in batches)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for ctx in batches:
            fn(ctx)
        best = min(best, time.perf_counter() - started)
    return 1e6 * best / requests


def split(ctx, size: int) -> list:
    """``ctx`` cut into batches of ``size`` requests."""
    fields = ("user", "query", "is_search", "candidates", "candidate_vecs", "user_ids", "history", "extra")
    return [replace(ctx, **{f: getattr(ctx, f)[i:i + size] for f in fields}, sessions=None)
            for i in range(0, ctx.batch_size, size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]

    import onnxruntime as ort
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from agents.base import load_policy
    from envs.build import build_simulator
    from shopgym.app.compare import compare
    from shopgym.app.config import register_configs, simulator_spec
    from shopgym.app.export import export, feeds, greedy_scores, record_contexts
    from shopgym.threads import torch_threads

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        register_configs()
        with initialize_config_module(config_module="conf", version_base="1.3"):
            cfg = compose(config_name="compare", overrides=[
                "experiment=quick", "env.n_candidates=100", "env.slate_size=10", "backend=fitted", "truth=false",
                "bootstrap=0", "steps=20", "seeds=[0]", f"only=[{','.join(agents)}]", "progress=false",
                f"cache_dir={root / 'cache'}"])
        compare(cfg, root / "run", echo=False)
        sim = build_simulator(simulator_spec(OmegaConf.load(root / "run" / "config.yaml"), progress=False)).sim
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        for name in agents:
            out = export(root / "run", root / name, agent=name)
            policy = load_policy(root / "run" / "agents" / name / "seed0")
            session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            recorded = record_contexts(policy, sim, 256, seed=3)
            for size in (1, 64):
                batches = [b for ctx in recorded for b in split(ctx, size)][: max(256 // size, 4)]
                with torch_threads(1):
                    agent_us = per_request(lambda c, p=policy: greedy_scores(p, c), batches, args.repeats)
                onnx_us = per_request(lambda c, s=session, n=names: s.run(None, feeds(c, n)), batches, args.repeats)
                rows[f"{name} B={size}"] = {"agent_us": agent_us, "onnx_us": onnx_us, "speedup": agent_us / onnx_us}
                print(f"{name} B={size}: agent {agent_us:.0f} us/request, ONNX Runtime {onnx_us:.0f} us/request",
                      flush=True)
    print("\n| agent, batch | agent score (us/request) | ONNX Runtime (us/request) | ONNX speed-up |")
    print("|---|---|---|---|")
    for key, r in rows.items():
        print(f"| {key} | {r['agent_us']:.0f} | {r['onnx_us']:.0f} | {r['speedup']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
