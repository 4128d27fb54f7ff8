r"""Fidelity report: does the simulator fitted on the earlier part of a log behave like the later part?

Checks (all on held-out requests, with the model fitted on the earlier ones):

* CTR by position: held-out CTR with a 95% Wilson interval vs the simulated CTR of the *logged* rankings
  replayed through the fitted model (expected clicks :math:`\theta_k \alpha(u, i)` per slot);
* click prediction: log-loss and AUC of the fitted model vs a popularity baseline (smoothed item CTR times
  the position's CTR, both from the training part);
* purchase rate: held-out vs simulated;
* session length: distribution of pages per session, held out vs simulated (total variation distance);
* synthetic world only: true value of several policies vs their value in the fitted simulator (Kendall tau,
  mean absolute relative error), next to their value under the *segment reference*
  (:class:`~envs.backends.SegmentReferenceBackend`: the truth as known to a model that identified every
  shopper's taste segment exactly and nothing individual). The reference splits the fitted simulator's
  error into what the logs could not tell (individual tastes, latent intent: the reference's own error) and
  what the model failed to learn (the rest).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from envs.fitted import (
    FitConfig,
    ResponseModel,
    _request_arrays,
    row_probabilities,
    session_codes,
    space_user_rows,
)
from envs.fitted.ensemble import member_interval
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.data.io import atomic_write, write_json


@dataclass
class FidelityReport:
    """Figures of the fidelity report (plain JSON via :func:`dataclasses.asdict`)."""

    dataset: str
    train_rows: int
    test_rows: int
    ctr_by_position: list[dict[str, float]]
    positions_inside_ci: int
    click_logloss: float
    click_auc: float
    popularity_logloss: float
    popularity_auc: float
    purchase_rate_heldout: float | None
    purchase_rate_simulated: float | None
    session_length_tv: float | None
    policies: list[dict[str, Any]] = field(default_factory=list)
    kendall_tau: float | None = None
    mean_abs_relative_error: float | None = None
    examination: list[float] = field(default_factory=list)
    refits: list[dict[str, float]] = field(default_factory=list)
    reference_kendall_tau: float | None = None
    reference_mean_abs_relative_error: float | None = None
    attractiveness: dict[str, Any] = field(default_factory=dict)
    #: how the report was made: the command's options and the resolved fitting config (``fit``)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The report as markdown."""
        has_sim_ci = bool(self.ctr_by_position) and all("sim_low" in r for r in self.ctr_by_position)
        lines = [f"# Simulator fidelity: {self.dataset}", "",
                 f"Fitted on {self.train_rows:,} earlier rows, compared with {self.test_rows:,} later rows.", "",
                 *([describe_attractiveness(self.attractiveness), ""] if self.attractiveness else []),
                 "## CTR by position (logged rankings replayed in the simulator)", "",
                 "| position | held-out CTR | 95% CI | simulated CTR | inside |"
                 + (" simulated 95% CI (model + noise) | held-out CTR inside it |" if has_sim_ci else ""),
                 "|---|---|---|---|---|" + ("---|---|" if has_sim_ci else "")]
        for row in self.ctr_by_position:
            inside = "yes" if row["low"] <= row["simulated"] <= row["high"] else "no"
            sim_ci = (f" [{row['sim_low']:.4f}, {row['sim_high']:.4f}] | "
                      f"{'yes' if row['sim_low'] <= row['heldout'] <= row['sim_high'] else 'no'} |"
                      if has_sim_ci else "")
            lines.append(f"| {int(row['position'])} | {row['heldout']:.4f} | [{row['low']:.4f}, {row['high']:.4f}] | "
                         f"{row['simulated']:.4f} | {inside} |{sim_ci}")
        lines += ["", f"{self.positions_inside_ci} of {len(self.ctr_by_position)} positions inside the 95% CI.", "",
                  "## Click prediction on held-out rows", "", "| model | log-loss | AUC |", "|---|---|---|",
                  f"| fitted simulator | {self.click_logloss:.4f} | {self.click_auc:.4f} |",
                  f"| popularity x position | {self.popularity_logloss:.4f} | {self.popularity_auc:.4f} |", ""]
        if self.purchase_rate_heldout is not None:
            lines += [f"Purchase rate: held out {self.purchase_rate_heldout:.4f}, simulated "
                      f"{self.purchase_rate_simulated:.4f}.", ""]
        if self.session_length_tv is not None:
            lines += [f"Session length (pages): total variation distance {self.session_length_tv:.3f}.", ""]
        if self.policies:
            has_ref = all("reference" in p for p in self.policies)
            has_ci = all("fitted_ci" in p for p in self.policies)
            population = {"logged": ["Sessions of the shoppers of the training logs only (`--shoppers logged`; "
                                     "`--shoppers all` adds the world's shoppers the logs never saw).", ""],
                          "all": ["Sessions of every shopper of the world, by activity, including those absent "
                                  "from the training logs (`--shoppers all`).", ""]}
            lines += ["## Policy values: true world vs fitted simulator (reward per session)", "",
                      *population.get(self.settings.get("command", {}).get("shoppers"), []),
                      "| policy | true | fitted | relative error |"
                      + (" fitted 95% interval (model + simulation) | covers the truth |" if has_ci else "")
                      + (" segment reference | its error |" if has_ref else ""),
                      "|---|---|---|---|" + ("---|---|" if has_ci else "") + ("---|---|" if has_ref else "")]
            for p in self.policies:
                ci = (f" [{p['fitted_ci'][0]:.3f}, {p['fitted_ci'][1]:.3f}] | {'yes' if p['covers'] else 'no'} |"
                      if has_ci else "")
                ref = (f" {p['reference']:.3f} ± {p['reference_se']:.3f} | {p['reference_error']:+.1%} |"
                       if has_ref else "")
                lines.append(f"| {p['policy']} | {p['true']:.3f} ± {p['true_se']:.3f} | "
                             f"{p['fitted']:.3f} ± {p['fitted_se']:.3f} | {p['relative_error']:+.1%} |{ci}{ref}")
            lines += ["", f"Fitted simulator: Kendall tau {self.kendall_tau:.2f}; mean absolute relative error "
                      f"{self.mean_abs_relative_error:.1%}."
                      + (f" The 95% interval covers the true value for {sum(p['covers'] for p in self.policies)} of "
                         f"{len(self.policies)} policies (it spans the fitted model and "
                         f"{self.policies[0]['models'] - 1} bootstrap refits, each with its simulation noise)."
                         if has_ci else ""), ""]
            if all("per_page_error" in p for p in self.policies):
                lines += ["Where the error lies (a session's value is its pages times its reward per page):", "",
                          "| policy | reward per page: true | fitted | error | pages per session: true | fitted | "
                          "error |", "|---|---|---|---|---|---|---|"]
                lines += [f"| {p['policy']} | {p['true_per_page']:.3f} | {p['fitted_per_page']:.3f} | "
                          f"{p['per_page_error']:+.1%} | {p['true_pages']:.2f} | {p['fitted_pages']:.2f} | "
                          f"{p['length_error']:+.1%} |" for p in self.policies]
                lines.append("")
            if has_ref and self.reference_kendall_tau is not None:
                lines += [f"Segment reference (the truth as known to a model that identified every shopper's "
                          f"segment and nothing individual): Kendall tau {self.reference_kendall_tau:.2f}; mean "
                          f"absolute relative error {self.reference_mean_abs_relative_error:.1%}. Error beyond the "
                          "reference's is what the fitted model failed to learn from the logs.", ""]
        if len(self.refits) > 1:
            has_ll = all("log_likelihood" in r for r in self.refits)
            lines += [f"The fitted column is the mean over {len(self.refits)} refits (torch seeds); each refit alone"
                      + (" (with the latent classes' log-likelihood of the training logs: higher is a better EM "
                         "optimum)" if has_ll else "") + ":",
                      "", "| seed | Kendall tau | mean absolute relative error | " +
                      " | ".join(p["policy"] for p in self.policies) + " |" + (" log-likelihood |" if has_ll else ""),
                      "|---|---|---|" + "---|" * len(self.policies) + ("---|" if has_ll else "")]
            for r in self.refits:
                values = " | ".join(f"{r[p['policy']]:.3f}" for p in self.policies)
                ll = f" {r['log_likelihood']:,.0f} |" if has_ll else ""
                lines.append(f"| {int(r['seed'])} | {r['kendall_tau']:.2f} | {r['mean_abs_relative_error']:.1%} | "
                             f"{values} |{ll}")
            lines.append("")
        if self.settings.get("fit"):
            default = asdict(FitConfig())
            changed = {k: v for k, v in self.settings["fit"].items() if default.get(k) != v}
            lines += ["Fitting options: " + (", ".join(f"`{k}={v}`" for k, v in changed.items()) if changed
                                             else "the defaults") + " (all of them in fidelity.json, `settings`).", ""]
        return "\n".join(lines)


def split_value_error(policy: dict[str, Any]) -> dict[str, float]:
    r"""Split a policy's value error into what shoppers earn per page and how long they stay.

    A session's value is its pages times its reward per page, so
    :math:`1 + e_{value} = (1 + e_{page})(1 + e_{length})` (exact for one simulator run; for a mean over
    refits, up to the spread between refits). ``policy`` holds ``true_per_page``, ``fitted_per_page``,
    ``true_pages`` and ``fitted_pages``; returns ``per_page_error`` and ``length_error`` (empty if any is
    missing).
    """
    names = ("true_per_page", "fitted_per_page", "true_pages", "fitted_pages")
    if not all(name in policy for name in names):
        return {}
    return {"per_page_error": policy["fitted_per_page"] / policy["true_per_page"] - 1.0,
            "length_error": policy["fitted_pages"] / policy["true_pages"] - 1.0}


def attractiveness_summary(model: ResponseModel) -> dict[str, Any]:
    """Which attractiveness model answers, and what the latent classes learned from (from ``model.report``)."""
    classes = (model.report or {}).get("latent_classes")
    if not classes:
        return {"kind": "mlp"}
    return {"kind": "latent_classes", "n_classes": int(classes["config"]["n_classes"]),
            "mean_max_posterior": float(classes["mean_max_posterior"]),
            "ranked_pages": int(classes.get("ranked_pages", 0)), "logger_gain": float(classes.get("logger_gain", 0.0)),
            "deviation_rank": int(classes.get("deviation_rank", 0)),
            "deviation_gain": float(classes.get("deviation_gain", 0.0)),
            "relevance_knots": int(classes.get("relevance_knots", 0))}


def describe_attractiveness(summary: dict[str, Any]) -> str:
    """One sentence on the attractiveness model of :func:`attractiveness_summary`."""
    if summary.get("kind") != "latent_classes":
        return "Attractiveness: the MLP click head (no user ids in the logs, or latent classes turned off)."
    pages = summary["ranked_pages"]
    own = (f"; each shopper's own deviation from their class, rank {summary['deviation_rank']}, gain "
           f"{summary['deviation_gain']:.2f}" if summary.get("deviation_rank") else "")
    orders = (f"the order of {pages:,} pages the logging policy ranked itself (gain on its beliefs "
              f"{summary['logger_gain']:.2f}{own})" if pages else "no logged orders (no page the logging policy "
              "ranked itself)")
    knots = summary.get("relevance_knots", 0)
    curve = f" Search pages: a query-relevance curve with {knots} knots." if knots else ""
    return (f"Attractiveness: {summary['n_classes']} latent shopper classes (mean largest posterior "
            f"{summary['mean_max_posterior']:.2f}), learned from clicks, exposure and {orders}.{curve}")


def wilson(successes: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    r"""Wilson score interval for binomial proportions (vectorised).

    .. math:: \frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}
    """
    n = np.maximum(n, 1)
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    if y.min() == y.max():
        return float("nan")
    ranks = stats.rankdata(p)
    n_pos = y.sum()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))


def replay_predictions(logs: LoggedData, test_mask: np.ndarray, space: ItemSpace,
                       model: ResponseModel) -> tuple[np.ndarray, np.ndarray]:
    """Fitted P(click) and P(purchase) of each held-out row (logged ranking replayed), (n_test,) each.

    Each row is predicted in its request's context: the shopper's profile from earlier rows, the query and the
    request's context columns.
    """
    from encoders.profiles import BehaviourWeights

    inter = logs.interactions
    item = space.item_ids.get_indexer(pd.Index(inter[S.ITEM_ID]))
    req, cold = _request_arrays(logs, space, item, BehaviourWeights())
    profile = np.where(cold[:, None], model.default_profile[None, :], req.profile).astype(np.float32)
    rows = np.flatnonzero(test_mask)
    context = model.context.transform(inter.iloc[req.first_row]) if model.context.width else None
    probs = row_probabilities(model, req, profile, item, space, space_user_rows(logs), context, rows)
    theta = model.examination(int(inter[S.POSITION].max()))[inter[S.POSITION].to_numpy()[rows] - 1]
    click = theta * probs[:, 0]
    return click, click * probs[:, 1] * probs[:, 2]


def policy_agreement(true: np.ndarray, fitted: np.ndarray) -> tuple[float, float]:
    r"""Kendall tau and mean absolute relative error between true and fitted policy values.

    MARE is :math:`\frac1P\sum_p |\hat v_p - v_p| / v_p`; ``true`` and ``fitted`` are (P,), true values > 0.
    """
    return float(stats.kendalltau(true, fitted).statistic), float(np.mean(np.abs(fitted - true) / true))


def fidelity_report(logs: LoggedData, train: LoggedData, test: LoggedData, space: ItemSpace, model: ResponseModel,
                    *, simulated_lengths: np.ndarray | None = None, policies: list[dict[str, Any]] | None = None,
                    refits: list[dict[str, float]] | None = None,
                    members: list[ResponseModel] | None = None) -> FidelityReport:
    """Compute the report (see the module docstring). ``logs`` is train + test in time order.

    ``policies`` rows hold ``policy``, ``true``, ``true_se``, ``fitted`` and ``fitted_se`` (and optionally
    ``reference`` and ``reference_se``, the segment reference's values); ``refits`` (optional)
    one row per refit with its ``seed``, its fitted value per policy name and its ``kendall_tau`` and
    ``mean_abs_relative_error`` (the ``fitted`` column is then their mean); a policy row's ``fitted_ci`` (the
    interval over the model and its bootstrap members, with simulation noise) is checked against ``true``.
    ``members`` (optional): bootstrap refits of ``model``; each position's simulated CTR then gets a 95%
    interval of the model uncertainty plus the held-out rows' click noise (``sim_low``/``sim_high``).
    """
    inter = logs.interactions
    test_ids = pd.Index(test.interactions[S.REQUEST_ID].unique())
    test_mask = inter[S.REQUEST_ID].isin(test_ids).to_numpy()
    click_sim, buy_sim = replay_predictions(logs, test_mask, space, model)
    t = inter[test_mask]
    y = t[S.CLICKED].to_numpy(dtype=np.float64)
    pos = t[S.POSITION].to_numpy()
    positions = np.unique(pos)
    member_clicks = [replay_predictions(logs, test_mask, space, m)[0] for m in members or []]
    rows = []
    for k in positions:  # positions are few (<= page length)
        m = pos == k
        low, high = wilson(np.array([y[m].sum()]), np.array([m.sum()]))
        row = {"position": float(k), "heldout": float(y[m].mean()), "low": float(low[0]),
               "high": float(high[0]), "simulated": float(click_sim[m].mean()), "rows": float(m.sum())}
        if member_clicks:
            p_k = [c[m] for c in [click_sim, *member_clicks]]
            sim_low, sim_high = member_interval([c.mean() for c in p_k],
                                                [np.sqrt((c * (1 - c)).sum()) / len(c) for c in p_k], scale="logit")
            row |= {"sim_low": sim_low, "sim_high": sim_high}
        rows.append(row)
    inside = sum(r["low"] <= r["simulated"] <= r["high"] for r in rows)
    # popularity x position baseline from the training part
    tr = train.interactions
    ctr = tr[S.CLICKED].mean()
    item_stats = tr.groupby(S.ITEM_ID, observed=True)[S.CLICKED].agg(["sum", "count"])
    item_ctr = (item_stats["sum"] + 20 * ctr) / (item_stats["count"] + 20)
    pos_ctr = tr.groupby(S.POSITION)[S.CLICKED].mean()
    base = item_ctr.reindex(t[S.ITEM_ID]).fillna(ctr).to_numpy() / max(ctr, 1e-9) \
        * pos_ctr.reindex(pos).fillna(ctr).to_numpy()
    base = np.clip(base, 1e-6, 1 - 1e-6)
    purchase_heldout = float(t[S.PURCHASED].mean()) if S.PURCHASED in t else None
    tv = None
    if simulated_lengths is not None:
        codes, _ = pd.factorize(test.interactions[S.REQUEST_ID])
        first = np.full(codes.max() + 1, len(codes))
        np.minimum.at(first, codes, np.arange(len(codes)))
        sessions = session_codes(test, first)
        if sessions is not None:
            held = np.bincount(sessions)
            tv = total_variation(held, simulated_lengths)
    tau = mare = ref_tau = ref_mare = None
    if policies:
        truth = np.array([p["true"] for p in policies])
        fitted = np.array([p["fitted"] for p in policies])
        for p in policies:
            p["relative_error"] = (p["fitted"] - p["true"]) / p["true"]
            p.update(split_value_error(p))
            if "fitted_ci" in p:
                p["covers"] = bool(p["fitted_ci"][0] <= p["true"] <= p["fitted_ci"][1])
        tau, mare = policy_agreement(truth, fitted)
        if all("reference" in p for p in policies):
            for p in policies:
                p["reference_error"] = (p["reference"] - p["true"]) / p["true"]
            ref_tau, ref_mare = policy_agreement(truth, np.array([p["reference"] for p in policies]))
    return FidelityReport(
        dataset=logs.name, train_rows=len(train.interactions), test_rows=int(test_mask.sum()), ctr_by_position=rows,
        positions_inside_ci=int(inside), click_logloss=_logloss(click_sim, y), click_auc=_auc(click_sim, y),
        popularity_logloss=_logloss(base, y), popularity_auc=_auc(base, y),
        purchase_rate_heldout=purchase_heldout,
        purchase_rate_simulated=float(buy_sim.mean()) if purchase_heldout is not None else None,
        session_length_tv=tv, policies=policies or [], kendall_tau=tau, mean_abs_relative_error=mare,
        examination=model.examination_logged.tolist(), refits=refits or [],
        reference_kendall_tau=ref_tau, reference_mean_abs_relative_error=ref_mare,
        attractiveness=attractiveness_summary(model),
    )


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """TV distance between the distributions of two integer samples (e.g. pages per session)."""
    top = int(max(a.max(), b.max())) + 1
    pa = np.bincount(a, minlength=top) / len(a)
    pb = np.bincount(b, minlength=top) / len(b)
    return float(0.5 * np.abs(pa - pb).sum())


def write_report_text(report: Any, out: Path) -> None:
    """Write a report dataclass's ``fidelity.md`` (its markdown) and ``fidelity.json`` to ``out``, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = report.to_markdown()
    atomic_write(out / "fidelity.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    write_json(asdict(report), out / "fidelity.json")


def write_report(report: FidelityReport, out: Path) -> None:
    """Write fidelity.md, fidelity.json and ctr_by_position.png to ``out`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_report_text(report, out)
    rows = report.ctr_by_position
    k = [r["position"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(k, [r["heldout"] for r in rows],
                yerr=[[r["heldout"] - r["low"] for r in rows], [r["high"] - r["heldout"] for r in rows]],
                fmt="o", capsize=3, label="held out (95% CI)")
    ax.plot(k, [r["simulated"] for r in rows], "s-", label="simulated (logged rankings replayed)")
    ax.set(xlabel="position", ylabel="CTR", title=f"CTR by position: {report.dataset}")
    ax.legend()
    fig.tight_layout()
    atomic_write(out / "ctr_by_position.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
