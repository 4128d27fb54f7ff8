r"""Online logistic regression (SGD or AdaGrad) of the click probability, with epsilon-greedy exploration.

Note:
    Position-aware likelihood. Under the position-based model a slot ``k`` is clicked with probability
    :math:`e_k\, \sigma(w^\top x)`, so the per-slot negative log-likelihood and its gradient are

    .. math::
        \ell = -c \log(e_k \sigma) - (1 - c) \log(1 - e_k \sigma), \qquad
        \nabla_w \ell = \Big(-c\,(1-\sigma) + (1-c)\, \frac{e_k\, \sigma (1-\sigma)}{1 - e_k \sigma}\Big)\, x,

    with :math:`\sigma = \sigma(w^\top x)`. With every :math:`e_k = 1` this is ordinary logistic
    regression. A miss at a rarely examined slot (small :math:`e_k`) barely lowers the item's score:
    that is the position-aware credit. Slots after the last click are skipped with ``cascade``.

    Each ``update`` splits the batch's counted slots, in order, into minibatches of ``minibatch`` slots and
    takes one step per minibatch (``epochs`` passes) on the mean gradient plus :math:`\lambda w` (L2),
    either plain SGD :math:`w \leftarrow w - \eta g` or AdaGrad
    :math:`G \leftarrow G + g^2,\ w \leftarrow w - \eta\, g / (\sqrt{G} + 10^{-8})` (Duchi et al., 2011).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from agents._checks import (
    check_bool,
    check_choice,
    check_examination,
    check_feedback,
    check_float,
    check_int,
    check_k,
)
from agents.base import Feedback, Ranking, RankingContext, RankingPolicy
from agents.exploration import epsilon_greedy_ranking
from agents.features import BLOCKS, CandidateFeatures, by_row_chunks, slot_credit
from shopgym.errors import ConfigError

BINARY_TARGETS: tuple[str, ...] = ("click", "cart", "purchase")


class OnlineLogisticRanker(RankingPolicy):
    r"""Online logistic regression over candidate features; top-K by the logit, epsilon-mixed.

    Propensities are exact (see :func:`~agents.exploration.epsilon_greedy_ranking`).

    Args:
        lr: learning rate eta > 0.
        optimizer: "adagrad" or "sgd".
        l2: L2 penalty lambda >= 0.
        minibatch: slots per gradient step, >= 1 (a batch of B requests x K slots takes ceil(BK / minibatch)
            steps, so learning speed does not depend on how the runner batches requests).
        epochs: passes over each batch, >= 1.
        epsilon: exploration probability per request, in [0, 1].
        examination: per-slot examination probabilities in (0, 1], or None (position-unaware).
        cascade: count only the slots up to the last click of each page.
        target: binary signal to model: "click", "cart" or "purchase".
        blocks: feature blocks (see :mod:`agents.features`).
        proj_dim: random-projection dimension; None keeps the full embedding.
        seed: seeds the feature projection.
    """

    name: ClassVar[str] = "logistic"
    learns_online: ClassVar[bool] = True

    def __init__(
        self, lr: float = 1.0, optimizer: str = "adagrad", l2: float = 1e-4, minibatch: int = 32, epochs: int = 1,
        epsilon: float = 0.05, examination: Sequence[float] | None = None, cascade: bool = False,
        target: str = "click", blocks: Sequence[str] = BLOCKS, proj_dim: int | None = 64, seed: int = 0,
    ) -> None:
        self.lr = check_float(lr, "lr", min_value=0.0, min_inclusive=False)
        self.optimizer = check_choice(optimizer, "optimizer", ("adagrad", "sgd"))
        self.l2 = check_float(l2, "l2", min_value=0.0)
        self.minibatch = check_int(minibatch, "minibatch", min_value=1)
        self.epochs = check_int(epochs, "epochs", min_value=1)
        self.epsilon = check_float(epsilon, "epsilon", min_value=0.0, max_value=1.0)
        self.examination = check_examination(examination)
        self.cascade = check_bool(cascade, "cascade")
        self.target = check_choice(target, "target", BINARY_TARGETS)
        self.seed = check_int(seed, "seed", min_value=0)
        self.features = CandidateFeatures(blocks, proj_dim, seed)
        self.weights: np.ndarray | None = None
        self.grad_sq: np.ndarray | None = None

    def _x(self, ctx: RankingContext, cols: np.ndarray | None = None) -> np.ndarray:
        x = self.features(ctx, cols)
        if self.weights is None:
            self.weights = np.zeros(self.features.n_features)
            self.grad_sq = np.zeros(self.features.n_features)
        return x

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 logits w^T x of P(click | examined)."""
        def chunk(c: RankingContext, _: slice) -> np.ndarray:
            x = self._x(c)
            assert self.weights is not None
            return np.asarray(x, dtype=np.float64) @ self.weights

        return by_row_chunks(ctx, chunk)

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """Epsilon-mixed top-``k`` by logit, with exact propensities."""
        k = check_k(k, ctx.n_candidates)
        return epsilon_greedy_ranking(self.score(ctx), k, self.epsilon, rng)

    def update(self, ctx: RankingContext, ranking: Ranking, feedback: Feedback) -> None:
        """SGD/AdaGrad steps on minibatches of the position-aware log-likelihood (module docstring)."""
        check_feedback(ctx, ranking, feedback)
        credit = slot_credit(feedback, self.examination, self.cascade, self.target)
        x = self._x(ctx, np.asarray(ranking.slots, dtype=np.int64))
        assert self.weights is not None and self.grad_sq is not None
        keep = credit.mask
        xs = np.asarray(x[keep], dtype=np.float64)
        clicked = (credit.reward[keep] > 0).astype(np.float64)
        exam = credit.examination[keep]
        if len(xs) == 0:
            return
        starts = range(0, len(xs), self.minibatch)
        for start in [s for _ in range(self.epochs) for s in starts]:  # ceil(m / minibatch) steps per epoch
            rows = slice(start, start + self.minibatch)
            self._step(xs[rows], clicked[rows], exam[rows])

    def _step(self, xs: np.ndarray, clicked: np.ndarray, exam: np.ndarray) -> None:
        """One step on the mean gradient of a minibatch: features (m, p), clicks (m,), examination (m,)."""
        assert self.weights is not None and self.grad_sq is not None
        sig = expit(xs @ self.weights)
        miss = exam * sig * (1.0 - sig) / np.maximum(1.0 - exam * sig, 1e-6)
        coef = -clicked * (1.0 - sig) + (1.0 - clicked) * miss
        grad = coef @ xs / len(xs) + self.l2 * self.weights
        if self.optimizer == "adagrad":
            self.grad_sq += grad * grad
            self.weights -= self.lr * grad / (np.sqrt(self.grad_sq) + 1e-8)
        else:
            self.weights -= self.lr * grad

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return {
            "lr": self.lr, "optimizer": self.optimizer, "l2": self.l2, "minibatch": self.minibatch,
            "epochs": self.epochs,
            "epsilon": self.epsilon, "examination": None if self.examination is None else self.examination.tolist(),
            "cascade": self.cascade, "target": self.target, "blocks": list(self.features.blocks),
            "proj_dim": self.features.proj_dim, "seed": self.seed,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Projection, weights and AdaGrad accumulator (empty before the first call)."""
        state = self.features.state_dict()
        if self.weights is not None and self.grad_sq is not None:
            state |= {"logistic.weights": self.weights, "logistic.grad_sq": self.grad_sq}
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.features.load_state_dict(state)
        if "logistic.weights" in state:
            weights = np.array(state["logistic.weights"], dtype=np.float64)
            if weights.shape != (self.features.n_features,):
                raise ConfigError(f"saved logistic weights must have shape ({self.features.n_features},), "
                                  f"got {weights.shape}")
            self.weights = weights
            self.grad_sq = np.array(state["logistic.grad_sq"], dtype=np.float64)
