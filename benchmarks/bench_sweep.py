"""Wall time of one 12-job sweep on each launcher, each launcher's overhead per job, and fit once vs per job.

The sweep is ``conf/sweep/linucb_alpha.yaml`` (3 LinUCB alphas x 2 purchase weights x 2 seeds = 12 jobs) at
``experiment=quick`` scale on the built-in world (fitted simulator + the true world), each case a fresh
``shopgym compare`` process into its own folder:

* ``sequential``: Hydra's basic launcher (one job after another, in the driver process);
* ``joblib``: ``hydra/launcher=joblib hydra.launcher.n_jobs=2`` (2 worker processes);
* ``ray``: ``hydra/launcher=ray`` (a local Ray started by the sweep, 2 CPUs);
* ``refit``: sequential with a cache folder per job (``cache_dir=<job folder>/cache``): every job generates the
  world's logs, encodes the catalog and fits the simulator itself, as a sweep without a shared fit would.

All cases but ``refit`` share one cache folder, filled once beforehand (the world, the embeddings and the fit),
so they measure the launchers. Per case: the sweep's wall time; the jobs' own time (the sum over jobs of
``job.json``'s seconds, the job body); and the launcher's overhead per job, ``(wall x workers - jobs' time) /
jobs`` (for the parallel launchers this includes idle workers at the end). Ratios are against ``sequential``
measured in the same run. Run it alone: the machine's 2 cores are the resource measured.

Usage:
    python benchmarks/bench_sweep.py [--cases sequential,joblib,ray,refit] [--overrides steps=300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

SWEEP = ["sweep=linucb_alpha", "experiment=quick"]
CASES = {
    "sequential": ([], 1),
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2),
    "ray": (["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2"], 2),
    "refit": (["-m", "cache_dir=${hydra:runtime.output_dir}/cache"], 1),  # -m: no pre-check outside Hydra
}


def run_sweep(extra: list[str], folder: Path, cache: Path, sweep: bool = True) -> float:
    """Wall seconds of the sweep (or, ``sweep=False``, of one run) with ``extra`` overrides into ``folder``."""
    env = {**os.environ, "SHOPGYM_CACHE": str(cache)}
    env.pop("RAY_ADDRESS", None)
    where = f"hydra.sweep.dir={folder}" if sweep else f"hydra.run.dir={folder}"
    started = time.perf_counter()
    flags = [e for e in extra if e.startswith("-")]  # Hydra's flags before the overrides
    overrides = [e for e in extra if not e.startswith("-")]
    done = subprocess.run(["shopgym", "compare", *flags, *(SWEEP if sweep else SWEEP[1:]), *overrides, where], env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sweep {' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return seconds


def job_seconds(folder: Path) -> list[float]:
    """Each job's own seconds (its record), in job order."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*/job.json"))]
    if len(records) != 12 or any(r["status"] != "done" for r in records):
        raise SystemExit(f"{folder}: expected 12 done jobs, got {[r['status'] for r in records]}")
    return [float(r["seconds"]) for r in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--overrides", nargs="*", default=[],
                        help="more overrides for every job, e.g. steps=300 for longer jobs (default: none)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {list(CASES)}")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        shared = root / "cache"
        warmup = run_sweep(["only=[random]", "steps=1", "progress=false"], root / "warmup", shared, sweep=False)
        print(f"warm-up (fills the shared cache: world, embeddings, fit): {warmup:.1f} s")
        for case in cases:
            extra, workers = CASES[case]
            wall = run_sweep([*extra, *args.overrides], root / case, shared if case != "refit" else root / "unused")
            own = job_seconds(root / case)
            rows[case] = {"wall": wall, "jobs_seconds": sum(own), "mean_job": sum(own) / len(own),
                          "overhead_per_job": (wall * workers - sum(own)) / len(own), "workers": workers}
            print(f"{case}: {wall:.1f} s", flush=True)
    base = rows.get("sequential", {}).get("wall")
    print("\n| case | workers | wall (s) | vs sequential | jobs' own time (s) | mean job (s) | overhead per job (s) |")
    print("|---|---|---|---|---|---|---|")
    for case, r in rows.items():
        ratio = f"{r['wall'] / base:.2f}x" if base else "n/a"
        print(f"| {case} | {r['workers']} | {r['wall']:.1f} | {ratio} | {r['jobs_seconds']:.1f} | "
              f"{r['mean_job']:.2f} | {r['overhead_per_job']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
