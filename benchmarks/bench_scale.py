"""Cost growth with the catalog: each stage's time and peak memory at 10k, 100k and 1M items.

Stages, in one fresh process per catalog size (so each peak is that size's own):

1. ``world``: the synthetic world (items, shoppers, tastes) and its logs (``--slots`` shown slots);
2. ``encode``: the item space, hashing encoder (``--dim``), float32 or ``--dtype float16``;
3. ``env``: the simulator (user table, candidate generator with its neighbour lists, true-world backend);
4. ``steps``: ``--steps`` batched env steps of ``--batch`` sessions (N=100, K=10, ``observation="ids"``).

Memory per stage: the kernel's resident-set high-water mark is reset before the stage (``/proc/self/clear_refs``)
and read after it, so ``peak`` is the stage's own highest resident set (what it holds and everything earlier
stages left), and ``+peak`` its rise over the resident set at its start. The reference, measured in the
same run: the size of the item table itself (n x d x bytes; the encoder's output is the float32 table
before the cast), so ``encode +peak / output`` is the encoder's memory overhead, and one float32 pass over
the table, against which each stage's growth from 10k to 1M items (100x) reads.

    python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _status_gb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in GB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _Stage:
    """Times a stage and records its peak and its rise over the resident set at its start."""

    def __init__(self, out: dict[str, float], name: str) -> None:
        self.out, self.name = out, name

    def __enter__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM to the current resident set
        except OSError:
            pass
        self.start_gb, self.start = _status_gb("VmRSS"), time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        peak = _status_gb("VmHWM")
        self.out[self.name + "_s"] = time.perf_counter() - self.start
        self.out[self.name + "_gb"], self.out[self.name + "_rise_gb"] = peak, peak - self.start_gb


def neighbour_recall(space: object, co: object, neighbours: np.ndarray, sample: int = 500) -> float:
    """Score recall of the neighbour lists on ``sample`` seeded items: the share of listed neighbours whose
    score (cosine + 10 log(1 + co-engagements)) reaches the exact k-th best score (ties count as found)."""
    from envs.neighbours import CO_WEIGHT, similarities

    vecs = space.item_vecs  # type: ignore[attr-defined]
    n, k = neighbours.shape
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(sample, n), replace=False))
    found = []
    for block in np.array_split(rows, max(1, len(rows) // 50)):
        score = similarities(vecs[block], vecs).astype(np.float64)
        if co is not None:
            score += CO_WEIGHT * np.log1p(co[block].toarray())  # type: ignore[index]
        score[np.arange(len(block)), block] = -np.inf
        kth = -np.partition(-score, k - 1, axis=1)[:, k - 1]
        listed = np.take_along_axis(score, neighbours[block], axis=1)
        found.append((listed >= kth[:, None] - 1e-6).mean(axis=1))
    return float(np.concatenate(found).mean())


def run_one(n_items: int, dim: int, dtype: str, slots: int, batch: int, steps: int) -> dict[str, float]:
    """Every stage at one catalog size, in this process; seconds and peak GB after each stage."""
    from encoders.hashing import HashingEncoder
    from envs.build import WorldSetup, co_engagement, world_queries, world_simulator
    from envs.core import EnvConfig
    from envs.rerank import ReRankVectorEnv
    from envs.space import ItemSpace
    from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs

    out: dict[str, float] = {"n_items": n_items}
    with _Stage(out, "world"):
        world = SyntheticWorld(WorldConfig(seed=0, n_items=n_items, n_users=max(5000, n_items // 20),
                                           n_slots=slots))
        logs = generate_logs(world)
        train, test = logs.split_by_time(0.2)
    with _Stage(out, "encode"):
        space = ItemSpace.build(logs.items, HashingEncoder(dim=dim, seed=0), world_queries(world),
                                attribute_weight=0.0, dtype=np.dtype(dtype))
    out["table_gb"] = space.item_vecs.nbytes / 2**30
    out["output_gb"] = space.n_items * dim * 4 / 2**30
    with _Stage(out, "env"):
        sim = world_simulator(WorldSetup(world, logs, train, test, space),
                              EnvConfig(n_candidates=100, slate_size=10, track_values=False))
    out["k"] = sim.generator.neighbours.shape[1]
    out["recall"] = neighbour_recall(space, co_engagement(train, space.item_ids), sim.generator.neighbours)
    env = ReRankVectorEnv(batch, simulator=sim, observation="ids")
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, (batch, 100)).astype(np.float32)
    with _Stage(out, "steps"):
        for _ in range(steps):
            env.step(action)
    user = np.ones(dim, dtype=np.float32)
    t = time.perf_counter()
    for i in range(0, space.n_items, 65536):
        np.asarray(space.item_vecs[i:i + 65536], dtype=np.float32) @ user
    out["table_pass_s"] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated catalog sizes")
    parser.add_argument("--dim", type=int, default=128, help="hashing encoder dimension d")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="item table dtype")
    parser.add_argument("--slots", type=int, default=200_000, help="shown slots in the world's logs")
    parser.add_argument("--batch", type=int, default=1024, help="sessions per env step")
    parser.add_argument("--steps", type=int, default=100, help="batched env steps")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.dim, args.dtype, args.slots, args.batch, args.steps)))
        return
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--dtype", args.dtype,
               "--slots", str(args.slots), "--batch", str(args.batch), "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{n:>9,d} items: failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n:>9,d} items, d={args.dim}, {args.dtype}: table {r['table_gb']:.2f} GB "
              f"(one float32 pass {r['table_pass_s'] * 1e3:.0f} ms)")
        for stage in ("world", "encode", "env", "steps"):
            print(f"    {stage:7s} {r[stage + '_s']:8.1f} s   peak {r[stage + '_gb']:6.2f} GB   "
                  f"+peak {r[stage + '_rise_gb']:6.2f} GB")
        print(f"    neighbour lists: score recall@{r['k']:.0f} {r['recall']:.3f} on 500 items")
        print(f"    encoder: +peak / float32 output ({r['output_gb']:.2f} GB) = "
              f"{r['encode_rise_gb'] / max(r['output_gb'], 1e-9):.1f}x")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        growth = b["n_items"] / a["n_items"]
        stages = ", ".join(f"{s} {b[s + '_s'] / max(a[s + '_s'], 1e-9):.1f}x"
                           for s in ("world", "encode", "env", "steps"))
        print(f"\ngrowth {a['n_items']:,.0f} -> {b['n_items']:,.0f} items ({growth:.0f}x): {stages}; "
              f"table pass {b['table_pass_s'] / max(a['table_pass_s'], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
