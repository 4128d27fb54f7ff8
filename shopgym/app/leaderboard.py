"""The leaderboard of a sweep: one table across the jobs of a sweep folder, seeds pooled per configuration.

A sweep folder (Hydra's ``hydra.sweep.dir``: ``multirun/compare/<time>/`` by default, ``multirun/sweep/<name>/``
with a ``sweep=`` config) holds one subfolder per job with its record ``job.json`` (:mod:`shopgym.app.sweep`:
done, failed with its error, or running), its ``.hydra/overrides.yaml`` and, once done, its ``runs.csv`` (one
row per agent and seed) and trained agents (``agents/<agent>/seed<k>/``).

:func:`read_sweep` reads the jobs; :func:`leaderboard` groups them into *configurations* (the overrides the
sweep varied, ``seeds`` left out, so jobs that differ only in their seeds pool), and ranks every
(configuration, agent) by a metric: mean and 95% Student-t half-width over all its seeds, the jobs it pooled,
their summed run time, and the folder of its best seed's trained agent. :func:`write_leaderboard` writes
``leaderboard.csv``, ``leaderboard.md``, ``leaderboard.png`` (the ranking, and the metric against each swept
value) and ``best.json`` (the winner's trained agent, for ``shopgym export``) into the sweep folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopgym.app.sweep import DONE, FAILED, STOPPED, JobRecord, read_record
from shopgym.data.io import atomic_write, write_json
from shopgym.errors import ConfigError

#: metrics where lower is better (ranked ascending)
LOWER_IS_BETTER = ("cumulative_regret", "seconds")
#: override keys that choose seeds: jobs differing only in them are one configuration
SEED_KEYS = ("seeds",)
#: the leaderboard's own columns (the others are the configuration's keys)
BOARD_COLUMNS = ("rank", "config", "agent", "metric", "metric_ci95", "seeds", "jobs", "seconds", "agent_folder")


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep.

    Attributes:
        name: the job's folder name (Hydra's job number).
        folder: the job's folder.
        overrides: the job's overrides (``key=value``), in order (its record's, else ``.hydra/overrides.yaml``).
        status: ``done``, ``failed``, ``stopped`` (early, by ``shopgym sweep tune``'s scheduler) or ``unfinished``
            (running, or killed before it finished).
        runs: its ``runs.csv`` (one row per agent and seed) when done, else None.
        record: its ``job.json`` (None for a job that never started its record).
        last_log: the last non-empty line of its ``compare.log`` ("" when none, and for a done job).
    """

    name: str
    folder: Path
    overrides: tuple[str, ...]
    status: str
    runs: pd.DataFrame | None
    record: JobRecord | None = None
    last_log: str = ""

    @property
    def error(self) -> str:
        """A failed job's error, or why a stopped one was stopped ("" otherwise)."""
        return self.record.error if self.record is not None else ""


def read_sweep(folder: str | Path) -> list[SweepJob]:
    """The jobs of the sweep in ``folder`` (its subfolders holding a ``.hydra`` folder or a ``job.json``).

    Raises:
        ConfigError: ``folder`` is not a folder or holds no job.
    """
    import yaml

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder; give a sweep folder (hydra.sweep.dir, e.g. multirun/compare/<time>)")
    subs = [p for p in root.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / "job.json").is_file())]
    jobs = []
    for sub in sorted(subs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        record = read_record(sub)
        overrides_file = sub / ".hydra" / "overrides.yaml"
        if record is not None:
            overrides = record.overrides
        elif overrides_file.is_file():
            overrides = tuple(str(o) for o in (yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []))
        else:
            overrides = ()
        runs_file = sub / "runs.csv"
        finished = runs_file.is_file() and (record is None or record.status == DONE)
        status = DONE if finished else record.status if record is not None and record.status in (FAILED, STOPPED) \
            else "unfinished"
        log = sub / "compare.log"
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()] \
            if status != DONE and log.is_file() else []  # the tables show it for jobs that did not finish
        jobs.append(SweepJob(sub.name, sub, overrides, status, pd.read_csv(runs_file) if finished else None,
                             record, lines[-1] if lines else ""))
    if not jobs:
        raise ConfigError(f"{root}: no sweep job found (no subfolder with a .hydra folder or a job.json); run "
                          "`shopgym compare -m KEY=V1,V2 ...` first")
    return jobs


def _parse(overrides: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` overrides as a dict (``+``/``~`` prefixes dropped)."""
    out = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        out[key] = value
    return out


def differing_overrides(jobs: list[SweepJob]) -> list[dict[str, str]]:
    """Per job, its overrides whose value is not the same in every job (what the sweep varied)."""
    parsed = [_parse(job.overrides) for job in jobs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varied = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [{k: p.get(k, "(default)") for k in varied} for p in parsed]


def config_label(keys: dict[str, str], shorten: bool = False) -> str:
    """A configuration's name: its varied keys but the seeds, ``k=v`` joined by spaces (``(base)`` when none).

    Exact values identify a configuration; ``shorten`` gives the display form (:func:`short` values).
    """
    return " ".join(f"{k}={short(v) if shorten else v}" for k, v in keys.items() if k not in SEED_KEYS) or "(base)"


def short(value: object) -> str:
    """A value as the tables show it: a float with 4 significant digits (an optimiser's 0.30285251536 -> 0.3029)."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return text if text.lstrip("-").replace(".", "", 1).isdigit() and len(text) <= 8 else f"{number:.4g}"


def leaderboard(jobs: list[SweepJob], metric: str = "cumulative_reward", agent: str | None = None) -> pd.DataFrame:
    """One row per (configuration, agent) of the finished jobs, ranked by ``metric`` (best first).

    Columns: ``rank``, ``config``, ``agent``, the configuration's keys, ``metric`` and ``metric_ci95`` (mean and
    95% Student-t half-width over every seed of the configuration's jobs), ``seeds``, ``jobs`` (the job folders
    pooled, ``;``-joined), ``seconds`` (the agent's summed run time), ``agent_folder`` (the trained agent of its
    best seed, relative to the sweep folder; "" when not saved).

    Raises:
        ConfigError: ``metric`` is not a column of the jobs' ``runs.csv``, or ``agent`` ran in no finished job.
    """
    from shopgym.app.compare import mean_ci

    varied = differing_overrides(jobs)
    lower = metric in LOWER_IS_BETTER
    pooled: dict[tuple[str, str], list[tuple[float, str, int, float]]] = {}
    keys_of: dict[str, dict[str, str]] = {}
    for job, keys in zip(jobs, varied, strict=True):
        if job.runs is None:
            continue
        if metric not in job.runs.columns:
            known = [c for c in job.runs.columns if c not in ("agent", "seed")]
            raise ConfigError(f"--metric {metric!r} is not a column of {job.folder / 'runs.csv'}; known: {known}")
        label = config_label(keys)
        keys_of[label] = {k: v for k, v in keys.items() if k not in SEED_KEYS}
        for _, r in job.runs.iterrows():
            if agent is not None and r["agent"] != agent:
                continue
            pooled.setdefault((label, str(r["agent"])), []).append(
                (float(r[metric]), job.name, int(r["seed"]), float(r.get("seconds", np.nan))))
    if agent is not None and not pooled:
        raise ConfigError(f"--agent {agent!r} ran in no finished job of the sweep")
    rows = []
    for (label, name), values in pooled.items():
        mean, half = mean_ci(np.array([v[0] for v in values], dtype=np.float64))
        finite = [v for v in values if np.isfinite(v[0])]
        best = (min if lower else max)(finite, key=lambda v: v[0]) if finite else values[0]
        folder = Path(best[1]) / "agents" / name / f"seed{best[2]}"
        rows.append({"config": label, "agent": name, **keys_of[label], "metric": mean, "metric_ci95": half,
                     "seeds": len(values), "jobs": ";".join(dict.fromkeys(v[1] for v in values)),
                     "seconds": float(np.nansum([v[3] for v in values])),
                     "agent_folder": str(folder) if (jobs[0].folder.parent / folder / "policy.json").is_file()
                     else ""})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values("metric", ascending=lower, kind="stable", na_position="last").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def config_keys(table: pd.DataFrame) -> list[str]:
    """The configuration keys among a leaderboard's columns."""
    return [c for c in table.columns if c not in BOARD_COLUMNS]


def to_markdown(table: pd.DataFrame, jobs: list[SweepJob], metric: str) -> str:
    """The leaderboard as markdown: the winner, the ranked table, then the failed and the unfinished jobs."""
    failed = [job for job in jobs if job.status == FAILED]
    stopped = [job for job in jobs if job.status == STOPPED]
    unfinished = [job for job in jobs if job.status not in (DONE, FAILED, STOPPED)]
    done = len(jobs) - len(failed) - len(stopped) - len(unfinished)
    lines = [f"# Sweep leaderboard: {metric}", "",
             f"{done} of {len(jobs)} jobs done, {len(failed)} failed, "
             + (f"{len(stopped)} stopped early, " if stopped else "") + f"{len(unfinished)} unfinished. Ranked by "
             f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better): mean ± 95% half-width over "
             "every seed of a configuration (jobs that differ only in `seeds` are pooled).", ""]
    if any(k.startswith("env.reward") for k in config_keys(table)) and "reward" in metric:
        lines += [f"Note: the sweep varies the reward's weights, so {metric} measures a different reward in each "
                  "configuration; rank by a common measure too (`shopgym sweep report DIR --metric ctr` or "
                  "`--metric purchase_rate`).", ""]
    if not table.empty:
        best = table.iloc[0]
        where = f"; its trained agent (best seed): `{best['agent_folder']}`" if best["agent_folder"] else ""
        label = config_label({k: best[k] for k in config_keys(table)}, shorten=True)
        value = f"{best['metric']:.4g} ± {_half(best['metric_ci95'])}"
        lines += [f"Best: **{best['agent']}** with {label}: {value}{where}.", ""]
        keys = config_keys(table)
        lines += ["| rank | agent | " + "".join(f"{k} | " for k in keys) + f"{metric} | seeds | jobs | seconds |",
                  "|---|---|" + "---|" * len(keys) + "---|---|---|---|"]
        for _, r in table.iterrows():
            lines.append(f"| {r['rank']} | {r['agent']} | " + "".join(f"{short(r[k])} | " for k in keys)
                         + f"{r['metric']:.4g} ± {_half(r['metric_ci95'])} | {r['seeds']} | {r['jobs']} | "
                         f"{r['seconds']:.1f} |")
        lines.append("")
    if failed:
        lines += ["Failed jobs (their error; the traceback is in the job's job.json and compare.log):", ""]
        lines += [f"* job {job.name} ({' '.join(job.overrides) or 'no overrides'}): {job.error}" for job in failed]
        lines.append("")
    if stopped:
        lines += ["Stopped early (their learning curve was behind at a rung of the early-stopping scheduler):", ""]
        lines += [f"* job {job.name} ({' '.join(job.overrides)}): {job.error}" for job in stopped]
        lines.append("")
    if unfinished:
        lines += ["Unfinished jobs (running, or killed: start the same sweep again to finish them; the last line of "
                  "their compare.log):", ""]
        lines += [f"* job {job.name} ({' '.join(job.overrides) or 'no overrides'}): {job.last_log or 'no log'}"
                  for job in unfinished]
        lines.append("")
    return "\n".join(lines)


def _half(value: float) -> str:
    """A 95% half-width for the table ("n/a" with one seed)."""
    return "n/a" if not np.isfinite(value) else f"{value:.2g}"


def _numeric(values: pd.Series) -> np.ndarray | None:
    """``values`` as floats when every one is a number, else None (categorical)."""
    out = pd.to_numeric(values, errors="coerce")
    return None if out.isna().any() else out.to_numpy(dtype=np.float64)


def plot_leaderboard(table: pd.DataFrame, metric: str, path: Path) -> None:
    """The ranking (every row with its 95% CI) and, per configuration key, the metric against the key's values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = config_keys(table)[:3] if not table.empty else []
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(7 + 4.5 * len(keys), max(3.0, 0.32 * len(table) + 1.2)),
                             squeeze=False)
    rank_ax = axes[0][0]
    if not table.empty:
        labels = [f"{r['agent']} {config_label({k: r[k] for k in config_keys(table)}, True)}"
                  for _, r in table.iterrows()]
        y = np.arange(len(table))[::-1]
        rank_ax.errorbar(table["metric"], y, xerr=table["metric_ci95"].fillna(0.0), fmt="o", capsize=3)
        rank_ax.set_yticks(y, labels, fontsize=7)
    rank_ax.set(xlabel=f"{metric} (mean, 95% CI over seeds)", title="sweep leaderboard")
    for ax, key in zip(axes[0][1:], keys, strict=True):
        numeric = _numeric(table[key])
        categories = list(dict.fromkeys(table[key].astype(str)))
        for n, agent in enumerate(dict.fromkeys(table["agent"])):
            mine = table[table["agent"] == agent]
            x = _numeric(mine[key]) if numeric is not None else \
                np.array([categories.index(v) for v in mine[key].astype(str)], dtype=np.float64)
            assert x is not None
            jitter = (n - 0.5 * (table["agent"].nunique() - 1)) * 0.04 * (np.ptp(x) if numeric is not None and
                                                                         np.ptp(x) > 0 else 1.0)
            ax.errorbar(x + jitter, mine["metric"], yerr=mine["metric_ci95"].fillna(0.0), fmt="o", capsize=3,
                        label=str(agent))
        if numeric is None:
            ax.set_xticks(range(len(categories)), categories, fontsize=7, rotation=20)
        ax.set(xlabel=key, ylabel=metric, title=f"{metric} against {key}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_leaderboard(table: pd.DataFrame, jobs: list[SweepJob], metric: str, out: Path) -> str:
    """Write leaderboard.csv/.md/.png and best.json into ``out`` (each atomically); return the markdown."""
    markdown = to_markdown(table, jobs, metric)
    atomic_write(out / "leaderboard.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    atomic_write(out / "leaderboard.csv", lambda tmp: table.to_csv(tmp, index=False))
    plot_leaderboard(table, metric, out / "leaderboard.png")
    if not table.empty:
        best = table.iloc[0]
        half = float(best["metric_ci95"])
        write_json({"metric": metric, "value": float(best["metric"]), "ci95": half if np.isfinite(half) else None,
                    "agent": str(best["agent"]), "config": str(best["config"]), "jobs": str(best["jobs"]).split(";"),
                    "seeds": int(best["seeds"]), "agent_folder": str(best["agent_folder"]),
                    "overrides": {k: str(best[k]) for k in config_keys(table)}}, out / "best.json")
    return markdown
