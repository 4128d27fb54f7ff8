"""Errors and warnings of the OPE library.

Errors are raised for inputs that are *wrong* (an estimate computed from them would be meaningless);
warnings are issued for inputs that are *legal but suspicious* (the estimate exists, but the message
says what the problem means for it).
"""

from __future__ import annotations

from shopgym.errors import ShopgymError


class OPEInputError(ShopgymError, ValueError):
    """An OPE argument is invalid: wrong shape, dtype, range, or inconsistent with the log.

    The message names the argument, what was expected and what was found.
    """


class MissingPropensityError(OPEInputError):
    """An estimator needs the logging policy's propensities and the log has none."""


class OPEWarning(UserWarning):
    """Base class of the legal-but-suspicious conditions the OPE library reports."""


class LowEffectiveSampleSizeWarning(OPEWarning):
    """Few rounds carry the importance weights: weighted estimates have high variance."""


class LargeImportanceWeightWarning(OPEWarning):
    """A single round carries a large share of the total importance weight."""


class SupportDeficiencyWarning(OPEWarning):
    """The evaluated policy puts mass where the logging policy never acts."""


class WeightMeanWarning(OPEWarning):
    """Importance weights whose mean is far from 1: the two policies' probabilities do not match up."""


class OPEDataWarning(OPEWarning):
    """Building an OPE log from logged data dropped or altered rows (counts are in the message)."""
