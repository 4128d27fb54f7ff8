"""shopgym: a Gymnasium user-behaviour simulator for e-commerce search and recommendation.

``import shopgym`` registers the re-ranking env :data:`ENV_ID` (``"shopgym/ReRank-v0"``) with Gymnasium,
by module path only: :mod:`envs` is imported when the env is made, not here, so the foundation packages
(``shopgym.errors``, ``shopgym.checks``, ``shopgym.data``, ``shopgym.adapters``) import nothing above
them::

    import gymnasium as gym
    import shopgym

    env = gym.make("shopgym/ReRank-v0")
    envs = gym.make_vec("shopgym/ReRank-v0", num_envs=8, vectorization_mode="vector_entry_point")
"""

import gymnasium as gym

from shopgym.errors import DataFormatError, ShopgymError

__version__ = "0.1.0"

#: The Gymnasium id of :class:`envs.rerank.ReRankEnv` (and of :class:`envs.rerank.ReRankVectorEnv`).
ENV_ID = "shopgym/ReRank-v0"


def _register_envs() -> None:
    """Register :data:`ENV_ID` once (a second call, e.g. on reload, leaves the registry alone)."""
    if ENV_ID not in gym.registry:
        gym.register(
            id=ENV_ID, entry_point="envs.rerank:ReRankEnv", vector_entry_point="envs.rerank:ReRankVectorEnv"
        )


_register_envs()

__all__ = ["ENV_ID", "DataFormatError", "ShopgymError", "__version__"]
