"""``shopgym simulate fidelity``: fit the simulator on the earlier part of a log and compare with the later part."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``simulate`` and its subcommands."""
    sim = commands.add_parser("simulate", help="fit the user-response simulator and check its fidelity",
                              description="Fit the user-response model from logs and measure how well it "
                              "reproduces held-out logs.")
    sub = sim.add_subparsers(dest="simulate_command", metavar="SUBCOMMAND", required=True)
    fid = sub.add_parser(
        "fidelity", help="fidelity report: fitted simulator vs held-out logs",
        description="Fit on the earlier part of a log and compare with the later part: CTR by position with 95% "
        "CIs, click log-loss and AUC vs a popularity baseline, purchase rate, session-length distance, and on "
        "the synthetic world the true vs simulated value of several policies; every simulated number with a 95% "
        "interval over the fit and its bootstrap refits. Writes fidelity.md, fidelity.json and "
        "ctr_by_position.png. With --test OTHER: fit on all of DATA and predict another log's CTR "
        "(ctr_other_log.png).",
    )
    fid.add_argument("data", nargs="?", type=Path, default=None,
                     help="dataset folder in shopgym's format (default: the built-in synthetic world)")
    fid.add_argument("--format", dest="source_format", choices=("folder", "obd", "online-retail"), default="folder",
                     help="how DATA is stored: 'folder' (shopgym's format), 'obd' (an Open Bandit Dataset folder)")
    fid.add_argument("--out", type=Path, default=Path("outputs/fidelity"), help="output folder")
    fid.add_argument("--model", type=Path, default=None,
                     help="a model folder saved by `shopgym fit` (fitted on the same data, split and encoder); "
                     "default: the fit cache, which fits only what it has not fitted before")
    fid.add_argument("--test-fraction", type=float, default=None,
                     help="latest share of requests held out (default: test_fraction of conf/compare.yaml, 0.2)")
    fid.add_argument("--encoder", default=None, help="text encoder, an option of the encoder group "
                     "(minilm, hashing, tiny_bert; default: minilm)")
    fid.add_argument("--sessions", type=int, default=3000, help="simulated sessions per policy (synthetic world)")
    fid.add_argument("--seed", type=int, default=0, help="world and simulation seed")
    fid.add_argument("--refits", type=int, default=1,
                     help="synthetic world: fit the simulator this many times (torch seeds s..s+R-1, s = the fit "
                     "seed, 0 unless --fit seed=S) and report the policy values' mean and each refit's agreement "
                     "(single fits vary by several points)")
    fid.add_argument("--shoppers", choices=("logged", "all"), default="logged",
                     help="synthetic world: whose sessions the policies are valued on, in the true world and in "
                     "every simulator alike: the shoppers 'logged' in the training logs, at their activity "
                     "(default: the population a simulator fitted from logs knows, as it draws it from your own "
                     "logs), or 'all' of the world's shoppers by activity (about a quarter of the sessions are "
                     "then shoppers absent from the training logs, whom a fitted simulator knows only as its "
                     "population prior, while the logging policy and the oracle rank with their tastes)")
    fid.add_argument("--users", type=int, default=None,
                     help="synthetic world: number of shoppers (default 5,000; fewer users with the same "
                     "--slots means more logged history per shopper)")
    fid.add_argument("--slots", type=int, default=None,
                     help="synthetic world: logged slots to generate (default 200,000)")
    fid.add_argument("--test", type=Path, default=None, metavar="OTHER",
                     help="another log of the same format (another period, or another logging policy): fit on "
                     "the whole of DATA and replay OTHER's exact pages through the simulator; the report compares "
                     "the predicted CTR (overall and by position, with intervals) with OTHER's real CTR, the naive "
                     "answer (DATA's own CTR) and, when DATA has propensities, the IPS/SNIPS/DR estimates")
    fid.add_argument("--bootstrap", type=int, default=None, metavar="B",
                     help="refit the simulator on B bootstrap reweightings of the training logs (per shopper, "
                     "else session, else request) and put the "
                     "model uncertainty into every interval (default: as many as fit in about two minutes, "
                     "at least 2 and at most 20, from the time the fit took; 0: none)")
    fid.add_argument("--fit", action="append", default=[], metavar="KEY=VALUE",
                     help="a response-model fitting option (the fit group: a field of envs.fitted.FitConfig), "
                     "repeatable; "
                     "e.g. --fit class_restarts=1 --fit shopper_deviation=0 (the fit's own torch seed is "
                     "--fit seed=S; --seed seeds the world and the simulation)")
    fid.set_defaults(handler=_fidelity)
    shop = sub.add_parser(
        "shoppers", help="send the simulator's shoppers to a running `shopgym serve` (a dress rehearsal)",
        description="Send simulated shoppers to a server: the simulator an export was trained in (rebuilt from "
        "its run's config.yaml, from the caches) starts sessions; each page becomes a POST /rank with the "
        "session's candidates, shopper id, query, items shown before and clicked items; the shopper responds "
        "to the ranking the server returns, and every click, cart and purchase goes back as POST /feedback. "
        "The server logs it all, so `shopgym ope` and `shopgym fit` can be tried on a served log before real "
        "traffic. Prints clicks, carts and purchases per page with 95% intervals.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shopgym serve exports/linucb --mode plackett_luce &\n"
        "  shopgym simulate shoppers exports/linucb --url http://127.0.0.1:8000 --pages 2000\n")
    shop.add_argument("export", type=Path, help="the export folder the server serves (its manifest names the run)")
    shop.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    shop.add_argument("--pages", type=int, default=1000, help="pages to request (default: %(default)s)")
    shop.add_argument("--sessions", type=int, default=8, help="sessions stepped together (default: %(default)s)")
    shop.add_argument("--seed", type=int, default=0, help="the simulator's seed (default: %(default)s)")
    shop.set_defaults(handler=_shoppers)


def _fidelity(args: argparse.Namespace) -> int:
    import numpy as np

    from envs.build import bootstrap_models, build_simulator, response_model
    from envs.fidelity import fidelity_report, write_report
    from shopgym.app.config import compose_run, data_overrides, simulator_spec
    from shopgym.data.io import check_writable_folder
    from shopgym.errors import ConfigError

    if args.refits < 1:
        raise ConfigError(f"--refits must be >= 1, got {args.refits}")
    check_writable_folder(args.out, "--out")
    overrides = data_overrides(args.data, args.source_format if args.data is not None else None)
    options = {"test_fraction": args.test_fraction, "encoder": args.encoder, "model": args.model,
               "world.n_users": args.users, "world.n_slots": args.slots}
    overrides += [f"{key}={value}" for key, value in options.items() if value is not None]
    overrides += [f"world.seed={args.seed}", "backend=fitted", f"shoppers={args.shoppers}"]
    for item in args.fit:
        if "=" not in str(item):
            raise ConfigError(f"--fit {item!r} is not KEY=VALUE (a field of envs.fitted.FitConfig)")
        overrides.append(f"fit.{item}")
    if args.bootstrap is not None and args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    spec = simulator_spec(compose_run(overrides), progress=True)
    if args.test is not None:
        if args.data is None:
            raise ConfigError("--test OTHER needs DATA, the log to fit on (e.g. shopgym simulate fidelity "
                              "obd/random/all --format obd --test obd/bts/all)")
        return _other_log(args, replace(spec, test_path=str(args.test)))
    built = build_simulator(spec)
    if built.model is not None and built.model.single_choice:
        return _purchase_fidelity(args, built)
    fit, inputs = spec.fit, built.inputs
    logs, train, test, space, setup = inputs.logs, inputs.train, inputs.test, inputs.space, inputs.setup
    model = built.model
    assert model is not None
    count = bootstrap_count(args.bootstrap, (model.report or {}).get("fit_seconds"))
    members = bootstrap_models(inputs, spec, count)
    policies = None
    lengths = None
    refits: list[dict[str, float]] = []
    if setup is not None:
        from envs.fidelity import policy_agreement
        from shopgym.app.reference import reference_policies
        from shopgym.app.rollout import PolicyValue, value_policy

        true_sim = built.with_backend("true")
        agents = reference_policies(setup.world, train, true_sim)

        def run_policies(sim: Any) -> dict[str, PolicyValue]:
            """Every reference policy's value in ``sim`` (same sessions and seed for every simulator)."""
            return {name: value_policy(sim, agent, args.sessions, seed=args.seed, name=name)
                    for name, agent in agents.items()}

        truth = run_policies(true_sim)
        reference = run_policies(built.with_backend("segment"))
        runs: list[dict[str, PolicyValue]] = []
        evidence: list[float | None] = []
        for refit in range(args.refits):
            fitted_model = model if refit == 0 else response_model(  # each refit is cached like the first fit
                inputs, replace(spec, fit=replace(fit, seed=fit.seed + refit), model=None))[0]
            ll = ((fitted_model.report or {}).get("latent_classes") or {}).get("log_likelihood")
            evidence.append(None if ll is None else float(ll))
            fitted_sim = built.with_backend("fitted", fitted_model)
            runs.append(run_policies(fitted_sim))
        from envs.fitted.ensemble import member_interval

        member_runs = [run_policies(built.with_backend("fitted", member)) for member in members]
        # each policy's value in the fit (first run) and in every bootstrap refit, with its simulation noise
        model_values = {name: [run[name].reward_per_session for run in runs[:1] + member_runs] for name in agents}
        model_se = {name: [run[name].reward_se for run in runs[:1] + member_runs] for name in agents}
        lengths = runs[0]["logging"].session_pages  # the logging policy's sessions in the first fitted simulator
        true_values = np.array([truth[name].reward_per_session for name in agents])
        for refit, run in enumerate(runs):
            values = np.array([run[name].reward_per_session for name in agents])
            tau, mare = policy_agreement(true_values, values)
            row = {"seed": float(fit.seed + refit), "kendall_tau": tau, "mean_abs_relative_error": mare,
                   **{name: float(v) for name, v in zip(agents, values, strict=True)}}
            refit_evidence = evidence[refit]
            if refit_evidence is not None:
                row["log_likelihood"] = refit_evidence
            refits.append(row)
        policies = []
        for name in agents:
            fitted = np.array([run[name].reward_per_session for run in runs])
            se = np.array([run[name].reward_se for run in runs])
            policies.append({"policy": name, "true": truth[name].reward_per_session, "true_se": truth[name].reward_se,
                             "fitted": float(fitted.mean()), "fitted_se": float(np.sqrt((se**2).sum()) / len(runs)),
                             "reference": reference[name].reward_per_session,
                             "reference_se": reference[name].reward_se,
                             "true_per_page": truth[name].reward_per_page,
                             "true_pages": truth[name].pages_per_session,
                             "fitted_per_page": float(np.mean([run[name].reward_per_page for run in runs])),
                             "fitted_pages": float(np.mean([run[name].pages_per_session for run in runs])),
                             "fitted_ci": list(member_interval(model_values[name], model_se[name], seed=args.seed,
                                                               scale="log")),
                             "models": 1 + len(member_runs), "model_values": model_values[name],
                             "fitted_percentile_ci": list(member_interval(
                                 model_values[name], model_se[name], seed=args.seed, method="percentile",
                                 scale="log"))})
    report = fidelity_report(logs, train, test, space, model, simulated_lengths=lengths, policies=policies,
                             refits=refits if args.refits > 1 else None, members=members)
    report.settings = {"command": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                   if k not in ("handler", "fit")},
                       "fit": asdict(fit), "model": None if built.model_dir is None else str(built.model_dir)}
    write_report(report, args.out)
    print(report.to_markdown())
    print(f"wrote {args.out / 'fidelity.md'}, fidelity.json, ctr_by_position.png")
    return 0


def _purchase_fidelity(args: argparse.Namespace, built: Any) -> int:
    """``simulate fidelity`` on a purchase-only log: next purchases and the agents' order (purchase_fidelity)."""
    from envs.build import make_encoder
    from shopgym.app.purchase_fidelity import purchase_fidelity, write_purchase_report

    spec = built.spec
    report = purchase_fidelity(built, make_encoder(spec.encoder, spec.cache_dir), sessions=args.sessions,
                               seed=args.seed, progress=True)
    report.settings = {"command": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                   if k not in ("handler", "fit")},
                       "fit": asdict(spec.fit), "model": None if built.model_dir is None else str(built.model_dir)}
    write_purchase_report(report, args.out)
    print(report.to_markdown())
    print(f"wrote {args.out / 'fidelity.md'}, fidelity.json, agents_order.png")
    return 0


def _shoppers(args: argparse.Namespace) -> int:
    import httpx
    from omegaconf import OmegaConf

    from envs.build import build_simulator
    from shopgym.app.config import simulator_spec
    from shopgym.app.shoppers import http_endpoints, send_shoppers
    from shopgym.errors import ConfigError
    from shopgym.serve.manifest import verify_export

    if args.pages < 1 or args.sessions < 1:
        raise ConfigError(f"--pages and --sessions must be >= 1, got {args.pages} and {args.sessions}")
    manifest = verify_export(args.export)
    config = Path(manifest["run"]["folder"]) / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{args.export}: its run's config.yaml ({config}) is gone; the shoppers come from the "
                          "simulator the agent was trained in")
    sim = build_simulator(simulator_spec(OmegaConf.load(config), progress=False)).sim
    try:
        with httpx.Client(base_url=args.url, timeout=30) as client:
            client.get("/health").raise_for_status()
            run = send_shoppers(*http_endpoints(client), sim, args.pages, batch=args.sessions, seed=args.seed,
                                progress=True)
    except httpx.HTTPError as exc:
        raise ConfigError(f"--url {args.url}: no shopgym server answers there ({exc}); start one with "
                          f"`shopgym serve {args.export}`") from exc
    print(f"{run.pages} pages served by {args.url} to simulated shoppers:")
    for name, values in (("clicks", run.clicks), ("carts", run.carts), ("purchases", run.purchases)):
        half = 1.96 * values.std(ddof=1) / max(len(values), 1) ** 0.5 if len(values) > 1 else float("nan")
        print(f"  {name} per page: {values.mean():.4f} +- {half:.4f} (95% interval)")
    return 0


def bootstrap_count(requested: int | None, fit_seconds: float | None) -> int:
    """Bootstrap members to fit: ``requested``, else as many as fit in about 120 s (at least 2, at most 20)."""
    if requested is not None:
        return int(requested)
    if not fit_seconds or fit_seconds <= 0:
        return 2
    return int(min(20, max(2, 120.0 // fit_seconds)))


def _other_log(args: argparse.Namespace, spec: Any) -> int:
    """``simulate fidelity DATA --test OTHER``: fit on DATA, replay OTHER's pages (see envs.cross_fidelity)."""
    from envs.build import bootstrap_models, response_model, simulator_inputs
    from envs.cross_fidelity import check_items_known, cross_log_report, write_cross_report

    inputs = simulator_inputs(spec)
    check_items_known(inputs.test, inputs.space)  # before any fit
    model, model_dir, _ = response_model(inputs, spec)
    count = bootstrap_count(args.bootstrap, (model.report or {}).get("fit_seconds"))
    members = bootstrap_models(inputs, spec, count)
    report = cross_log_report(inputs.train, inputs.test, inputs.space, [model, *members], seed=args.seed)
    report.settings = {"command": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                   if k not in ("handler", "fit")},
                       "fit": asdict(spec.fit), "model": None if model_dir is None else str(model_dir),
                       "weighting": (model.report or {}).get("weighting")}
    write_cross_report(report, args.out)
    print(report.to_markdown())
    print(f"wrote {args.out / 'fidelity.md'}, fidelity.json, ctr_other_log.png")
    return 0
