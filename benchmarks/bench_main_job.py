"""Wall time of the README's main job (``shopgym compare``) and its smoke run, idle and beside busy processes.

Cases (each a fresh ``shopgym compare`` process, results in a temporary folder):

* ``quick``: ``shopgym compare experiment=quick`` (budget 20 s);
* ``default``: ``shopgym compare`` (budget 300 s).

Each case runs **cold** (an empty cache folder: item embeddings, fit and all) and then **warm** (the same
cache: the fit and the embeddings are reused). With ``--busy N`` every run is repeated beside N processes that
each keep a core busy (a Python busy loop), and the table gives the slowdown against the idle run measured
in the same invocation; the idle runs are compared with their budget.

Usage:
    python benchmarks/bench_main_job.py [--cases quick,default] [--busy 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"quick": (["experiment=quick"], 20.0), "default": ([], 300.0)}
BUSY_LOOP = "while True: pass"


def run_case(overrides: list[str], cache: Path, out: Path) -> float:
    """Seconds of one ``shopgym compare`` run with ``overrides``, caching under ``cache``."""
    env = {**os.environ, "SHOPGYM_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(["shopgym", "compare", *overrides, "progress=false", f"hydra.run.dir={out}"],
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"shopgym compare {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    return seconds


def measure(case: str, busy: int, root: Path) -> dict[str, float]:
    """Cold then warm seconds of ``case`` beside ``busy`` busy processes."""
    overrides, _ = CASES[case]
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        cache = root / f"cache-{case}-busy{busy}"
        cold = run_case(overrides, cache, root / f"{case}-busy{busy}-cold")
        warm = run_case(overrides, cache, root / f"{case}-busy{busy}-warm")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return {"cold": cold, "warm": warm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="quick,default", help="comma-separated: quick, default")
    parser.add_argument("--busy", type=int, default=0, help="also run beside N busy processes (default 0: idle only)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        parser.error(f"--cases: unknown {unknown}; choose from {list(CASES)}")
    if args.busy < 0:
        parser.error(f"--busy must be >= 0, got {args.busy}")

    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="shopgym-bench-") as tmp:
        for case in cases:
            results[case] = {"idle": measure(case, 0, Path(tmp))}
            if args.busy:
                results[case][f"busy{args.busy}"] = measure(case, args.busy, Path(tmp))
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}; load average before: {os.getloadavg()[0]:.2f}")
    header = f"{'case':<9}{'cache':<7}{'idle (s)':>10}{'budget (s)':>12}{'idle/budget':>13}"
    if args.busy:
        header += f"{f'busy x{args.busy} (s)':>15}{'busy/idle':>11}"
    print(header)
    for case, by in results.items():
        budget = CASES[case][1]
        for cache in ("cold", "warm"):
            line = f"{case:<9}{cache:<7}{by['idle'][cache]:>10.1f}{budget:>12.0f}{by['idle'][cache] / budget:>13.2f}"
            if args.busy:
                busy = by[f"busy{args.busy}"][cache]
                line += f"{busy:>15.1f}{busy / by['idle'][cache]:>11.2f}"
            print(line)
    if args.json:
        args.json.write_text(json.dumps({"busy": args.busy, "results": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
