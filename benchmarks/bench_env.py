"""Simulator throughput: batched env user-steps per second vs the bare scoring matmul, and the single env.

Shapes: N=100 candidates, K=10 slots, d=384 (hashing encoder at 384 dims, no attribute block), batch 1/64/1024;
``--dims 384,20`` adds RecSim interest_evolution's own shape (d=20). Reference measured in the same run: the
bare scoring matmul of the same shapes, ``einsum('bd,bnd->bn')`` of user vectors against candidate vectors
(what any policy must at least compute); ``bound %`` = env rate / matmul rate, the share of the scoring bound
one full env step reaches. Both backends are timed (the true world and the fitted model) with both
observations: ``flat`` (N x d candidate vectors copied per user per step, what SB3 takes) and ``ids``
(candidates by catalog index into one shared table, what the bandits' loop uses).

    python benchmarks/bench_env.py [--seconds 3] [--dims 384,20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from encoders.hashing import HashingEncoder
from envs.build import fit_world, setup_world, world_simulator
from envs.core import EnvConfig
from envs.fitted import FitConfig
from envs.rerank import ReRankEnv, ReRankVectorEnv
from envs.synthetic import WorldConfig


def _rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--dims", default="384", help="comma-separated embedding sizes d (20 is RecSim's)")
    args = parser.parse_args()
    for dim in (int(x) for x in args.dims.split(",")):
        _measure(dim, args.seconds)


def _measure(dim: int, seconds: float) -> None:
    setup = setup_world(WorldConfig(seed=0), encoder=HashingEncoder(dim=dim, seed=0), attribute_weight=0.0)
    config = EnvConfig(n_candidates=100, slate_size=10, track_values=False)
    model = fit_world(setup, FitConfig(steps=300, class_restarts=1))  # restarts do not change the step's cost
    sims = {"true world": world_simulator(setup, config), "fitted": world_simulator(setup, config, backend="fitted",
                                                                                     model=model)}
    d = setup.space.dim
    print(f"\nN=100, K=10, d={d}")
    print(f"{'backend':11s} {'obs':>4s} {'batch':>6s} {'user-steps/s':>13s} {'matmul/s (same shapes)':>23s} "
          f"{'bound %':>8s}")
    rng = np.random.default_rng(0)
    for label, sim in sims.items():
        for batch in (1, 64, 1024):
            user = rng.standard_normal((batch, d)).astype(np.float32)
            cands = rng.standard_normal((batch, 100, d)).astype(np.float32)
            mm_rate = _rate(lambda u=user, c=cands: np.einsum("bd,bnd->bn", u, c), seconds) * batch
            for observation in ("flat", "ids"):
                env = ReRankVectorEnv(batch, simulator=sim, observation=observation)
                env.reset(seed=0)
                action = rng.uniform(-1, 1, (batch, 100)).astype(np.float32)
                env_rate = _rate(lambda env=env, action=action: env.step(action), seconds) * batch
                print(f"{label:11s} {observation:>4s} {batch:>6d} {env_rate:>13,.0f} {mm_rate:>23,.0f} "
                      f"{100 * env_rate / mm_rate:>7.1f}%")
        for observation in ("flat", "ids"):
            single = ReRankEnv(sim, observation=observation)
            single.reset(seed=0)

            def one_step(env: ReRankEnv = single) -> None:
                _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 100).astype(np.float32))
                if term or trunc:
                    env.reset()

            print(f"{label:11s} {observation:>4s} single env: {_rate(one_step, seconds):,.0f} steps/s")


if __name__ == "__main__":
    main()
