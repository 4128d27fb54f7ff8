"""Config-argument checks shared by agents and encoders (messages name the argument, expectation and value)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral, Real
from typing import Any

import numpy as np

from shopgym.errors import ConfigError


def check_int(value: Any, name: str, *, min_value: int | None = None) -> int:
    """Return ``value`` as an int, or raise ConfigError naming ``name`` (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"`{name}` must be an int, got {type(value).__name__} ({value!r})")
    if min_value is not None and value < min_value:
        raise ConfigError(f"`{name}` must be >= {min_value}, got {value}")
    return int(value)


def check_float(
    value: Any, name: str, *, min_value: float | None = None, max_value: float | None = None,
    min_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float in the given range, or raise ConfigError naming ``name``.

    YAML writes ``1`` as an int, so ints are accepted; bools are not.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(float(value)):
        raise ConfigError(f"`{name}` must be a finite number, got {type(value).__name__} ({value!r})")
    x = float(value)
    if min_value is not None and (x < min_value or (not min_inclusive and x == min_value)):
        bound = ">=" if min_inclusive else ">"
        raise ConfigError(f"`{name}` must be {bound} {min_value}, got {x}")
    if max_value is not None and x > max_value:
        raise ConfigError(f"`{name}` must be <= {max_value}, got {x}")
    return x


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of the strings ``choices``, or raise ConfigError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads (restored afterwards); None leaves torch alone."""
    if num_threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
