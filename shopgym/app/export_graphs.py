r"""Scoring graphs: each exportable agent's greedy ``score(ctx)`` rewritten as a PyTorch module for ONNX.

Every graph maps the serving inputs to one score per candidate, with the agent's tables (item embeddings,
popularity, similarities, the linear model) inside the graph as constants:

========================  =================  ====================================================
input                     shape, dtype       meaning (:class:`envs.interface.RankingContext`)
========================  =================  ====================================================
``user``                  (B, d) float32     user profile vector (zero row: unknown user)
``query``                 (B, d) float32     query embedding (zero row: browsing)
``is_search``             (B,) float32       1 for a search request, else 0
``candidates``            (B, N) int64       catalog indices of the candidates
``history``               (B, H) int64       catalog indices of the user's recent items, -1 padded
``user_ids``              (B,) int64         the user's index in the fit's user vocabulary, -1 if unknown
``extra``                 (B, N, F) float32  per-candidate features (shown-before flag, popularity)
========================  =================  ====================================================

Output ``scores`` (B, N) float32, higher first. B, N and H are dynamic axes; every graph declares all six
inputs (feed a session the inputs it lists). Each graph computes what the agent's NumPy greedy score computes,
in float32 (the agents accumulate the final dot product in float64; the export's parity check bounds the
difference).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from agents.base import RankingPolicy
from agents.baselines import CosinePolicy, PopularityPolicy
from agents.cf import ALSPolicy, ItemKNNPolicy, _CFBase
from agents.features import CandidateFeatures
from agents.linear import LinearBandit
from agents.neural import NeuralLinearRanker
from shopgym.errors import ConfigError

#: graph inputs, in order, with their rank and dtype
INPUTS: tuple[tuple[str, int, str], ...] = (
    ("user", 2, "float32"), ("query", 2, "float32"), ("is_search", 1, "float32"), ("candidates", 2, "int64"),
    ("history", 2, "int64"), ("user_ids", 1, "int64"), ("extra", 3, "float32"))
OUTPUT = "scores"
_TINY = 1e-12


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm on the last axis; (near-)zero rows stay zero (as ``agents.features``)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(norm > _TINY, x / norm.clamp_min(_TINY), torch.zeros_like(x))


def _const(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


class ScoreGraph(nn.Module):
    """Base: the item table and the common forward signature (see the module docstring)."""

    item_vecs: torch.Tensor

    def __init__(self, item_vecs: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("item_vecs", _const(item_vecs))

    def vecs(self, candidates: torch.Tensor) -> torch.Tensor:
        """(B, N, d) candidate embeddings."""
        return self.item_vecs[candidates]

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor,
                extra: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Scores (B, N) of the candidates (see the module docstring)."""
        raise NotImplementedError


def cosine(vecs: torch.Tensor, user: torch.Tensor, query: torch.Tensor, a: float, b: float) -> torch.Tensor:
    r"""(B, N) :math:`\cos(a u + b q, v)` as :func:`agents.baselines.cosine_scores`."""
    profile = _unit(a * user + b * query)
    dots = torch.einsum("bnd,bd->bn", vecs, profile)
    return dots / torch.linalg.vector_norm(vecs, dim=-1).clamp_min(_TINY)


class CosineGraph(ScoreGraph):
    """:class:`~agents.baselines.CosinePolicy`."""

    def __init__(self, agent: CosinePolicy, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        self.a, self.b = float(agent.user_weight), float(agent.query_weight)

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N)."""
        return cosine(self.vecs(candidates), user, query, self.a, self.b)


class PopularityGraph(ScoreGraph):
    """:class:`~agents.baselines.PopularityPolicy`: a per-item table."""

    item_scores: torch.Tensor

    def __init__(self, agent: PopularityPolicy, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        assert agent.item_scores is not None
        self.register_buffer("item_scores", _const(agent.item_scores))

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N)."""
        return self.item_scores[candidates]


def _knn_scores(similarity: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    r"""(B, N) :math:`\sum_{h} S_{h, i}` over the valid history entries (-1 padding ignored)."""
    valid = (history >= 0).to(similarity.dtype)
    rows = similarity[history.clamp_min(0)] * valid[..., None]  # (B, H, n)
    summed = rows.sum(dim=1)  # (B, n)
    return torch.gather(summed, 1, candidates)


class ItemKNNGraph(ScoreGraph):
    """:class:`~agents.cf.ItemKNNPolicy`: history x a dense item-item similarity, plus its cosine fallback."""

    similarity: torch.Tensor

    def __init__(self, agent: ItemKNNPolicy, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        self.register_buffer("similarity", _const(_dense_similarity(agent, len(item_vecs))))
        self.fallback = (float(agent.cosine_weight), float(agent.user_weight), float(agent.query_weight))

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N)."""
        scores = _knn_scores(self.similarity, history, candidates)
        weight, a, b = self.fallback
        if weight != 0.0:
            scores = scores + weight * cosine(self.vecs(candidates), user, query, a, b)
        return scores


def _dense_similarity(agent: ItemKNNPolicy, n_items: int) -> np.ndarray:
    """The fitted (n, n) similarity as a dense float32 array (n must match the catalog)."""
    assert agent.similarity is not None
    if agent.similarity.shape != (n_items, n_items):
        raise ConfigError(f"item_knn's similarity is {agent.similarity.shape}, the catalog has {n_items} items")
    return np.asarray(agent.similarity.toarray(), dtype=np.float32)


def spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""(B, f) :math:`x = A^{-1} b` for symmetric positive definite ``a`` (B, f, f), by Gauss-Jordan elimination.

    ONNX has no linear solve; this is f pivot steps of batched rank-1 updates on :math:`[A \mid b]` (a few
    operations each, so the graph stays small), without pivoting, which is stable for SPD matrices. Run it in
    float64 for the agents' precision.
    """
    f = a.shape[-1]
    m = torch.cat([a, b[..., None]], dim=2)  # (B, f, f + 1)
    rows = torch.arange(f, device=a.device)[None, :, None]
    for j in range(f):
        pivot = m[:, j:j + 1, :] / m[:, j:j + 1, j:j + 1]  # (B, 1, f + 1)
        m = torch.where(rows == j, pivot, m - m[:, :, j:j + 1] * pivot)
    return m[:, :, f]


class ALSScores(nn.Module):
    r""":meth:`agents.cf.ALSPolicy.cf_scores` in float64: :math:`x_u^\top y_i` for every candidate.

    Known users take their fitted factors; unknown ones are folded in from their history (when the policy folds
    in), as the agent does.
    """

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    gram: torch.Tensor

    def __init__(self, als: ALSPolicy) -> None:
        super().__init__()
        assert als.user_factors is not None and als.item_factors is not None
        y = np.asarray(als.item_factors, dtype=np.float64)
        self.register_buffer("user_factors", _const(als.user_factors, torch.float64))
        self.register_buffer("item_factors", _const(y, torch.float64))
        self.register_buffer("gram", _const(y.T @ y + als.regularization * np.eye(als.factors), torch.float64))
        self.alpha = float(als.alpha)
        self.fold_in = bool(als.fold_in)

    def forward(self, user_ids: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, N) float64 factor scores."""
        known = (user_ids >= 0)[:, None]
        vectors = torch.where(known, self.user_factors[user_ids.clamp_min(0)], torch.zeros_like(self.gram[:1, :]))
        if self.fold_in:
            cold = ~(vectors != 0.0).any(dim=1, keepdim=True)
            valid = (history >= 0)[..., None]
            yh = torch.where(valid, self.item_factors[history.clamp_min(0)], torch.zeros_like(self.gram[:1, :1]))
            lhs = self.gram + self.alpha * torch.einsum("bhf,bhg->bfg", yh, yh)
            rhs = (1.0 + self.alpha) * yh.sum(dim=1)
            vectors = torch.where(cold, spd_solve(lhs, rhs), vectors)
        return torch.einsum("bf,bnf->bn", vectors, self.item_factors[candidates])


class ALSGraph(ScoreGraph):
    """:class:`~agents.cf.ALSPolicy`: factor scores plus its cosine fallback."""

    def __init__(self, agent: ALSPolicy, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        self.als = ALSScores(agent)
        self.fallback = (float(agent.cosine_weight), float(agent.user_weight), float(agent.query_weight))

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N)."""
        scores = self.als(user_ids, history, candidates)
        weight, a, b = self.fallback
        if weight != 0.0:
            scores = scores + weight * cosine(self.vecs(candidates), user, query, a, b).to(torch.float64)
        return scores.to(torch.float32)


class FeatureGraph(nn.Module):
    """:class:`~agents.features.CandidateFeatures` in torch: the same blocks, the same projection."""

    projection: torch.Tensor

    def __init__(self, features: CandidateFeatures) -> None:
        super().__init__()
        state = features.state_dict()
        if not state:
            raise ConfigError("the agent's features were never built (it has not ranked a page yet): train it first")
        self.blocks = features.blocks
        self.register_buffer("projection", _const(state["features.projection"]))
        self.scale = float(np.float32(np.sqrt(self.projection.shape[1])))

    def forward(self, vecs: torch.Tensor, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor,
                extra: torch.Tensor) -> torch.Tensor:
        """(B, N, n_features) features."""
        parts = []
        need = any(b in self.blocks for b in ("ui", "i", "qi"))
        pv = _unit(vecs @ self.projection) if need else vecs
        for block in self.blocks:
            if block == "cos":
                cos_u = torch.einsum("bmd,bd->bm", vecs, user)
                parts += [cos_u[..., None], torch.einsum("bmd,bd->bm", vecs, query)[..., None],
                          (is_search[:, None] * cos_u)[..., None]]
            elif block == "ui":
                parts.append(self.scale * _unit(user @ self.projection)[:, None, :] * pv)
            elif block == "i":
                parts.append(pv)
            elif block == "qi":
                parts.append(self.scale * _unit(query @ self.projection)[:, None, :] * pv)
            elif block == "extra":
                parts.append(extra)
            else:
                parts.append(torch.ones_like(vecs[..., :1]))
        return torch.cat(parts, dim=2)


class LinearBanditGraph(ScoreGraph):
    r"""The linear bandits' greedy score :math:`\theta^\top x + \hat\beta_i` (epsilon-greedy, LinUCB, linear TS).

    ``x`` = the candidate features, then the log-fitted columns (item-kNN score / history length; ALS
    :math:`x_u^\top y_i`, :class:`ALSScores`; 0 for a model the logs could not fit).
    """

    similarity: torch.Tensor
    theta: torch.Tensor
    item_bias: torch.Tensor

    def __init__(self, agent: LinearBandit, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        self.body: nn.Module | None = None
        self.skip = True
        if isinstance(agent, NeuralLinearRanker):  # the learned representation phi, then the linear posterior
            import copy

            assert agent.body is not None, "a built neural-linear agent has a body"
            self.body = copy.deepcopy(agent.body).float().eval()
            self.skip = bool(agent.skip)
        if agent.model is None:
            raise ConfigError(f"{agent.name} has not learned anything yet (no model): train it first")
        self.features = FeatureGraph(agent.features)
        self.log_names: list[str] = []
        for name in agent.log_features:
            model = agent.log_models[name]
            if not model.is_fitted:
                self.log_names.append("zero")
            elif isinstance(model, ItemKNNPolicy):
                self.register_buffer("similarity", _const(_dense_similarity(model, len(item_vecs))))
                self.log_names.append("item_knn")
            else:
                assert isinstance(model, ALSPolicy)
                self.als = ALSScores(model)
                self.log_names.append("als")
        self.register_buffer("theta", _const(agent.model.theta))
        n = len(item_vecs)
        bias = np.zeros(n, dtype=np.float64)
        if agent.items is not None:
            sums, weights = agent.items.sums, agent.items.weights
            m = min(len(sums), n)
            bias[:m] = sums[:m] / (weights[:m] + agent.items.reg)
        self.register_buffer("item_bias", _const(bias))

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N)."""
        vecs = self.vecs(candidates)
        x = self.features(vecs, user, query, is_search, extra)
        columns = []
        for name in self.log_names:
            if name == "item_knn":
                n_hist = (history >= 0).sum(dim=1).clamp_min(1).to(x.dtype)[:, None]
                columns.append((_knn_scores(self.similarity, history, candidates) / n_hist)[..., None])
            elif name == "als":
                columns.append(self.als(user_ids, history, candidates).to(x.dtype)[..., None])
            else:
                columns.append(torch.zeros_like(x[..., :1]))
        if columns:
            x = torch.cat([x, *columns], dim=2)
        if self.body is not None:  # neural-linear: z = [x, phi(x)] (skip) or [phi(x), 1]
            hidden = self.body(x)
            x = torch.cat([x, hidden], dim=2) if self.skip else torch.cat([hidden, torch.ones_like(x[..., :1])], dim=2)
        return x @ self.theta + self.item_bias[candidates]


class LogisticGraph(ScoreGraph):
    r""":class:`~agents.logistic.OnlineLogisticRanker`: the logit :math:`w^\top x` of the candidate features."""

    weights: torch.Tensor

    def __init__(self, agent: Any, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        if agent.weights is None:
            raise ConfigError(f"{agent.name} has not learned anything yet (no weights): train it first")
        self.features = FeatureGraph(agent.features)
        self.register_buffer("weights", _const(agent.weights))

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N)."""
        return self.features(self.vecs(candidates), user, query, is_search, extra) @ self.weights


class PPOGraph(ScoreGraph):
    """:class:`~agents.ppo.PPORanker`: the actor's Plackett-Luce logits of the env's flat observation."""

    def __init__(self, agent: Any, item_vecs: np.ndarray) -> None:
        super().__init__(item_vecs)
        import copy

        if agent.policy is None:
            raise ConfigError(f"{agent.name} was never trained: nothing to export")
        self.policy = copy.deepcopy(agent.policy).float().eval()

    def forward(self, user: torch.Tensor, query: torch.Tensor, is_search: torch.Tensor, candidates: torch.Tensor,
                history: torch.Tensor, user_ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Scores (B, N): the actor on the parts of :func:`agents.ppo.encoder.observation_from_context`.

        The parts go to the encoder directly (clipped to [-1, 1] as the flat observation is), so the number of
        candidates stays a dynamic axis instead of being read back from a flat width.
        """
        parts = [user, query, is_search, self.vecs(candidates), extra]
        user, query, is_search, cand, extra = (p.clamp(-1.0, 1.0) for p in parts)
        encoder = self.policy.encoder
        return self.policy.logits_from_embeddings(encoder.encode_parts(user, query, is_search, cand, extra))


def graph_for(agent: RankingPolicy, item_vecs: np.ndarray) -> ScoreGraph:
    """The scoring graph of ``agent`` over the catalog's ``item_vecs`` (n_items, d).

    Raises:
        ConfigError: the agent's kind is not exportable (yet), or it was never trained or fitted.
    """
    if isinstance(agent, _CFBase) and not agent.is_fitted:
        raise ConfigError(f"{agent.name} was never fitted on logs: nothing to export")
    from agents.logistic import OnlineLogisticRanker
    from agents.ppo import PPORanker

    builders: list[tuple[type, Any]] = [(CosinePolicy, CosineGraph), (PopularityPolicy, PopularityGraph),
                                        (ItemKNNPolicy, ItemKNNGraph), (ALSPolicy, ALSGraph),
                                        (LinearBandit, LinearBanditGraph), (OnlineLogisticRanker, LogisticGraph),
                                        (PPORanker, PPOGraph)]
    for cls, build in builders:
        if isinstance(agent, cls):
            graph = build(agent, np.asarray(item_vecs, dtype=np.float32))
            graph.eval()
            return graph
    exportable = ["cosine", "popularity", "item_knn", "als", "epsilon_greedy", "linucb", "lin_ts", "neural_linear",
                  "logistic", "ppo"]
    raise ConfigError(f"{type(agent).__name__} ({agent.name}) is not exportable yet; exportable: {exportable}")
