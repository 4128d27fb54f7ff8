r"""Neural-linear bandit: MLP features with a Bayesian linear last layer (Riquelme et al., 2018).

Note:
    An MLP :math:`\phi_\omega` maps the candidate features :math:`x` (:mod:`agents.features`) to hidden
    features; the posterior sees :math:`z = [x, \phi_\omega(x)]` (``skip=True``, the default: a wide-and-deep
    last layer that contains the linear bandit's features, so the network only has to add what they
    miss) or :math:`z = [\phi_\omega(x), 1]`. Decisions use the ridge posterior over the last layer,
    :math:`v = \theta^\top z + \beta_i`, :math:`\theta \sim N(\hat\theta, s^2 A^{-1})` (as
    :class:`~agents.linear.LinearBandit`, per-item effects :math:`\beta_i` included), with Thompson sampling
    (one draw per request) or the UCB :math:`\hat\theta^\top z + \hat\beta_i + \alpha\sqrt{z^\top A^{-1} z +
    \mathrm{Var}\,\beta_i}`.

    Every counted shown slot is stored in a replay buffer (the last ``buffer_size`` slots) with the
    position-aware weight :math:`w = m_k e_k` and reward :math:`r` (:func:`~agents.features.slot_credit`).
    Every ``train_every`` new slots the network and a linear head take ``train_steps`` Adam steps on
    minibatches of the weighted squared error of the examined value,

    .. math:: L(\omega) = \frac{\sum_j w_j\,\big(y_j - \mathrm{head}(z_j)\big)^2}{\sum_j w_j},
        \qquad y_j = (r_j - w_j \hat\beta_{i_j}) / w_j,

    then the posterior (and the item effects) are rebuilt from the whole buffer under the new features
    (one Cholesky factorisation). Between retrainings new slots update the posterior incrementally
    (Sherman-Morrison). The posterior forgets slots that leave the buffer.

    Thompson-sampling propensities: as :class:`~agents.linear.LinTSRanker` (NaN, or Monte Carlo estimates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from agents._checks import check_bool, check_choice, check_float, check_int, check_k
from agents.base import Ranking, RankingContext, deterministic_topk
from agents.linear import LinearBandit
from agents.ridge import ItemBias
from shopgym.errors import ConfigError
from shopgym.threads import torch_threads


class NeuralLinearRanker(LinearBandit):
    """Neural-linear bandit (see the module docstring).

    Args:
        hidden: hidden layer sizes of the MLP (ReLU), each >= 1; the last is the size h of phi(x).
        skip: let the posterior see the candidate features too (z = [x, phi(x)]).
        lr: Adam learning rate > 0.
        weight_decay: L2 weight decay >= 0 added to the Adam gradient.
        train_every: new counted slots between retrainings, >= 1.
        train_steps: Adam steps per retraining, >= 1.
        batch_size: minibatch size, >= 1 (training starts once the buffer holds that many slots).
        buffer_size: replay buffer capacity in slots, >= batch_size.
        exploration: "thompson" or "ucb".
        scale: posterior scale s > 0 for Thompson sampling.
        alpha: UCB width >= 0.
        estimate_propensity: Monte Carlo propensities for Thompson sampling (else NaN).
        n_propensity_samples: draws per request for the estimate, >= 1.
        num_threads: torch threads for the network (restored afterwards); None leaves torch's setting.
            The network is small: one thread is fastest, and avoids oversubscribing a busy machine.
        **kwargs: the :class:`~agents.linear.LinearBandit` arguments (reg, examination, cascade, target,
            blocks, proj_dim, update_method, item_reg, cosine_prior, seed). ``seed`` also seeds the network's
            initial weights and the minibatches; ``cosine_prior`` needs ``skip``.
    """

    name: ClassVar[str] = "neural_linear"

    def __init__(
        self, hidden: Sequence[int] = (64,), skip: bool = True, lr: float = 1e-3, weight_decay: float = 1e-5,
        train_every: int = 5000, train_steps: int = 100, batch_size: int = 256, buffer_size: int = 60_000,
        exploration: str = "thompson", scale: float = 0.05, alpha: float = 0.5, estimate_propensity: bool = False,
        n_propensity_samples: int = 64, num_threads: int | None = 1, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(hidden, str | int) or not len(hidden):
            raise ConfigError(f"`hidden` must be a non-empty list of layer sizes, got {hidden!r}")
        self.hidden = tuple(check_int(h, "hidden", min_value=1) for h in hidden)
        self.skip = check_bool(skip, "skip")
        if self.cosine_prior != 0.0 and not self.skip:
            raise ConfigError(f"`cosine_prior` ({self.cosine_prior}) needs `skip`=true (the posterior must see "
                              f"the cos features), got skip=false")
        self.lr = check_float(lr, "lr", min_value=0.0, min_inclusive=False)
        self.weight_decay = check_float(weight_decay, "weight_decay", min_value=0.0)
        self.train_every = check_int(train_every, "train_every", min_value=1)
        self.train_steps = check_int(train_steps, "train_steps", min_value=1)
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self.buffer_size = check_int(buffer_size, "buffer_size", min_value=1)
        if self.buffer_size < self.batch_size:
            raise ConfigError(f"`buffer_size` must be >= `batch_size` ({self.batch_size}), got {self.buffer_size}")
        self.exploration = check_choice(exploration, "exploration", ("thompson", "ucb"))
        self.scale = check_float(scale, "scale", min_value=0.0, min_inclusive=False)
        self.alpha = check_float(alpha, "alpha", min_value=0.0)
        self.estimate_propensity = check_bool(estimate_propensity, "estimate_propensity")
        self.n_propensity_samples = check_int(n_propensity_samples, "n_propensity_samples", min_value=1)
        self.num_threads = None if num_threads is None else check_int(num_threads, "num_threads", min_value=1)
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, 11]))
        self.body: nn.Sequential | None = None
        self.head: nn.Linear | None = None
        self._adam: list[tuple[torch.Tensor, torch.Tensor]] = []  # first and second moments per parameter
        self._adam_steps = 0
        self._buffer_x = np.zeros((0, 0), dtype=np.float32)
        self._buffer_items = np.zeros(0, dtype=np.int64)
        self._buffer_w = np.zeros(0)
        self._buffer_r = np.zeros(0)
        self._count = 0  # slots held in the buffer
        self._pos = 0  # next write position (ring)
        self._since_train = 0
        self.n_trainings = 0

    # ------------------------------------------------------------------ hooks of LinearBandit
    def _model_dim(self) -> int:
        return self.hidden[-1] + (self.n_inputs if self.skip else 1)

    def _on_built(self) -> None:
        p = self.n_inputs
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers: list[nn.Module] = []
            width = p
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.body = nn.Sequential(*layers).to(torch.float32)
            self.head = nn.Linear(self._model_dim(), 1).to(torch.float32)
        self._buffer_x = np.zeros((self.buffer_size, p), dtype=np.float32)
        self._buffer_items = np.zeros(self.buffer_size, dtype=np.int64)
        self._buffer_w = np.zeros(self.buffer_size)
        self._buffer_r = np.zeros(self.buffer_size)

    def _design(self, x: np.ndarray) -> np.ndarray:
        """(..., q) float64 posterior features: [x, phi(x)] with ``skip``, else [phi(x), 1]."""
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        with torch.no_grad(), torch_threads(self.num_threads):
            z = self._torch_design(torch.from_numpy(flat)).numpy().astype(np.float64)
        return z.reshape(x.shape[:-1] + (z.shape[1],))

    def _torch_design(self, x: torch.Tensor) -> torch.Tensor:
        assert self.body is not None
        hidden = self.body(x)
        if self.skip:
            return torch.cat([x, hidden], dim=1)
        return torch.cat([hidden, torch.ones(len(x), 1)], dim=1)

    # ------------------------------------------------------------------ deciding
    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 posterior mean (Thompson) or upper confidence bound (UCB) of each candidate."""
        if self.exploration == "ucb":
            return self._ucb_scores(ctx, self.alpha)
        return self.mean_scores(ctx)

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """Thompson sampling (one draw per request) or deterministic UCB, top-``k``."""
        k = check_k(k, ctx.n_candidates)
        if self.exploration == "ucb":
            return deterministic_topk(self.score(ctx), k)
        return self._thompson(ctx, k, rng, self.scale, self.n_propensity_samples if self.estimate_propensity else 0)

    # ------------------------------------------------------------------ learning
    def _learn(self, x: np.ndarray, items: np.ndarray, weight: np.ndarray, reward: np.ndarray) -> None:
        """Store the slots, then retrain (every ``train_every`` slots) or update the posterior."""
        if len(x) == 0:
            return
        self._push(x, items, weight, reward)
        self._since_train += len(x)
        if self._since_train >= self.train_every and self._count >= self.batch_size:
            self.train()
        else:
            super()._learn(x, items, weight, reward)

    def _push(self, x: np.ndarray, items: np.ndarray, weight: np.ndarray, reward: np.ndarray) -> None:
        cap = self.buffer_size
        x, items, weight, reward = x[-cap:], items[-cap:], weight[-cap:], reward[-cap:]
        idx = (self._pos + np.arange(len(x))) % cap
        self._buffer_x[idx], self._buffer_items[idx] = x, items
        self._buffer_w[idx], self._buffer_r[idx] = weight, reward
        self._pos = int((self._pos + len(x)) % cap)
        self._count = min(cap, self._count + len(x))

    def train(self) -> None:
        """Retrain the network on the buffer, then rebuild the posterior and item effects from it."""
        assert self.body is not None and self.head is not None
        n = self._count
        items, w, r = self._buffer_items[:n], self._buffer_w[:n], self._buffer_r[:n]
        beta = self.items.mean(items) if self.items is not None else np.zeros(n)
        x_all = torch.from_numpy(self._buffer_x[:n])
        w_all = torch.from_numpy(w.astype(np.float32))
        y_all = torch.from_numpy(((r - w * beta) / w).astype(np.float32))
        params = self._parameters()
        batches = self._rng.integers(0, n, (self.train_steps, min(self.batch_size, n)))
        with torch_threads(self.num_threads):
            for rows in batches:  # train_steps minibatch steps, each vectorised over the minibatch
                idx = torch.from_numpy(rows)
                pred = self.head(self._torch_design(x_all[idx])).squeeze(1)
                wb = w_all[idx]
                loss = (wb * (y_all[idx] - pred) ** 2).sum() / wb.sum().clamp_min(1e-12)
                self._adam_step(params, torch.autograd.grad(loss, params))
        # rebuild the posterior from the buffer under the new features (one backfitting pass)
        self.model = self._new_model()
        self.model.update_method = "cholesky"
        z = self._design(self._buffer_x[:n])
        self.model.add(z, w, r - w * beta)
        self.model.update_method = self.update_method
        if self.item_reg is not None:
            self.items = ItemBias(self.item_reg)
            self.items.add(items, w, r - w * self.model.mean(z))
        self._since_train = 0
        self.n_trainings += 1

    def _parameters(self) -> list[torch.Tensor]:
        assert self.body is not None and self.head is not None
        return [*self.body.parameters(), *self.head.parameters()]

    def _adam_step(self, params: list[torch.Tensor], grads: tuple[torch.Tensor, ...]) -> None:
        r"""One Adam step (Kingma and Ba, 2015) with L2 weight decay added to the gradient.

        Written out (a few lines) rather than ``torch.optim.Adam`` so that its moments are plain tensors
        saved with the policy.
        """
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        if not self._adam:
            self._adam = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self._adam_steps += 1
        t = self._adam_steps
        with torch.no_grad():
            for p, g, (m, v) in zip(params, grads, self._adam, strict=True):
                g = g + self.weight_decay * p
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                p.sub_(self.lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps))

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return super().config() | {
            "hidden": list(self.hidden), "skip": self.skip, "lr": self.lr, "weight_decay": self.weight_decay,
            "train_every": self.train_every, "train_steps": self.train_steps, "batch_size": self.batch_size,
            "buffer_size": self.buffer_size, "exploration": self.exploration, "scale": self.scale,
            "alpha": self.alpha, "estimate_propensity": self.estimate_propensity,
            "n_propensity_samples": self.n_propensity_samples, "num_threads": self.num_threads,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Projection, posterior, item effects, network weights, Adam moments, replay buffer and counters.

        The minibatch generator's position is not saved: a reloaded policy restarts it from ``seed``.
        """
        state = super().state_dict()
        if self.body is None or self.head is None:
            return state
        for prefix, module in (("body", self.body), ("head", self.head)):
            for key, value in module.state_dict().items():
                state[f"mlp.{prefix}.{key}"] = value.detach().numpy().copy()
        for j, (m, v) in enumerate(self._adam):
            state[f"adam.{j}.m"], state[f"adam.{j}.v"] = m.numpy().copy(), v.numpy().copy()
        return state | {
            "buffer.x": self._buffer_x, "buffer.items": self._buffer_items, "buffer.w": self._buffer_w,
            "buffer.r": self._buffer_r,
            "neural.counters": np.array([self._count, self._pos, self._since_train, self.n_trainings,
                                         self._adam_steps], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` saved."""
        super().load_state_dict(state)  # builds the network through _on_built
        if self.body is None or self.head is None or "neural.counters" not in state:
            return
        try:
            for prefix, module in (("body", self.body), ("head", self.head)):
                keys = list(module.state_dict())
                module.load_state_dict({k: torch.from_numpy(np.array(state[f"mlp.{prefix}.{k}"])) for k in keys})
            x = np.array(state["buffer.x"], dtype=np.float32)
            if x.shape != self._buffer_x.shape:
                raise ValueError(f"buffer.x has shape {x.shape}, expected {self._buffer_x.shape}")
            self._buffer_x = x
            self._buffer_items = np.array(state["buffer.items"], dtype=np.int64)
            self._buffer_w = np.array(state["buffer.w"], dtype=np.float64)
            self._buffer_r = np.array(state["buffer.r"], dtype=np.float64)
            counters = [int(v) for v in state["neural.counters"]]
            self._count, self._pos, self._since_train, self.n_trainings, self._adam_steps = counters
            n_params = len(self._parameters())
            self._adam = [(torch.from_numpy(np.array(state[f"adam.{j}.m"])),
                           torch.from_numpy(np.array(state[f"adam.{j}.v"])))
                          for j in range(n_params)] if "adam.0.m" in state else []
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"NeuralLinearRanker state does not match its config ({exc})") from exc

