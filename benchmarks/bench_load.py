"""Load time and peak memory of the Online Retail adapter against a bare ``pandas.read_csv``.

Cases (each run in its own fresh Python process, so one case's memory cannot leak into another's):

* ``imports``: import pandas and shopgym.adapters, load nothing (the fixed cost of the interpreter);
* ``read_csv``: a bare ``pandas.read_csv(path)`` of the same file (the reference);
* ``online_retail``: ``load_online_retail(path)`` (read, drop rules, items, validation).

Wall time is measured inside the worker around the load call only (imports excluded). Peak RSS is
the worker's whole-process peak, read by a per-case *monitor* process with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after waiting for its single worker child (the
monitor itself loads nothing; ``RUSAGE_CHILDREN`` keeps the maximum over all waited-for children,
hence one monitor per case). Each case is repeated ``--repeat`` times; the table gives the median
time and the largest peak RSS, then the adapter/reference ratios.

Usage:
    python benchmarks/bench_load.py [--data ../shared/data/online_retail/online_retail.csv.gz]
                                    [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("imports", "read_csv", "online_retail")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail" / "online_retail.csv.gz"


def _work(case: str, path: str) -> None:
    """Run one case in this (fresh) process and print ``{"seconds": ..., "rows": ...}``."""
    import pandas as pd

    from shopgym.adapters import load_online_retail

    started = time.perf_counter()
    if case == "imports":
        rows = 0
    elif case == "read_csv":
        rows = len(pd.read_csv(path))
    elif case == "online_retail":
        data = load_online_retail(path)
        rows = data.drops.total_in
        print(json.dumps({"kept": len(data.interactions), "dropped": dict(data.drops.dropped)}), file=sys.stderr)
    else:
        raise SystemExit(f"unknown case {case!r}; expected one of {CASES}")
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))


def _monitor(case: str, path: str) -> None:
    """Run one worker child, then print its result plus the child's peak RSS in MiB."""
    done = subprocess.run([sys.executable, __file__, "--_work", case, path],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {case!r} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    result["worker_stderr"] = done.stderr.strip()
    print(json.dumps(result))


def measure(case: str, path: Path) -> dict[str, float]:
    """One measurement of ``case`` (fresh monitor + worker processes)."""
    done = subprocess.run([sys.executable, __file__, "--_monitor", case, str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="online_retail.csv.gz")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--_work", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_monitor", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._work:
        _work(*args._work)
        return 0
    if args._monitor:
        _monitor(*args._monitor)
        return 0
    if not args.data.is_file():
        print(f"data file not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")

    results: dict[str, dict[str, float]] = {}
    for case in CASES:
        runs = [measure(case, args.data) for _ in range(args.repeat)]
        results[case] = {
            "seconds_median": statistics.median(r["seconds"] for r in runs),
            "seconds_all": [round(r["seconds"], 3) for r in runs],  # type: ignore[dict-item]
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "rows": runs[0]["rows"],
        }
    print(f"file: {args.data} ({args.data.stat().st_size / 2**20:.1f} MiB gzipped), "
          f"rows: {int(results['read_csv']['rows']):,}, repeats: {args.repeat}, python {sys.version.split()[0]}")
    print(f"{'case':<15}{'time (s), median':>18}{'peak RSS (MiB)':>17}")
    for case, r in results.items():
        print(f"{case:<15}{r['seconds_median']:>18.2f}{r['peak_rss_mib']:>17.0f}")
    ref, ours, base = results["read_csv"], results["online_retail"], results["imports"]
    ratios = {
        "time_ratio": ours["seconds_median"] / ref["seconds_median"],
        "peak_rss_ratio": ours["peak_rss_mib"] / ref["peak_rss_mib"],
        "peak_rss_ratio_above_imports": (ours["peak_rss_mib"] - base["peak_rss_mib"])
        / max(ref["peak_rss_mib"] - base["peak_rss_mib"], 1e-9),
    }
    print(f"online_retail / read_csv: time x{ratios['time_ratio']:.2f}, peak RSS x{ratios['peak_rss_ratio']:.2f} "
          f"(x{ratios['peak_rss_ratio_above_imports']:.2f} above the import baseline)")
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "results": results, "ratios": ratios},
                                        indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
