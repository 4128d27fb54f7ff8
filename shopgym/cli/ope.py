"""``shopgym ope``: evaluate a saved policy or a baseline off-policy on a logged dataset."""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shopgym.errors import ConfigError

#: built-in policies by name (``uniform`` is an alias of ``random``)
BUILTIN_POLICIES: tuple[str, ...] = ("random", "uniform", "popularity", "cosine", "item_knn", "als", "logging")
REWARDS: tuple[str, ...] = ("clicked", "carted", "purchased", "revenue")
ENCODERS: tuple[str, ...] = ("hashing", "minilm", "features")

DESCRIPTION = """\
Estimate how a ranking policy would have done on a logged dataset, from the logs alone (off-policy
evaluation), with confidence intervals and diagnostics. Values are per page: the expected sum of
the reward over the K slots of a request.

What happens (details: docs/ope.md, "shopgym ope"):
  1. The log is split by time. The later --test-fraction of requests is evaluated; the earlier part
     fits policies that learn from logs (popularity, item_knn, als), user histories and profiles,
     and item popularity. --test-fraction 1 evaluates every request and fits nothing.
  2. Each evaluated request becomes one ranking context, as the simulator builds it: item and query
     vectors from --encoder, the user's profile and history from the earlier part.
  3. The policy chooses from --candidates: "shown" re-ranks the logged page's own items (exact only
     when the logging policy chose among exactly those items); "catalog" ranks the whole catalog
     (always well defined; IPS then misses what the logging policy never showed, DR extrapolates).
     A warning says when the log's propensities show the logging policy chose among more items
     than it showed (the synthetic shop: 30 retrieved, 10 shown): shown-mode estimates are then
     biased. "catalog" also evaluates logs with partial pages (one row per request, as in OBD).
  4. The policy's probability of each logged item at its slot is exact for deterministic policies
     (IPS becomes replay), random and epsilon-greedy ones; other stochastic policies are sampled
     --n-policy-samples times per request.
  5. Estimators: DM and the DR family with a reward model cross-fitted over requests; IPS, SNIPS,
     clipped IPS applied slot by slot with the logged per-slot propensities (column `propensity`);
     SIPS/SNSIPS with the whole-page propensity (`slate_propensity`). An estimator whose inputs the
     log lacks (e.g. no propensities) gets a row saying why; DM still runs. Intervals: percentile
     bootstrap over requests (all estimators on the same resamples) and normal.

Outputs: the table with diagnostics and warnings on stdout; with --out, results.csv, results.md and
report.json in that folder (each written atomically). Exit status: 0 on success, 2 on a usage or
input error (the message names the argument, file or column).
"""

EPILOG = """\
examples:
  shopgym data generate --out data/shop --n-slots 50000
  shopgym ope data/shop --policy popularity
  shopgym ope data/shop --policy random --candidates catalog --reward purchased --out results/random
  shopgym ope data/shop --policy runs/linucb/policy --encoder minilm --estimators dm,ips,dr
  shopgym ope data/shop --policy logging            # sanity check: IPS = the logged mean
"""


def register(commands: Any) -> None:
    """Add ``ope`` to the top-level subparsers."""
    from ope.ranking import DEFAULT_RANKING_ESTIMATORS, RANKING_ESTIMATORS

    parser = commands.add_parser(
        "ope", help="evaluate a saved policy or a baseline off-policy on a logged dataset",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", type=Path, help="dataset folder (items.* and interactions.*; docs/data-format.md)")
    parser.add_argument(
        "--policy", required=True, metavar="NAME|PATH",
        help=f"a built-in policy ({', '.join(BUILTIN_POLICIES)}; 'uniform' = 'random'; 'logging' = the logging "
        "policy itself, through the logged propensities) or the folder of a policy saved with "
        "RankingPolicy.save (policy.json + state.safetensors; write ./NAME for a folder named like a built-in)",
    )
    parser.add_argument("--reward", choices=REWARDS, default="clicked",
                        help="per-slot reward column (default: clicked)")
    parser.add_argument(
        "--estimators", default=",".join(e.name for e in DEFAULT_RANKING_ESTIMATORS), metavar="LIST",
        help=f"comma-separated estimators, or 'all'; from {', '.join(RANKING_ESTIMATORS)} (default: %(default)s). "
        "ips/snips/... are applied slot by slot (ips equals iips, snips equals sniips); rips/snrips need the "
        "logging policy's prefix propensities (the prefix_propensity column)",
    )
    parser.add_argument("--candidates", choices=("auto", "shown", "catalog"), default="auto",
                        help="what the policy chooses from: the logged page's items (re-ranking) or the whole "
                        "catalog; auto (default): shown only when every page shows positions 1..K and the "
                        "propensities say the logging policy chose among about the items it showed, else catalog")
    parser.add_argument("--test-fraction", type=float, default=0.3,
                        help="share of the requests (the latest) to evaluate, in (0, 1]; the rest fits policies, "
                        "profiles and popularity (default: 0.3)")
    parser.add_argument("--encoder", default="auto", choices=("auto", *ENCODERS),
                        help="item/query vectors: hashing (fast, no weights), minilm (the packaged "
                        "all-MiniLM-L6-v2), features (items' feature columns; for logs without item text such as "
                        "OBD); auto (default): hashing when most items have text, else features. Use the encoder "
                        "the saved policy was trained with")
    parser.add_argument("--attribute-weight", type=float, default=0.0,
                        help="weight of the item-attribute block appended to text vectors, as in the simulator "
                        "(default: 0)")
    parser.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples (default: 10000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - interval coverage (default: 0.05)")
    parser.add_argument("--n-policy-samples", type=int, default=100,
                        help="draws per request for stochastic policies without closed-form probabilities "
                        "(default: 100)")
    parser.add_argument("--no-reward-model", action="store_true",
                        help="do not fit the reward model (DM and the DR family then report why they did not run)")
    parser.add_argument("--seed", type=int, default=0, help="seeds policy draws, folds and the bootstrap (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.csv, results.md, report.json")
    parser.set_defaults(handler=_run)


def _estimators(spec: str) -> list[Any]:
    from ope.ranking import RANKING_ESTIMATORS

    if spec.strip() == "all":
        return list(RANKING_ESTIMATORS.values())
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in RANKING_ESTIMATORS]
    if unknown or not names:
        raise ConfigError(f"--estimators: unknown estimator(s) {unknown or spec!r}; choose from "
                          f"{', '.join(RANKING_ESTIMATORS)} or 'all'")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"--estimators: {duplicated} listed twice")
    return [RANKING_ESTIMATORS[n] for n in names]


def _policy(spec: str, seed: int) -> Any:
    from agents import ALSPolicy, CosinePolicy, ItemKNNPolicy, PopularityPolicy, RandomPolicy, load_policy

    path = Path(spec)
    builders: dict[str, Callable[[], Any]] = {
        "random": lambda: RandomPolicy(seed=seed), "uniform": lambda: RandomPolicy(seed=seed),
        "popularity": PopularityPolicy, "cosine": CosinePolicy, "item_knn": ItemKNNPolicy, "als": ALSPolicy,
        "logging": lambda: "logging",
    }
    if spec in builders:  # a built-in name wins; write ./NAME for a folder called like one
        return builders[spec]()
    if path.is_dir():
        return load_policy(path)
    if path.exists():
        raise ConfigError(f"--policy {spec}: not a folder; pass a saved policy's folder (policy.json + "
                          "state.safetensors) or a built-in name")
    raise ConfigError(f"--policy {spec!r}: not a built-in policy ({', '.join(BUILTIN_POLICIES)}) and no folder of "
                      "that name exists")


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 < args.test_fraction <= 1.0:
        raise ConfigError(f"--test-fraction must be in (0, 1] (1: evaluate every request); got {args.test_fraction}")
    if args.n_resamples < 1:
        raise ConfigError(f"--n-resamples must be >= 1; got {args.n_resamples}")
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1); got {args.alpha}")
    if args.n_policy_samples < 1:
        raise ConfigError(f"--n-policy-samples must be >= 1; got {args.n_policy_samples}")
    if args.attribute_weight < 0:
        raise ConfigError(f"--attribute-weight must be >= 0; got {args.attribute_weight}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0; got {args.seed}")


def _run(args: argparse.Namespace) -> int:
    from envs.build import make_encoder
    from shopgym.app.offline import evaluate_policy_on_logs
    from shopgym.data import LoggedData
    from shopgym.data.io import atomic_write, check_writable_folder, write_json

    _check_args(args)
    if args.out is not None:  # before any work: the estimates are not lost to an unwritable folder
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out}: exists and is not a folder")
        check_writable_folder(args.out, "--out")
    estimators = _estimators(args.estimators)
    t0 = time.perf_counter()
    data = LoggedData.load(args.data)
    if args.reward not in data.interactions.columns:
        raise ConfigError(f"--reward {args.reward}: the interactions of {args.data} have no '{args.reward}' column "
                          f"(columns: {', '.join(map(str, data.interactions.columns))})")
    from dataclasses import replace

    from shopgym.app.offline import auto_candidates, auto_encoder

    choices = []
    if args.candidates == "auto":
        args.candidates, why = auto_candidates(data)
        choices.append(f"--candidates {args.candidates} ({why})")
    if args.encoder == "auto":
        args.encoder, why = auto_encoder(data)
        choices.append(f"--encoder {args.encoder} ({why})")
    policy = _policy(args.policy, args.seed)
    policy_name = args.policy if args.policy in BUILTIN_POLICIES else Path(args.policy).name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every warning is part of the printed report
        evaluation = evaluate_policy_on_logs(
            data, policy, reward=args.reward, candidates=args.candidates, encoder=make_encoder(args.encoder),
            attribute_weight=args.attribute_weight, test_fraction=args.test_fraction, estimators=estimators,
            use_reward_model=not args.no_reward_model, n_policy_samples=args.n_policy_samples,
            n_resamples=args.n_resamples, alpha=args.alpha, seed=args.seed, policy_name=policy_name,
        )
    evaluation = replace(evaluation, choices=tuple(choices))
    seconds = time.perf_counter() - t0
    markdown = evaluation.to_markdown()
    print(markdown)
    if args.out is not None:
        out: Path = args.out
        frame = evaluation.report.to_frame()
        atomic_write(out / "results.csv", lambda tmp: frame.to_csv(tmp))
        header = f"<!-- shopgym ope {args.data} --policy {args.policy} ({seconds:.1f} s) -->\n"
        atomic_write(out / "results.md", lambda tmp: tmp.write_text(header + markdown + "\n", encoding="utf-8"))
        write_json(evaluation.to_dict() | {"data": str(args.data), "seconds": seconds,
                                           "options": {k: str(v) for k, v in vars(args).items() if k != "handler"}},
                   out / "report.json")
        print(f"\nwrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'report.json'}")
    return 0
