"""shopgym.checks: the one home of the generic checks; each raises the error type it is given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ope.checks import check_scalar as ope_check_scalar
from ope.errors import OPEInputError
from shopgym import checks
from shopgym.errors import ConfigError


class CustomError(Exception):
    pass


BAD_CALLS: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], str]] = [
    (checks.check_int, (2.5, "n"), {}, r"`n` must be an int, got float \(2.5\)"),
    (checks.check_int, (0, "n"), {"min_value": 1}, r"`n` must be >= 1, got 0"),
    (checks.check_float, (float("nan"), "x"), {}, r"`x` must be a finite number"),
    (checks.check_float, (2, "x"), {"max_value": 1.0}, r"`x` must be <= 1.0, got 2.0"),
    (checks.check_choice, ("c", "mode"), {"choices": ["a", "b"]}, r"`mode` must be one of \['a', 'b'\], got 'c'"),
    (checks.check_bool, ("yes", "flag"), {}, r"`flag` must be true or false, got str \('yes'\)"),
    (checks.check_scalar, (0, "alpha", float), {"min_val": 0.0, "min_inclusive": False},
     r"`alpha` must be in \(0, inf\); found 0"),
    (checks.as_array, ([[1.0]], "v"), {"ndim": 1}, r"`v` must be a 1-D array; found shape \(1, 1\)"),
    (checks.check_finite, (np.array([1.0, np.nan]), "v"), {}, r"`v` must be finite .*nan at index 1"),
    (checks.check_in_range, (np.array([0.5, 2.0]), "p", 0.0, 1.0), {}, r"`p` must be in \[0, 1\]; .*2.0 at index 1"),
    (checks.check_shape, (np.zeros(3), "v", (2,), "(one per row)"), {}, r"`v` must have shape \(2,\) \(one per row\)"),
    (checks.check_sums_to_one, (np.array([[0.5, 0.6]]), "dist"), {}, r"`dist` must be probabilities summing to 1"),
    (checks.check_int_range, (np.array([0, 3]), "a", 0, 3, "actions"), {},
     r"`a` must be integers in \[0, 3\) \(actions\)"),
    (checks.check_probabilities, (np.array([np.nan]), "p"), {}, r"`p` must not hold missing \(NaN\) values"),
]


@pytest.mark.parametrize(("check", "args", "kwargs", "match"), BAD_CALLS)
def test_default_error_is_config_error(check: Callable[..., Any], args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check(*args, **kwargs)


@pytest.mark.parametrize(("check", "args", "kwargs", "match"), BAD_CALLS)
def test_raises_the_error_it_is_given(check: Callable[..., Any], args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(CustomError, match=match):
        check(*args, **kwargs, error=CustomError)


def test_valid_values_come_back_converted() -> None:
    assert checks.check_int(np.int64(3), "n", min_value=1) == 3
    assert checks.check_float(1, "x", min_value=0.0) == 1.0
    assert checks.check_bool(np.bool_(True), "flag") is True
    assert checks.as_array([1.0, 2.0], "v", ndim=1, kind="int").dtype == np.int64


def test_ope_binds_its_own_error() -> None:
    with pytest.raises(OPEInputError, match=r"`n_actions` must be in \[1, inf\); found 0"):
        ope_check_scalar(0, "n_actions", int, min_val=1)
