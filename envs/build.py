"""Build simulators: from a synthetic world (true or fitted backend) or from a user's own logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from encoders.base import ItemEncoder, TextEncoder
from encoders.hashing import HashingEncoder
from encoders.profiles import BehaviourWeights, vector
from envs.backends import FittedBackend, SegmentReferenceBackend, TrueWorldBackend
from envs.candidates import CandidateGenerator
from envs.core import EnvConfig, SessionSource, Simulator
from envs.fitted import FitConfig, ResponseModel, fit_response_model, session_codes
from envs.space import ItemSpace, UserTable
from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.errors import ConfigError


@dataclass(frozen=True)
class WorldSetup:
    """Everything derived from one synthetic world: its logs, the train/test split, the item space.

    Attributes:
        world: the synthetic world (ground truth).
        logs: all generated logs.
        train: the earlier part (the simulator is fitted on it).
        test: the later part (held out).
        space: item/query vectors of the world's catalog and every possible query.
    """

    world: SyntheticWorld
    logs: LoggedData
    train: LoggedData
    test: LoggedData
    space: ItemSpace


def world_queries(world: SyntheticWorld) -> list[str]:
    """Every query string the world can produce (category, colour + category, material + category)."""
    from envs.synthetic import vocab

    out = list(vocab.CATEGORIES)
    out += [f"{a} {c}" for a in vocab.COLOURS + vocab.MATERIALS for c in vocab.CATEGORIES]
    return out


def make_encoder(name: str | TextEncoder | ItemEncoder,
                 cache_dir: str | Path | None = None) -> TextEncoder | ItemEncoder:
    """An encoder by name, or an encoder object returned as is.

    Names: "minilm" (the packaged BERT model, cached on disk under ``cache_dir`` if given) and
    "hashing" (fast, no weights; for tests and quick runs).
    """
    if not isinstance(name, str):
        return name
    if name == "hashing":
        return HashingEncoder(dim=256, seed=0)
    if name == "minilm":
        from encoders.bert import BertEncoder

        encoder: TextEncoder = BertEncoder()
        if cache_dir is not None:
            from encoders.cache import CachedEncoder

            encoder = CachedEncoder(encoder, cache_dir)
        return encoder
    raise ConfigError(f"unknown encoder {name!r}; use 'minilm', 'hashing' or pass an encoder object")


def setup_world(config: WorldConfig | None = None, *, encoder: str | TextEncoder = "hashing", dim: int | None = None,
                attribute_weight: float = 1.0, test_fraction: float = 0.2, cache_dir: str | Path | None = None,
                progress: bool = False) -> WorldSetup:
    """Generate a world's logs, split them by time and encode its catalog and queries."""
    world = SyntheticWorld(config)
    logs = generate_logs(world, progress=progress)
    train, test = logs.split_by_time(test_fraction)
    space = ItemSpace.build(logs.items, make_encoder(encoder, cache_dir), world_queries(world), dim=dim,
                            attribute_weight=attribute_weight, show_progress=progress)
    return WorldSetup(world, logs, train, test, space)


def co_engagement(logs: LoggedData, item_ids: pd.Index) -> sp.csr_matrix | None:
    """(n_items, n_items) counts of users who engaged with both items (None without user ids)."""
    if not logs.has_users:
        return None
    inter = logs.interactions
    engaged = inter[S.CLICKED].to_numpy() > 0
    if not engaged.any():
        return None
    users, _ = pd.factorize(inter[S.USER_ID][engaged])
    items = item_ids.get_indexer(pd.Index(inter[S.ITEM_ID][engaged]))
    x = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(users.max() + 1, len(item_ids)))
    x.data[:] = 1.0
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    return co


def _prices(items: pd.DataFrame) -> np.ndarray:
    if S.PRICE in items:
        return items[S.PRICE].fillna(0.0).to_numpy(dtype=np.float64)
    return np.zeros(len(items))


def _common(train: LoggedData, space: ItemSpace, config: EnvConfig) -> tuple[UserTable, CandidateGenerator,
                                                                                np.ndarray]:
    users = UserTable.from_logs(train, space.item_ids, weights=BehaviourWeights())
    views = np.bincount(space.item_ids.get_indexer(pd.Index(train.interactions[S.ITEM_ID])), minlength=space.n_items)
    cold = np.flatnonzero(views == 0)
    generator = CandidateGenerator(space, users, co_engagement(train, space.item_ids), cold, config.candidates)
    if len(users.user_ids):
        state = users.profiles(np.arange(len(users.user_ids)), space.item_vecs)
        warm = ~state.is_cold
        default = vector(state, np.zeros(space.dim))[warm].mean(axis=0) if warm.any() else np.zeros(space.dim)
    else:
        default = np.zeros(space.dim)
    return users, generator, default


#: the response backends a synthetic-world simulator can have (see :func:`world_simulator`)
WORLD_BACKENDS = ("true", "segment", "fitted")
#: which of the world's shoppers a synthetic-world simulator draws sessions from (see :func:`world_simulator`)
WORLD_SHOPPERS = ("all", "logged")
Shoppers = Literal["all", "logged"]


def check_shoppers(value: object) -> Shoppers:
    """``value`` as one of :data:`WORLD_SHOPPERS`, or a :class:`ConfigError` naming the option and its choices."""
    if value not in WORLD_SHOPPERS:
        raise ConfigError(f"`shoppers` must be one of {', '.join(map(repr, WORLD_SHOPPERS))}, got {value!r}")
    return cast(Shoppers, value)


def world_simulator(setup: WorldSetup, config: EnvConfig | None = None, *,
                    backend: Literal["true", "segment", "fitted"] = "true",
                    model: ResponseModel | None = None,
                    shoppers: Shoppers = "all") -> Simulator:
    """A simulator of the synthetic world's shoppers, answered by the true model or by a fitted one.

    ``shoppers="all"`` draws sessions from every shopper of the world by activity, including those absent
    from the training logs (unknown users to a fitted model: about a quarter of the sessions on the default
    world); ``"logged"`` draws only the shoppers of the training logs, at their activity renormalised (the
    population a simulator fitted from logs knows, as :func:`log_simulator` draws it).

    ``backend="segment"`` answers with :class:`~envs.backends.SegmentReferenceBackend` (the truth as known
    to a model that identified every shopper's segment and nothing individual), a reference for fidelity.

    Sessions (users, intents, queries) come from the world in both cases, so the two backends are
    compared on the same shoppers and candidates.
    """
    check_shoppers(shoppers)  # before building the user table and the candidate generator
    config = config or EnvConfig()
    users, generator, default = _common(setup.train, setup.space, config)
    source = SessionSource(setup.space, users, world=setup.world, logged_only=shoppers == "logged")
    if backend == "true":
        engine: TrueWorldBackend | FittedBackend = TrueWorldBackend(setup.world)
    elif backend == "segment":
        engine = SegmentReferenceBackend(setup.world)
    elif backend == "fitted":
        if model is None:
            raise ConfigError("backend='fitted' needs a fitted `model` (fit_response_model(setup.train, setup.space))")
        engine = FittedBackend(model, setup.space)
        default = model.default_profile
    else:
        raise ConfigError(f"`backend` must be one of {', '.join(map(repr, WORLD_BACKENDS))}, got {backend!r}")
    return Simulator(setup.space, users, generator, engine, source, config, _prices(setup.logs.items), default)


def log_simulator(train: LoggedData, space: ItemSpace, model: ResponseModel,
                  config: EnvConfig | None = None) -> Simulator:
    """A simulator fitted from a user's own logs: sessions start like the logged ones (user and query)."""
    config = config or EnvConfig()
    users, generator, _ = _common(train, space, config)
    inter = train.interactions
    codes, _ = pd.factorize(inter[S.REQUEST_ID])
    first_row = np.full(codes.max() + 1, len(inter), dtype=np.int64)
    np.minimum.at(first_row, codes, np.arange(len(inter)))
    sessions = session_codes(train, first_row)
    starts = first_row if sessions is None else first_row[np.unique(sessions, return_index=True)[1]]
    user = users.user_ids.get_indexer(pd.Index(inter[S.USER_ID].to_numpy()[starts])) if train.has_users \
        else np.full(len(starts), -1)
    query = space.query_index(inter[S.QUERY].to_numpy(dtype=object)[starts]) if S.QUERY in inter \
        else np.full(len(starts), -1)
    source = SessionSource(space, users, log_starts=(user.astype(np.int64), query))
    return Simulator(space, users, generator, FittedBackend(model, space), source, config, _prices(train.items),
                     model.default_profile)


@dataclass(frozen=True)
class QuickWorld:
    """Sizes of a small world for tests and smoke runs."""

    config: WorldConfig = field(default_factory=lambda: WorldConfig(seed=0, n_items=300, n_users=500,
                                                                    n_slots=20_000, n_candidates=20, slate_size=5))


def fit_world(setup: WorldSetup, fit: FitConfig | None = None, progress: bool = False) -> ResponseModel:
    """Fit the response model on a world setup's training logs."""
    return fit_response_model(setup.train, setup.space, fit, progress=progress)
