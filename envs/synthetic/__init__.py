"""The built-in synthetic shop world: catalog, shoppers, true response model, logging policy, oracle."""

from envs.synthetic.generate import generate_logs, logging_policy_for
from envs.synthetic.logging_policy import EpsilonGreedyLoggingPolicy, LoggedSlates
from envs.synthetic.world import (
    Catalog,
    Intent,
    Population,
    ResponseParams,
    RewardWeights,
    SyntheticWorld,
    WorldConfig,
)

__all__ = [
    "Catalog", "EpsilonGreedyLoggingPolicy", "Intent", "LoggedSlates", "Population", "ResponseParams",
    "RewardWeights", "SyntheticWorld", "WorldConfig", "generate_logs", "logging_policy_for",
]
