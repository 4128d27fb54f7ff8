"""``/rank`` latency over loopback against bare ONNX Runtime and the agent's own score, on the same requests.

A compare run on the built-in world with a 2,000-item catalog (``experiment=quick``, the world's true response
model, so nothing is fitted) trains LinUCB; it is exported (with its parity check) and served by
``shopgym serve`` (uvicorn, one ONNX Runtime thread) on 127.0.0.1. For N = 100 and N = 1,000 candidates and
K = 10 slots, the same pre-drawn requests (random candidates, known shoppers, a third with a known query) go

* over HTTP with 1 and 8 concurrent keep-alive connections (a bounded asyncio generator on raw streams in this
  process, request bytes built beforehand; it shares the 2 cores with the server), greedy and Plackett-Luce;
* to ``InferenceSession.run`` on the graph inputs the server builds (bare ONNX Runtime, one thread);
* to the server's whole in-process path (features, ONNX Runtime, exploration) without HTTP;
* to the agent's ``score`` in process (NumPy) on the same contexts.

Reported: p50 / p99 latency and throughput per setting, the HTTP overhead (p50 over HTTP / p50 of the bare
session) and the in-process agent's time over ONNX Runtime's, and the server's resident memory. Run it alone
on an idle machine.

Usage:
    python benchmarks/bench_serve.py [--requests 2000] [--seconds 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds."""
    ms = 1e3 * np.asarray(seconds)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def timed(fn: Any, inputs: list[Any], repeats: int = 1) -> list[float]:
    """Per-call seconds of ``fn`` over ``inputs`` (``repeats`` passes)."""
    out = []
    for _ in range(repeats):
        for x in inputs:
            started = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - started)
    return out


async def load(port: int, bodies: list[dict[str, Any]], clients: int, total: int, limit: float) -> dict[str, float]:
    """``total`` requests (at most ``limit`` seconds) from ``clients`` concurrent keep-alive connections.

    A bounded asyncio generator on raw streams: each request's bytes are built before the clock starts, so the
    latency is the server's answer over loopback plus reading it, not an HTTP client library's own Python work
    (which on 2 shared cores would be measured as server latency).
    """
    payloads = []
    for body in bodies:
        data = json.dumps(body).encode()
        payloads.append(b"POST /rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    latencies: list[float] = []
    sent = [0]
    deadline = time.perf_counter() + limit

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> None:
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answer = await reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(answer.decode(errors="replace"))

    async def client(start: int, warm: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for payload in payloads[start:start + warm]:
            await exchange(reader, writer, payload)
        i = start
        while sent[0] < total and time.perf_counter() < deadline:
            sent[0] += 1
            payload = payloads[i % len(payloads)]
            i += clients
            started = time.perf_counter()
            await exchange(reader, writer, payload)
            latencies.append(time.perf_counter() - started)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(client(k, 5) for k in range(clients)))  # warm up every connection
    latencies.clear()
    sent[0] = 0
    deadline = time.perf_counter() + limit
    started = time.perf_counter()
    await asyncio.gather(*(client(k, 0) for k in range(clients)))
    wall = time.perf_counter() - started
    return percentiles(latencies) | {"requests": len(latencies), "per_second": len(latencies) / wall}


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per setting")
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per HTTP setting")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import httpx
    from hydra import compose, initialize_config_module

    from agents.base import RankingContext, load_policy
    from shopgym.app.compare import compare
    from shopgym.app.config import register_configs
    from shopgym.app.export import export, greedy_scores
    from shopgym.serve.model import Exploration, ServedModel, choose
    from shopgym.threads import torch_threads

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        register_configs()
        with initialize_config_module(config_module="conf", version_base="1.3"):
            cfg = compose(config_name="compare", overrides=[
                "experiment=quick", "world.n_items=2000", "world.n_users=2000", "world.n_slots=40000",
                "env.n_candidates=100", "env.slate_size=10", "backend=true", "steps=20", "seeds=[0]",
                "only=[linucb]", "progress=false", f"cache_dir={root / 'cache'}"])
        print("training and exporting LinUCB on a 2,000-item world ...", flush=True)
        compare(cfg, root / "run", echo=False)
        folder = export(root / "run", root / "export", agent="linucb")
        policy = load_policy(root / "run" / "agents" / "linucb" / "seed0")
        model = ServedModel(folder)
        ids = [str(i) for i in model.item_ids]
        users = [str(u) for u in model.user_ids]
        queries = list(model.query_texts)
        rng = np.random.default_rng(0)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = subprocess.Popen([sys.executable, "-m", "shopgym", "serve", str(folder), "--port", str(port),
                                   "--log", str(root / "served"), "--feedback-window", "5"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            results["server_rss_mib_idle"] = rss_mib(server.pid)
            for n in (100, 1000):
                bodies = []
                for i in range(200):
                    body: dict[str, Any] = {"candidates": list(rng.choice(ids, n, replace=False)), "k": 10,
                                            "user_id": users[int(rng.integers(len(users)))]}
                    if i % 3 == 0 and queries:
                        body["query"] = queries[int(rng.integers(len(queries)))]
                    bodies.append(body)
                prepared = []
                for body in bodies:
                    cand = model.item_index(body["candidates"], "candidates")
                    prepared.append(model.features(cand, user_id=body["user_id"], query=body.get("query", "")))
                bare = percentiles(timed(lambda f: model.session.run(None, f), prepared, 3))
                path = percentiles(timed(lambda b: model.rank(b["candidates"], 10, Exploration(), rng,
                                                              user_id=b["user_id"], query=b.get("query", "")),
                                         bodies, 3))
                pl = percentiles(timed(lambda f: choose(model.score(f), 10, Exploration("plackett_luce"), rng),
                                       prepared, 3))
                contexts = [RankingContext(
                    user=f["user"], query=f["query"], is_search=f["is_search"].astype(bool),
                    candidates=f["candidates"], candidate_vecs=model.item_vecs[f["candidates"]],
                    user_ids=f["user_ids"], history=f["history"], extra=f["extra"]) for f in prepared]
                with torch_threads(1):
                    agent = percentiles(timed(lambda c: greedy_scores(policy, c), contexts, 3))
                row: dict[str, Any] = {"bare_onnxruntime": bare, "in_process_path": path,
                                       "in_process_path_plackett_luce": pl, "agent_score": agent}
                for clients in (1, 8):
                    row[f"http_{clients}_clients"] = asyncio.run(load(port, bodies, clients, args.requests,
                                                                      args.seconds))
                pl_bodies = [b | {"mode": "plackett_luce"} for b in bodies]
                row["http_1_client_plackett_luce"] = asyncio.run(load(port, pl_bodies, 1, args.requests // 2,
                                                                      args.seconds))
                row["http_overhead_p50"] = row["http_1_clients"]["p50_ms"] / bare["p50_ms"]
                row["agent_over_onnxruntime_p50"] = agent["p50_ms"] / bare["p50_ms"]
                results[f"N={n}"] = row
                print(f"N={n}: HTTP 1 client p50 {row['http_1_clients']['p50_ms']:.2f} ms, p99 "
                      f"{row['http_1_clients']['p99_ms']:.2f} ms; bare ONNX Runtime p50 {bare['p50_ms']:.3f} ms",
                      flush=True)
            results["server_rss_mib_after"] = rss_mib(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    print("\n| N | setting | p50 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|")
    for n in (100, 1000):
        row = results[f"N={n}"]
        for key in ("http_1_clients", "http_8_clients", "http_1_client_plackett_luce"):
            r = row[key]
            print(f"| {n} | {key.replace('_', ' ')} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['per_second']:.0f} |")
        for key in ("bare_onnxruntime", "in_process_path", "in_process_path_plackett_luce", "agent_score"):
            r = row[key]
            print(f"| {n} | {key.replace('_', ' ')} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{1e3 / r['mean_ms']:.0f} |")
        print(f"| {n} | HTTP overhead (p50, 1 client / bare session) | {row['http_overhead_p50']:.1f}x | | |")
        print(f"| {n} | agent score / bare session (p50) | {row['agent_over_onnxruntime_p50']:.2f}x | | |")
    print(f"\nserver resident memory: {results['server_rss_mib_idle']:.0f} MiB at start, "
          f"{results['server_rss_mib_after']:.0f} MiB after the run")
    goal = results["N=100"]["http_1_clients"]["p99_ms"]
    print(f"goal p99 < 5 ms at N=100, one client: {goal:.2f} ms -> {'met' if goal < 5 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
