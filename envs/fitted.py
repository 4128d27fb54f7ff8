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

Position bias: when the logs carry propensities, :math:`\theta` comes from the self-normalised
inverse-propensity ratio of :func:`examination_from_propensities` and is frozen; otherwise it is fitted
jointly by maximum likelihood (the fixed point of the position-based model's EM, regression EM).
Positions beyond the deepest logged one follow a power law :math:`\theta_k = k^{-\eta}` fitted to the
logged :math:`\theta`. With propensities, every row is also weighted by its clipped, self-normalised
inverse propensity (``FitConfig.debias``), so the model learns from an as-if-randomised distribution of
(user, item, position) instead of what the logging policy chose to show (without it, the fitted model
over-predicts clicks on items the logging policy shows to the right users, about 2x on the default
world).

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
Saved as ``model.safetensors`` (tensors) + ``model.json`` (config); no pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from encoders.base import l2_normalize
from encoders.profiles import BehaviourWeights
from envs.latent import (
    LatentClassConfig,
    LatentClasses,
    exposure_profiles,
    fit_latent_classes,
    logged_rankings,
    principal_directions,
    table_rows,
)
from envs.space import ItemSpace
from shopgym.checks import check_int, torch_threads
from shopgym.data import LoggedData
from shopgym.data import schema as S
from shopgym.data.io import atomic_write
from shopgym.errors import ConfigError, DataFormatError

SESSION_GAP_SECONDS = 30 * 60


@dataclass(frozen=True)
class FitConfig:
    """How the response model is fitted.

    Args:
        hidden: width of the MLP trunk.
        rank: inputs are projected on the catalog's top ``rank`` principal directions (<= d).
        steps: gradient steps (the best checkpoint on the validation tail, checked every ``steps // 10``,
            is kept).
        batch_size: rows per gradient step.
        lr: Adam learning rate.
        weight_decay: L2 on the MLP weights.
        item_bias_l2: L2 on the per-item biases.
        user_taste_l2: L2 on the per-user taste vectors.
        valid_fraction: latest share of training requests held out to pick the epoch.
        default_continuation: continuation probability when the logs have no sessions.
        debias: weight each row by its inverse logging propensity (self-normalised, clipped at
            ``max_weight``) so that the model learns from an as-if-randomised distribution of
            (user, item, position) rather than from what the logging policy chose to show.
        max_weight: clipping level of the inverse-propensity weights, relative to their mean.
        latent_classes: number of latent shopper classes of the attractiveness model (:mod:`envs.latent`),
            0 to turn it off; used only when the logs have user ids (else the MLP's click head answers).
        class_epochs: EM rounds of the latent-class model.
        logged_rankings: let the latent classes learn from the order of the pages the logging policy ranked
            itself (:func:`envs.latent.logged_rankings`); False learns from clicks and exposure only.
        shopper_deviation: rank of each shopper's own deviation from their class's logger taste, learned from
            their own ranked pages (0: none; see :mod:`envs.latent`). It helps when shoppers have many ranked
            pages each; with few, its fitted gain stays near 0.
        relevance_knots: knots of the latent classes' query-relevance curve, a piecewise-linear function of the
            query-item cosine on search pages (0: none; see :mod:`envs.latent`). A logit linear in the cosine
            predicted items far from the query 4-7x too often on the built-in worlds.
        class_restarts: EM runs of the latent-class model from different initialisations; the one with the
            highest log-likelihood of the training logs is kept (each run costs a full class fit). 3 by default:
            on the built-in world, before the query-relevance curve, one run scored MARE 14.4% in the fidelity
            report and 3 runs 12.3%, for a fit of about 220 s instead of 80 s (``docs/notes/simulator-fidelity.md``).
        seed: torch seed.
        threads: torch threads (None: torch's default).
    """

    hidden: int = 64
    rank: int = 48
    steps: int = 1500
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-5
    item_bias_l2: float = 1e-4
    user_taste_l2: float = 1e-2
    valid_fraction: float = 0.1
    default_continuation: float = 0.0
    debias: bool = True
    max_weight: float = 50.0
    latent_classes: int = 16
    class_epochs: int = 30
    logged_rankings: bool = True
    shopper_deviation: int = 32
    relevance_knots: int = 12
    class_restarts: int = 3
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.latent_classes == 1 or self.latent_classes < 0 or self.class_epochs < 1:
            raise ConfigError(f"`latent_classes` must be 0 (off) or >= 2 and `class_epochs` >= 1, got "
                              f"{self.latent_classes} and {self.class_epochs}")
        check_int(self.class_restarts, "class_restarts", min_value=1)
        check_int(self.shopper_deviation, "shopper_deviation", min_value=0)
        check_int(self.relevance_knots, "relevance_knots", min_value=0)
        if not 0.0 <= self.valid_fraction < 0.5:
            raise ConfigError(f"`valid_fraction` must be in [0, 0.5), got {self.valid_fraction}")
        if not 0.0 <= self.default_continuation < 1.0:
            raise ConfigError(f"`default_continuation` must be in [0, 1), got {self.default_continuation}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | Sequence[str] | None = None) -> FitConfig:
        """A config from a mapping (e.g. Hydra's ``fit`` group) or ``key=value`` strings.

        Values are converted and checked against the fields' types (by OmegaConf), so ``"class_restarts=3"``
        and ``{"class_restarts": "3"}`` both give 3; in strings, values are YAML (``threads=null``).

        Raises:
            ConfigError: naming the unknown key (and listing the known ones) or the value that does not fit.
        """
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        known = ", ".join(f.name for f in fields(cls))
        try:
            if options is None or isinstance(options, Mapping):
                given: Any = dict(options or {})
            else:
                for item in options:
                    key, sep, _ = str(item).partition("=")
                    if not sep or not key.strip():
                        raise ConfigError(f"fit option {item!r} is not KEY=VALUE (known keys: {known})")
                given = OmegaConf.from_dotlist([str(item) for item in options])  # values parsed as YAML
            merged = OmegaConf.merge(OmegaConf.structured(cls), given)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ConfigError(f"fit option {key!r}: {str(err).splitlines()[0]} (known keys: {known})") from None
        return cls(**OmegaConf.to_container(merged))  # type: ignore[arg-type]


class _Net(nn.Module):
    def __init__(self, dim: int, hidden: int, n_items: int, n_positions: int, rank: int, n_users: int) -> None:
        super().__init__()
        # inputs are projected on the catalog's top `rank` principal directions (a fixed buffer); exact
        # full-dimension cosines are added as features, so little is lost and the trunk stays small
        self.projection: torch.Tensor
        self.register_buffer("projection", torch.eye(dim)[:, :rank].clone())
        self.scale = float(np.sqrt(rank))  # elementwise products of unit vectors are ~1/rank: rescale
        self.trunk = nn.Sequential(nn.Linear(4 * rank + 3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.Linear(hidden, 3)  # click, cart | click, purchase | cart logits
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.item_bias.weight)
        # learned taste vector per logged user (matrix-factorisation term e_u . P^T i); row n_users = unknown
        self.user_taste = nn.Embedding(n_users + 1, rank, padding_idx=n_users)
        nn.init.zeros_(self.user_taste.weight)
        # theta_1 = 1; theta_k = sigmoid(phi_k) for k >= 2, initialised at 1/k
        init = torch.tensor([1.0 / k for k in range(2, n_positions + 1)])
        self.position_logit = nn.Parameter(torch.log(init / (1 - init + 1e-6)))

    def forward(self, u: torch.Tensor, i: torch.Tensor, q: torch.Tensor, s: torch.Tensor,
                item: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """(..., 3) logits of click-attractiveness, cart|click, purchase|cart."""
        # u, q and s may be un-expanded (B, 1, d) / (B, 1) against i (B, K, d): they broadcast
        cosines = torch.stack(torch.broadcast_tensors((u * i).sum(-1), (q * i).sum(-1)), dim=-1)
        u, i, q = u @ self.projection, i @ self.projection, q @ self.projection
        shape = i.shape
        flag = s.unsqueeze(-1).expand(shape[:-1] + (1,))
        x = torch.cat([self.scale * u * i, self.scale * q * i, i, u.expand(shape), flag, cosines], dim=-1)
        logits = self.heads(self.trunk(x))
        bias = self.item_bias(item).squeeze(-1) + (self.user_taste(user) * i).sum(-1) * self.scale
        return torch.cat([(logits[..., 0] + bias).unsqueeze(-1), logits[..., 1:]], dim=-1)

    def log_theta(self, position: torch.Tensor) -> torch.Tensor:
        """Log theta_k for 1-based positions (clipped to the deepest logged one)."""
        full = torch.cat([torch.zeros(1), torch.nn.functional.logsigmoid(self.position_logit)])
        return full[(position - 1).clamp(max=len(full) - 1)]


@dataclass
class ResponseModel:
    """A fitted user-response model (see the module docstring).

    Attributes:
        net: the torch module (eval mode).
        dim: embedding dimension.
        n_items: catalog size it was fitted for.
        items_digest: hash of the catalog's item ids (checked against the item space at use).
        examination_logged: (P,) fitted theta for logged positions 1..P.
        eta: power-law exponent for positions beyond P.
        continuation_coef: (8,) logistic coefficients, or None (then ``default_continuation``).
        default_profile: (d,) cold-start profile (population mean of warm profiles).
        report: fitting diagnostics (losses, rows, sessions).
        has_cart: whether the logs had add-to-cart (or purchase) outcomes; without them P(cart | click) is 0.
        has_purchase: whether the logs had purchases; without them P(purchase | cart) is 0.
        classes: the latent-class attractiveness model (:mod:`envs.latent`); when present it gives
            P(click | examined) and the MLP's click head is used for nothing else.
    """

    net: _Net
    dim: int
    n_items: int
    items_digest: str
    examination_logged: np.ndarray
    eta: float
    continuation_coef: np.ndarray | None
    default_continuation: float
    default_profile: np.ndarray
    hidden: int
    report: dict[str, Any] = field(default_factory=dict)
    has_cart: bool = True
    has_purchase: bool = True
    classes: LatentClasses | None = None

    # ------------------------------------------------------------------ prediction
    def examination(self, n_positions: int) -> np.ndarray:
        """(n_positions,) theta_k for k = 1..n_positions (power law beyond the logged ones)."""
        k = np.arange(1, n_positions + 1, dtype=np.float64)
        out = k ** -self.eta
        m = min(n_positions, len(self.examination_logged))
        out[:m] = self.examination_logged[:m]
        return out

    @torch.inference_mode()
    def predict(self, user: np.ndarray, item_vecs: np.ndarray, query: np.ndarray, is_search: np.ndarray,
                items: np.ndarray, user_rows: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of click-if-examined, cart | click, purchase | cart.

        Args:
            user: (B, d) profile vectors.
            item_vecs: (B, K, d) item vectors.
            query: (B, d) query vectors (zero rows when browsing).
            is_search: (B,) bool.
            items: (B, K) catalog indices.
            user_rows: (B,) rows in the training user table (-1 or None: unknown users).

        Returns:
            (B, K, 3) float64.
        """
        b, k, _ = item_vecs.shape
        u = torch.from_numpy(np.ascontiguousarray(user, dtype=np.float32)).unsqueeze(1)
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).unsqueeze(1)
        i = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32))
        s = torch.from_numpy(np.asarray(is_search, dtype=np.float32)).unsqueeze(1)
        rows = table_rows(user_rows, self.net.user_taste.num_embeddings - 1, b)
        user_t = torch.from_numpy(rows).unsqueeze(1).expand(b, k)
        logits = self.net(u, i, q, s, torch.from_numpy(np.asarray(items, dtype=np.int64)), user_t)
        probs = torch.sigmoid(logits).double().numpy()
        if self.classes is not None:
            probs[..., 0] = self.classes.attractiveness(item_vecs, query, is_search, items, user_rows, user)
        if not self.has_cart:  # the logs never showed a cart or a purchase: the heads were not trained
            probs[..., 1] = 0.0
        if not self.has_purchase:
            probs[..., 2] = 0.0
        return probs

    def continuation(self, features: np.ndarray) -> np.ndarray:
        """(B,) P(another page | page features (B, 7)); see :func:`page_features`."""
        if self.continuation_coef is None:
            return np.full(len(features), self.default_continuation)
        x = np.concatenate([np.ones((len(features), 1)), features], axis=1)
        return 1.0 / (1.0 + np.exp(-(x @ self.continuation_coef)))

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``model.json`` atomically."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        tensors["default_profile"] = torch.from_numpy(np.asarray(self.default_profile, dtype=np.float32))
        if self.classes is not None:
            tensors.update({f"classes.{k}": v.detach().contiguous() for k, v in self.classes.state_dict().items()})
        atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        config = {
            "dim": self.dim, "n_items": self.n_items, "items_digest": self.items_digest, "hidden": self.hidden,
            "rank": int(self.net.projection.shape[1]), "n_users": self.net.user_taste.num_embeddings - 1,
            "examination_logged": self.examination_logged.tolist(), "eta": self.eta,
            "continuation_coef": None if self.continuation_coef is None else self.continuation_coef.tolist(),
            "default_continuation": self.default_continuation, "report": self.report,
            "has_cart": self.has_cart, "has_purchase": self.has_purchase,
            "latent_classes": None if self.classes is None else {
                "n_classes": int(self.classes.taste.shape[0]), "n_users": self.classes.n_users,
                "deviation_rank": self.classes.deviation_rank, "relevance_knots": len(self.classes.knots)},
        }
        text = json.dumps(config, indent=2, default=float)
        atomic_write(out / "model.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> ResponseModel:
        """Load a model saved with :meth:`save`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / "model.json").read_text(encoding="utf-8"))
            tensors = load_file(str(folder / "model.safetensors"))
        except (OSError, json.JSONDecodeError, SafetensorError) as exc:
            raise ConfigError(f"{folder}: not a readable response model ({exc}); refit it") from exc
        n_positions = len(config["examination_logged"])
        net = _Net(config["dim"], config["hidden"], config["n_items"], n_positions, int(config["rank"]),
                   int(config["n_users"]))
        default = tensors.pop("default_profile").numpy()
        class_tensors = {k[len("classes."):]: tensors.pop(k) for k in list(tensors) if k.startswith("classes.")}
        classes = None
        try:
            net.load_state_dict(tensors)
            if config.get("latent_classes"):
                spec = config["latent_classes"]
                classes = LatentClasses(config["dim"], config["n_items"], int(spec["n_users"]), int(spec["n_classes"]),
                                        int(spec.get("deviation_rank", 0)), int(spec.get("relevance_knots", 0)))
                classes.load_state_dict(class_tensors)
                classes.eval()
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{folder}: model.safetensors does not match model.json ({exc}); refit it") from exc
        net.eval()
        coef = config["continuation_coef"]
        return cls(net, config["dim"], config["n_items"], config["items_digest"],
                   np.asarray(config["examination_logged"]), float(config["eta"]),
                   None if coef is None else np.asarray(coef), float(config["default_continuation"]), default,
                   int(config["hidden"]), dict(config.get("report", {})), bool(config.get("has_cart", True)),
                   bool(config.get("has_purchase", True)), classes)

    def check_space(self, space: ItemSpace) -> None:
        """Raise if ``space`` is not the catalog/embedding the model was fitted on."""
        if space.dim != self.dim or space.n_items != self.n_items or items_digest(space.item_ids) != self.items_digest:
            raise ConfigError(
                f"the item space (n_items={space.n_items}, dim={space.dim}) is not the one this model was fitted on "
                f"(n_items={self.n_items}, dim={self.dim}); use the same items table and encoder"
            )


def _epoch_ns(timestamps: pd.Series) -> np.ndarray:
    """(n,) int64 nanoseconds since the epoch of a UTC timestamp column."""
    return timestamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)


def items_digest(item_ids: pd.Index) -> str:
    """Short hash of the catalog's item ids, in order."""
    return hashlib.sha256("\n".join(map(str, item_ids)).encode()).hexdigest()[:16]


def page_features(any_click: np.ndarray, n_clicks: np.ndarray, any_purchase: np.ndarray, repeat_share: np.ndarray,
                  top_attract: np.ndarray, is_search: np.ndarray, page: np.ndarray) -> np.ndarray:
    """(B, 7) features of a page for the continuation model (all (B,) inputs)."""
    return np.stack([any_click, np.log1p(n_clicks), any_purchase, repeat_share, top_attract, is_search,
                     np.minimum(page, 20) / 10.0], axis=1).astype(np.float64)


# ---------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class _Requests:
    """Request-level arrays of a log (R requests), in time order."""

    first_row: np.ndarray  # (R,) row of the request's first slot
    row_request: np.ndarray  # (n_rows,) request index of each row
    profile: np.ndarray  # (R, d) time-respecting profiles
    query: np.ndarray  # (R, d)
    is_search: np.ndarray  # (R,)


def _request_arrays(logs: LoggedData, space: ItemSpace, item: np.ndarray,
                    weights: BehaviourWeights) -> tuple[_Requests, np.ndarray]:
    inter = logs.interactions
    codes, request_ids = pd.factorize(inter[S.REQUEST_ID], sort=False)
    n_req = len(request_ids)
    first_row = np.full(n_req, len(inter), dtype=np.int64)
    np.minimum.at(first_row, codes, np.arange(len(inter)))
    ts = _epoch_ns(inter[S.TIMESTAMP])
    req_time = ts[first_row]
    dim = space.dim
    profile_sum = np.zeros((n_req, dim))
    cold = np.ones(n_req, dtype=bool)
    if logs.has_users:
        w = weights.of(inter[S.CLICKED].to_numpy(),
                       inter[S.CARTED].to_numpy() if S.CARTED in inter else None,
                       inter[S.PURCHASED].to_numpy() if S.PURCHASED in inter else None)
        user_codes, _ = pd.factorize(inter[S.USER_ID])
        engaged = np.flatnonzero(w > 0)
        # time rank shared by engagements and requests (ties: an engagement at the request's own time is not "earlier")
        e_key = user_codes[engaged].astype(np.int64), ts[engaged]
        order = np.lexsort((e_key[1], e_key[0]))
        e_user, e_time = e_key[0][order], e_key[1][order]
        vec = space.item_vecs[item[engaged[order]]].astype(np.float64) * w[engaged[order]][:, None]
        cum = np.vstack([np.zeros((1, dim)), np.cumsum(vec, axis=0)])
        cum_w = np.r_[0.0, np.cumsum(w[engaged[order]])]
        r_user = user_codes[first_row].astype(np.int64)
        # position of (user, time) in the sorted engagements: count of engagements strictly before
        both_user = np.r_[e_user, r_user]
        both_time = np.r_[e_time, req_time]
        is_req = np.r_[np.zeros(len(e_user), bool), np.ones(n_req, bool)]
        o = np.lexsort((~is_req, both_time, both_user))  # requests sort before engagements at equal time
        before = np.cumsum(~is_req[o])  # engagements seen up to and including each position
        req_positions = np.flatnonzero(is_req[o])
        pos_in_sorted = np.empty(n_req, dtype=np.int64)
        pos_in_sorted[o[req_positions] - len(e_user)] = before[req_positions]
        user_start = np.searchsorted(e_user, r_user, side="left")
        profile_sum = cum[pos_in_sorted] - cum[user_start]
        weight = cum_w[pos_in_sorted] - cum_w[user_start]
        cold = (weight <= 0) | (np.linalg.norm(profile_sum, axis=1) < 1e-12)
    profile = l2_normalize(profile_sum).astype(np.float32)
    queries = np.zeros((n_req, dim), dtype=np.float32)
    is_search = np.zeros(n_req, dtype=bool)
    if S.QUERY in inter:
        texts = inter[S.QUERY].to_numpy(dtype=object)[first_row]
        qi = space.query_index(texts)
        is_search = qi >= 0
        queries[is_search] = space.query_vecs[qi[is_search]]
    return _Requests(first_row, codes.astype(np.int64), profile, queries, is_search), cold


def fit_response_model(train: LoggedData, space: ItemSpace, config: FitConfig | None = None, *,
                       progress: bool = False) -> ResponseModel:
    """Fit the user-response model on ``train`` (see the module docstring).

    Args:
        train: training logs (use :meth:`LoggedData.split_by_time` to hold out the later part).
        space: item/query vectors; must cover every item and query of ``train``.
        config: fitting options.
        progress: show a progress bar over epochs.

    Raises:
        DataFormatError: the logs cannot support a click model (no clicks, or every row clicked:
            positives-only logs such as UCI Online Retail have no impressions to learn from).
    """
    cfg = config or FitConfig()
    torch.manual_seed(cfg.seed)
    inter = train.interactions
    clicked = inter[S.CLICKED].to_numpy(dtype=np.float32)
    if clicked.sum() == 0 or clicked.min() == 1:
        raise DataFormatError(
            train.name, "the clicked column is constant: a click model needs shown-and-clicked and "
            "shown-and-not-clicked slots", column=S.CLICKED,
            hint="positives-only logs (e.g. UCI Online Retail) have no impressions; fit on logs of shown slots",
        )
    item = space.item_ids.get_indexer(pd.Index(inter[S.ITEM_ID]))
    if (item < 0).any():
        raise ConfigError("the item space does not cover every logged item; build it from the same items table")
    weights = BehaviourWeights()
    req, cold = _request_arrays(train, space, item, weights)
    default_profile = l2_normalize(req.profile[~cold].mean(axis=0, keepdims=True))[0] if (~cold).any() \
        else np.zeros(space.dim, dtype=np.float32)
    profile = np.where(cold[:, None], default_profile[None, :], req.profile).astype(np.float32)
    position = inter[S.POSITION].to_numpy().astype(np.int64)
    n_positions = int(position.max())
    carted = inter[S.CARTED].to_numpy(dtype=np.float32) if S.CARTED in inter else None
    purchased = inter[S.PURCHASED].to_numpy(dtype=np.float32) if S.PURCHASED in inter else None
    if carted is None and purchased is not None:
        carted = purchased.copy()  # no cart events logged: a purchase is its own cart (P(buy | cart) -> 1)

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank = min(cfg.rank, space.dim)
    if train.has_users:
        user_index = pd.Index(pd.unique(inter[S.USER_ID]))  # the same order as UserTable.from_logs
        row_user = user_index.get_indexer(pd.Index(inter[S.USER_ID])).astype(np.int64)
    else:
        user_index, row_user = pd.Index([]), np.zeros(len(inter), dtype=np.int64)
    n_users = len(user_index)
    net = _Net(space.dim, cfg.hidden, space.n_items, n_positions, rank, n_users)
    with torch.no_grad():
        net.projection.copy_(torch.from_numpy(principal_directions(space.item_vecs, rank).T))
    theta_ips = examination_from_propensities(train) if train.has_propensities else None
    if theta_ips is not None:
        # propensity-randomised logs identify position bias directly; freeze it so that the
        # logging policy's ranking (better items on top) cannot leak into theta
        phi = np.log(np.clip(theta_ips[1:], 1e-4, 1 - 1e-4) / (1 - np.clip(theta_ips[1:], 1e-4, 1 - 1e-4)))
        with torch.no_grad():
            net.position_logit.copy_(torch.from_numpy(phi.astype(np.float32)))
        net.position_logit.requires_grad_(False)
    t_profile = torch.from_numpy(profile)
    t_query = torch.from_numpy(req.query)
    t_search = torch.from_numpy(req.is_search.astype(np.float32))
    t_items = torch.from_numpy(space.item_vecs)
    rows_request = torch.from_numpy(req.row_request)
    t_item = torch.from_numpy(item.astype(np.int64))
    t_user = torch.from_numpy(row_user)
    t_pos = torch.from_numpy(position)
    t_click = torch.from_numpy(clicked)
    row_weight = np.ones(len(inter), dtype=np.float32)
    if cfg.debias and train.has_propensities:
        inv = 1.0 / inter[S.PROPENSITY].to_numpy(dtype=np.float64)
        inv = np.minimum(inv / inv.mean(), cfg.max_weight)
        row_weight = (inv / inv.mean()).astype(np.float32)
    t_weight = torch.from_numpy(row_weight)
    t_cart = torch.from_numpy(carted) if carted is not None else None
    t_buy = torch.from_numpy(purchased) if purchased is not None else None

    n_req = len(req.first_row)
    cut = int(n_req * (1 - cfg.valid_fraction)) if cfg.valid_fraction > 0 else n_req
    # requests are numbered by first appearance in time-sorted rows, so the tail is the latest
    train_rows = torch.from_numpy(np.flatnonzero(req.row_request < cut))
    valid_rows = torch.from_numpy(np.flatnonzero(req.row_request >= cut))

    def batch_loss(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = rows_request[rows]
        logits = net(t_profile[r], t_items[t_item[rows]], t_query[r], t_search[r], t_item[rows], t_user[rows])
        log_p = net.log_theta(t_pos[rows]) + torch.nn.functional.logsigmoid(logits[:, 0])
        p = log_p.exp().clamp(1e-7, 1 - 1e-7)
        y = t_click[rows]
        click_nll = -(y * log_p + (1 - y) * torch.log1p(-p))
        wt = t_weight[rows]
        loss = (wt * click_nll).mean()
        if t_cart is not None:
            mask = y > 0
            if mask.any():
                loss = loss + nn.functional.binary_cross_entropy_with_logits(
                    logits[mask, 1], t_cart[rows][mask], weight=wt[mask], reduction="sum") / len(rows)
            if t_buy is not None:
                mask = t_cart[rows] > 0
                if mask.any():
                    loss = loss + nn.functional.binary_cross_entropy_with_logits(
                        logits[mask, 2], t_buy[rows][mask], weight=wt[mask], reduction="sum") / len(rows)
        return loss, (wt * click_nll).sum() / wt.sum()

    optimiser = torch.optim.Adam([
        {"params": list(net.trunk.parameters()) + list(net.heads.parameters()), "weight_decay": cfg.weight_decay},
        {"params": [net.position_logit], "weight_decay": 0.0},
        {"params": list(net.item_bias.parameters()) + list(net.user_taste.parameters()), "weight_decay": 0.0},
    ], lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    best_state, best_valid, history = None, math.inf, []
    eval_rows = valid_rows if len(valid_rows) else train_rows
    check_every = max(cfg.steps // 10, 1)
    perm = train_rows[torch.randperm(len(train_rows), generator=generator)]
    cursor = 0
    for step in tqdm(range(1, cfg.steps + 1), desc="fitting response model", disable=not progress):
        if cursor + cfg.batch_size > len(perm):
            perm, cursor = train_rows[torch.randperm(len(train_rows), generator=generator)], 0
        rows = perm[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        net.train()
        loss, _ = batch_loss(rows)
        loss = loss + cfg.item_bias_l2 * net.item_bias.weight.pow(2).sum() \
            + cfg.user_taste_l2 * net.user_taste.weight.pow(2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % check_every == 0 or step == cfg.steps:
            net.eval()
            with torch.no_grad():
                total = sum(float(batch_loss(eval_rows[i:i + 65536])[1]) * len(eval_rows[i:i + 65536])
                            for i in range(0, len(eval_rows), 65536))
            valid_nll = total / len(eval_rows)
            history.append(valid_nll)
            if valid_nll < best_valid:
                best_valid = valid_nll
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    torch.set_num_threads(threads)

    theta = torch.cat([torch.ones(1), torch.sigmoid(net.position_logit.detach())]).numpy().astype(np.float64)
    theta_source = "propensity-weighted ratio" if theta_ips is not None else "joint maximum likelihood"
    eta = _power_law(theta)
    model = ResponseModel(net, space.dim, space.n_items, items_digest(space.item_ids), theta, eta, None,
                          cfg.default_continuation, default_profile, cfg.hidden,
                          has_cart=carted is not None, has_purchase=purchased is not None)
    class_report = None
    if cfg.latent_classes >= 2 and train.has_users:
        propensity = inter[S.PROPENSITY].to_numpy(dtype=np.float64) if train.has_propensities else None
        log_theta = np.log(np.maximum(theta[np.minimum(position, len(theta)) - 1], 1e-6))
        pages = logged_rankings(req.row_request, position, propensity) if cfg.logged_rankings else None
        with torch_threads(cfg.threads):
            model.classes, class_report = fit_latent_classes(
                space.item_vecs, item, row_user, n_users, clicked, log_theta, req.row_request, req.query,
                req.is_search, row_weight,
                exposure_profiles(space.item_vecs, item, row_user, n_users, propensity),
                LatentClassConfig(n_classes=cfg.latent_classes, epochs=cfg.class_epochs,
                                  deviation_rank=cfg.shopper_deviation, relevance_knots=cfg.relevance_knots,
                                  restarts=cfg.class_restarts,
                                  seed=cfg.seed), profile,
                pages, progress=progress)
    coef, n_sessions = _fit_continuation(train, model, req, profile, item, space)
    model.continuation_coef = coef
    model.report = {"rows": int(len(inter)), "requests": int(n_req), "valid_click_nll": history,
                    "sessions": n_sessions, "examination": theta.tolist(), "examination_source": theta_source,
                    "eta": eta, "latent_classes": class_report,
                    "fit_config": asdict(cfg)}
    return model


def examination_from_propensities(logs: LoggedData) -> np.ndarray | None:
    r"""Position bias from logged propensities: a self-normalised inverse-propensity ratio.

    Note:
        Under the position-based model, with :math:`p_{ik}` the logging probability of showing item
        :math:`i` at slot :math:`k` from the request's candidate set :math:`C`,

        .. math::
            E\Big[\sum_{\text{rows at } k} \frac{c}{p}\Big] = \theta_k \sum_{x} \sum_{i \in C_x} \alpha(x, i),
            \qquad \hat\theta_k = \frac{\sum_{\text{rows at } k} c / p}{\sum_{\text{rows at } 1} c / p},

        so the ratio is unbiased for :math:`\theta_k / \theta_1` whenever every candidate has positive
        probability at every slot (e.g. uniformly randomised or epsilon-mixed logging policies).

    Returns:
        (P,) estimates for positions 1..P, clipped to [1e-3, 1] and made non-increasing, or None when
        there are no clicks at position 1.
    """
    inter = logs.interactions
    position = inter[S.POSITION].to_numpy().astype(np.int64)
    weight = inter[S.CLICKED].to_numpy(dtype=np.float64) / inter[S.PROPENSITY].to_numpy(dtype=np.float64)
    total = np.bincount(position - 1, weights=weight)
    if total[0] <= 0:
        return None
    theta = np.clip(total / total[0], 1e-3, 1.0)
    return np.minimum.accumulate(theta)


def space_user_rows(logs: LoggedData) -> np.ndarray | None:
    """(n_rows,) user row of each interaction in the table order of ``UserTable.from_logs``, or None."""
    if not logs.has_users:
        return None
    users = logs.interactions[S.USER_ID]
    return pd.Index(pd.unique(users)).get_indexer(pd.Index(users)).astype(np.int64)


def _power_law(theta: np.ndarray) -> float:
    """Least-squares eta of theta_k = k^-eta through the logged positions (default 1.0 with one position)."""
    if len(theta) < 2:
        return 1.0
    k = np.log(np.arange(1, len(theta) + 1))
    return float(max(-(k @ np.log(np.maximum(theta, 1e-6))) / (k @ k), 0.0))


def session_codes(logs: LoggedData, first_row: np.ndarray) -> np.ndarray | None:
    """(R,) session index of each request (requests in time order), or None when sessions are unknowable."""
    inter = logs.interactions
    if S.SESSION_ID in inter:
        codes, _ = pd.factorize(inter[S.SESSION_ID].to_numpy()[first_row])
        return codes.astype(np.int64)
    if not logs.has_users:
        return None
    users = inter[S.USER_ID].to_numpy()[first_row]
    ts = _epoch_ns(inter[S.TIMESTAMP])[first_row] / 1e9
    user_codes, _ = pd.factorize(users)
    order = np.lexsort((ts, user_codes))
    new = np.ones(len(order), dtype=bool)
    same_user = user_codes[order][1:] == user_codes[order][:-1]
    new[1:] = ~same_user | (np.diff(ts[order]) > SESSION_GAP_SECONDS)
    codes = np.empty(len(order), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes


def _fit_continuation(train: LoggedData, model: ResponseModel, req: _Requests, profile: np.ndarray,
                      item: np.ndarray, space: ItemSpace) -> tuple[np.ndarray | None, int]:
    """Logistic regression of 'another request follows in the session' on page features."""
    session = session_codes(train, req.first_row)
    if session is None:
        return None, 0
    inter = train.interactions
    n_req = len(req.first_row)
    r = req.row_request
    clicked = inter[S.CLICKED].to_numpy(dtype=np.float64)
    n_clicks = np.bincount(r, weights=clicked, minlength=n_req)
    purchased = inter[S.PURCHASED].to_numpy(dtype=np.float64) if S.PURCHASED in inter else np.zeros(len(inter))
    any_purchase = np.bincount(r, weights=purchased, minlength=n_req) > 0
    row_session = session[r]
    repeated = pd.DataFrame({"s": row_session, "i": item}).duplicated(keep="first").to_numpy()
    shown = np.bincount(r, minlength=n_req)
    repeat_share = np.bincount(r, weights=repeated.astype(float), minlength=n_req) / np.maximum(shown, 1)
    top_rows = np.flatnonzero(inter[S.POSITION].to_numpy() <= 3)
    row_user = space_user_rows(train)
    probs = model.predict(profile[r[top_rows]], space.item_vecs[item[top_rows]][:, None, :],
                          req.query[r[top_rows]], req.is_search[r[top_rows]], item[top_rows][:, None],
                          None if row_user is None else row_user[top_rows])[:, 0, 0]
    top_attract = np.bincount(r[top_rows], weights=probs, minlength=n_req) / np.maximum(
        np.bincount(r[top_rows], minlength=n_req), 1)
    # page index within session and whether a later request of the same session exists
    order = np.lexsort((req.first_row, session))
    s_sorted = session[order]
    start = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    page = np.empty(n_req, dtype=np.int64)
    page[order] = np.arange(n_req) - np.repeat(start, np.diff(np.r_[start, n_req]))
    is_last = np.ones(n_req, dtype=bool)
    is_last[order[:-1]] = s_sorted[1:] != s_sorted[:-1]
    y = (~is_last).astype(np.float64)
    x = page_features(n_clicks > 0, n_clicks, any_purchase, repeat_share, top_attract, req.is_search, page)
    return _logistic_newton(x, y), int(session.max() + 1)


def _logistic_newton(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 30) -> np.ndarray:
    """L2-regularised logistic regression with an intercept, by Newton's method; returns (1 + F,) coefs."""
    xb = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w
