"""Generation time and peak memory of the synthetic shop world (default and 10x larger).

Reference, measured in the same run: reading the generated interactions back from Parquet with pandas
(the I/O floor of the same table). Each case runs in a fresh process so its peak RSS is its own.

    python benchmarks/bench_data.py            # default and 10x worlds
    python benchmarks/bench_data.py --quick    # default world only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._measure import measure  # noqa: E402

SIZES = {
    "default (2k items, 5k users, 200k slots)": (2_000, 5_000, 200_000),
    "10x (20k items, 50k users, 2M slots)": (20_000, 50_000, 2_000_000),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="default world only")
    args = parser.parse_args()
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    print(f"{'world':44s} {'rows':>10s} {'gen s':>8s} {'rows/s':>10s} {'peak MiB':>9s} "
          f"{'parquet read s':>15s} {'gen/read':>9s}")
    for label, (n_items, n_users, n_slots) in sizes.items():
        with tempfile.TemporaryDirectory() as tmp:
            gen = measure(
                setup="from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs",
                body=f"""
logs = generate_logs(SyntheticWorld(WorldConfig(seed=0, n_items={n_items}, n_users={n_users}, n_slots={n_slots})))
extra = len(logs.interactions)
logs.save({tmp!r})
""",
            )
            read = measure(setup="import pandas as pd",
                           body=f"frame = pd.read_parquet({str(Path(tmp) / 'interactions.parquet')!r})")
        rows = gen["extra"]
        # generation time excludes the save (timed together; save is small next to generation)
        print(f"{label:44s} {rows:>10,d} {gen['seconds']:>8.2f} {rows / gen['seconds']:>10,.0f} "
              f"{gen['peak_mib']:>9.0f} {read['seconds']:>15.3f} {gen['seconds'] / read['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
