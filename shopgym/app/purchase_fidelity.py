r"""Fidelity of the purchase-choice simulator against a later period of a purchase-only log.

A simulator fitted from purchases alone (:mod:`envs.fitted.choice`) cannot be checked against logged pages:
there are none. It is checked against what the later period's shoppers bought, in two ways.

1. **The next purchase.** For every shopper of the held-out period with a training history, the model's
   catalog-wide choice distribution :math:`P(i \mid u) = e^{v_{ui}} / \sum_l e^{v_{ul}}` (the exposure assumption:
   any catalog item could have been seen) is compared with the shopper's held-out purchases:

   * *repeat share*: :math:`\sum_{i \in H_u} P(i \mid u)` against the share of the shopper's held-out purchases
     that are items from their training history :math:`H_u`;
   * *perplexity* :math:`\exp(-\overline{\log P(i \mid u)})` of the held-out purchases, against the training
     popularity's (smoothed purchase shares), the reference any model of the next purchase must beat;
   * *distribution distance*: total variation between the held-out item distribution and the simulated one
     (:math:`P(\cdot \mid u)` averaged over the held-out purchases' shoppers), against the training popularity's;
   * *price*: mean log price of simulated and held-out purchases.

   Every figure has a 95% percentile-bootstrap interval over shoppers.
2. **The agents' order.** The baselines that can be fitted from the training part (buy-again, popularity,
   item-kNN, ALS, cosine, random) are valued in the simulator (purchases per session, with their standard
   errors) and offline on the held-out period (HR@10 and NDCG@10 on next purchases, :mod:`shopgym.app.evaluate`);
   Kendall's tau between the two orders says whether the simulator ranks them as the later period does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import logit, logsumexp

from encoders.base import ItemEncoder, TextEncoder
from encoders.profiles import vector
from envs.backends import FittedBackend
from envs.build import BuiltSimulator
from shopgym.data import schema as S
from shopgym.errors import ConfigError

#: the baselines valued both in the simulator and offline
POLICIES: tuple[str, ...] = ("buy_again", "popularity", "item_knn", "als", "cosine", "random")


@dataclass
class PurchaseFidelityReport:
    """What :func:`purchase_fidelity` measured (see the module docstring); every interval 95%."""

    dataset: str
    shoppers: int
    heldout_purchases: int
    left_out: dict[str, int]
    next_purchase: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    kendall_tau_hr: float = float("nan")
    kendall_tau_ndcg: float = float("nan")
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The report as markdown."""
        lines = [f"# Purchase-choice simulator fidelity: {self.dataset}", "",
                 f"{self.shoppers:,} held-out shoppers with a training history, {self.heldout_purchases:,} held-out "
                 f"purchases; left out: " + (", ".join(f"{v:,} {k}" for k, v in self.left_out.items()) or "none")
                 + ".", "", "## The next purchase (held-out period)", "",
                 "| figure | held out | simulated [95% CI] | reference [95% CI] |", "|---|---|---|---|"]
        for row in self.next_purchase:
            lines.append(f"| {row['figure']} | {_fmt(row.get('heldout'))} | {_ci(row, 'simulated')} | "
                         f"{_ci(row, 'reference')} {row.get('reference_name', '')} |")
        lines += ["", "## The agents' order: simulator vs held-out period", "",
                  "| policy | purchases / session in the simulator (± 1.96 SE) | offline HR@10 [95% CI] | "
                  "offline NDCG@10 [95% CI] |", "|---|---|---|---|"]
        for row in self.agents:
            lines.append(f"| {row['policy']} | {row['simulated']:.4g} ± {1.96 * row['simulated_se']:.2g} | "
                         f"{row['hr']:.4f} [{row['hr_low']:.4f}, {row['hr_high']:.4f}] | "
                         f"{row['ndcg']:.4f} [{row['ndcg_low']:.4f}, {row['ndcg_high']:.4f}] |")
        lines += ["", f"Kendall tau between the simulator's order and the offline HR@10 order: "
                  f"**{self.kendall_tau_hr:.3f}** (NDCG@10 order: {self.kendall_tau_ndcg:.3f}; "
                  f"{len(self.agents)} policies).", "",
                  "The simulator assumes what purchases cannot show (docs/simulator.md, purchase-only logs): "
                  f"a random ten-item page converts with probability {self.model.get('page_conversion')}, a page "
                  "without a purchase is followed by another with probability "
                  f"{self.model.get('continuation_without_purchase')}, slots are examined alike, and any catalog "
                  "item could have been seen.", ""]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _ci(row: dict[str, Any], key: str) -> str:
    if row.get(key) is None:
        return "n/a"
    return f"{row[key]:.4g} [{row[key + '_low']:.4g}, {row[key + '_high']:.4g}]"


def choice_log_probabilities(built: BuiltSimulator, users: np.ndarray, batch: int = 16) -> np.ndarray:
    r"""(U, n_items) :math:`\log P(i \mid u)` over the whole catalog for env user-table rows ``users``.

    Each shopper's profile is the simulator's (their training history); the simulator's backend answers with its
    repeat counts (their training purchases).
    """
    model, backend = built.model, built.sim.backend
    assert model is not None and isinstance(backend, FittedBackend)
    space, table = built.inputs.space, built.sim.users
    profile = vector(table.profiles(users, space.item_vecs), model.default_profile).astype(np.float32)
    n_items, d = space.n_items, space.dim
    out = np.empty((len(users), n_items))
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        b = len(rows)
        shown = np.broadcast_to(np.arange(n_items, dtype=np.int64), (b, n_items))
        p = model.predict(profile[start:start + b], np.broadcast_to(space.item_vecs, (b, n_items, d)),
                          np.zeros((b, d), np.float32), np.zeros(b, bool), shown, rows, None,
                          backend.repeats(rows, shown))[..., 0]
        v = logit(np.clip(p, 1e-300, 1 - 1e-16))
        out[start:start + b] = v - logsumexp(v, axis=1, keepdims=True)
    return out


def _boot(values: np.ndarray, idx: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean (weighted) of per-shopper values and its percentile-bootstrap 95% interval over resampled shoppers."""
    w = np.ones_like(values) if weights is None else weights
    point = float((values * w).sum() / w.sum())
    boot = (values[idx] * w[idx]).sum(axis=1) / w[idx].sum(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def purchase_fidelity(built: BuiltSimulator, encoder: TextEncoder | ItemEncoder, *, sessions: int = 2000,
                      seed: int = 0, resamples: int = 1000, progress: bool = False) -> PurchaseFidelityReport:
    """Check a purchase-choice simulator against its held-out period (module docstring).

    Args:
        built: the simulator built from a purchase-only log (``built.model.single_choice``).
        encoder: the encoder of its item space (for the offline evaluation of the cosine baseline).
        sessions: simulated sessions per policy.
        seed: simulation and bootstrap seed.
        resamples: bootstrap resamples over shoppers.
        progress: progress bars.

    Raises:
        ConfigError: the model is not a purchase-choice model, or no held-out shopper has a training history.
    """
    from shopgym.app.evaluate import build_policy, evaluate_offline, next_item_split
    from shopgym.app.rollout import value_policy

    started = time.perf_counter()
    model = built.model
    if model is None or not model.single_choice:
        raise ConfigError("the purchase fidelity report is for simulators fitted on purchase-only logs")
    inputs = built.inputs
    train, test, space, table = inputs.train, inputs.test, inputs.space, built.sim.users
    n_items = space.n_items
    backend = built.sim.backend
    assert isinstance(backend, FittedBackend) and backend.purchases is not None
    counts = backend.purchases  # the training purchases of the env's shoppers, as the simulator counts repeats
    inter = test.interactions
    user = table.user_ids.get_indexer(pd.Index(inter[S.USER_ID])) if len(table.user_ids) else \
        np.full(len(inter), -1)
    item = space.item_ids.get_indexer(pd.Index(inter[S.ITEM_ID]))
    keep = (user >= 0) & (item >= 0)
    left_out = {"purchases by shoppers without a training history": int((user < 0).sum()),
                "purchases of items outside the catalog": int(((user >= 0) & (item < 0)).sum())}
    if not keep.any():
        raise ConfigError(f"{test.name}: no held-out purchase is by a shopper with a training history; use a larger "
                          "training part (test_fraction)")
    shoppers, code = np.unique(user[keep], return_inverse=True)
    e_item = item[keep]
    log_p = choice_log_probabilities(built, shoppers)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(shoppers), size=(resamples, len(shoppers)))
    n_events = np.bincount(code, minlength=len(shoppers)).astype(np.float64)

    # repeat share: simulated P(repeat) vs the held-out share of repeat purchases, per shopper
    history = counts[shoppers].toarray() > 0
    sim_repeat = (np.exp(log_p) * history).sum(axis=1)
    is_repeat = history[code, e_item]
    held_repeat = np.bincount(code, weights=is_repeat, minlength=len(shoppers)) / n_events
    rows: list[dict[str, Any]] = []
    h = _boot(held_repeat, idx)
    s = _boot(sim_repeat, idx)
    rows.append({"figure": "repeat share (purchases of items bought before)", "heldout": h[0],
                 "heldout_low": h[1], "heldout_high": h[2], "simulated": s[0], "simulated_low": s[1],
                 "simulated_high": s[2]})

    # perplexity of the held-out purchases vs the training popularity's
    train_item = space.item_ids.get_indexer(pd.Index(train.interactions[S.ITEM_ID]))
    pop = np.bincount(train_item[train_item >= 0], minlength=n_items) + 1.0
    log_pop = np.log(pop / pop.sum())
    ll_model = np.bincount(code, weights=log_p[code, e_item], minlength=len(shoppers))
    ll_pop = np.bincount(code, weights=log_pop[e_item], minlength=len(shoppers))

    def perplexity(ll: np.ndarray) -> tuple[float, float, float]:
        point = float(np.exp(-ll.sum() / n_events.sum()))
        boot = np.exp(-ll[idx].sum(axis=1) / n_events[idx].sum(axis=1))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        return point, float(lo), float(hi)

    pm, pp = perplexity(ll_model), perplexity(ll_pop)
    rows.append({"figure": "perplexity of held-out purchases (lower is better)", "heldout": None,
                 "simulated": pm[0], "simulated_low": pm[1], "simulated_high": pm[2], "reference": pp[0],
                 "reference_low": pp[1], "reference_high": pp[2], "reference_name": "(training popularity)"})

    # total variation between the held-out item distribution and the simulated / popularity ones
    prob = np.exp(log_p)  # (U, n_items)
    held_counts = np.zeros((len(shoppers), n_items))
    np.add.at(held_counts, (code, e_item), 1.0)
    pop_share = pop / pop.sum()

    def tv(sel: np.ndarray) -> tuple[float, float]:
        held = held_counts[sel].sum(axis=0)
        held /= held.sum()
        sim = (prob[sel] * n_events[sel, None]).sum(axis=0)
        sim /= sim.sum()
        return 0.5 * float(np.abs(sim - held).sum()), 0.5 * float(np.abs(pop_share - held).sum())

    everyone = tv(np.arange(len(shoppers)))
    boot_tv = np.array([tv(sel) for sel in idx[: min(resamples, 200)]])
    lo, hi = np.percentile(boot_tv, [2.5, 97.5], axis=0)
    rows.append({"figure": "total variation to the held-out item distribution (lower is better)", "heldout": None,
                 "simulated": everyone[0], "simulated_low": float(lo[0]), "simulated_high": float(hi[0]),
                 "reference": everyone[1], "reference_low": float(lo[1]), "reference_high": float(hi[1]),
                 "reference_name": "(training popularity)"})

    # price of purchases
    price = train.items.set_index(S.ITEM_ID)[S.PRICE].reindex(space.item_ids).to_numpy(dtype=np.float64) \
        if S.PRICE in train.items else None
    if price is not None and np.isfinite(price).any():
        lp = np.log(np.where(np.isfinite(price) & (price > 0), price, np.nan))
        ok = np.isfinite(lp)
        held_lp = np.bincount(code, weights=np.where(ok[e_item], lp[e_item], 0.0), minlength=len(shoppers))
        held_n = np.bincount(code, weights=ok[e_item].astype(float), minlength=len(shoppers))
        sim_lp = (prob[:, ok] * lp[ok]).sum(axis=1) / np.maximum(prob[:, ok].sum(axis=1), 1e-300)
        mask = held_n > 0  # shoppers whose held-out purchases all lack a price weigh nothing
        held_mean = np.where(mask, held_lp / np.maximum(held_n, 1e-300), 0.0)
        h = _boot(held_mean, idx, held_n)
        s = _boot(np.where(mask, sim_lp, 0.0), idx, held_n)
        rows.append({"figure": "mean log price of a purchase", "heldout": h[0], "heldout_low": h[1],
                     "heldout_high": h[2], "simulated": s[0], "simulated_low": s[1], "simulated_high": s[2]})

    # the agents' order: simulator vs offline HR@10 on the same held-out period
    split = next_item_split(inputs.logs, target="purchase", test_fraction=built.spec.test_fraction) \
        if built.spec.test_path is None else next_item_split(train, target="purchase", test=test)
    offline = evaluate_offline(split, encoder, policies=POLICIES, target="purchase", k=10, seed=seed,
                               progress=progress).table(resamples=resamples, seed=seed).set_index("policy")
    measured: dict[Any, dict[Any, Any]] = offline.to_dict("index")
    agents: list[dict[str, Any]] = []
    for name in POLICIES:
        if name not in measured:
            continue
        policy = build_policy(name, "purchase")
        fit = getattr(policy, "fit", None)
        if callable(fit):
            fit(train, space.item_ids, table.user_ids)
        value = value_policy(built.sim, policy, sessions, seed=seed, name=name)
        agents.append({"policy": name, "simulated": value.reward_per_session, "simulated_se": value.reward_se,
                       "simulated_per_page": value.reward_per_page, "pages_per_session": value.pages_per_session,
                       **{key: float(measured[name][key]) for key in ("hr", "hr_low", "hr_high", "ndcg",
                                                                      "ndcg_low", "ndcg_high")}})
    agents.sort(key=lambda r: -r["simulated"])
    sim_values = np.array([r["simulated"] for r in agents])
    tau_hr = float(stats.kendalltau(sim_values, [r["hr"] for r in agents]).statistic)
    tau_ndcg = float(stats.kendalltau(sim_values, [r["ndcg"] for r in agents]).statistic)
    terms = model.choice
    assert terms is not None
    return PurchaseFidelityReport(
        dataset=train.name, shoppers=int(len(shoppers)), heldout_purchases=int(keep.sum()), left_out=left_out,
        next_purchase=rows, agents=agents, kendall_tau_hr=tau_hr, kendall_tau_ndcg=tau_ndcg,
        model={**terms.to_json(), "outside_option": -model.attract_shift},
        seconds=time.perf_counter() - started)


def write_purchase_report(report: PurchaseFidelityReport, out: Path) -> None:
    """Write fidelity.md, fidelity.json and agents_order.png (simulated value vs offline HR@10) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs.fidelity import write_report_text
    from shopgym.data.io import atomic_write

    write_report_text(report, out)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in report.agents:
        ax.errorbar(row["hr"], row["simulated"], xerr=[[row["hr"] - row["hr_low"]], [row["hr_high"] - row["hr"]]],
                    yerr=1.96 * row["simulated_se"], fmt="o", capsize=3)
        ax.annotate(row["policy"], (row["hr"], row["simulated"]), textcoords="offset points", xytext=(5, 5))
    ax.set(xlabel="offline HR@10 on the held-out period (95% CI)", ylabel="purchases per simulated session",
           title=f"Agents' order: simulator vs held-out (Kendall tau {report.kendall_tau_hr:.2f})")
    fig.tight_layout()
    atomic_write(out / "agents_order.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


__all__ = ["POLICIES", "PurchaseFidelityReport", "choice_log_probabilities", "purchase_fidelity",
           "write_purchase_report"]
