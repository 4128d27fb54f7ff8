"""``shopgym export SRC --out DIR``: a trained agent as ONNX with a manifest and a parity proof."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``export``."""
    parser = commands.add_parser(
        "export", help="export a trained agent to ONNX (manifest, item ids, parity proof)",
        description="Export a trained agent's greedy scorer to ONNX, with its tables inside the graph, the "
        "catalog's item ids, and manifest.json (versions, the agent and its run, the metrics it earned, inputs "
        "and outputs, the encoder, checksums). Before anything is written, ONNX Runtime is checked against the "
        "agent on >= 1,000 request contexts recorded from the simulator it was trained in: scores within 1e-5 "
        "and the same top-K orders (up to near-ties), or the export fails and leaves no folder. Exportable: "
        "cosine, popularity, item_knn, als, epsilon_greedy, linucb, lin_ts, neural_linear (the bandits ship "
        "their posterior mean), logistic (its logit) and ppo (its actor's logits); exploration is added at serving "
        "time.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
        "  shopgym export outputs/compare/RUN --agent linucb --out exports/linucb\n"
        "  shopgym export outputs/compare/RUN/agents/linucb/seed1 --out exports/linucb\n"
        "  shopgym export multirun/sweep/linucb_alpha --best --out exports/best\n")
    parser.add_argument("src", type=Path, help="a compare run folder, a saved agent folder inside one "
                        "(<run>/agents/<agent>/seed<k>), or a sweep folder with --best")
    parser.add_argument("--out", type=Path, required=True, help="the export folder to create")
    parser.add_argument("--agent", default=None, help="which agent of a run folder")
    parser.add_argument("--seed", type=int, default=None, help="which seed's agent of a run folder (default: the "
                        "lowest)")
    parser.add_argument("--best", action="store_true", help="the agent a sweep's best.json names")
    parser.add_argument("--contexts", type=int, default=1000, help="request contexts of the parity check (>= 1000)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    import json

    from shopgym.app.export import export

    out = export(args.src, args.out, agent=args.agent, seed=args.seed, best=args.best, contexts=args.contexts,
                 force=args.force)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    parity = manifest["parity"]
    text = manifest["text_encoder"]
    encoder = {"onnx": "encoder/ (the text encoder as ONNX with its tokenizer), ", "hashing": "",
               "none": ""}.get(text["kind"], "")
    print(f"exported {manifest['agent']['name']} (seed {manifest['agent']['seed']}) to {out}: model.onnx, "
          f"{encoder}serving.safetensors, item_ids.json ({manifest['items']['count']} items), items.parquet, "
          "manifest.json")
    print(f"parity on {parity['contexts']} contexts: max |score difference| {parity['max_abs_diff']:.2e} "
          f"(tolerance {parity['tolerance']:g}); top-{parity['k']} orders identical {parity['topk_identical']:.2%}, "
          f"agreeing up to near-ties {parity['topk_agree_up_to_near_ties']:.2%}")
    if text["kind"] == "onnx":
        p = text["parity"]
        print(f"text encoder parity on {p['texts']} texts (tokenizers + ONNX Runtime vs PyTorch): max |difference| "
              f"{p['max_abs_diff']:.2e}, smallest cosine {p['min_cosine']:.6f}")
    elif text["kind"] == "none":
        print("no text encoder: the items were encoded from their features; requests may use only the queries "
              "the simulator knew (queries.json)")
    return 0
