"""Structured config schemas (Hydra ``ConfigStore``): one set of defaults for every command.

The schemas are generated from the frozen dataclasses the library itself uses (:class:`~envs.build.SimulatorSpec`,
:class:`~envs.synthetic.WorldConfig`, :class:`~envs.core.EnvConfig`, :class:`~envs.fitted.FitConfig`), so a
default is written once, in the library, and the YAML group files hold only what differs from it. Hydra
checks every value against the schema's type when the config is composed (``steps=abc`` fails there, before
any work), and :func:`simulator_spec` turns a composed config into the :class:`~envs.build.SimulatorSpec` that
:func:`envs.build.build_simulator` builds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from omegaconf import DictConfig, OmegaConf

from envs.build import WORLD_BACKENDS, SimulatorSpec
from envs.core import EnvConfig
from envs.fitted import FitConfig
from envs.synthetic import WorldConfig
from shopgym.checks import check_choice
from shopgym.errors import ConfigError

_SCHEMAS: dict[type, type] = {}


def _plain(tp: Any) -> Any:
    """The OmegaConf-compatible form of a field type (Literal -> its base type; ``X | None`` -> Optional)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return type(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _plain(args[0]) if len(args) == 1 else Any
        return Optional[inner]  # noqa: UP045  (OmegaConf reads typing.Optional)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return schema_of(tp)
    return tp


def schema_of(cls: type) -> type:
    """A mutable dataclass with ``cls``'s fields, types (made OmegaConf-compatible) and defaults.

    Hydra cannot merge overrides into a frozen dataclass; the library's configs are frozen (they cross module
    boundaries), so the schema is their mutable mirror, generated, never written twice.
    """
    if cls in _SCHEMAS:
        return _SCHEMAS[cls]
    hints = typing.get_type_hints(cls)
    specs: list[Any] = []
    for f in dataclasses.fields(cls):
        tp = _plain(hints[f.name])
        if f.default is not MISSING:
            specs.append((f.name, tp, field(default=f.default)))
        elif f.default_factory is not MISSING:
            value = f.default_factory()
            if dataclasses.is_dataclass(value):
                mirror = schema_of(type(value))
                specs.append((f.name, tp, field(default_factory=_factory(mirror, value))))
            else:
                specs.append((f.name, tp, field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, tp))
    name = f"{cls.__name__}Schema"
    # a module attribute, so pickle finds it by reference: launchers ship Hydra's config store to their workers,
    # and pickling a generated class by value (cloudpickle < 3) emptied its dataclass fields in the sender
    schema = dataclasses.make_dataclass(name, specs)
    schema.__module__, schema.__qualname__ = __name__, name
    globals()[name] = schema
    _SCHEMAS[cls] = schema
    return schema


def _factory(mirror: type, value: Any) -> Any:
    """A default factory giving a fresh ``mirror`` instance with ``value``'s fields."""
    return lambda: mirror(**_fields(value))


def _fields(value: Any) -> dict[str, Any]:
    """Field values of a dataclass instance, nested dataclasses converted to their schema mirrors."""
    out = {}
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        out[f.name] = schema_of(type(v))(**_fields(v)) if dataclasses.is_dataclass(v) else v
    return out


_SPEC = SimulatorSpec.__dataclass_fields__


def _spec_default(name: str) -> Any:
    return _SPEC[name].default


@dataclass
class DataSchema:
    """Where the logs come from (``data`` group): ``kind`` is synthetic, folder, obd or online-retail."""

    kind: str = _spec_default("data")
    path: Optional[str] = None  # noqa: UP045


@dataclass
class RunSchema:
    """The keys every command shares: the simulator (data, world, encoder, fit, env) and the run's settings.

    ``encoder`` is a node with a ``_target_`` (the ``encoder`` group); ``agents`` maps names to agent nodes.
    """

    world: Any = field(default_factory=lambda: schema_of(WorldConfig)())
    env: Any = field(default_factory=lambda: schema_of(EnvConfig)())
    data: DataSchema = field(default_factory=DataSchema)
    fit: Any = field(default_factory=lambda: schema_of(FitConfig)())
    encoder: Any = None
    agents: dict[str, Any] = field(default_factory=dict)
    #: agents to run (None: every agent under ``agents``)
    only: Optional[list[str]] = None  # noqa: UP045
    seeds: Any = field(default_factory=lambda: [0, 1, 2])
    steps: int = 100
    batch_size: int = 64
    backend: str = _spec_default("backend")
    shoppers: str = _spec_default("shoppers")
    #: a fitted model folder (``shopgym fit --out``); None: the fit cache
    model: Optional[str] = None  # noqa: UP045
    #: built-in world only: also run every agent in the true world and report the agreement (None: whenever the
    #: backend is not already the truth)
    truth: Optional[bool] = None  # noqa: UP045
    #: fitted simulator: bootstrap refits of the response model; seed i runs in model i mod (1 + bootstrap), so
    #: the interval over seeds includes model uncertainty (None: one per seed beyond the first when the fit
    #: took under 30 s, else 0)
    bootstrap: Optional[int] = None  # noqa: UP045
    attribute_weight: float = _spec_default("attribute_weight")
    cache_dir: str = "${oc.env:SHOPGYM_CACHE,${oc.env:HOME}/.cache/shopgym}"
    test_fraction: float = _spec_default("test_fraction")
    blas_threads: Optional[int] = 1  # noqa: UP045
    #: worker processes for the runs (None: one per CPU this process may use); the numbers do not depend on it
    jobs: Optional[int] = None  # noqa: UP045
    log_every: int = 5
    progress: bool = True


# the schemas exist from import on, so a worker process unpickling a config store finds them by name
for _cls in (WorldConfig, EnvConfig, FitConfig):
    schema_of(_cls)


def register_configs() -> None:
    """Store ``run_schema`` in Hydra's ConfigStore (idempotent).

    It types the whole run config, group nodes included (``world``, ``env``, ``fit``, ``data``), so the group
    files need no schema of their own.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunSchema)


def _frozen(cls: type, node: Any) -> Any:
    """The frozen library dataclass ``cls`` from a config node (nested dataclasses too)."""
    raw = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    values: dict[str, Any] = dict(raw)  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v, tp = values[f.name], hints[f.name]
        nested = isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(v, dict)
        out[f.name] = _frozen(tp, v) if nested else v
    return cls(**out)


def backend_name(value: Any) -> str:
    """The ``backend`` option as "true", "segment" or "fitted".

    Hydra reads ``backend=true`` as YAML's boolean True, which a string field then holds as "True": accepted.

    Raises:
        ConfigError: any other value, naming the option and its choices.
    """
    if isinstance(value, bool) and not value:
        check_choice(value, "backend", WORLD_BACKENDS)  # raises: False names no backend
    text = str(value)
    return check_choice(text.lower() if text in ("True", "False") else text, "backend", WORLD_BACKENDS)


def make_encoder_from(cfg: DictConfig) -> Any:
    """The encoder of the ``encoder`` group (a ``_target_`` node), or a name string as given."""
    node = cfg.get("encoder")
    if node is None or isinstance(node, str):
        return node or _spec_default("encoder")
    from hydra.utils import instantiate

    return instantiate(node, _convert_="all")


def simulator_spec(cfg: DictConfig, *, encoder: Any = None, progress: bool | None = None) -> SimulatorSpec:
    """The :class:`~envs.build.SimulatorSpec` of a composed run config (checked: bad values raise ConfigError)."""
    try:
        return SimulatorSpec(
            data=str(cfg.data.kind), data_path=None if cfg.data.get("path") is None else str(cfg.data.path),
            world=_frozen(WorldConfig, cfg.world), encoder=make_encoder_from(cfg) if encoder is None else encoder,
            attribute_weight=float(cfg.attribute_weight), test_fraction=float(cfg.test_fraction),
            backend=backend_name(cfg.backend), shoppers=str(cfg.shoppers),
            fit=_frozen(FitConfig, cfg.fit), model=None if cfg.get("model") is None else Path(str(cfg.model)),
            env=_frozen(EnvConfig, cfg.env), cache_dir=cfg.get("cache_dir"),
            progress=bool(cfg.progress) if progress is None else progress)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


def compose_run(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The run config (``conf/compare.yaml``) with ``overrides``, as every command's defaults.

    Raises:
        ConfigError: an override that does not compose (unknown key or group option, wrong type), in one line.
    """
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="compare", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(one_line(exc)) from None


def one_line(exc: BaseException) -> str:
    """Hydra's / OmegaConf's multi-line message as one line (without its "+key" and type-dump lines)."""
    text = str(exc) + ("\n" + str(exc.__cause__) if exc.__cause__ is not None else "")
    if "Could not override 'agent'" in text or "Could not load 'agent/" in text:
        return ("agents are not chosen with `agent=`: every agent under `agents` runs; pick some with "
                "only=[name,...] (e.g. only=[linucb,random]), or add one with +agent@agents.NAME=CONFIG "
                "(the configs are the files of conf/agent/)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("To append", "full_key", "object_type",
                                                           "reference_type", "Available options"))]
    return "; ".join(dict.fromkeys(kept or lines[:1]))


def data_overrides(data: Path | str | None, source_format: str | None = None) -> list[str]:
    """The ``data`` overrides naming a dataset on a command line (None: the built-in world).

    ``source_format`` is "folder" (shopgym's format, the default), "obd" or "online-retail".
    """
    if data is None:
        return []
    kind = source_format or "folder"
    group = {"folder": "generic", "obd": "obd", "online-retail": "online_retail"}.get(kind)
    if group is None:
        raise ConfigError(f"--format must be folder, obd or online-retail, got {kind!r}")
    return [f"data={group}", f"data.path={Path(data)}"]


def seed_list(value: Any) -> list[int]:
    """The ``seeds`` option as a list: a list of non-negative ints, or a count N >= 1 meaning [0, ..., N-1].

    Raises:
        ConfigError: naming the option, what it accepts and what was given.
    """
    from omegaconf import ListConfig

    accepted = "a list of non-negative integers (seeds=[0,1,2]) or a count >= 1 (seeds=3: seeds 0, 1, 2)"
    if isinstance(value, bool):
        raise ConfigError(f"`seeds` must be {accepted}, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"`seeds` must be {accepted}, got {value}")
        return list(range(value))
    items = list(value) if isinstance(value, ListConfig | list | tuple) else None
    if not items or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in items):
        raise ConfigError(f"`seeds` must be {accepted}, got {value!r}")
    return [int(s) for s in items]


def check_run(cfg: DictConfig) -> None:
    """Check a composed run config before any heavy work: seeds, agent names and the simulator options.

    Raises:
        ConfigError: the first problem, naming the key and the accepted values.
    """
    seed_list(cfg.seeds)
    if cfg.get("jobs") is not None:
        from shopgym.app.jobs import worker_count

        worker_count(cfg.jobs, 1)
    if cfg.get("bootstrap") is not None:
        from shopgym.app.compare import bootstrap_members

        bootstrap_members(cfg.bootstrap, None, 1)
    if cfg.only is not None:
        unknown = [str(n) for n in cfg.only if str(n) not in cfg.agents]
        if unknown:
            raise ConfigError(f"`only` names unknown agents {unknown}; configured: {list(cfg.agents)}")
    simulator_spec(cfg, encoder="(checked when built)")  # data kind and path, backend, shoppers, model folder
