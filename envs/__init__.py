"""Gymnasium environments: the synthetic shop world (ground truth) and the re-ranking simulator.

``shopgym/ReRank-v0`` is registered on import (single env and native vector env).
"""

import gymnasium as gym

ENV_ID = "shopgym/ReRank-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.rerank:ReRankEnv", vector_entry_point="envs.rerank:ReRankVectorEnv")

__all__ = ["ENV_ID"]
