r"""Model uncertainty: the response model refitted on bootstrap resamples of the training requests.

A fitted simulator answers with one model, but the logs it was fitted on are one draw of what the shop's
shoppers could have done; on a small log (the OBD sample has about 40 clicks) another draw gives another
model and other answers. The bootstrap measures that: member ``j`` (``j = 1..B``) is fitted with the same
options on a cluster resample of the training logs (:func:`bootstrap_requests`: shoppers, else sessions,
else requests, drawn with replacement, as many as there are), and member 0 is the model fitted on the logs
themselves. A value computed in each
member (a policy's CTR, an agent's cumulative reward) varies across members by what the logs could not
pin down; :func:`member_interval` turns those values into an interval (percentile of the members, widened
by the simulation's own noise when given).

Members are cached like the model itself (:func:`envs.model_store.fit_cached`), under the model's
fingerprint with ``bootstrap_member: j`` added, so each is fitted once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from envs.fitted.config import FitConfig
from envs.fitted.fitting import fit_response_model
from envs.fitted.model import ResponseModel
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data import schema as S


def bootstrap_requests(logs: LoggedData, member: int, seed: int = 0) -> LoggedData:
    """A cluster-bootstrap resample of ``logs`` for bootstrap member ``member`` (seeded by ``(seed, member)``).

    The clusters are the shoppers when the logs have user ids (a shopper's history, sessions and pages stay
    together, as the profiles and the latent classes need), else the sessions when they have session ids,
    else the requests. As many clusters as there are are drawn with replacement; a cluster drawn ``c`` times
    appears ``c`` times, its copies told apart by a ``~<copy>`` suffix on the user, session and request ids
    (so that a copied session is not merged with its original). Rows stay in time order.
    """
    inter = logs.interactions
    key = S.USER_ID if logs.has_users else S.SESSION_ID if S.SESSION_ID in inter else S.REQUEST_ID
    codes, _ = pd.factorize(inter[key], sort=False)
    n_clusters = int(codes.max()) + 1
    rng = np.random.default_rng([int(seed), int(member), 0x5EED])
    counts = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)
    row_counts = counts[codes]
    rows = np.repeat(np.arange(len(inter)), row_counts)
    copy = np.arange(len(rows)) - np.repeat(np.cumsum(row_counts) - row_counts, row_counts)
    out = inter.iloc[rows].reset_index(drop=True)
    suffix = pd.Series(copy, dtype="int64").astype(str).radd("~").to_numpy()
    for column in (S.USER_ID, S.SESSION_ID, S.REQUEST_ID):
        if column in out:
            out[column] = (out[column].astype(str) + suffix).astype("string")
    out = out.sort_values([S.TIMESTAMP, S.REQUEST_ID, S.POSITION], kind="stable").reset_index(drop=True)
    return LoggedData(logs.items, out, f"{logs.name}[bootstrap {member}]", logs.drops,
                      dict(logs.meta) | {"bootstrap_member": int(member), "bootstrap_cluster": key})


def fit_members(train: LoggedData, space: ItemSpace, config: FitConfig, members: int, *,
                fingerprint: object | None = None, cache_dir: str | Path | None = None,
                progress: bool = False) -> list[ResponseModel]:
    """Bootstrap members ``1..members`` of the model of ``config`` on ``train`` (fitted, or read from the cache).

    Args:
        train: the training logs.
        space: the item space.
        config: the fitting options (each member uses them as they are, ``seed`` included).
        members: how many bootstrap members (0: none).
        fingerprint: the model's :class:`~envs.model_store.Fingerprint`; with ``cache_dir``, members are
            cached under it.
        cache_dir: the fit cache's folder (None: nothing cached).
        progress: a progress bar over the members.
    """
    from tqdm.auto import tqdm

    from envs.model_store import Fingerprint, fit_cached

    out = []
    for member in tqdm(range(1, members + 1), desc="bootstrap members", disable=not progress or members == 0):
        def fitter(logs: LoggedData, sp: ItemSpace, cfg: FitConfig, progress: bool = False,
                   _member: int = member) -> ResponseModel:
            with warnings.catch_warnings():  # the fit of the logs themselves has said it about the weights
                warnings.filterwarnings("ignore", message=".*inverse-propensity weights", category=UserWarning)
                return fit_response_model(bootstrap_requests(logs, _member, cfg.seed), sp, cfg, progress=False)

        if isinstance(fingerprint, Fingerprint) and cache_dir is not None:
            key = replace(fingerprint, fit={**fingerprint.fit, "bootstrap_member": member, "bootstrap": "clusters"})
            model, _ = fit_cached(train, space, config, key, cache_dir, fitter=fitter)
        else:
            model = fitter(train, space, config)
        out.append(model)
    return out


def member_interval(values: Sequence[float] | np.ndarray, noise_se: Sequence[float] | np.ndarray | None = None,
                    level: float = 0.95, draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    r"""A ``level`` interval of a value computed in each bootstrap member, with the simulation's noise.

    The members' values :math:`v_j` (member 0 included) are the model uncertainty; when each also carries a
    standard error :math:`s_j` of its own simulation noise, the interval is the quantiles of the mixture
    :math:`\frac1M \sum_j N(v_j, s_j^2)` (sampled, seeded); without, of the values themselves. With one
    member it is :math:`v_0 \pm z\,s_0` (simulation noise only).
    """
    values = np.asarray(values, dtype=np.float64)
    se = np.zeros_like(values) if noise_se is None else np.asarray(noise_se, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(values), draws)
    sample = values[pick] + se[pick] * rng.standard_normal(draws)
    tail = (1.0 - level) / 2
    return float(np.quantile(sample, tail)), float(np.quantile(sample, 1.0 - tail))
