"""The fitted response model: its network, predictions and persistence (safetensors + JSON)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit, logit
from torch import nn

from envs.fitted.context import ContextEncoding
from envs.latent import (
    LatentClasses,
    table_rows,
)
from envs.space import ItemSpace
from shopgym.data.io import atomic_write
from shopgym.errors import ConfigError
from shopgym.numeric import principal_directions


class _Net(nn.Module):
    def __init__(self, dim: int, hidden: int, n_items: int, n_positions: int, rank: int, n_users: int,
                 n_context: int = 0) -> None:
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
        # request context c (m inputs, envs.fitted.context): a main effect w . c and a taste (W c) . P^T i
        self.n_context = int(n_context)
        if self.n_context:
            self.context_main = nn.Linear(self.n_context, 1, bias=False)
            self.context_taste = nn.Linear(self.n_context, rank, bias=False)
            nn.init.zeros_(self.context_main.weight)
            nn.init.zeros_(self.context_taste.weight)

    def forward(self, u: torch.Tensor, i: torch.Tensor, q: torch.Tensor, s: torch.Tensor,
                item: torch.Tensor, user: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """(..., 3) logits of click-attractiveness, cart|click, purchase|cart (``ctx`` laid out like ``u``)."""
        # u, q and s may be un-expanded (B, 1, d) / (B, 1) against i (B, K, d): they broadcast
        cosines = torch.stack(torch.broadcast_tensors((u * i).sum(-1), (q * i).sum(-1)), dim=-1)
        u, i, q = u @ self.projection, i @ self.projection, q @ self.projection
        shape = i.shape
        flag = s.unsqueeze(-1).expand(shape[:-1] + (1,))
        x = torch.cat([self.scale * u * i, self.scale * q * i, i, u.expand(shape), flag, cosines], dim=-1)
        logits = self.heads(self.trunk(x))
        bias = self.item_bias(item).squeeze(-1) + (self.user_taste(user) * i).sum(-1) * self.scale
        if self.n_context and ctx is not None:
            bias = bias + self.context_main(ctx).squeeze(-1) + (self.context_taste(ctx) * i).sum(-1) * self.scale
        return torch.cat([(logits[..., 0] + bias).unsqueeze(-1), logits[..., 1:]], dim=-1)

    def project_on(self, item_vecs: np.ndarray) -> None:
        """Set the projection to the catalog's top ``rank`` principal directions (float64 rows around their mean)."""
        rank = int(self.projection.shape[1])
        directions = principal_directions(item_vecs.astype(np.float64), rank, centre=item_vecs.mean(axis=0))
        with torch.no_grad():
            self.projection.copy_(torch.from_numpy(directions.T.astype(np.float32)))

    def shrinkage(self, item_bias_l2: float, user_taste_l2: float) -> torch.Tensor:
        """The L2 penalty on the per-item biases and the per-shopper tastes (a scalar tensor)."""
        return item_bias_l2 * self.item_bias.weight.pow(2).sum() + user_taste_l2 * self.user_taste.weight.pow(2).sum()

    def log_theta(self, position: torch.Tensor) -> torch.Tensor:
        """Log theta_k for 1-based positions (clipped to the deepest logged one)."""
        full = torch.cat([torch.zeros(1), torch.nn.functional.logsigmoid(self.position_logit)])
        return full[(position - 1).clamp(max=len(full) - 1)]


@dataclass(frozen=True)
class ChoiceTerms:
    r"""The purchase-choice model's terms beyond the network (see :mod:`envs.fitted.choice`).

    Attributes:
        repeat_coef: :math:`\gamma`, utility per unit of :math:`\log(1 + n_{ui})` (earlier purchases of the item).
        price_coef: :math:`\beta`, utility per standard deviation of log price.
        price_score: (n_items,) float32 :math:`z_i`, the standardised log prices.
        page_conversion: the assumed conversion of a random ten-item page that set the outside option.
        continuation_after_purchase: P(another page | a purchase on this one).
        continuation_without_purchase: P(another page | no purchase on this one).
    """

    repeat_coef: float
    price_coef: float
    price_score: np.ndarray
    page_conversion: float
    continuation_after_purchase: float
    continuation_without_purchase: float

    def to_json(self) -> dict[str, float]:
        """The scalar terms (the prices are saved as a tensor)."""
        return {"repeat_coef": self.repeat_coef, "price_coef": self.price_coef,
                "page_conversion": self.page_conversion,
                "continuation_after_purchase": self.continuation_after_purchase,
                "continuation_without_purchase": self.continuation_without_purchase}


@dataclass
class ResponseModel:
    r"""A fitted user-response model (see :mod:`envs.fitted`).

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
        attract_shift: the calibration's logit shift ``a`` of P(click | examined),
            :math:`\alpha' = \sigma(\mathrm{logit}\,\alpha + a)` (see :func:`envs.fitted.calibrate_examination`).
        context: how the logs' request context columns are encoded (:mod:`envs.fitted.context`; empty: none).
        context_mean: (m,) mean encoded context of the training requests, used when a request's is unknown.
        choice: the purchase-choice terms when the model was fitted on a purchase-only log
            (:mod:`envs.fitted.choice`): then each page ends in at most one purchase, drawn by the env from the
            odds :math:`\alpha / (1 - \alpha)` against the outside option, and P(cart | click) = P(purchase | cart) = 1.
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
    attract_shift: float = 0.0
    context: ContextEncoding = field(default_factory=ContextEncoding)
    context_mean: np.ndarray | None = None
    choice: ChoiceTerms | None = None

    @property
    def single_choice(self) -> bool:
        """Whether a page ends in at most one purchase (the purchase-choice model), not in independent clicks."""
        return self.choice is not None

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
                items: np.ndarray, user_rows: np.ndarray | None = None,
                context: np.ndarray | None = None, repeat: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of click-if-examined, cart | click, purchase | cart.

        Args:
            user: (B, d) profile vectors.
            item_vecs: (B, K, d) item vectors.
            query: (B, d) query vectors (zero rows when browsing).
            is_search: (B,) bool.
            items: (B, K) catalog indices.
            user_rows: (B,) rows in the training user table (-1 or None: unknown users).
            context: (B, m) encoded request contexts (:attr:`context`; None: the training mean).
            repeat: (B, K) earlier purchases of each item by its shopper (the purchase-choice model; None: 0).

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
        ctx = None
        if self.net.n_context:
            mean = np.asarray(self.context_mean, dtype=np.float32)
            given = np.broadcast_to(mean, (b, self.net.n_context)) if context is None else context
            ctx = torch.from_numpy(np.ascontiguousarray(given, dtype=np.float32)).unsqueeze(1)
        logits = self.net(u, i, q, s, torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)), user_t, ctx)
        if self.choice is not None:
            utility = logits[..., 0].double().numpy() + self.choice.price_coef * self.choice.price_score[items]
            if repeat is not None:
                utility = utility + self.choice.repeat_coef * np.log1p(np.asarray(repeat, dtype=np.float64))
            out = np.ones((b, k, 3))
            out[..., 0] = expit(utility + self.attract_shift)
            return out
        probs = torch.sigmoid(logits).double().numpy()
        if self.classes is not None:
            probs[..., 0] = self.classes.attractiveness(item_vecs, query, is_search, items, user_rows, user)
        if self.attract_shift:
            probs[..., 0] = shift_logit(probs[..., 0], self.attract_shift)
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
        return expit(x @ self.continuation_coef)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``model.json`` atomically."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        tensors["default_profile"] = torch.from_numpy(np.asarray(self.default_profile, dtype=np.float32))
        if self.context_mean is not None:
            tensors["context_mean"] = torch.from_numpy(np.asarray(self.context_mean, dtype=np.float32))
        if self.choice is not None:
            tensors["choice.price_score"] = torch.from_numpy(np.asarray(self.choice.price_score, dtype=np.float32))
        if self.classes is not None:
            tensors.update({f"classes.{k}": v.detach().contiguous() for k, v in self.classes.state_dict().items()})
        atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        config = {
            "dim": self.dim, "n_items": self.n_items, "items_digest": self.items_digest, "hidden": self.hidden,
            "rank": int(self.net.projection.shape[1]), "n_users": self.net.user_taste.num_embeddings - 1,
            "examination_logged": self.examination_logged.tolist(), "eta": self.eta,
            "continuation_coef": None if self.continuation_coef is None else self.continuation_coef.tolist(),
            "default_continuation": self.default_continuation, "report": self.report,
            "has_cart": self.has_cart, "has_purchase": self.has_purchase, "attract_shift": self.attract_shift,
            "n_context": int(self.net.n_context), "context": self.context.to_json(),
            "choice": None if self.choice is None else self.choice.to_json(),
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
                   int(config["n_users"]), int(config.get("n_context", 0)))
        default = tensors.pop("default_profile").numpy()
        context_mean = tensors.pop("context_mean").numpy() if "context_mean" in tensors else None
        price_score = tensors.pop("choice.price_score", None)
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
        choice = None
        if config.get("choice"):
            if price_score is None:
                raise ConfigError(f"{folder}: model.json describes a purchase-choice model but model.safetensors has "
                                  "no choice.price_score; refit it")
            spec_c = config["choice"]
            choice = ChoiceTerms(float(spec_c["repeat_coef"]), float(spec_c["price_coef"]), price_score.numpy(),
                                 float(spec_c["page_conversion"]), float(spec_c["continuation_after_purchase"]),
                                 float(spec_c["continuation_without_purchase"]))
        coef = config["continuation_coef"]
        return cls(net, config["dim"], config["n_items"], config["items_digest"],
                   np.asarray(config["examination_logged"]), float(config["eta"]),
                   None if coef is None else np.asarray(coef), float(config["default_continuation"]), default,
                   int(config["hidden"]), dict(config.get("report", {})), bool(config.get("has_cart", True)),
                   bool(config.get("has_purchase", True)), classes, float(config.get("attract_shift", 0.0)),
                   ContextEncoding.from_json(config.get("context")), context_mean, choice)

    def check_space(self, space: ItemSpace) -> None:
        """Raise if ``space`` is not the catalog/embedding the model was fitted on."""
        if space.dim != self.dim or space.n_items != self.n_items or items_digest(space.item_ids) != self.items_digest:
            raise ConfigError(
                f"the item space (n_items={space.n_items}, dim={space.dim}) is not the one this model was fitted on "
                f"(n_items={self.n_items}, dim={self.dim}); use the same items table and encoder"
            )


def shift_logit(p: np.ndarray, shift: float) -> np.ndarray:
    r"""Probabilities moved by ``shift`` on the logit scale, :math:`\sigma(\mathrm{logit}\,p + a)`, elementwise."""
    return expit(logit(np.clip(p, 1e-12, 1 - 1e-12)) + shift)


def items_digest(item_ids: pd.Index) -> str:
    """Short hash of the catalog's item ids, in order."""
    return hashlib.sha256("\n".join(map(str, item_ids)).encode()).hexdigest()[:16]


def page_features(any_click: np.ndarray, n_clicks: np.ndarray, any_purchase: np.ndarray, repeat_share: np.ndarray,
                  top_attract: np.ndarray, is_search: np.ndarray, page: np.ndarray) -> np.ndarray:
    """(B, 7) features of a page for the continuation model (all (B,) inputs)."""
    return np.stack([any_click, np.log1p(n_clicks), any_purchase, repeat_share, top_attract, is_search,
                     np.minimum(page, 20) / 10.0], axis=1).astype(np.float64)
