"""Coverage study on the synthetic shop world: do the 95% intervals of IPS, SNIPS and DR cover the truth?

Setting (one page per request, no session dynamics, so the truth is exact):

* each replication draws fresh requests from the shop world (``world.sample_sessions``: user and
  intent; ``world.sample_candidates``: the N retrieved candidates), ranks K of them with the world's
  logging policy (``logging_policy_for(world)``: epsilon-greedy, epsilon 0.3, exact per-slot
  marginals), and draws clicks from the world's true position-based model
  (``P(click at k) = e_k * attractiveness(user, item)``);
* the evaluation policy is another member of the same family (its own taste-noise draw, less noise
  and less exploration by default), whose exact per-slot marginals ``marginals(users, candidates,
  intent, K) -> (B, K, N)`` give its probability of every logged (item, slot);
* the truth is the evaluation policy's expected clicks per request from the world's oracle,
  ``E_x sum_k sum_n pi_e(n at k | x) e_k alpha(x, n)``: exact per request, averaged over
  ``--truth-requests`` fresh requests (its Monte Carlo standard error is printed; it is about 1% of
  the estimators' standard errors at the defaults).

Estimators: position-based (independent) IPS, its per-slot self-normalised version (SNIPS), the
position-based DR of :mod:`ope.ranking` and, with ``--estimators ...,rips,snrips``, the cascade
(reward-interaction) IPS on the logging policy's prefix propensities (what ``shopgym ope`` runs on a log with
``prefix_propensity``), all per request (expected clicks per page); intervals
resample requests. DR's reward model is :class:`ope.PairRewardModel` (logistic regression of a
slot's click on the logging and target policies' scores of the item, the search flag and the slot),
cross-fitted over 3 folds of requests. DM (same model, no correction) is reported for reference.

Run:  python benchmarks/ope_shop_coverage.py                          (200 replications, 2,000 resamples)
      python benchmarks/ope_shop_coverage.py --replications 100 --n-requests 5000   (quick)
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ope_coverage import acceptance, summarise  # noqa: E402
from envs.synthetic import (  # noqa: E402
    EpsilonGreedyLoggingPolicy,
    SyntheticWorld,
    WorldConfig,
    logging_policy_for,
)
from ope.ranking import (  # noqa: E402
    RANKING_ESTIMATORS,
    PairRewardModel,
    RankingInputs,
    cross_fit_pair_q_hat,
    evaluate_ranking,
    reduce_ranking_target,
)
from shopgym.numeric import epsilon_mixture_propensities  # noqa: E402


@dataclass(frozen=True)
class ShopSetting:
    """The world and the two policies of the study."""

    world_seed: int = 0
    target_epsilon: float = 0.1
    target_noise: float = 0.35
    target_seed: int = 101

    def build(self) -> tuple[SyntheticWorld, EpsilonGreedyLoggingPolicy, EpsilonGreedyLoggingPolicy]:
        """(world, logging policy, evaluation policy)."""
        world = SyntheticWorld(WorldConfig(seed=self.world_seed))
        target = EpsilonGreedyLoggingPolicy(world, self.target_epsilon, self.target_noise, seed=self.target_seed)
        return world, logging_policy_for(world), target


def policy_value(world: SyntheticWorld, policy: EpsilonGreedyLoggingPolicy, users: np.ndarray,
                 intent: object, candidates: np.ndarray) -> np.ndarray:
    """(B,) exact expected clicks per request: sum over slots and candidates of marginal * e_k * alpha."""
    k = world.config.slate_size
    marginals = policy.marginals(users, candidates, intent, k)  # type: ignore[arg-type]
    attract = world.attractiveness(users, candidates, intent)  # type: ignore[arg-type]
    return np.asarray(np.einsum("bkn,k,bn->b", marginals, world.examination_probs(k), attract))


def true_values(setting: ShopSetting, n_requests: int, seed: int, chunk: int = 50_000) -> dict[str, float]:
    """Monte Carlo over fresh requests of the exact per-request values: mean and its standard error."""
    world, logger, target = setting.build()
    rng = np.random.default_rng([seed, 10**6])
    values: dict[str, list[np.ndarray]] = {"target": [], "logging": []}
    done = 0
    while done < n_requests:
        b = min(chunk, n_requests - done)
        users, intent = world.sample_sessions(rng, b)
        candidates = world.sample_candidates(rng, users, intent, world.config.n_candidates)
        values["target"].append(policy_value(world, target, users, intent, candidates))
        values["logging"].append(policy_value(world, logger, users, intent, candidates))
        done += b
    out: dict[str, float] = {}
    for name, parts in values.items():
        v = np.concatenate(parts)
        out[name] = float(v.mean())
        out[f"{name}_se"] = float(v.std(ddof=1) / np.sqrt(len(v)))
        out[f"{name}_sd"] = float(v.std(ddof=1))
    return out


def epsilon_mixture_dm_given_prefix(q_hat: np.ndarray, logged: np.ndarray, greedy: np.ndarray, epsilon: float,
                                    prefix_prob: np.ndarray) -> np.ndarray:
    r"""(n, K) the reward model's expectation at slot k under an epsilon-mixture policy given the logged slots above k.

    The policy shows its greedy ranking with probability :math:`1 - \epsilon`, else a uniformly random one. Given
    the logged prefix :math:`a_{1:k-1}` (probability :math:`P_{k-1}`, ``prefix_prob``; :math:`P_0 = 1`) the greedy
    branch has posterior :math:`g = (1 - \epsilon) [a_{1:k-1} = \text{greedy}_{1:k-1}] / P_{k-1}`, and slot k is
    the greedy item with probability g, else uniform over the candidates not yet shown:
    :math:`g\,\hat q(\text{greedy}_k) + (1 - g)\, \mathrm{mean}_{a \notin a_{1:k-1}} \hat q(a, k)`.

    Args:
        q_hat: (n, K, N) predictions for every candidate at every slot.
        logged, greedy: (n, K) candidate columns of the logged and the greedy rankings.
        epsilon: the exploration share.
        prefix_prob: (n, K) the policy's probability of the logged slots 1..k.
    """
    n, k, cand = q_hat.shape
    rows = np.arange(n)[:, None]
    slots = np.arange(k)[None, :]
    agrees = np.cumprod(logged == greedy, axis=1).astype(bool)
    agrees_above = np.concatenate([np.ones((n, 1), bool), agrees[:, :-1]], axis=1)
    prob_above = np.concatenate([np.ones((n, 1)), prefix_prob[:, :-1]], axis=1)
    g = np.where(agrees_above, (1.0 - epsilon) / np.maximum(prob_above, 1e-300), 0.0).clip(0.0, 1.0)
    shown_above = np.zeros((n, k, cand), dtype=bool)
    for j in range(1, k):  # K slots: a loop over positions, vectorised over requests and candidates
        shown_above[:, j] = shown_above[:, j - 1]
        shown_above[np.arange(n), j, logged[:, j - 1]] = True
    remaining = np.where(shown_above, 0.0, q_hat).sum(axis=2) / (cand - np.arange(k))[None, :]
    return g * q_hat[rows, slots, greedy] + (1.0 - g) * remaining


def one_replication(rep: int, *, setting: ShopSetting, n_requests: int, names: tuple[str, ...], n_resamples: int,
                    alpha: float, seed: int, truth: float) -> list[dict[str, float | str | int]]:
    """Log fresh requests, evaluate the target policy, and return one row per (estimator, interval method)."""
    world, logger, target = setting.build()
    k, n_cand = world.config.slate_size, world.config.n_candidates
    rng = np.random.default_rng([seed, rep])
    users, intent = world.sample_sessions(rng, n_requests)
    candidates = world.sample_candidates(rng, users, intent, n_cand)
    logged = logger.sample(rng, users, candidates, intent, k)
    shown = np.take_along_axis(candidates, logged.slots, axis=1)
    clicks = (rng.random(shown.shape) < world.examination_probs(k) * world.attractiveness(users, shown, intent))
    reward = clicks.astype(np.float64)

    marginals = target.marginals(users, candidates, intent, k)  # (n, K, N), exact
    features = np.stack([logger.scores(users, candidates, intent), target.scores(users, candidates, intent),
                         np.broadcast_to(intent.is_search[:, None], candidates.shape).astype(np.float64)], axis=2)
    q_hat = cross_fit_pair_q_hat(PairRewardModel(), features, logged.slots, reward, n_folds=3, seed=rep)
    target_prob, dm, q_logged = reduce_ranking_target(logged.slots, marginals, q_hat)
    target_greedy = target.greedy(users, candidates, intent, k)
    target_prefix = epsilon_mixture_propensities(logged.slots, target_greedy, target.epsilon, n_cand)[1]
    target_slate = target_prefix[:, -1]
    dm_prefix = epsilon_mixture_dm_given_prefix(q_hat, logged.slots, target_greedy, target.epsilon, target_prefix)
    inputs = RankingInputs(reward=reward, target_prob=target_prob, pscore=logged.propensity, dm=dm,
                           q_logged=q_logged, slate_pscore=logged.slate_propensity, target_slate_prob=target_slate,
                           prefix_pscore=logged.prefix_propensity, target_prefix_prob=target_prefix,
                           dm_prefix=dm_prefix)
    report = evaluate_ranking(inputs, estimators=[RANKING_ESTIMATORS[n] for n in names], n_resamples=n_resamples,
                              alpha=alpha, seed=rep, n_jobs=1, warn=False)
    w = inputs.weights()
    assert w is not None
    rows: list[dict[str, float | str | int]] = []
    for r in report.results:
        for ci in r.intervals:
            rows.append({"rep": rep, "estimator": r.estimator, "method": ci.method, "estimate": r.value,
                         "truth": truth, "low": ci.low, "high": ci.high, "covered": float(ci.contains(truth)),
                         "ess_fraction": report.diagnostics.ess_fraction, "max_weight": float(w.max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--n-requests", type=int, default=10_000, help="logged requests (pages) per replication")
    parser.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples per replication")
    parser.add_argument("--truth-requests", type=int, default=1_000_000, help="fresh requests for the truth")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--estimators", default="ips,snips,dr,dm", help=f"from {sorted(RANKING_ESTIMATORS)}")
    parser.add_argument("--target-epsilon", type=float, default=0.1)
    parser.add_argument("--target-noise", type=float, default=0.35)
    parser.add_argument("--target-seed", type=int, default=101)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=None, help="write the per-replication rows here")
    args = parser.parse_args()

    names = tuple(n.strip() for n in args.estimators.split(",") if n.strip())
    unknown = sorted(set(names) - set(RANKING_ESTIMATORS))
    if unknown:
        raise SystemExit(f"unknown estimators {unknown}; choose from {sorted(RANKING_ESTIMATORS)}")
    setting = ShopSetting(args.world_seed, args.target_epsilon, args.target_noise, args.target_seed)
    t0 = time.perf_counter()
    truth = true_values(setting, args.truth_requests, args.seed)
    t_truth = time.perf_counter() - t0
    task = partial(one_replication, setting=setting, n_requests=args.n_requests, names=names,
                   n_resamples=args.n_resamples, alpha=args.alpha, seed=args.seed, truth=truth["target"])
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            chunks = list(pool.map(task, range(args.replications), chunksize=4))
    else:
        chunks = [task(rep) for rep in range(args.replications)]
    rows = pd.DataFrame([row for rows in chunks for row in rows])
    seconds = time.perf_counter() - t0
    if args.csv:
        rows.to_csv(args.csv, index=False)
    summary = summarise(rows)
    per_rep = rows.drop_duplicates("rep")
    print(f"# shop-world coverage: world seed {args.world_seed} (2,000 items, K=10 of N=30 candidates, logging "
          f"epsilon-greedy eps=0.3 noise=0.7), target eps={args.target_epsilon} noise={args.target_noise} "
          f"seed={args.target_seed}; {args.replications} replications x {args.n_requests:,} requests, "
          f"{args.n_resamples:,} resamples, seed {args.seed} ({seconds:.0f} s, truth {t_truth:.0f} s)")
    print(f"truth (expected clicks per page): target {truth['target']:.5f} +- {truth['target_se']:.5f} (MC SE over "
          f"{args.truth_requests:,} requests), logging {truth['logging']:.5f}")
    print(f"per-slot weights: ESS {per_rep['ess_fraction'].mean():.1%} of the slots on average, "
          f"largest weight {per_rep['max_weight'].max():.1f}")
    with pd.option_context("display.width", 160, "display.float_format", "{:.5f}".format):
        print(summary.to_string())
    for line in acceptance(summary):
        print(line)
    if ("ips", "bootstrap") in summary.index:
        se_truth = truth["target_se"]
        se_ips = summary.loc[("ips", "bootstrap"), "error_se"] * np.sqrt(args.replications)
        print(f"truth's MC SE is {se_truth / se_ips:.1%} of one replication's IPS standard deviation")


if __name__ == "__main__":
    main()
