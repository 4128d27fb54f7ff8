"""The shared checks of :mod:`shopgym.checks`, bound to :class:`~ope.errors.OPEInputError`.

Every OPE container and estimator validates its inputs with these. Each raises
:class:`~ope.errors.OPEInputError` with a message that names the argument, states the expectation and
shows what was found (how many entries are bad and the first one, with its index). The array helpers
return a converted copy-free view where possible. The implementations live in :mod:`shopgym.checks`;
this module only fixes the error type.
"""

from __future__ import annotations

from functools import partial

from ope.errors import OPEInputError
from shopgym import checks as _checks
from shopgym.checks import ArrayKind

__all__ = [
    "ArrayKind",
    "as_array",
    "check_finite",
    "check_in_range",
    "check_int_range",
    "check_probabilities",
    "check_scalar",
    "check_shape",
    "check_sums_to_one",
]

check_scalar = partial(_checks.check_scalar, error=OPEInputError)
as_array = partial(_checks.as_array, error=OPEInputError)
check_finite = partial(_checks.check_finite, error=OPEInputError)
check_in_range = partial(_checks.check_in_range, error=OPEInputError)
check_shape = partial(_checks.check_shape, error=OPEInputError)
check_sums_to_one = partial(_checks.check_sums_to_one, error=OPEInputError)
check_int_range = partial(_checks.check_int_range, error=OPEInputError)
check_probabilities = partial(_checks.check_probabilities, error=OPEInputError)
