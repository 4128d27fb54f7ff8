"""Errors and warnings raised by the encoders.

All errors derive from :class:`~shopgym.errors.ShopgymError`, so the CLI prints their message instead
of a traceback. Each message names the argument (or file), what was expected and what was found.
"""

from __future__ import annotations

from shopgym.errors import ConfigError, ShopgymError


class ModelFolderError(ConfigError):
    """A model folder is missing, is not a folder, or does not hold a loadable Hugging Face model."""


class EncoderInputError(ShopgymError, ValueError):
    """The texts or items given to an encoder are unusable (empty input, a non-string text, ...)."""


class CacheError(ShopgymError):
    """The embedding cache disagrees with the encoder (e.g. a cached dimension differs from the model's)."""


class CacheWarning(UserWarning):
    """A cache file was found truncated or corrupted; it was removed and its texts are re-encoded."""
