"""The leaderboard of a sweep: one table across the jobs of a ``shopgym compare --multirun`` folder.

A sweep folder (Hydra's ``hydra.sweep.dir``, by default ``multirun/compare/<time>/``) holds one subfolder per
job with its ``.hydra/overrides.yaml`` (what the job changed) and, once the job finished, its ``results.csv``
(one row per agent: each metric's mean and 95% half-width over the job's seeds). :func:`read_sweep` reads them,
:func:`leaderboard` ranks every (job, agent) by a metric and keeps only the overrides that differ between
jobs, and :func:`write_leaderboard` writes ``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.png``
into the sweep folder. A job folder without ``results.csv`` is listed as unfinished (still running, killed or
failed), with the last line of its ``compare.log``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopgym.data.io import atomic_write
from shopgym.errors import ConfigError

#: metrics where lower is better (ranked ascending)
LOWER_IS_BETTER = ("cumulative_regret", "seconds")


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep.

    Attributes:
        name: the job's folder name (Hydra's job number).
        folder: the job's folder.
        overrides: the job's command-line overrides (``key=value``), in order.
        results: its ``results.csv``, or None when it did not finish.
        last_log: the last non-empty line of its ``compare.log`` ("" when none).
    """

    name: str
    folder: Path
    overrides: tuple[str, ...]
    results: pd.DataFrame | None
    last_log: str = ""


def read_sweep(folder: str | Path) -> list[SweepJob]:
    """The jobs of the sweep in ``folder`` (its subfolders holding a ``.hydra`` folder), by job number.

    Raises:
        ConfigError: ``folder`` is not a folder or holds no job.
    """
    import yaml

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder; give a sweep folder (hydra.sweep.dir, e.g. multirun/compare/<time>)")
    jobs = []
    for sub in sorted((p for p in root.iterdir() if (p / ".hydra").is_dir()),
                      key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        overrides_file = sub / ".hydra" / "overrides.yaml"
        overrides = tuple(str(o) for o in (yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or [])) \
            if overrides_file.is_file() else ()
        results_file = sub / "results.csv"
        results = pd.read_csv(results_file) if results_file.is_file() else None
        log = sub / "compare.log"
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()] \
            if log.is_file() else []
        jobs.append(SweepJob(sub.name, sub, overrides, results, lines[-1] if lines else ""))
    if not jobs:
        raise ConfigError(f"{root}: no sweep job found (no subfolder with a .hydra folder); run "
                          "`shopgym compare -m KEY=V1,V2 ...` first")
    return jobs


def differing_overrides(jobs: list[SweepJob]) -> list[dict[str, str]]:
    """Per job, its overrides whose value is not the same in every job (what the sweep varied)."""
    parsed = [dict(o.split("=", 1) if "=" in o else (o, "") for o in job.overrides) for job in jobs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varied = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [{k: p.get(k, "(default)") for k in varied} for p in parsed]


def leaderboard(jobs: list[SweepJob], metric: str = "cumulative_reward", agent: str | None = None) -> pd.DataFrame:
    """One row per finished (job, agent), ranked by ``metric`` (best first; see :data:`LOWER_IS_BETTER`).

    Columns: ``rank``, ``job``, ``agent``, the varied keys, ``metric`` and ``metric_ci95`` (mean and 95%
    half-width over the job's seeds), ``seeds``, ``seconds`` (the job's summed run time of that agent).

    Raises:
        ConfigError: ``metric`` is not a column of the jobs' results, or ``agent`` ran in no job.
    """
    varied = differing_overrides(jobs)
    rows = []
    for job, keys in zip(jobs, varied, strict=True):
        if job.results is None:
            continue
        if metric not in job.results.columns:
            known = [c for c in job.results.columns if not c.endswith("_ci95") and c not in ("agent", "seeds")]
            raise ConfigError(f"--metric {metric!r} is not a column of {job.folder / 'results.csv'}; known: {known}")
        for _, r in job.results.iterrows():
            if agent is not None and r["agent"] != agent:
                continue
            rows.append({"job": job.name, "agent": r["agent"], **keys, "metric": float(r[metric]),
                         "metric_ci95": float(r.get(f"{metric}_ci95", np.nan)), "seeds": int(r["seeds"]),
                         "seconds": float(r["seconds"]) * int(r["seeds"]) if "seconds" in r else np.nan})
    if agent is not None and not rows:
        raise ConfigError(f"--agent {agent!r} ran in no finished job of the sweep")
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values("metric", ascending=metric in LOWER_IS_BETTER, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def to_markdown(table: pd.DataFrame, jobs: list[SweepJob], metric: str) -> str:
    """The leaderboard as markdown, with the unfinished jobs after it."""
    unfinished = [job for job in jobs if job.results is None]
    finished = len(jobs) - len(unfinished)
    lines = [f"# Sweep leaderboard: {metric}", "",
             f"{finished} of {len(jobs)} jobs finished; ranked by {metric} "
             f"({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better), mean ± 95% half-width over each "
             "job's seeds.", ""]
    if not table.empty:
        keys = [c for c in table.columns if c not in ("rank", "job", "agent", "metric", "metric_ci95", "seeds",
                                                      "seconds")]
        lines += ["| rank | job | agent | " + "".join(f"{k} | " for k in keys) + f"{metric} | seeds | seconds |",
                  "|---|---|---|" + "---|" * len(keys) + "---|---|---|"]
        for _, r in table.iterrows():
            lines.append(f"| {r['rank']} | {r['job']} | {r['agent']} | " + "".join(f"{r[k]} | " for k in keys)
                         + f"{r['metric']:.4g} ± {_half(r['metric_ci95'])} | {r['seeds']} | {r['seconds']:.1f} |")
        lines.append("")
    if unfinished:
        lines += ["Unfinished jobs (running, killed or failed; the last line of their compare.log):", ""]
        lines += [f"* job {job.name} ({' '.join(job.overrides) or 'no overrides'}): {job.last_log or 'no log'}"
                  for job in unfinished]
        lines.append("")
    return "\n".join(lines)


def _half(value: float) -> str:
    """A 95% half-width for the table ("n/a" with one seed)."""
    return "n/a" if not np.isfinite(value) else f"{value:.2g}"


def write_leaderboard(table: pd.DataFrame, jobs: list[SweepJob], metric: str, out: Path) -> str:
    """Write leaderboard.csv, leaderboard.md and leaderboard.png into ``out`` (atomically); return the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markdown = to_markdown(table, jobs, metric)
    atomic_write(out / "leaderboard.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    atomic_write(out / "leaderboard.csv", lambda tmp: table.to_csv(tmp, index=False))
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(table) + 1)))
    if not table.empty:
        keys = [c for c in table.columns if c not in ("rank", "job", "agent", "metric", "metric_ci95", "seeds",
                                                      "seconds")]
        labels = [f"{r['agent']} " + " ".join(f"{k}={r[k]}" for k in keys) for _, r in table.iterrows()]
        y = np.arange(len(table))[::-1]
        ax.errorbar(table["metric"], y, xerr=table["metric_ci95"].fillna(0.0), fmt="o", capsize=3)
        ax.set_yticks(y, labels, fontsize=7)
    ax.set(xlabel=f"{metric} (mean, 95% CI over seeds)", title="sweep leaderboard")
    fig.tight_layout()
    atomic_write(out / "leaderboard.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return markdown
