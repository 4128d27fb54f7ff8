"""Build simulators: from a synthetic world (true, segment or fitted backend) or from a user's own logs.

:func:`build_simulator` is the one entry every command uses: it turns a :class:`SimulatorSpec` (the built-in
world or a user's logs, an encoder, a fit or a saved model, the env options) into a :class:`BuiltSimulator`.
The defaults of :class:`SimulatorSpec` are the defaults of every command. The functions below it
(:func:`setup_world`, :func:`world_simulator`, :func:`log_simulator`) are its building blocks.
"""

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
from envs.fitted import FitConfig, ResponseModel, fit_response_model, purchase_counts, session_codes
from envs.model_store import Fingerprint, fit_cached, load_fitted
from envs.space import ItemSpace, UserTable
from envs.synthetic import SyntheticWorld, WorldConfig, generate_logs
from shopgym.checks import check_choice
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

    Names: "minilm" (the packaged BERT model, cached on disk under ``cache_dir`` if given),
    "hashing" (fast, no weights; for tests and quick runs) and "features" (items without text: their
    feature columns, :class:`~encoders.FeatureEncoder`, fitted when used).
    """
    if not isinstance(name, str):
        return name
    if name == "hashing":
        return HashingEncoder(dim=256, seed=0)
    if name == "minilm":
        from encoders.bert import BertEncoder

        return cached_encoder(BertEncoder(), cache_dir)
    if name == "features":
        from encoders import FeatureEncoder

        return FeatureEncoder()
    raise ConfigError(f"unknown encoder {name!r}; use 'minilm', 'hashing', 'features' or pass an encoder object")


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
    return users, generator, default_profile(users, space)


def default_profile(users: UserTable, space: ItemSpace, block: int = 4096) -> np.ndarray:
    """(d,) the mean unit profile of the warm users (zeros if none): the cold-start profile.

    Blocks of ``block`` users bound the (block, H, d) float64 gather of their histories' vectors.
    """
    warm_vecs = []
    for start in range(0, len(users.user_ids), block):
        state = users.profiles(np.arange(start, min(start + block, len(users.user_ids))), space.item_vecs)
        warm_vecs.append(vector(state, np.zeros(space.dim))[~state.is_cold])
    warm = np.concatenate(warm_vecs) if warm_vecs else np.zeros((0, space.dim), dtype=np.float32)
    return warm.mean(axis=0) if len(warm) else np.zeros(space.dim)


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
    """A simulator fitted from a user's own logs: sessions start like the logged ones (user, query and context).

    Each new session copies a logged session's first request, drawn uniformly: its user (their history and
    profile), its query and its context columns (encoded as the model was fitted), kept for the whole session.
    A purchase-choice model (purchase-only logs) also gets each known shopper's purchase counts in ``train``.
    """
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
    context = model.context.transform(inter.iloc[starts]) if model.context.width else None
    source = SessionSource(space, users, log_starts=(user.astype(np.int64), query), log_context=context)
    purchases = purchase_counts(train, users.user_ids, space.item_ids) if model.single_choice else None
    return Simulator(space, users, generator, FittedBackend(model, space, purchases), source, config,
                     _prices(train.items), model.default_profile)


@dataclass(frozen=True)
class QuickWorld:
    """Sizes of a small world for tests and smoke runs."""

    config: WorldConfig = field(default_factory=lambda: WorldConfig(seed=0, n_items=300, n_users=500,
                                                                    n_slots=20_000, n_candidates=20, slate_size=5))


def fit_world(setup: WorldSetup, fit: FitConfig | None = None, progress: bool = False) -> ResponseModel:
    """Fit the response model on a world setup's training logs."""
    return fit_response_model(setup.train, setup.space, fit, progress=progress)


# ---------------------------------------------------------------------- the one builder
#: where logs come from: the built-in synthetic world, a folder in shopgym's format, or a raw OBD / Online
#: Retail file read through its adapter
DATA_KINDS = ("synthetic", "folder", "obd", "online-retail")


@dataclass(frozen=True)
class SimulatorSpec:
    """Everything that decides a simulator; its defaults are the defaults of every shopgym command.

    Args:
        data: where the logs come from, one of :data:`DATA_KINDS`.
        data_path: the folder or file of ``data`` (not used for the synthetic world).
        world: the synthetic world (``data="synthetic"``).
        encoder: "minilm" (the packaged BERT model), "hashing", or an encoder object. Logs whose items have
            no text use :class:`~encoders.features.FeatureEncoder` whatever this says.
        attribute_weight: weight of the item-attribute block appended to text embeddings (0: text only). Items
            without text are embedded by their feature columns alone: no block is appended (it would repeat them).
        test_fraction: latest share of requests held out; the model is fitted on the rest.
        backend: who answers the simulated shoppers: "fitted" (the response model fitted on the training
            logs: the simulator proper, and the only choice for a user's logs), "true" (the synthetic world's
            ground truth) or "segment" (the truth known at segment level, a reference).
        shoppers: synthetic world only: whose sessions are simulated: "logged" (the shoppers of the training
            logs, at their activity: the population a simulator fitted from logs knows) or "all" (every
            shopper of the world, a quarter of whose sessions are then shoppers the logs never saw).
        fit: how the response model is fitted.
        model: a fitted model folder (``shopgym fit --out``) to use instead of fitting; refused if it was
            fitted on other data, another split or another encoder.
        env: the env's page, candidates and reward.
        cache_dir: embedding cache and fit cache (``<cache_dir>/models/<key>``); None: no caches.
        progress: progress bars.
        test_path: another log of the same kind (another period or logging policy) to check against: the
            model is then fitted on the whole of ``data_path`` and ``test`` is that log (``test_fraction`` is
            not used).
    """

    data: str = "synthetic"
    data_path: str | None = None
    world: WorldConfig = field(default_factory=WorldConfig)
    encoder: str | TextEncoder | ItemEncoder = "minilm"
    attribute_weight: float = 1.0
    test_fraction: float = 0.2
    backend: str = "fitted"
    shoppers: str = "logged"
    fit: FitConfig = field(default_factory=FitConfig)
    model: str | Path | None = None
    env: EnvConfig = field(default_factory=EnvConfig)
    cache_dir: str | Path | None = None
    progress: bool = False
    test_path: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.data, "data.kind", DATA_KINDS)
        check_choice(self.backend, "backend", WORLD_BACKENDS)
        check_shoppers(self.shoppers)
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ConfigError(f"`test_fraction` must be in (0, 1), got {self.test_fraction}")
        if self.data != "synthetic":
            if self.backend != "fitted":
                raise ConfigError(f"backend={self.backend!r} needs the built-in world's ground truth; a user's "
                                  f"logs (data.kind={self.data!r}) are simulated by the fitted model: backend=fitted")
            if not self.data_path:
                raise ConfigError(f"data.kind={self.data!r} needs data.path (the folder or file of the logs)")
            if not Path(self.data_path).exists():
                raise ConfigError(f"data.path={str(self.data_path)!r} does not exist")
        if self.test_path is not None:
            if self.data == "synthetic":
                raise ConfigError("--test (another log to check against) needs a DATA log of your own, not the "
                                  "built-in world")
            if not Path(self.test_path).exists():
                raise ConfigError(f"--test {str(self.test_path)!r} does not exist")
        if self.model is not None and not Path(self.model).is_dir():
            raise ConfigError(f"model={str(self.model)!r} is not a folder; make one with "
                              "`shopgym fit DATA --out MODEL_DIR`")


@dataclass(frozen=True)
class SimulatorInputs:
    """The logs, their split and the item space of a :class:`SimulatorSpec` (everything but the model).

    Attributes:
        logs: all logs; train / test: their earlier and later part.
        space: item and query vectors.
        env: the env config, capped to the logs (slate size <= deepest logged position, candidates <= items).
        setup: the synthetic world's setup (None for a user's logs).
        encoder_identity: the identity of the encoder the space was built with.
        attribute_weight: the weight of the attribute block the space was built with.
    """

    logs: LoggedData
    train: LoggedData
    test: LoggedData
    space: ItemSpace
    env: EnvConfig
    setup: WorldSetup | None
    encoder_identity: str
    attribute_weight: float

    @property
    def world(self) -> SyntheticWorld | None:
        """The synthetic world (ground truth), None for a user's logs."""
        return None if self.setup is None else self.setup.world


def load_logs(kind: str, path: str | Path) -> LoggedData:
    """A user's logs: a folder in shopgym's format, or a raw OBD / Online Retail file through its adapter."""
    from shopgym.adapters import convert

    check_choice(kind, "data.kind", DATA_KINDS[1:])
    if kind == "folder":
        return LoggedData.load(Path(path))
    return convert(kind, Path(path))


def cached_encoder(encoder: TextEncoder | ItemEncoder, cache_dir: str | Path | None) -> TextEncoder | ItemEncoder:
    """``encoder`` behind the on-disk embedding cache under ``cache_dir`` when it is BERT (slow); else as is."""
    from encoders.bert import BertEncoder
    from encoders.cache import CachedEncoder

    return CachedEncoder(encoder, cache_dir) if cache_dir is not None and isinstance(encoder, BertEncoder) else encoder


def simulator_inputs(spec: SimulatorSpec) -> SimulatorInputs:
    """Read or generate the logs, split them by time and build the item space."""
    encoder = cached_encoder(make_encoder(spec.encoder, spec.cache_dir), spec.cache_dir)
    if spec.data == "synthetic":
        setup = setup_world(spec.world, encoder=encoder, attribute_weight=spec.attribute_weight,  # type: ignore[arg-type]
                            test_fraction=spec.test_fraction, cache_dir=spec.cache_dir, progress=spec.progress)
        return SimulatorInputs(setup.logs, setup.train, setup.test, setup.space, spec.env, setup,
                               str(encoder.identity), float(spec.attribute_weight))
    assert spec.data_path is not None
    logs = load_logs(spec.data, spec.data_path)
    if spec.test_path is not None:  # fitted on the whole log, checked against another one
        train, test = logs, load_logs(spec.data, spec.test_path)
    else:
        train, test = logs.split_by_time(spec.test_fraction)
    attribute_weight = float(spec.attribute_weight)
    if not bool((logs.items[S.TEXT].str.len() > 0).any()):
        from encoders.features import FeatureEncoder

        encoder = FeatureEncoder()  # no titles to embed: the items' feature columns are the item vectors,
        attribute_weight = 0.0  # and an attribute block would only repeat them
    queries = logs.interactions[S.QUERY].unique().tolist() if S.QUERY in logs.interactions else []
    space = ItemSpace.build(logs.items, encoder, queries, attribute_weight=attribute_weight,
                            show_progress=spec.progress)
    deepest = int(logs.interactions[S.POSITION].max())
    env = spec.env
    n_candidates = min(env.n_candidates, space.n_items)
    env = EnvConfig(**{**env.__dict__, "slate_size": min(env.slate_size, deepest, n_candidates),
                       "n_candidates": n_candidates})
    return SimulatorInputs(logs, train, test, space, env, None, str(encoder.identity), attribute_weight)


def fingerprint_of(inputs: SimulatorInputs, spec: SimulatorSpec) -> Fingerprint:
    """The fingerprint of fitting ``spec.fit`` on ``inputs`` (see :mod:`envs.model_store`)."""
    return Fingerprint.of(inputs.train, inputs.space, test_fraction=spec.test_fraction,
                          encoder_identity=inputs.encoder_identity, attribute_weight=inputs.attribute_weight,
                          fit=spec.fit, split={"by": "none"} if spec.test_path is not None else None)


def response_model(inputs: SimulatorInputs, spec: SimulatorSpec) -> tuple[ResponseModel, Path | None, Fingerprint]:
    """The fitted response model of ``spec``: the saved ``spec.model``, else the fit cache, else a new fit.

    Returns:
        The model, the folder it is saved in (None when nothing is cached) and its fingerprint.
    """
    fingerprint = fingerprint_of(inputs, spec)
    if spec.model is not None:
        model_dir = Path(spec.model)
        return load_fitted(model_dir, fingerprint, inputs.space), model_dir, Fingerprint.read(model_dir)
    model, folder = fit_cached(inputs.train, inputs.space, spec.fit, fingerprint, spec.cache_dir,
                               progress=spec.progress)
    return model, folder, fingerprint


@dataclass(frozen=True)
class BuiltSimulator:
    """A simulator and what it was built from.

    Attributes:
        sim: the simulator (backend ``spec.backend``).
        inputs: the logs, split and item space.
        model: the fitted response model (None for the true and segment backends).
        model_dir: the folder the model is saved in (the ``model`` given, or its fit-cache entry).
        spec: the spec it was built from.
    """

    sim: Simulator
    inputs: SimulatorInputs
    model: ResponseModel | None
    model_dir: Path | None
    spec: SimulatorSpec

    def with_backend(self, backend: str, model: ResponseModel | None = None) -> Simulator:
        """The same world, env and shoppers answered by another backend ("true", "segment" or "fitted").

        ``model`` answers a "fitted" backend instead of the built model (e.g. a refit with another seed).

        Raises:
            ConfigError: not the synthetic world, or "fitted" without a fitted model.
        """
        if self.inputs.setup is None:
            raise ConfigError("only the built-in synthetic world has a true backend to compare with")
        check_choice(backend, "backend", WORLD_BACKENDS)
        return world_simulator(self.inputs.setup, self.inputs.env, backend=backend,  # type: ignore[arg-type]
                               model=model or self.model, shoppers=self.spec.shoppers)  # type: ignore[arg-type]


def bootstrap_models(inputs: SimulatorInputs, spec: SimulatorSpec, count: int) -> list[ResponseModel]:
    """Bootstrap refits ``1..count`` of ``spec``'s model on ``inputs``, cached under its fingerprint.

    See :mod:`envs.fitted.ensemble`; the cache is ``spec.cache_dir`` (None: nothing cached).
    """
    from envs.fitted.ensemble import fit_members

    return fit_members(inputs.train, inputs.space, spec.fit, count, fingerprint=fingerprint_of(inputs, spec),
                       cache_dir=spec.cache_dir, progress=spec.progress)


def simulator_for_model(built: BuiltSimulator, model: ResponseModel) -> Simulator:
    """The simulator of ``built`` with ``model`` answering (e.g. a bootstrap refit), for the world or for logs."""
    inputs = built.inputs
    if inputs.setup is not None:
        return built.with_backend("fitted", model)
    return log_simulator(inputs.train, inputs.space, model, inputs.env)


def build_simulator(spec: SimulatorSpec) -> BuiltSimulator:
    """The simulator ``spec`` describes: logs -> split -> item space -> response model -> :class:`Simulator`.

    The response model is fitted only for the fitted backend, and at most once per data, split, encoder and
    fit config: a saved ``spec.model`` is used as is (after checking its fingerprint), else the fit cache
    under ``spec.cache_dir`` answers, else the model is fitted and cached.
    """
    inputs = simulator_inputs(spec)
    model, model_dir = None, None
    if spec.backend == "fitted":
        model, model_dir, _ = response_model(inputs, spec)
    if inputs.setup is not None:
        sim = world_simulator(inputs.setup, inputs.env, backend=spec.backend,  # type: ignore[arg-type]
                              model=model, shoppers=spec.shoppers)  # type: ignore[arg-type]
    else:
        assert model is not None
        sim = log_simulator(inputs.train, inputs.space, model, inputs.env)
    return BuiltSimulator(sim, inputs, model, model_dir, spec)
