"""Checks specific to the encoders (texts); the generic checks are :mod:`shopgym.checks`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from encoders.errors import EncoderInputError

__all__ = ["check_texts"]


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Validate a sequence of texts and return it as a list of str.

    Args:
        texts: a list/tuple of str, a 1-d NumPy array of str, or a pandas Series of str.
        name: the argument name used in error messages.

    Returns:
        The texts as a new list (the caller's object is not modified).

    Raises:
        EncoderInputError: ``texts`` is a single string, not a sequence, empty, or holds a non-string
            (the message gives the position and type of the first offender).
    """
    if isinstance(texts, (str, bytes)):
        raise EncoderInputError(
            f"`{name}` must be a sequence of strings, got a single {type(texts).__name__} "
            f"({texts[:40]!r}); wrap it in a list: [{name}]"
        )
    if hasattr(texts, "tolist") and callable(texts.tolist):  # numpy array or pandas Series
        array = np.asarray(texts)
        if array.ndim != 1:
            raise EncoderInputError(f"`{name}` must be 1-dimensional, got shape {array.shape}")
        out = list(texts.tolist())
    elif isinstance(texts, Sequence):
        out = list(texts)
    else:
        raise EncoderInputError(
            f"`{name}` must be a sequence of strings (list, tuple, array, Series), got {type(texts).__name__}"
        )
    if not out:
        raise EncoderInputError(f"`{name}` is empty: there is nothing to encode (got 0 texts)")
    if not all(type(t) is str for t in out):
        bad_index = next((i for i, t in enumerate(out) if not isinstance(t, str)), None)
        if bad_index is not None:
            bad = out[bad_index]
            raise EncoderInputError(
                f"`{name}[{bad_index}]` must be a str, got {type(bad).__name__} ({bad!r}); "
                "fill missing texts with '' (e.g. series.fillna('')) and convert other values with str()"
            )
        out = [str(t) for t in out]  # str subclasses (e.g. numpy.str_) become plain str
    return out
