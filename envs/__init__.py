"""Gymnasium environments: the synthetic shop world (ground truth) and the re-ranking simulator.

``shopgym/ReRank-v0`` (single env and native vector env, :mod:`envs.rerank`) is registered by
``import shopgym``, which every module of this package imports; :data:`ENV_ID` is its id.
"""

from shopgym import ENV_ID

__all__ = ["ENV_ID"]
