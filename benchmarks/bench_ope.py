"""Benchmark: IPS and DR with a 10,000-resample bootstrap CI on 1,000,000 logged rounds.

Measures wall time and peak traced memory (``tracemalloc``; NumPy reports its buffers to it) of

1. the point estimates alone (IPS and DR from prepared inputs) - the reference for the bootstrap;
2. the paired bootstrap of IPS and DR together (what ``ope.evaluate`` does), and of IPS alone;
3. on a smaller log (``--naive-n`` rounds), the library's chunked bootstrap against a naive,
   loop-free but unchunked one that materialises the whole (n_resamples, n) index matrix.

The reward model for DR is cross-fitted once (3 folds, logistic, no interactions) and timed
separately; the bootstrap holds it fixed, as ``ope.evaluate`` does.

Run:  python benchmarks/bench_ope.py            (about 3-4 minutes on 2 cores)
      python benchmarks/bench_ope.py --quick    (100,000 rounds, 2,000 resamples)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ope  # noqa: E402
from ope.intervals import uniform_uint16  # noqa: E402


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``; return (result, seconds, peak traced MiB)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def multinomial_bootstrap(columns: np.ndarray, n_resamples: int, seed: int, n_jobs: int) -> np.ndarray:
    """The previous method (the reference): int64 uniform indices, ``bincount`` counts, one float64 product per column.

    ``columns`` is (C, n); 1,048,576 drawn indices per chunk, chunks on ``n_jobs`` threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ope._blas import single_threaded_blas

    c, n = columns.shape
    size = max(1, min(1024, (1 << 20) // n))
    starts = list(range(0, n_resamples, size))
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    out = np.empty((n_resamples, c))

    def run(k: int) -> None:
        rows = min(size, n_resamples - starts[k])
        rng = np.random.Generator(np.random.PCG64(seeds[k]))
        idx = rng.integers(0, n, size=(rows, n))
        idx += (np.arange(rows, dtype=np.int64) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        for j in range(c):
            out[starts[k]:starts[k] + rows, j] = counts @ columns[j] / n

    with single_threaded_blas(), ThreadPoolExecutor(max_workers=n_jobs) as pool:
        list(pool.map(run, range(len(starts))))
    return out


def floor_seconds(columns: np.ndarray, n_resamples: int, seed: int, n_jobs: int) -> float:
    """The floor of any bootstrap of these columns: 2 bytes of random draws per (resample, round), taken the
    cheapest way NumPy offers (raw 64-bit generator outputs split in four: ``ope.intervals.uniform_uint16``),
    and one read of the data per resample (a float32 sum), in blocks of 8 resamples on ``n_jobs`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    data = np.ascontiguousarray(columns, dtype=np.float32)
    n = data.shape[1]
    blocks = list(range(0, n_resamples, 8))
    seeds = np.random.SeedSequence(seed).spawn(len(blocks))

    def run(k: int) -> None:
        rows = min(8, n_resamples - blocks[k])
        uniform_uint16(np.random.Generator(np.random.PCG64(seeds[k])), rows * n)
        for _ in range(rows):
            data.sum(axis=1)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        list(pool.map(run, range(len(blocks))))
    return time.perf_counter() - started


OBP_SNIPPET = """
import json, sys, time
import numpy as np
from obp.ope import InverseProbabilityWeighting, DoublyRobust
data = np.load(sys.argv[1])
kw = dict(reward=data["reward"], action=data["action"], position=None, pscore=data["pscore"],
          action_dist=data["action_dist"])
out = {}
for name, est, extra in (("ips", InverseProbabilityWeighting(), {}),
                         ("dr", DoublyRobust(), {"estimated_rewards_by_reg_model": data["q_hat"]})):
    t0 = time.perf_counter()
    ci = est.estimate_interval(**kw, **extra, alpha=0.05, n_bootstrap_samples=int(sys.argv[2]), random_state=0)
    out[name] = {"seconds": time.perf_counter() - t0, "low": ci["95.0% CI (lower)"], "high": ci["95.0% CI (upper)"]}
print(json.dumps(out))
"""


def obp_seconds(python: str, log: Any, action_dist: np.ndarray, q_hat: np.ndarray, n_resamples: int) -> dict:
    """IPS and DR with bootstrap intervals by the Open Bandit Pipeline (``python``: an interpreter with obp)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.npz"
        np.savez(path, reward=log.reward, action=log.action, pscore=log.pscore,
                 action_dist=action_dist[..., None] if action_dist.ndim == 2 else action_dist,
                 q_hat=q_hat[..., None] if q_hat.ndim == 2 else q_hat)
        started = time.perf_counter()
        done = subprocess.run([python, "-c", OBP_SNIPPET, str(path), str(n_resamples)], capture_output=True,
                              text=True, check=False)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def naive_bootstrap(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Loop-free but unchunked: one (n_resamples, n) index matrix, one gather, one mean."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(n_resamples, values.shape[0]))
    return values[idx].mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-rounds", type=int, default=1_000_000)
    parser.add_argument("--n-resamples", type=int, default=10_000)
    parser.add_argument("--naive-n", type=int, default=10_000, help="log size of the chunked-vs-naive comparison")
    parser.add_argument("--n-jobs", type=int, default=None, help="bootstrap threads (default: min(4, cpus))")
    parser.add_argument("--quick", action="store_true", help="100,000 rounds and 2,000 resamples")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--obp-python", default=None, metavar="PYTHON",
                        help="an interpreter with obp 0.5.7 installed (a separate venv): time its IPS and DR "
                        "intervals on the same log (obp's bootstrap is one estimator at a time)")
    args = parser.parse_args()
    if args.quick:
        args.n_rounds, args.n_resamples = 100_000, 2_000

    n, b = args.n_rounds, args.n_resamples
    print(f"# bench_ope: n_rounds={n:,} n_resamples={b:,} n_jobs={args.n_jobs or min(4, os.cpu_count() or 1)} "
          f"cpus={os.cpu_count()} numpy={np.__version__} load_avg_1min={os.getloadavg()[0]:.2f} (other processes "
          "share the cores: compare the ratios, measured in the same run, rather than absolute seconds)")
    world = ope.SyntheticBandit(n_actions=10, dim_context=5, seed=0)
    sample = world.sample(n, np.random.default_rng(0))
    log, pe = sample.log, sample.action_dist
    rows: list[dict[str, Any]] = []

    def record(label: str, seconds: float, mib: float, note: str = "") -> None:
        rows.append({"step": label, "seconds": seconds, "peak_mib": mib, "note": note})
        print(f"{label:<48} {seconds:9.3f} s  {mib:9.1f} MiB  {note}")

    model = ope.LinearRewardModel(link="logistic")
    q_hat, t, m = measure(lambda: ope.cross_fit_q_hat(log, model, n_folds=3, seed=0))
    record("cross-fit reward model (3 folds, logistic)", t, m)
    inputs, t, m = measure(lambda: ope.prepare_bandit_inputs(log, action_dist=pe, q_hat=q_hat))
    record("validate + reduce inputs (once)", t, m)
    (ips_terms, dr_terms), t_point, m = measure(
        lambda: (ope.IPS().terms(inputs), ope.DoublyRobust().terms(inputs)))
    record("point estimates IPS + DR (reference)", t_point, m,
           f"IPS={ips_terms.value:.5f} DR={dr_terms.value:.5f} truth={world.true_value:.5f}")

    reps, t_joint, m_joint = measure(
        lambda: ope.bootstrap_replicates([ips_terms, dr_terms], n_resamples=b, seed=0, n_jobs=args.n_jobs))
    lo, hi = np.quantile(reps, [0.025, 0.975], axis=0)
    record(f"bootstrap IPS + DR, paired, {b:,} resamples", t_joint, m_joint,
           f"IPS [{lo[0]:.5f}, {hi[0]:.5f}] DR [{lo[1]:.5f}, {hi[1]:.5f}]")
    _, t_ips, m_ips = measure(lambda: ope.bootstrap_ci(ips_terms, n_resamples=b, seed=0, n_jobs=args.n_jobs))
    record(f"bootstrap IPS alone, {b:,} resamples", t_ips, m_ips)
    jobs = args.n_jobs or min(4, os.cpu_count() or 1)
    columns = np.vstack([ips_terms.matrix().T, dr_terms.matrix().T])
    ref, t_ref, m_ref = measure(lambda: multinomial_bootstrap(columns, b, 0, jobs))
    ref_lo, ref_hi = np.quantile(ref, [0.025, 0.975], axis=0)
    record(f"reference: multinomial bootstrap (previous), {b:,}", t_ref, m_ref,
           f"IPS [{ref_lo[0]:.5f}, {ref_hi[0]:.5f}] DR [{ref_lo[1]:.5f}, {ref_hi[1]:.5f}]")
    t_floor = floor_seconds(columns, b, 0, jobs)
    record("floor: 2-byte draws + one read of the data per resample", t_floor, 0.0)
    t_obp = None
    if args.obp_python:
        got = obp_seconds(args.obp_python, log, pe, q_hat, b)
        t_obp = got["wall"]
        record(f"obp 0.5.7: IPS then DR intervals, {b:,} resamples each", t_obp, float("nan"),
               f"IPS [{got['ips']['low']:.5f}, {got['ips']['high']:.5f}] DR [{got['dr']['low']:.5f}, "
               f"{got['dr']['high']:.5f}] (process wall time incl. loading)")

    small = ips_terms.additive[: args.naive_n]
    _, t_chunk, m_chunk = measure(lambda: ope.bootstrap_replicates(small, n_resamples=b, seed=0, n_jobs=args.n_jobs))
    record(f"chunked bootstrap, n={args.naive_n:,}", t_chunk, m_chunk)
    _, t_naive, m_naive = measure(lambda: naive_bootstrap(small, b, 0))
    record(f"naive unchunked bootstrap, n={args.naive_n:,}", t_naive, m_naive)

    summary = {
        "bootstrap_over_point_estimate_time": t_joint / t_point,
        "one_resample_over_point_estimate_time": t_joint / b / t_point,
        "per_resample_ms_paired": 1e3 * t_joint / b,
        "element_throughput_per_s": n * b / t_joint,
        "naive_over_chunked_time": t_naive / t_chunk,
        "previous_over_new_time": t_ref / t_joint,
        "new_over_floor_time": t_joint / t_floor,
        **({"obp_over_new_wall_time": t_obp / t_joint} if t_obp is not None else {}),
        "naive_over_chunked_peak_memory": m_naive / m_chunk,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_avg_1min_at_end": os.getloadavg()[0],
    }
    print("# ratios: " + "  ".join(f"{k}={v:,.2f}" for k, v in summary.items()))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows,
                                         "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
