"""``shopgym serve DIR``: serve an exported ranker over HTTP and log what it shows, with propensities."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Serve an export folder (`shopgym export`) on HTTP with FastAPI and ONNX Runtime (the process does not load
PyTorch). The folder's checksums are verified first: a changed file stops the server.

  POST /rank      {"candidates": [item ids], "user_id": ..., "history": [...], "query": "...", "k": 10,
                   "mode": "greedy" | "epsilon" | "plackett_luce", "epsilon": 0.1, "temperature": 1.0}
                  -> the shown items with per-slot propensities, the page's probability and a request id
  POST /feedback  {"request_id": ..., "position": 3 (or "item_id": ...), "clicked": true, "carted": ...,
                   "purchased": ..., "revenue": 12.5}
  GET  /health    counters; GET /metadata: the manifest; /docs: the OpenAPI docs

Every page shown and its feedback go to --log, a dataset in shopgym's format (items.parquet and
interactions/part-*.parquet) that `shopgym data validate`, `shopgym ope` and `shopgym fit` read as it is.
A page waits --feedback-window seconds for feedback, then is written in the next part (at most
--part-rows rows, at least every --flush-interval seconds, all of them at shutdown). Bad requests get
HTTP 422 naming the field (docs/serve.md).
"""

EPILOG = """\
examples:
  shopgym serve exports/linucb                                   # greedy, http://127.0.0.1:8000
  shopgym serve exports/linucb --mode plackett_luce --temperature 0.5 --log served/linucb
  curl -s localhost:8000/rank -H 'content-type: application/json' -d '{"candidates": ["a", "b", "c"], "k": 2}'
"""


def register(commands: Any) -> None:
    """Add ``serve``."""
    from shopgym.serve.app import MAX_BODY_BYTES, MAX_CANDIDATES
    from shopgym.serve.model import MODES

    parser = commands.add_parser("serve", help="serve an exported ranker over HTTP, logging what it shows",
                                 description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="an export folder (shopgym export)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--log", type=Path, default=None,
                        help="served-log folder (default: served/<export folder name>)")
    parser.add_argument("--mode", choices=MODES, default="greedy",
                        help="exploration when a request does not say (default: %(default)s)")
    parser.add_argument("--epsilon", type=float, default=0.1, help="exploration probability of --mode epsilon "
                        "(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="Plackett-Luce temperature (default: "
                        "%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the exploration draws (default: %(default)s)")
    parser.add_argument("--feedback-window", type=float, default=60.0, help="seconds a page waits for feedback "
                        "before it is logged (default: %(default)s)")
    parser.add_argument("--part-rows", type=int, default=10_000, help="rows per log part (default: %(default)s)")
    parser.add_argument("--flush-interval", type=float, default=30.0, help="seconds between log parts at most "
                        "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per request (default: "
                        "%(default)s)")
    parser.add_argument("--max-candidates", type=int, default=MAX_CANDIDATES, help="largest candidate list "
                        "(default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest request body "
                        "(default: %(default)s)")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shopgym.serve.app import create_app
    from shopgym.serve.model import Exploration

    log = args.log if args.log is not None else Path("served") / args.export.resolve().name
    app = create_app(args.export, log, exploration=Exploration(args.mode, args.epsilon, args.temperature),
                     seed=args.seed, feedback_window=args.feedback_window, part_rows=args.part_rows,
                     flush_interval=args.flush_interval, threads=args.threads, max_candidates=args.max_candidates,
                     max_body_bytes=args.max_body_bytes,
                     on_shutdown=lambda served: print(f"stopped; {served.rows_written:,} rows logged in {log}",
                                                      flush=True))
    manifest = app.state.model.manifest
    print(f"serving {manifest['agent']['name']} from {args.export} on http://{args.host}:{args.port} "
          f"(mode {args.mode}; API docs at /docs); logging to {log}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
