"""The fidelity report's reference policies: agents built from ``conf/agent`` like ``shopgym compare``'s.

Five yardsticks of the synthetic world, valued in the true world and in every simulator alike:
uniformly random, popularity (fitted on the training logs), embedding cosine, the world's own logging
policy and the oracle. Each is the agent class and default config that ``shopgym compare`` uses
(``conf/agent/<config>.yaml``); what the config cannot hold is supplied at build time: the world (and the
env's reward weights) for the two that rank with the ground truth, the training logs for the fitted one.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from agents.base import RankingPolicy
from envs.core import Simulator
from envs.synthetic import SyntheticWorld
from shopgym.data import LoggedData
from shopgym.errors import ConfigError

#: report name -> agent config (``conf/agent/<config>.yaml``), in report order
REFERENCE_POLICIES: dict[str, str] = {
    "random": "random", "popularity": "popularity", "cosine": "cosine", "logging": "logging_policy",
    "oracle-greedy": "oracle",
}


def agent_config_dir() -> Path:
    """The folder of the agent configs, ``conf/agent``."""
    import conf

    return Path(conf.__file__).resolve().parent / "agent"


def instantiate_agent(node: Any, supplies: dict[str, Any], train: LoggedData, sim: Simulator,
                      *, name: str = "agent") -> RankingPolicy:
    """Build the agent of a config node, give it what the config cannot hold, fit it if it learns from logs.

    The one place agents are built, for ``shopgym compare`` and the fidelity report alike.

    Args:
        node: the agent's config (a ``_target_`` node).
        supplies: objects the config cannot hold, by constructor argument name (e.g. ``world``, ``reward``);
            each is passed only to agents whose constructor takes it and whose config does not set it.
        train: the logs an agent with a ``fit`` method is fitted on.
        sim: gives the catalog and user indices the agent ranks with.
        name: the agent's name in messages.

    Raises:
        ConfigError: the node has no ``_target_`` or does not build a RankingPolicy.
    """
    from hydra.utils import get_class, instantiate
    from omegaconf import DictConfig

    target = node.get("_target_") if isinstance(node, DictConfig | dict) else None
    if target is None:
        raise ConfigError(f"agent {name!r} must be a mapping with a `_target_` agent class")
    wanted = inspect.signature(get_class(str(target))).parameters
    agent = instantiate(node, _convert_="all", **{k: v for k, v in supplies.items() if k in wanted and k not in node})
    if not isinstance(agent, RankingPolicy):
        raise ConfigError(f"agent {name!r} builds {type(agent).__name__}, not a RankingPolicy")
    fit = getattr(agent, "fit", None)
    if callable(fit):
        fit(train, sim.space.item_ids, sim.users.user_ids)
    return agent


def build_agent(config: str, supplies: dict[str, Any], train: LoggedData, sim: Simulator) -> RankingPolicy:
    """The agent of ``conf/agent/<config>.yaml`` at its defaults (:func:`instantiate_agent`).

    Raises:
        ConfigError: no such config, or it does not build a RankingPolicy.
    """
    from omegaconf import OmegaConf

    path = agent_config_dir() / f"{config}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no agent config {path}; the configs are {known}")
    return instantiate_agent(OmegaConf.load(path), supplies, train, sim, name=config)


def reference_policies(world: SyntheticWorld, train: LoggedData, sim: Simulator) -> dict[str, RankingPolicy]:
    """The reference policies by report name (:data:`REFERENCE_POLICIES`), built for ``world``.

    Args:
        world: the synthetic world (the logging policy's and the oracle's ground truth).
        train: the training logs (popularity is fitted on them).
        sim: a simulator of the world; its reward weights are the oracle's.
    """
    supplies = {"world": world, "reward": sim.config.reward}
    return {name: build_agent(config, supplies, train, sim) for name, config in REFERENCE_POLICIES.items()}
