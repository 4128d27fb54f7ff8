r"""Linear contextual bandits over candidate features: epsilon-greedy, LinUCB and linear Thompson sampling.

All three share one linear model of the examined value of a candidate, :math:`v(x) = \theta^\top x`,
fitted by weighted ridge regression (:class:`~agents.ridge.RidgeModel`) on the features of
:class:`~agents.features.CandidateFeatures`. They differ only in how they turn it into a ranking:

* :class:`EpsilonGreedyRanker`: top-K by :math:`\hat\theta^\top x`, or with probability
  :math:`\epsilon` per request a uniformly random ranking (exact propensities);
* :class:`LinUCBRanker`: top-K by :math:`\hat\theta^\top x + \alpha \sqrt{x^\top A^{-1} x}`
  (Li et al., 2010, with one shared model as in their hybrid variant; deterministic, propensity 1);
* :class:`LinTSRanker`: per request one draw :math:`\tilde\theta \sim N(\hat\theta, s^2 A^{-1})`,
  top-K by :math:`\tilde\theta^\top x` (Agrawal and Goyal, 2013). Its propensities have no closed form:
  NaN by default, or Monte Carlo estimates with ``estimate_propensity=True``.

Slates are filled from per-candidate scores (top-K), which is optimal for a position-based click model
with examination decreasing down the page. Position-aware credit: every shown slot is one observation
with weight :math:`m_k e_k` and reward :math:`m_k r_k` (:func:`~agents.features.slot_credit`), so that
:math:`\hat\theta^\top x` estimates the value of an *examined* item, not of an item at its position.

On top of the shared model: per-item effects :math:`\beta_i` (:class:`~agents.ridge.ItemBias`, the item
part of a hybrid model) and, after an optional :meth:`LinearBandit.fit` on logs, collaborative scores
(ALS, item-kNN) as extra feature columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from agents._checks import (
    check_bool,
    check_choice,
    check_examination,
    check_feedback,
    check_float,
    check_int,
    check_k,
)
from agents.base import Feedback, Ranking, RankingContext, RankingPolicy, deterministic_topk
from agents.baselines import LogFittedPolicy
from agents.cf import ALSPolicy, ItemKNNPolicy
from agents.exploration import epsilon_greedy_ranking, monte_carlo_propensity, topk_of_samples
from agents.features import BLOCKS, TARGETS, CandidateFeatures, Target, by_row_chunks, slot_credit
from agents.ridge import UPDATE_METHODS, ItemBias, RidgeModel, UpdateMethod
from shopgym.data import LoggedData
from shopgym.errors import ConfigError, DataFormatError

#: collaborative scores a linear bandit can fit on logs and use as features
LOG_FEATURES: tuple[str, ...] = ("als", "item_knn")


def thompson_ranking(
    features: Callable[[RankingContext], np.ndarray], ctx: RankingContext, model: RidgeModel, k: int,
    rng: np.random.Generator, scale: float, n_propensity_samples: int = 0,
    item_mean: np.ndarray | None = None, item_sd: np.ndarray | None = None,
) -> Ranking:
    r"""One posterior draw per request, top-``k`` of its scores; propensities NaN or Monte Carlo estimates.

    The draws are taken for the whole batch first (the generator's stream does not depend on the chunking);
    features and scores are then computed :data:`~agents.features.ROW_CHUNK` requests at a time.

    Args:
        features: the (b, N, p) features of a context's candidates.
        ctx: the batch of B requests.
        model: the ridge posterior :math:`N(\hat\theta, s^2 A^{-1})`.
        k: slots per request.
        rng: draws the posterior samples.
        scale: posterior scale s > 0.
        n_propensity_samples: further draws per request to estimate the propensities; 0 returns NaN.
        item_mean: (B, N) float64 posterior means of per-item effects added to the scores, or None.
        item_sd: (B, N) float64 their posterior standard deviations (independent draws, also scaled by s).

    Returns:
        The ranking (propensities NaN when ``n_propensity_samples`` is 0).
    """
    b, n = ctx.batch_size, ctx.n_candidates
    mean = np.zeros((b, n)) if item_mean is None else item_mean
    sd = np.zeros((b, n)) if item_sd is None else item_sd

    s = max(int(n_propensity_samples), 0)
    # every draw first, in the order the scores use them (the stream does not depend on the chunking)
    theta = model.sample_theta(rng, b, scale).astype(np.float32)  # (B, p)
    noise = None if item_sd is None else rng.standard_normal((b, n))
    thetas = None if s == 0 else model.sample_theta(rng, b * s, scale).reshape(b, s, -1).astype(np.float32)
    sample_noise = None if s == 0 or item_sd is None else rng.standard_normal((b, s, n))

    def chunk(c: RankingContext, rows: slice) -> np.ndarray:
        """(b, 1 + S, N) the chunk's scores under its draw, then under its S propensity draws."""
        x32 = np.asarray(features(c), dtype=np.float32)  # sampled scores in float32: draws differ far more
        own = np.matmul(x32, theta[rows][:, :, None])[..., 0][:, None, :]
        if thetas is None:
            return own
        return np.concatenate([own, np.matmul(x32, thetas[rows].transpose(0, 2, 1)).transpose(0, 2, 1)], axis=1)

    all_scores = by_row_chunks(ctx, chunk)
    scores = all_scores[:, 0] + mean
    if noise is not None:
        scores = scores + scale * sd * noise
    slots = deterministic_topk(scores, k).slots
    if thetas is None:
        return Ranking(slots, np.full((b, k), np.nan), np.full(b, np.nan))
    sample_scores = all_scores[:, 1:] + mean[:, None, :]  # (B, S, N)
    if sample_noise is not None:
        sample_scores = sample_scores + scale * sd[:, None, :] * sample_noise
    sampled = topk_of_samples(sample_scores, k)
    propensity, slate = monte_carlo_propensity(slots, sampled)
    return Ranking(slots, propensity, slate)


class LinearBandit(RankingPolicy):
    """Shared machinery of the linear bandits: features, ridge model, position-aware updates, persistence.

    Args:
        reg: ridge penalty lambda > 0.
        examination: per-slot examination probabilities e_1..e_K in (0, 1] (the env's estimates), or None
            for position-unaware credit (every e_k = 1).
        cascade: count only the slots up to the last click of each page.
        target: what to learn: "reward" (the env's per-slot reward), "click", "cart" or "purchase".
        blocks: feature blocks (see :mod:`agents.features`).
        proj_dim: random-projection dimension of the embedding blocks; None keeps the full embedding.
        update_method: "auto", "sherman_morrison" or "cholesky" (see :mod:`agents.ridge`).
        item_reg: prior precision of per-item effects (:class:`~agents.ridge.ItemBias`, learned online on
            top of the shared model), > 0; None turns them off.
        cosine_prior: prior mean of the weights of the ``cos`` features u.v and q.v (the ridge shrinks
            towards it instead of 0): with a value > 0 the untrained policy ranks like the cosine baseline.
        log_features: collaborative scores fitted on logs by :meth:`fit` and appended to the features, one
            column each: "als" (:class:`~agents.cf.ALSPolicy` score x_u.y_i) and/or "item_knn"
            (:class:`~agents.cf.ItemKNNPolicy` score divided by the number of history items). Before
            :meth:`fit`, or when a model cannot be fitted (e.g. ALS on logs without user ids), its column is 0.
        seed: seeds the feature projection (and the ALS initialisation).

    The logs give the bandit what the embeddings cannot: who-bought-what-with-what. With ``log_features``
    a linear bandit starts at least as well informed as the CF baselines and learns online how much to
    trust each signal next to the embedding features.
    """

    learns_online: ClassVar[bool] = True

    def __init__(
        self, *, reg: float = 1.0, examination: Sequence[float] | None = None, cascade: bool = False,
        target: Target = "reward", blocks: Sequence[str] = BLOCKS, proj_dim: int | None = 64,
        update_method: UpdateMethod = "auto", item_reg: float | None = 20.0, cosine_prior: float = 0.0,
        log_features: Sequence[str] = ("als", "item_knn"), seed: int = 0,
    ) -> None:
        self.reg = check_float(reg, "reg", min_value=0.0, min_inclusive=False)
        self.examination = check_examination(examination)
        self.cascade = check_bool(cascade, "cascade")
        self.target = check_choice(target, "target", TARGETS)
        self.update_method = check_choice(update_method, "update_method", UPDATE_METHODS)
        self.seed = check_int(seed, "seed", min_value=0)
        self.item_reg = None if item_reg is None else check_float(item_reg, "item_reg", min_value=0.0,
                                                                  min_inclusive=False)
        self.cosine_prior = check_float(cosine_prior, "cosine_prior")
        self.features = CandidateFeatures(blocks, proj_dim, seed)
        if self.cosine_prior != 0.0 and "cos" not in self.features.blocks:
            raise ConfigError(f"`cosine_prior` ({self.cosine_prior}) needs the 'cos' block in `blocks`, "
                              f"got {list(self.features.blocks)}")
        if isinstance(log_features, str):
            raise ConfigError(f"`log_features` must be a list of names from {list(LOG_FEATURES)}, got {log_features!r}")
        self.log_features = tuple(check_choice(name, "log_features", LOG_FEATURES) for name in log_features)
        if len(set(self.log_features)) != len(self.log_features):
            raise ConfigError(f"`log_features` must not repeat a name, got {list(self.log_features)}")
        self.log_models: dict[str, LogFittedPolicy] = {
            name: ALSPolicy(cosine_weight=0.0, seed=self.seed) if name == "als" else ItemKNNPolicy(cosine_weight=0.0)
            for name in self.log_features
        }
        self.model: RidgeModel | None = None
        self.items: ItemBias | None = None if self.item_reg is None else ItemBias(self.item_reg)

    # ------------------------------------------------------------------ fitting on logs
    def fit(self, logs: LoggedData, item_index: pd.Index, user_index: pd.Index | None = None) -> LinearBandit:
        """Fit the ``log_features`` models on logged data (optional; see the class docstring).

        A model that cannot be fitted on these logs (ALS without user ids) is skipped with a warning.

        Returns:
            self.
        """
        for name, model in self.log_models.items():
            try:
                model.fit(logs, item_index, user_index)
            except DataFormatError as exc:
                warnings.warn(f"{type(self).__name__}: log feature {name!r} left at 0: {exc}", stacklevel=2)
        return self

    def _log_columns(self, ctx: RankingContext, cols: np.ndarray | None) -> np.ndarray:
        """(B, M, n_log) float32 the fitted collaborative scores (0 for unfitted models)."""
        out = np.zeros(ctx.candidates.shape + (len(self.log_features),), dtype=np.float32)
        for j, name in enumerate(self.log_features):
            model = self.log_models[name]
            if not model.is_fitted:
                continue
            if isinstance(model, ItemKNNPolicy):
                n_hist = np.maximum((ctx.history >= 0).sum(axis=1), 1)[:, None]
                out[..., j] = model.cf_scores(ctx) / n_hist
            else:
                assert isinstance(model, ALSPolicy)
                out[..., j] = model.cf_scores(ctx)
        return out if cols is None else np.take_along_axis(out, cols[:, :, None], axis=1)

    # ------------------------------------------------------------------ hooks (the neural-linear bandit overrides them)
    @property
    def n_inputs(self) -> int:
        """Candidate features plus log-fitted columns (0 before the first call)."""
        return self.features.n_features + len(self.log_features) if self.features.built else 0

    def _model_dim(self) -> int:
        """Dimension of the features the posterior sees (here the candidate features themselves)."""
        return self.n_inputs

    def _on_built(self) -> None:
        """Called once, when the candidate-feature dimensions become known."""

    def _design(self, x: np.ndarray) -> np.ndarray:
        """(..., q) features of the posterior from candidate features (..., p) (here: identity)."""
        return x

    # ------------------------------------------------------------------ helpers
    def _raw(self, ctx: RankingContext, cols: np.ndarray | None = None) -> np.ndarray:
        """Candidate features and log-fitted columns (B, M, n_inputs) float32; builds the model on the first call."""
        x = self.features(ctx, cols)
        if self.log_features:
            x = np.concatenate([x, self._log_columns(ctx, cols)], axis=2)
        if self.model is None:
            self._on_built()
            self.model = self._new_model()
        return x

    def _features(self, ctx: RankingContext, cols: np.ndarray | None = None) -> np.ndarray:
        """Posterior features (B, M, q) of all candidates, or of the columns ``cols``."""
        return self._design(self._raw(ctx, cols))

    def _new_model(self) -> RidgeModel:
        prior = np.zeros(self._model_dim())
        if self.cosine_prior != 0.0:
            prior[:2] = self.cosine_prior  # the cos block comes first: u.v, q.v
        return RidgeModel(self._model_dim(), self.reg, self.update_method, prior_mean=prior)

    def _item_mean(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 per-item effects of the candidates (0 without item effects)."""
        if self.items is None:
            return np.zeros(ctx.candidates.shape)
        return self.items.mean(ctx.candidates)

    def _item_variance(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 posterior variance of the candidates' item effects (0 without item effects)."""
        if self.items is None:
            return np.zeros(ctx.candidates.shape)
        return self.items.variance(ctx.candidates)

    def _model(self) -> RidgeModel:
        assert self.model is not None, "features are built before the model is used"
        return self.model

    # ------------------------------------------------------------------ deciding
    def mean_scores(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 estimated examined value theta^T x + beta_i of each candidate."""
        def chunk(c: RankingContext, _: slice) -> np.ndarray:
            z = self._features(c)
            return self._model().mean(z) + self._item_mean(c)

        return by_row_chunks(ctx, chunk)

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 estimated examined value theta^T x + beta_i (the greedy score)."""
        return self.mean_scores(ctx)

    def _ucb_scores(self, ctx: RankingContext, alpha: float) -> np.ndarray:
        """(B, N) float64 upper confidence bounds with width ``alpha``."""
        def chunk(c: RankingContext, _: slice) -> np.ndarray:
            z = self._features(c)
            model = self._model()
            mean = model.mean(z) + self._item_mean(c)
            if alpha == 0.0:
                return mean
            return mean + alpha * np.sqrt(model.variance(z) + self._item_variance(c))

        return by_row_chunks(ctx, chunk)

    def _thompson(self, ctx: RankingContext, k: int, rng: np.random.Generator, scale: float,
                  n_propensity_samples: int) -> Ranking:
        """Thompson-sampling ranking (see :func:`thompson_ranking`)."""
        if self.model is None:
            self._features(ctx.take(np.arange(1)))  # builds the model on the first call
        if self.items is None:
            return thompson_ranking(self._features, ctx, self._model(), k, rng, scale, n_propensity_samples)
        return thompson_ranking(self._features, ctx, self._model(), k, rng, scale, n_propensity_samples,
                                self._item_mean(ctx), np.sqrt(self._item_variance(ctx)))

    # ------------------------------------------------------------------ learning
    def update(self, ctx: RankingContext, ranking: Ranking, feedback: Feedback) -> None:
        r"""Add every counted shown slot as one weighted observation (see the module docstring).

        With item effects, the shared model learns from :math:`r - w \hat\beta_i`, then the item
        effects from the residual :math:`r - w \hat\theta^\top x` under the updated shared model.
        """
        check_feedback(ctx, ranking, feedback)
        credit = slot_credit(feedback, self.examination, self.cascade, self.target)
        slots = np.asarray(ranking.slots, dtype=np.int64)
        x = self._raw(ctx, slots)
        keep = credit.mask
        items = np.take_along_axis(ctx.candidates, slots, axis=1)[keep]
        self._learn(x[keep], items, credit.weight[keep], credit.reward[keep])

    def _learn(self, x: np.ndarray, items: np.ndarray, weight: np.ndarray, reward: np.ndarray) -> None:
        """Add observations: candidate features (m, p), catalog items (m,), weights and rewards (m,)."""
        self._add_to_posterior(self._design(x), items, weight, reward)

    def _add_to_posterior(self, z: np.ndarray, items: np.ndarray, weight: np.ndarray, reward: np.ndarray) -> None:
        model = self._model()
        if self.items is None:
            model.add(z, weight, reward)
            return
        model.add(z, weight, reward - weight * self.items.mean(items))
        self.items.add(items, weight, reward - weight * model.mean(z))

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return {
            "reg": self.reg,
            "examination": None if self.examination is None else self.examination.tolist(),
            "cascade": self.cascade, "target": self.target, "blocks": list(self.features.blocks),
            "proj_dim": self.features.proj_dim, "update_method": self.update_method, "item_reg": self.item_reg,
            "cosine_prior": self.cosine_prior, "log_features": list(self.log_features), "seed": self.seed,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Feature projection, ridge state and item effects (empty before the first call)."""
        state = self.features.state_dict()
        if self.model is not None:
            state |= self.model.state_dict()
        if self.items is not None and self.model is not None:
            state |= self.items.state_dict()
        for name, model in self.log_models.items():
            state |= {f"log.{name}.{key}": value for key, value in model.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` saved."""
        for name, model in self.log_models.items():
            prefix = f"log.{name}."
            model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.features.load_state_dict(state)
        if self.features.built:
            self._on_built()
            self.model = self._new_model()
            self.model.load_state_dict(state)
            if self.items is not None:
                self.items.load_state_dict(state)


class EpsilonGreedyRanker(LinearBandit):
    r"""Epsilon-greedy over the shared ridge model, with exact propensities.

    Per request: with probability :math:`1-\epsilon` the top-K by :math:`\hat\theta^\top x`, else a
    uniformly random ranking of K of the N candidates.

    Note:
        .. math::
            P(\text{item } n \text{ at slot } k) = (1-\epsilon)[\sigma^g_k = n] + \epsilon/N, \qquad
            P(\sigma) = (1-\epsilon)[\sigma = \sigma^g] + \epsilon\,(N-K)!/N!.

    Args:
        epsilon: exploration probability per request, in [0, 1].
        **kwargs: the :class:`LinearBandit` arguments (reg, examination, cascade, target, blocks, proj_dim,
            update_method, seed).
    """

    name: ClassVar[str] = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = check_float(epsilon, "epsilon", min_value=0.0, max_value=1.0)

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """Epsilon-mixed top-``k`` with exact per-slot and slate propensities."""
        k = check_k(k, ctx.n_candidates)
        return epsilon_greedy_ranking(self.score(ctx), k, self.epsilon, rng)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return super().config() | {"epsilon": self.epsilon}


class LinUCBRanker(LinearBandit):
    r"""LinUCB with one shared model: top-K by the upper confidence bound (deterministic).

    Note:
        .. math:: \mathrm{UCB}(x, i) = \hat\theta^\top x + \hat\beta_i + \alpha \sqrt{x^\top A^{-1} x
            + \mathrm{Var}(\beta_i)}

        (the item terms vanish without item effects).

    Args:
        alpha: width of the confidence bonus, >= 0 (0: greedy ridge regression).
        **kwargs: the :class:`LinearBandit` arguments.
    """

    name: ClassVar[str] = "linucb"

    def __init__(self, alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = check_float(alpha, "alpha", min_value=0.0)

    def score(self, ctx: RankingContext) -> np.ndarray:
        """(B, N) float64 upper confidence bounds (``rank`` shows their top-K)."""
        return self._ucb_scores(ctx, self.alpha)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return super().config() | {"alpha": self.alpha}


class LinTSRanker(LinearBandit):
    r"""Linear Thompson sampling with one shared model: one posterior draw per request, top-K by its scores.

    Note:
        .. math:: \tilde\theta_b \sim N(\hat\theta,\, s^2 A^{-1}),\ \tilde\beta_{b,n} \sim N(\hat\beta_{i},\,
            s^2\,\mathrm{Var}(\beta_i)), \qquad \text{slots}_b = \text{top-}K_n\
            (\tilde\theta_b^\top x_{b,n} + \tilde\beta_{b,n})

        Draws use the Cholesky factor of :math:`A`, computed once after each update batch (a
        factorisation, not an inverse; :math:`p^3/3` flops, e.g. 2.5 Mflop at p = 197).

    The probability of the shown ranking has no closed form. ``propensity``/``slate_propensity`` are NaN
    unless ``estimate_propensity`` is set, in which case they are Monte Carlo estimates from
    ``n_propensity_samples`` further draws per request (:func:`~agents.exploration.monte_carlo_propensity`).
    Do not use NaN propensities as an OPE logging policy.

    Args:
        scale: posterior scale s > 0 (exploration strength; s = 1 is the Bayesian posterior for unit noise).
        estimate_propensity: estimate propensities by Monte Carlo (slower).
        n_propensity_samples: further draws per request for the estimate, >= 1.
        **kwargs: the :class:`LinearBandit` arguments.
    """

    name: ClassVar[str] = "lin_ts"

    def __init__(
        self, scale: float = 0.05, estimate_propensity: bool = False, n_propensity_samples: int = 64, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.scale = check_float(scale, "scale", min_value=0.0, min_inclusive=False)
        self.estimate_propensity = check_bool(estimate_propensity, "estimate_propensity")
        self.n_propensity_samples = check_int(n_propensity_samples, "n_propensity_samples", min_value=1)

    def rank(self, ctx: RankingContext, k: int, rng: np.random.Generator) -> Ranking:
        """One posterior draw per request; top-``k`` of its scores."""
        k = check_k(k, ctx.n_candidates)
        return self._thompson(ctx, k, rng, self.scale, self.n_propensity_samples if self.estimate_propensity else 0)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON."""
        return super().config() | {"scale": self.scale, "estimate_propensity": self.estimate_propensity,
                                   "n_propensity_samples": self.n_propensity_samples}
