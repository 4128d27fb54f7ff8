"""Encoder throughput and peak memory: BertEncoder against a plain reference, measured in the same run.

Datasets
  synthetic      the titles of ``SyntheticWorld(WorldConfig(seed=0)).items_table()`` (2,000 items)
  online_retail  the distinct non-empty ``Description`` values of UCI Online Retail, stripped: 4,211
                 (4,223 before stripping; 12 differ only by trailing spaces)

Methods (all all-MiniLM-L6-v2 from the installed package, mean pooling, max_length 64, same threads)
  reference      plain loop: texts in input order, batch 32, every batch padded to max_length
  sorted_b32     BertEncoder with batch 32: length-sorted batches, dynamic padding
  bert_encoder   BertEncoder as configured by default (batch 64)
  st_reference   sentence-transformers' own ``encode`` (batch 32), if installed
  cache_warm     CachedEncoder(BertEncoder) when every text is already cached

Timing: one subprocess per dataset builds every method, then walks through the texts in chunks of
``--chunk`` texts (default 512, in input order) and runs every method on each chunk, the order of
the methods rotating from chunk to chunk; a method's time is the sum over chunks. Interleaving
makes load from other programs on a shared machine hit all methods alike, so the ratios stay fair
even when absolute rates do not. (Sorting happens within a chunk.)

Memory: each method then runs once over the whole dataset in its own subprocess, which reports its
own peak RSS (``ru_maxrss`` of RUSAGE_SELF, read in the child: RUSAGE_CHILDREN in the parent would
be the maximum over all children so far). "peak" is the whole process (torch + model + data);
"+encode" is how much the peak grew during the call. Finally the full Online Retail file (541,909
rows) is encoded end to end through a fresh cache, with a progress bar.

Usage::

    python benchmarks/bench_encoders.py                # everything, about 5 minutes on 2 idle cores
    python benchmarks/bench_encoders.py --limit 500 --skip-full   # a smoke run on the first 500 texts
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RETAIL_CSV = REPO.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
MAX_LENGTH = 64
METHODS = ("reference", "sorted_b32", "bert_encoder", "st_reference", "cache_warm")


# ------------------------------------------------------------------------------------------- data
def synthetic_titles() -> list[str]:
    from envs.synthetic import SyntheticWorld, WorldConfig
    from shopgym.data import schema as S

    return [str(t) for t in SyntheticWorld(WorldConfig(seed=0)).items_table()[S.TEXT].tolist()]


def retail_descriptions() -> list[str]:
    """Distinct non-empty stripped descriptions, in order of first appearance."""
    import pandas as pd

    column = pd.read_csv(RETAIL_CSV, usecols=["Description"], dtype={"Description": "string"})["Description"]
    stripped = column.dropna().str.strip()
    return [str(t) for t in pd.unique(stripped[stripped != ""])]


DATASETS: dict[str, Callable[[], list[str]]] = {"synthetic": synthetic_titles, "online_retail": retail_descriptions}


# ------------------------------------------------------------------------------------------- child
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def reference_encoder(threads: int) -> Callable[[list[str]], np.ndarray]:
    """The plain way: fixed padding to max_length, input order, batch 32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from encoders import default_model_path

    torch.set_num_threads(threads)
    path = str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def encode(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(texts[start : start + 32], padding="max_length", truncation=True,
                                  max_length=MAX_LENGTH, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out)

    return encode


def build(method: str, threads: int, cache_dir: str) -> Callable[[list[str]], np.ndarray]:
    from encoders import BertEncoder, CachedEncoder, default_model_path

    if method == "reference":
        return reference_encoder(threads)
    if method in ("sorted_b32", "bert_encoder"):
        enc = BertEncoder(max_length=MAX_LENGTH, batch_size=32 if method == "sorted_b32" else 64, num_threads=threads)
        return lambda texts: enc.encode(texts, show_progress=False)
    if method == "st_reference":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(default_model_path()), device="cpu")
        model.max_seq_length = MAX_LENGTH
        return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                          show_progress_bar=False)
    if method == "cache_warm":
        def encode(texts: list[str]) -> np.ndarray:
            return CachedEncoder(BertEncoder(max_length=MAX_LENGTH, num_threads=threads), cache_dir).encode(texts)

        return encode
    raise SystemExit(f"unknown method {method!r}")


def run_timing(dataset: str, methods: list[str], threads: int, limit: int | None, chunk: int, out: str) -> None:
    """Interleaved timing of every method on the same chunks; saves each method's vectors."""
    texts = DATASETS[dataset]()[:limit]
    with tempfile.TemporaryDirectory() as cache_dir:
        if "cache_warm" in methods:  # fill the cache first (not timed)
            from encoders import BertEncoder, CachedEncoder

            CachedEncoder(BertEncoder(max_length=MAX_LENGTH, num_threads=threads), cache_dir).encode(texts)
        encoders = {m: build(m, threads, cache_dir) for m in methods}
        for encode in encoders.values():
            encode(texts[:16])  # warm-up: lazy loading, first-call allocations
        seconds = dict.fromkeys(methods, 0.0)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        for i, start in enumerate(range(0, len(texts), chunk)):
            piece = texts[start : start + chunk]
            for k in range(len(methods)):
                method = methods[(i + k) % len(methods)]
                t0 = time.perf_counter()
                parts[method].append(np.asarray(encoders[method](piece), dtype=np.float32))
                seconds[method] += time.perf_counter() - t0
    np.savez(out, **{m: np.concatenate(v) for m, v in parts.items()})
    print(json.dumps({"n": len(texts), "seconds": seconds}))


def run_memory(method: str, dataset: str, threads: int, limit: int | None) -> None:
    """One call over the whole dataset in a fresh process: its peak RSS."""
    texts = DATASETS[dataset]()[:limit]
    with tempfile.TemporaryDirectory() as cache_dir:
        if method == "cache_warm":
            from encoders import BertEncoder, CachedEncoder

            CachedEncoder(BertEncoder(max_length=MAX_LENGTH, num_threads=threads), cache_dir).encode(texts)
        encode = build(method, threads, cache_dir)
        encode(texts[:16])
        before = peak_rss_mb()
        t0 = time.perf_counter()
        encode(texts)
        seconds = time.perf_counter() - t0
        after = peak_rss_mb()
    print(json.dumps({"peak_mb": after, "encode_mb": after - before, "alone_s": seconds}))


def run_full_retail(threads: int) -> None:
    """The whole file, end to end: read, one text per row, cache-deduplicated encoding with a progress bar."""
    import pandas as pd

    from encoders import BertEncoder, CachedEncoder, TextItemEncoder
    from shopgym.data import schema as S

    t0 = time.perf_counter()
    raw = pd.read_csv(RETAIL_CSV, dtype={"Description": "string", "StockCode": "string"})
    rows = pd.DataFrame({S.ITEM_ID: np.arange(len(raw)).astype(str), S.TEXT: raw["Description"]})
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = TextItemEncoder(CachedEncoder(BertEncoder(max_length=MAX_LENGTH, num_threads=threads), cache_dir),
                               empty="zero", show_progress=True)
        vectors = cold.encode_items(rows)
        t2 = time.perf_counter()
        stats = cold.encoder.last_stats  # type: ignore[attr-defined]
        warm = TextItemEncoder(CachedEncoder(BertEncoder(max_length=MAX_LENGTH, num_threads=threads), cache_dir),
                               empty="zero")
        again = warm.encode_items(rows)
        t3 = time.perf_counter()
    print(json.dumps({
        "rows": len(rows), "rows_with_text": int((np.linalg.norm(vectors, axis=1) > 0).sum()),
        "unique_encoded": stats.n_encoded, "read_s": t1 - t0, "encode_s": t2 - t1, "warm_s": t3 - t2,
        "identical": bool(np.array_equal(vectors, again)), "shape": list(vectors.shape), "peak_mb": peak_rss_mb(),
    }))


# ------------------------------------------------------------------------------------------- parent
def child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=True,
                          env=os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                            "TOKENIZERS_PARALLELISM": "false"})
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N texts of each dataset")
    parser.add_argument("--chunk", type=int, default=512, help="texts per interleaved timing chunk")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--skip-memory", action="store_true", help="skip the per-method memory runs")
    parser.add_argument("--skip-full", action="store_true", help="skip the end-to-end Online Retail run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    methods = [m for m in args.methods if m != "st_reference" or _has_sentence_transformers()]
    if "reference" not in methods:
        methods.insert(0, "reference")
    if args.case == "full_retail":
        run_full_retail(args.threads)
        return
    if args.case == "timing":
        run_timing(args.dataset, methods, args.threads, args.limit, args.chunk, args.out)
        return
    if args.case:
        run_memory(args.case, args.dataset, args.threads, args.limit)
        return

    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, threads {args.threads}, "
          f"max_length {MAX_LENGTH}, cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    datasets = [d for d in args.datasets if d != "online_retail" or RETAIL_CSV.is_file()]
    if len(datasets) < len(args.datasets):
        print(f"(skipping online_retail: {RETAIL_CSV} not found)")
    print(f"timing interleaved over chunks of {args.chunk} texts; 'alone' = one call on the whole set in a fresh "
          "process (also where peak memory is read)")
    header = (f"{'dataset':<14}{'method':<14}{'texts':>7}{'seconds':>9}{'texts/s':>10}{'vs ref':>9}"
              f"{'alone s':>9}{'peak MB':>9}{'+encode':>9}{'max|dv|':>9}")
    print(header)
    print("-" * len(header))
    limit = ["--limit", str(args.limit)] if args.limit else []
    common = ["--threads", str(args.threads), "--methods", *methods, *limit]
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in datasets:
            out = str(Path(scratch) / f"{dataset}.npz")
            timing = child(["--case", "timing", "--dataset", dataset, "--chunk", str(args.chunk), "--out", out,
                            *common])
            vectors = np.load(out)
            ref_rate = timing["n"] / timing["seconds"]["reference"]
            for method in methods:
                memory = ({"peak_mb": float("nan"), "encode_mb": float("nan"), "alone_s": float("nan")}
                          if args.skip_memory else child(["--case", method, "--dataset", dataset, *common]))
                rate = timing["n"] / timing["seconds"][method]
                diff = float(np.abs(vectors[method] - vectors["reference"]).max())
                print(f"{dataset:<14}{method:<14}{int(timing['n']):>7}{timing['seconds'][method]:>9.2f}"
                      f"{rate:>10,.0f}{rate / ref_rate:>8.1f}x{memory['alone_s']:>9.2f}{memory['peak_mb']:>9.0f}"
                      f"{memory['encode_mb']:>9.0f}{diff:>9.1e}", flush=True)
    if not args.skip_full and RETAIL_CSV.is_file():
        print("\nfull Online Retail, end to end (read CSV -> one text per row -> fresh CachedEncoder):")
        full = child(["--case", "full_retail", "--threads", str(args.threads)])
        print(f"  rows {full['rows']:,} ({full['rows_with_text']:,} with text) -> {full['shape']} float32; "
              f"{full['unique_encoded']:,} distinct texts encoded")
        print(f"  read {full['read_s']:.1f} s, encode {full['encode_s']:.1f} s "
              f"({full['rows'] / full['encode_s']:,.0f} rows/s), warm cache {full['warm_s']:.1f} s "
              f"({full['rows'] / full['warm_s']:,.0f} rows/s), identical: {full['identical']}, "
              f"peak {full['peak_mb']:.0f} MB")


def _has_sentence_transformers() -> bool:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
