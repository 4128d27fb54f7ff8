r"""Fidelity against another log: fit on one log, predict another log's CTR (another period or logging policy).

The other log's exact pages (items at their positions, with their requests' context) are replayed through
the simulator fitted on the training log; its expected CTR, overall and by position, is compared with:

* the **real** CTR of the other log, with its 95% Wilson interval;
* the **naive** answer, the training log's own CTR (overall, or at that position);
* where the training log has propensities, the **off-policy estimates** of the same value from the training
  log (IPS, self-normalised IPS, DR; :func:`ope.evaluate.evaluate_bandit`), with the other log's logging
  policy read as its empirical (item | position) distribution: this assumes that policy did not depend on
  the request's context (true of OBD's uniform-random and Bernoulli-Thompson policies).

Intervals. ``predicted_ci`` is the model uncertainty: the 95% range of the expected CTR across the
bootstrap members (:mod:`envs.fitted.ensemble`). ``predictive_ci`` adds the other log's own click noise (the
CTR its finite number of rows would show if the model were right: each member's expected clicks with their
Poisson-binomial standard error), and is the interval the real CTR should fall in; ``inside`` says whether it
does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.fidelity import replay_predictions, wilson, write_report_text
from envs.fitted import ResponseModel
from envs.fitted.ensemble import member_interval
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.data.io import atomic_write
from shopgym.errors import DataFormatError

#: the largest (rows x items x positions) action distribution the off-policy estimates are computed with
MAX_OPE_CELLS = 50_000_000


@dataclass
class CrossLogReport:
    """Figures of the report (plain JSON via :func:`dataclasses.asdict`; see the module docstring).

    ``rows`` holds one dict per scope (``"all"``, then ``"position k"``) with ``rows``, ``predicted_ctr``,
    ``predicted_ci``, ``predictive_ci``, ``real_ctr``, ``real_ci``, ``naive_ctr``, ``naive_ci``,
    ``relative_error``, ``naive_relative_error``, ``abs_error``, ``naive_abs_error`` and ``inside``.
    ``off_policy`` holds one dict per estimator (``estimator``, ``value``, ``ci``) or is empty with
    ``off_policy_note`` saying why.
    """

    train: str
    test: str
    train_rows: int
    test_rows: int
    members: int
    rows: list[dict[str, Any]]
    off_policy: list[dict[str, Any]] = field(default_factory=list)
    off_policy_note: str = ""
    examination: list[float] = field(default_factory=list)
    examination_ci: list[list[float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The report as markdown."""
        lines = [f"# Simulator fidelity on another log: fitted on {self.train}, replaying {self.test}", "",
                 f"Fitted on {self.train_rows:,} rows of {self.train}; the {self.test_rows:,} rows of {self.test} "
                 f"replayed through it (their items at their positions). Intervals: model uncertainty from "
                 f"{self.members} models (the fit and its bootstrap refits); the predictive interval adds the "
                 "other log's own click noise and is where the real CTR should fall.", "",
                 "| scope | predicted CTR | model 95% CI | predictive 95% CI | real CTR | real 95% CI | "
                 "naive (training CTR) | error | naive error | inside |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['scope']} | {r['predicted_ctr']:.5f} | {_ci(r['predicted_ci'])} | "
                         f"{_ci(r['predictive_ci'])} | {r['real_ctr']:.5f} | {_ci(r['real_ci'])} | "
                         f"{r['naive_ctr']:.5f} | {r['relative_error']:+.1%} | {r['naive_relative_error']:+.1%} | "
                         f"{'yes' if r['inside'] else 'no'} |")
        top = self.rows[0]
        verdict = "no larger than" if top["abs_error"] <= top["naive_abs_error"] else "larger than"
        lines += ["", f"Overall the simulator's absolute error ({top['abs_error']:.5f}) is {verdict} the naive "
                  f"answer's ({top['naive_abs_error']:.5f}); the real CTR is "
                  f"{'inside' if top['inside'] else 'outside'} the predictive interval.", ""]
        if self.off_policy:
            lines += ["## Off-policy estimates of the same CTR from the training log", "",
                      "| estimator | estimate | 95% CI | error |", "|---|---|---|---|"]
            lines += [f"| {o['estimator']} | {o['value']:.5f} | {_ci(o['ci'])} | "
                      f"{o['value'] / top['real_ctr'] - 1:+.1%} |" for o in self.off_policy]
            lines.append("")
        elif self.off_policy_note:
            lines += [f"Off-policy estimates: {self.off_policy_note}.", ""]
        if self.examination:
            lines += ["Examination by position (training log, 95% interval): " + ", ".join(
                f"{k + 1}: {t:.2f} [{lo:.2f}, {hi:.2f}]" for k, (t, (lo, hi)) in
                enumerate(zip(self.examination, self.examination_ci, strict=True))) + ".", ""]
        return "\n".join(lines)


def _ci(pair: list[float] | tuple[float, float]) -> str:
    return f"[{pair[0]:.5f}, {pair[1]:.5f}]"


def check_items_known(test: LoggedData, space: ItemSpace) -> np.ndarray:
    """(n_rows,) catalog index of every item of ``test``'s rows; raises naming the unknown item ids.

    Raises:
        DataFormatError: rows of ``test`` show items the training log's catalog does not hold.
    """
    item = space.item_ids.get_indexer(pd.Index(test.interactions[S.ITEM_ID]))
    unknown = np.flatnonzero(item < 0)
    if len(unknown):
        ids = pd.unique(test.interactions[S.ITEM_ID].to_numpy()[unknown])[:5].tolist()
        raise DataFormatError(test.name, f"{len(unknown):,} rows show items the training log's catalog does not "
                              f"hold (e.g. {ids}), first row {int(unknown[0])}", column=S.ITEM_ID,
                              hint="fit on a log whose items table covers the other log's items")
    return item


def cross_log_report(train: LoggedData, test: LoggedData, space: ItemSpace, models: list[ResponseModel], *,
                     n_resamples: int = 2000, seed: int = 0) -> CrossLogReport:
    """Replay ``test``'s pages through each of ``models`` (the fit first, then its bootstrap members).

    Args:
        train: the log the models were fitted on.
        test: the other log.
        space: the item space of the training log (it must hold every item of ``test``).
        models: the fitted model and its bootstrap members (at least one).
        n_resamples: bootstrap resamples of the off-policy intervals.
        seed: seeds the intervals.
    """
    test_item = check_items_known(test, space)
    inter = test.interactions
    everything = np.ones(len(inter), dtype=bool)
    clicks = np.stack([replay_predictions(test, everything, space, m)[0] for m in models])  # (M, n)
    y = inter[S.CLICKED].to_numpy(dtype=np.float64)
    pos = inter[S.POSITION].to_numpy()
    tr = train.interactions
    tr_y, tr_pos = tr[S.CLICKED].to_numpy(dtype=np.float64), tr[S.POSITION].to_numpy()
    scopes = [("all", everything, np.ones(len(tr), dtype=bool))]
    scopes += [(f"position {k}", pos == k, tr_pos == k) for k in np.unique(pos)]
    rows = []
    for scope, mask, tr_mask in scopes:
        p = clicks[:, mask]
        n = int(mask.sum())
        values = p.mean(axis=1)
        noise = np.sqrt((p * (1 - p)).sum(axis=1)) / max(n, 1)
        real = float(y[mask].mean())
        real_lo, real_hi = wilson(np.array([y[mask].sum()]), np.array([n]))
        n_tr = int(tr_mask.sum())
        naive = float(tr_y[tr_mask].mean()) if n_tr else float(tr_y.mean())
        naive_lo, naive_hi = wilson(np.array([tr_y[tr_mask].sum()]), np.array([max(n_tr, 1)]))
        predictive = member_interval(values, noise, seed=seed, scale="logit")
        rows.append({
            "scope": scope, "rows": n, "predicted_ctr": float(values[0]),
            "predicted_ci": list(member_interval(values, seed=seed, scale="logit")) if len(models) > 1
            else [float(values[0])] * 2,
            "predictive_ci": list(predictive), "real_ctr": real, "real_ci": [float(real_lo[0]), float(real_hi[0])],
            "naive_ctr": naive, "naive_ci": [float(naive_lo[0]), float(naive_hi[0])],
            "relative_error": float(values[0] / real - 1) if real > 0 else float("nan"),
            "naive_relative_error": float(naive / real - 1) if real > 0 else float("nan"),
            "abs_error": float(abs(values[0] - real)), "naive_abs_error": float(abs(naive - real)),
            "inside": bool(predictive[0] <= real <= predictive[1])})
    off_policy, note = off_policy_estimates(train, test, test_item, space, models[0], n_resamples=n_resamples,
                                            seed=seed)
    report = models[0].report or {}
    low, high = report.get("examination_low", []), report.get("examination_high", [])
    return CrossLogReport(train.name, test.name, len(tr), len(inter), len(models), rows, off_policy, note,
                          models[0].examination_logged.tolist(), [list(x) for x in zip(low, high, strict=True)])


def off_policy_estimates(train: LoggedData, test: LoggedData, test_item: np.ndarray, space: ItemSpace,
                         model: ResponseModel, *, n_resamples: int = 2000,
                         seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """IPS, SNIPS and DR estimates of the other log's CTR from the training log (or none, and why).

    ``test_item`` is the catalog index of each row of ``test`` (:func:`check_items_known`).
    """
    from ope.data import BanditLog
    from ope.estimators import IPS, DoublyRobust, SelfNormalizedIPS
    from ope.evaluate import evaluate_bandit

    if not train.has_propensities:
        return [], "the training log has no propensities"
    tr = train.interactions
    n_pos = int(max(tr[S.POSITION].max(), test.interactions[S.POSITION].max()))
    n, n_items = len(tr), space.n_items
    if n * n_items * n_pos > MAX_OPE_CELLS:
        return [], (f"skipped: the action distribution would hold {n * n_items * n_pos:,} cells "
                    f"(more than {MAX_OPE_CELLS:,})")
    test_pos = test.interactions[S.POSITION].to_numpy() - 1
    counts = np.zeros((n_items, n_pos))
    np.add.at(counts, (test_item, test_pos), 1.0)
    shown = counts.sum(axis=0, keepdims=True)
    dist = np.where(shown > 0, counts / np.maximum(shown, 1), 1.0 / n_items)  # (items, positions)
    item = space.item_ids.get_indexer(pd.Index(tr[S.ITEM_ID]))
    position = tr[S.POSITION].to_numpy() - 1
    log = BanditLog(reward=tr[S.CLICKED].to_numpy(dtype=np.float64), action=item, n_actions=n_items,
                    pscore=tr[S.PROPENSITY].to_numpy(dtype=np.float64), position=position, n_positions=n_pos)
    # the fitted model as the DR's reward model: its expected click of every item at every position
    click, _ = replay_predictions(train, np.ones(n, dtype=bool), space, model)
    alpha_logged = click / model.examination(n_pos)[position]
    theta = model.examination(n_pos)
    # the model's attractiveness of every item (context-free: the logs' requests share the cold profile)
    everything = _item_attractiveness(model, space)
    q_hat = np.broadcast_to((everything[:, None] * theta[None, :])[None], (n, n_items, n_pos)).copy()
    q_hat[np.arange(n), item, position] = alpha_logged * theta[position]
    action_dist = np.broadcast_to(dist[None], (n, n_items, n_pos))
    result = evaluate_bandit(log, action_dist=action_dist, q_hat=q_hat,
                             estimators=[IPS(), SelfNormalizedIPS(), DoublyRobust()], ci=("bootstrap",),
                             n_resamples=n_resamples, seed=seed, warn=False)
    out = []
    for row in result.results:
        ci = row.interval("bootstrap") if row.ok else None
        if row.ok and ci is not None:
            out.append({"estimator": row.estimator, "value": float(row.value), "ci": [float(ci.low), float(ci.high)]})
    return out, ""


def _item_attractiveness(model: ResponseModel, space: ItemSpace) -> np.ndarray:
    """(n_items,) attractiveness of every item to the cold-start shopper browsing (no query)."""
    n, d = space.n_items, space.dim
    items = np.arange(n)[None, :]
    return model.predict(model.default_profile[None, :].astype(np.float32), space.item_vecs[items],
                         np.zeros((1, d), dtype=np.float32), np.zeros(1, dtype=bool), items)[0, :, 0]


def write_cross_report(report: CrossLogReport, out: Path) -> None:
    """Write fidelity.md, fidelity.json and ctr_other_log.png to ``out`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_report_text(report, out)
    rows = report.rows
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4))

    def bars(values: list[float], cis: list[list[float]], shift: float, **kw: Any) -> None:
        v = np.asarray(values)
        ax.errorbar(x + shift, v, yerr=[v - [c[0] for c in cis], [c[1] for c in cis] - v], fmt="o", capsize=3, **kw)

    bars([r["real_ctr"] for r in rows], [r["real_ci"] for r in rows], -0.15, label="real (95% CI)")
    bars([r["predicted_ctr"] for r in rows], [r["predictive_ci"] for r in rows], 0.0,
         label="simulated (predictive 95% CI)")
    bars([r["naive_ctr"] for r in rows], [r["naive_ci"] for r in rows], 0.15, label="naive: training CTR")
    for o in report.off_policy:
        ax.axhline(o["value"], lw=0.8, ls="--", alpha=0.6, label=f"{o['estimator']} (all)")
    ax.set_xticks(x, [r["scope"] for r in rows])
    ax.set(ylabel="CTR", title=f"fitted on {report.train}, replaying {report.test}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out / "ctr_other_log.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
