"""The one home of the generic argument checks (scalars, choices, flags, arrays, probabilities).

Every ``check_*`` helper takes the exception type to raise as ``error`` (default
:class:`~shopgym.errors.ConfigError`); a package binds its own type once (``ope.checks`` binds
:class:`~ope.errors.OPEInputError`) or passes it at the call. Messages name the argument, state the
expectation and show what was found. Domain checks (texts for the encoders, feedback for the agents,
logs for OPE) live in their packages, built on these.

Two families:

* config values, converted and returned: :func:`check_int`, :func:`check_float`, :func:`check_choice`,
  :func:`check_bool` (``"`batch_size` must be >= 1, got 0"``);
* scalars and arrays of the estimators, checked in place: :func:`check_scalar` (interval notation,
  ``"`alpha` must be in (0, 1); found 1"``), :func:`as_array`, :func:`check_finite`,
  :func:`check_in_range`, :func:`check_shape`, :func:`check_sums_to_one`, :func:`check_int_range`,
  :func:`check_probabilities` (which report how many entries are bad and the first ones, with their index).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

from shopgym.errors import ConfigError

__all__ = [
    "ArrayKind",
    "as_array",
    "check_bool",
    "check_choice",
    "check_finite",
    "check_float",
    "check_in_range",
    "check_int",
    "check_int_range",
    "check_probabilities",
    "check_scalar",
    "check_shape",
    "check_sums_to_one",
]


def check_int(value: Any, name: str, *, min_value: int | None = None, error: type[Exception] = ConfigError) -> int:
    """Return ``value`` as an int, or raise ``error`` naming ``name`` (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise error(f"`{name}` must be an int, got {type(value).__name__} ({value!r})")
    if min_value is not None and value < min_value:
        raise error(f"`{name}` must be >= {min_value}, got {value}")
    return int(value)


def check_float(
    value: Any, name: str, *, min_value: float | None = None, max_value: float | None = None,
    min_inclusive: bool = True, error: type[Exception] = ConfigError,
) -> float:
    """Return ``value`` as a finite float in the given range, or raise ``error`` naming ``name``.

    YAML writes ``1`` as an int, so ints are accepted; bools are not.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(float(value)):
        raise error(f"`{name}` must be a finite number, got {type(value).__name__} ({value!r})")
    x = float(value)
    if min_value is not None and (x < min_value or (not min_inclusive and x == min_value)):
        bound = ">=" if min_inclusive else ">"
        raise error(f"`{name}` must be {bound} {min_value}, got {x}")
    if max_value is not None and x > max_value:
        raise error(f"`{name}` must be <= {max_value}, got {x}")
    return x


def check_choice(value: Any, name: str, choices: Sequence[str], *, error: type[Exception] = ConfigError) -> str:
    """Return ``value`` if it is one of the strings ``choices``, or raise ``error`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(value: Any, name: str, *, error: type[Exception] = ConfigError) -> bool:
    """Return ``value`` if it is a bool (Python or NumPy), or raise ``error`` naming ``name``."""
    if not isinstance(value, bool | np.bool_):
        raise error(f"`{name}` must be true or false, got {type(value).__name__} ({value!r})")
    return bool(value)


ArrayKind = Literal["float", "int"]
_MAX_SHOWN = 3


def _found(arr: np.ndarray, bad: np.ndarray) -> str:
    """Describe the offending entries of ``arr`` selected by the boolean mask ``bad``."""
    n_bad = int(bad.sum())
    where = np.argwhere(bad)[:_MAX_SHOWN]
    shown = ", ".join(
        f"{arr[tuple(w)].item()!r} at index {tuple(int(i) for i in w) if arr.ndim > 1 else int(w[0])}"
        for w in where
    )
    more = ", ..." if n_bad > _MAX_SHOWN else ""
    return f"found {n_bad} offending of {arr.size} entries: {shown}{more}"


def check_scalar(
    value: object,
    name: str,
    kind: type[int] | type[float] | tuple[type, ...],
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    error: type[Exception] = ConfigError,
) -> None:
    """Check a scalar hyper-parameter's type and range.

    ``kind=float`` accepts any real number (a YAML ``1`` is an int); ``kind=int`` accepts integers
    only. Booleans are rejected for both. NaN is always rejected; infinity passes only if the range
    allows it.

    Args:
        value: the value to check.
        name: the argument's name, used in the message.
        kind: ``int``, ``float`` or a tuple of them.
        min_val: lower bound, or None.
        max_val: upper bound, or None.
        min_inclusive: whether ``min_val`` itself is allowed.
        max_inclusive: whether ``max_val`` itself is allowed.
        error: the exception type to raise.

    Raises:
        error: the value has the wrong type or is out of range.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    abstract: tuple[type, ...] = tuple(Integral if k is int else Real for k in kinds)
    type_name = " or ".join(k.__name__ for k in kinds)
    if isinstance(value, bool | np.bool_) or not isinstance(value, abstract):
        raise error(f"`{name}` must be a {type_name}; found {value!r} of type {type(value).__name__}")
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        raise error(f"`{name}` must be a number; found NaN")
    low_ok = min_val is None or (number >= min_val if min_inclusive else number > min_val)
    high_ok = max_val is None or (number <= max_val if max_inclusive else number < max_val)
    if not (low_ok and high_ok):
        left = "-inf" if min_val is None else f"{min_val:g}"
        right = "inf" if max_val is None else f"{max_val:g}"
        interval = f"{'[' if min_inclusive and min_val is not None else '('}{left}, {right}" + (
            "]" if max_inclusive and max_val is not None else ")"
        )
        raise error(f"`{name}` must be in {interval}; found {value!r}")


def as_array(
    value: object, name: str, *, ndim: int | tuple[int, ...], kind: ArrayKind = "float",
    error: type[Exception] = ConfigError,
) -> np.ndarray:
    """Convert ``value`` to a NumPy array of the wanted dimensionality and kind.

    Floats: any numeric input becomes float64. Integers: integer dtypes are kept (as int64); float
    arrays holding only whole numbers are accepted and converted; booleans are rejected.

    Args:
        value: array-like input.
        name: the argument's name, used in the message.
        ndim: allowed number(s) of dimensions.
        kind: ``"float"`` or ``"int"``.
        error: the exception type to raise.

    Returns:
        The array: float64 for ``"float"``, int64 for ``"int"``.

    Raises:
        error: not array-like, wrong number of dimensions, or wrong kind.
    """
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested sequences
        raise error(f"`{name}` must be a numeric array; could not convert it ({exc})") from exc
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        expected = " or ".join(f"{d}-D" for d in allowed)
        raise error(f"`{name}` must be a {expected} array; found shape {arr.shape} ({arr.ndim}-D)")
    if kind == "int":
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64, copy=False)
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        if arr.dtype.kind == "f" and arr.size == 0:
            return arr.astype(np.int64)
        raise error(f"`{name}` must hold integers; found dtype {arr.dtype}" + (
            " with non-integral or non-finite values" if arr.dtype.kind == "f" else ""))
    if arr.dtype.kind not in "iuf":
        raise error(f"`{name}` must hold real numbers; found dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def check_finite(arr: np.ndarray, name: str, *, error: type[Exception] = ConfigError) -> None:
    """Raise if ``arr`` holds NaN or infinite values (float arrays only)."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise error(f"`{name}` must be finite (no NaN or inf); {_found(arr, bad)}")


def check_in_range(
    arr: np.ndarray,
    name: str,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    meaning: str = "",
    error: type[Exception] = ConfigError,
) -> None:
    """Raise unless every entry of ``arr`` lies in the interval between ``low`` and ``high``.

    Args:
        arr: the array to check (NaN counts as out of range).
        name: the argument's name.
        low: lower bound.
        high: upper bound.
        low_inclusive: whether ``low`` itself is allowed.
        high_inclusive: whether ``high`` itself is allowed.
        meaning: what the values are, appended to the message.
        error: the exception type to raise.
    """
    above = arr >= low if low_inclusive else arr > low
    below = arr <= high if high_inclusive else arr < high
    bad = ~(above & below)
    if bad.any():
        interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
        extra = f" ({meaning})" if meaning else ""
        raise error(f"`{name}` must be in {interval}{extra}; {_found(arr, bad)}")


def check_shape(
    arr: np.ndarray, name: str, expected: tuple[int, ...], description: str, *, error: type[Exception] = ConfigError
) -> None:
    """Raise unless ``arr.shape == expected``; ``description`` spells the expected shape in words."""
    if arr.shape != expected:
        raise error(f"`{name}` must have shape {expected} {description}; found shape {arr.shape}")


def check_sums_to_one(
    arr: np.ndarray, name: str, *, axis: int = 1, atol: float = 1e-6, error: type[Exception] = ConfigError
) -> None:
    """Raise unless ``arr`` sums to 1 along ``axis`` (within ``atol``) for every other index."""
    sums = arr.sum(axis=axis)
    bad = np.abs(sums - 1.0) > atol
    if bad.any():
        first = np.argwhere(bad)[0]
        where = tuple(int(i) for i in first) if sums.ndim > 1 else int(first[0])
        raise error(
            f"`{name}` must be probabilities summing to 1 over axis {axis} (the actions); "
            f"found {int(bad.sum())} of {sums.size} distributions that do not, e.g. sum "
            f"{float(sums[tuple(first)]):.6g} at index {where}"
        )


def check_int_range(
    arr: np.ndarray, name: str, low: int, high: int, meaning: str, *, error: type[Exception] = ConfigError
) -> None:
    """Raise unless every integer in ``arr`` is in ``[low, high)``."""
    bad = (arr < low) | (arr >= high)
    if bad.any():
        raise error(f"`{name}` must be integers in [{low}, {high}) ({meaning}); {_found(arr, bad)}")


def check_probabilities(
    arr: np.ndarray, name: str, *, allow_zero: bool = True, meaning: str = "probabilities",
    error: type[Exception] = ConfigError,
) -> None:
    """Raise unless ``arr`` is finite and in [0, 1] (or (0, 1] when ``allow_zero`` is False)."""
    if arr.dtype.kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            raise error(
                f"`{name}` must not hold missing (NaN) values ({meaning}); {_found(arr, nan)}"
            )
    check_in_range(arr, name, 0.0, 1.0, low_inclusive=allow_zero, meaning=meaning, error=error)
