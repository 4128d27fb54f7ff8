r"""Model uncertainty: the response model refitted on Bayesian-bootstrap reweightings of the training logs.

A fitted simulator answers with one model, but the logs it was fitted on are one draw of what the shop's
shoppers could have done; on a small log (the OBD sample has about 40 clicks) another draw gives another
model and other answers. The bootstrap measures that: member ``j`` (``j = 1..B``) is fitted with the same
options on the training logs reweighted by a Bayesian bootstrap of their shoppers, else sessions, else
requests (:func:`bootstrap_weights`), and member 0 is the model fitted on the logs themselves. A value computed in each
member (a policy's CTR, an agent's cumulative reward) varies across members by what the logs could not
pin down; :func:`member_interval` turns those values into an interval (the basic bootstrap interval around
the fit, widened by the simulation's own noise when given).

Members are cached like the model itself (:func:`envs.model_store.fit_cached`), under the model's
fingerprint with ``bootstrap_member: j`` (and the scheme, ``bootstrap: bayesian``) added, so each is fitted
once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from envs.fitted.config import FitConfig
from envs.fitted.fitting import fit_response_model
from envs.fitted.model import ResponseModel
from envs.space import ItemSpace
from shopgym.data import LoggedData
from shopgym.data import schema as S


def bootstrap_weights(logs: LoggedData, member: int, seed: int = 0) -> np.ndarray:
    r"""(n_rows,) Bayesian-bootstrap row weights of ``logs`` for member ``member`` (seeded by ``(seed, member)``).

    Each cluster gets a weight :math:`g \sim \mathrm{Exp}(1)` (Rubin's Bayesian bootstrap: the same mean and
    variance as the count of a cluster in a resample with replacement, without zeros) and every row the
    weight of its cluster. The clusters are the shoppers when the logs have user ids (a shopper's history,
    sessions and pages move together, as the profiles and the latent classes need), else the sessions when
    they have session ids, else the requests. Weighting rather than copying keeps every id, user table and
    session as it is, so a member plugs into the same simulator as the fit.
    """
    inter = logs.interactions
    key = S.USER_ID if logs.has_users else S.SESSION_ID if S.SESSION_ID in inter else S.REQUEST_ID
    codes, _ = pd.factorize(inter[key], sort=False)
    rng = np.random.default_rng([int(seed), int(member), 0x5EED])
    return rng.standard_exponential(int(codes.max()) + 1)[codes]


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
                return fit_response_model(logs, sp, cfg, progress=False,
                                          sample_weight=bootstrap_weights(logs, _member, cfg.seed))

        if isinstance(fingerprint, Fingerprint) and cache_dir is not None:
            key = replace(fingerprint, fit={**fingerprint.fit, "bootstrap_member": member, "bootstrap": "bayesian"})
            model, _ = fit_cached(train, space, config, key, cache_dir, fitter=fitter)
        else:
            model = fitter(train, space, config)
        out.append(model)
    return out


def member_interval(values: Sequence[float] | np.ndarray, noise_se: Sequence[float] | np.ndarray | None = None,
                    level: float = 0.95, draws: int = 4000, seed: int = 0,
                    method: str = "basic", scale: str = "identity") -> tuple[float, float]:
    r"""A ``level`` interval of a value computed in the fit (``values[0]``) and in each bootstrap member.

    The members' values :math:`v_j` (member 0, the fit, included) carry the model uncertainty; when each also
    carries a standard error :math:`s_j` of its own simulation noise, the bootstrap distribution is the
    mixture :math:`\frac1M \sum_j N(v_j, s_j^2)` (sampled, seeded; on the chosen ``scale``, with the noise
    carried there by the delta method), else the values themselves. With
    :math:`q_{lo}, q_{hi}` its quantiles:

    * ``"basic"`` (the default; Davison and Hinkley's basic bootstrap interval):
      :math:`[2 v_0 - q_{hi},\ 2 v_0 - q_{lo}]`. When the refits land systematically on one side of the fit,
      the fit is taken to be off from the truth by as much in the same direction, and the interval moves the
      other way;
    * ``"percentile"``: :math:`[q_{lo}, q_{hi}]`, right when the fit is unbiased.

    With one member both are :math:`v_0 \pm z\,s_0` (simulation noise only).

    ``scale`` is where the reflection happens: ``"identity"``, ``"log"`` (positive values, e.g. a reward per
    session) or ``"logit"`` (probabilities, e.g. a CTR), so that the interval stays inside the value's range.
    """
    values = np.asarray(values, dtype=np.float64)
    se = np.zeros_like(values) if noise_se is None else np.asarray(noise_se, dtype=np.float64)
    if method not in ("basic", "percentile"):
        raise ValueError(f"`method` must be 'basic' or 'percentile', got {method!r}")
    forward, back, slope = _SCALES[scale]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(values), draws)
    # the simulation noise enters on the chosen scale (delta method), so small counts stay in range
    t = forward(values)[pick] + (se * slope(values))[pick] * rng.standard_normal(draws)
    tail = (1.0 - level) / 2
    low, high = float(np.quantile(t, tail)), float(np.quantile(t, 1.0 - tail))
    if method == "basic":  # reflected around the fit, on the chosen scale
        centre = float(forward(values[:1])[0])
        low, high = 2 * centre - high, 2 * centre - low
    return float(back(np.array([low]))[0]), float(back(np.array([high]))[0])


_TINY = 1e-12
#: scale -> (forward, back, derivative of forward)
_SCALES = {
    "identity": (lambda x: x, lambda x: x, lambda x: np.ones_like(x)),
    "log": (lambda x: np.log(np.maximum(x, _TINY)), np.exp, lambda x: 1.0 / np.maximum(x, _TINY)),
    "logit": (lambda x: logit(np.clip(x, _TINY, 1 - _TINY)), expit,
              lambda x: 1.0 / np.maximum(np.clip(x, _TINY, 1 - _TINY) * (1 - np.clip(x, _TINY, 1 - _TINY)), _TINY)),
}
