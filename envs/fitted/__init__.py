r"""The user-response model fitted from logs (train split only).

Position-based click model with learned attractiveness, multi-task conversion heads and a session
continuation model:

.. math::
    P(c = 1 \mid k, u, i, q) = \theta_k\, \sigma\big(f(u, i, q) + b_i + \sqrt r\, e_u^\top P^\top i\big),
    \qquad \theta_1 = 1,

where :math:`f` is a small MLP over :math:`[\sqrt r\, \tilde u \odot \tilde i,\ \sqrt r\, \tilde q \odot \tilde i,
\ \tilde i,\ \tilde u,\ s,\ \cos(u, i),\ \cos(q, i)]` (user profile at request time, item vector, query
vector, search flag; a tilde marks a projection :math:`P` on the catalog's top ``rank`` principal
directions), :math:`b_i` a regularised per-item bias (0 for unseen items), :math:`e_u` a regularised
taste vector per logged user (0 for unknown users) and :math:`\theta_k` the examination probability of
slot ``k`` relative to the top slot.

Calibration: after the fit, a logit shift of the attractiveness and the examination :math:`\theta` are set
so that the expected clicks by position on the training rows match the logged ones, each position's
:math:`\theta` shrunk towards the pooled rate by a few pseudo-clicks (:func:`calibrate_examination`);
positions beyond the deepest logged one follow a power law :math:`\theta_k = k^{-\eta}`. With
propensities, every row is also weighted by its clipped, self-normalised inverse propensity
(``FitConfig.debias``), the clipping lowered until the weights keep half the rows' effective sample
(:func:`debias_weights`, with a warning), so that the model learns mostly from an as-if-randomised
distribution of (user, item, position) without letting a handful of rows decide it. Request context
columns enter the click logit when they improve held-out clicks (:mod:`envs.fitted.context`); bootstrap
refits measure the model's uncertainty (:mod:`envs.fitted.ensemble`).

Cart given click and purchase given cart are logistic heads on the same trunk, trained on clicked
(resp. carted) rows. Logs without cart or purchase columns (e.g. OBD: clicks only) leave those heads
untrained and the model predicts 0 for them (``has_cart`` / ``has_purchase``), so a simulator fitted on
click-only logs never invents purchases; logs with purchases but no carts treat a purchase as its own
cart. Session continuation is a logistic regression on page-level features (any click, number of
clicks, any purchase, repetition share, mean predicted attractiveness of the top 3 slots, search flag),
fitted on request sequences within sessions (``session_id``, else the same user with gaps under 30
minutes). Logs without users or sessions get the documented default: a constant continuation
probability (0 = one page per session).

Profiles used in training are time-respecting: the profile of a request pools (behaviour-weighted)
the user's engagements in *earlier* requests only, exactly as the env updates profiles online.
Purchase-only logs (no impressions) get a multinomial-logit choice model with an outside option instead
(:mod:`envs.fitted.choice`), in the same :class:`ResponseModel` container.

Saved as ``model.safetensors`` (tensors) + ``model.json`` (config); no pickle.

The package splits along three seams: :mod:`envs.fitted.config` (the options),
:mod:`envs.fitted.model` (the network, predictions and persistence) and :mod:`envs.fitted.fitting`
(from logs to a model).
"""

from envs.fitted.choice import fit_choice_model, is_purchase_only, purchase_counts
from envs.fitted.config import FitConfig
from envs.fitted.fitting import (
    SESSION_GAP_SECONDS,
    Calibration,
    calibrate_examination,
    debias_weights,
    examination_from_propensities,
    fit_response_model,
    row_probabilities,
    session_codes,
    space_user_rows,
)
from envs.fitted.fitting import (
    _request_arrays as _request_arrays,  # envs.fidelity rebuilds the request arrays of held-out logs
)
from envs.fitted.model import ChoiceTerms, ResponseModel, items_digest, page_features

__all__ = [
    "SESSION_GAP_SECONDS",
    "Calibration",
    "ChoiceTerms",
    "FitConfig",
    "ResponseModel",
    "calibrate_examination",
    "debias_weights",
    "examination_from_propensities",
    "fit_choice_model",
    "fit_response_model",
    "is_purchase_only",
    "purchase_counts",
    "items_digest",
    "page_features",
    "row_probabilities",
    "session_codes",
    "space_user_rows",
]
