r"""An export folder loaded for serving: request -> graph inputs -> scores -> a shown ranking with its propensities.

No PyTorch: the scoring graph runs in ONNX Runtime; the request features are built with NumPy from the
export's ``serving.safetensors`` as the simulator builds them (:meth:`envs.core.Simulator.context`):

* ``user``: the profile, :math:`p = s / \lVert s \rVert` with :math:`s = \sum_h w_h v_h` over the user's logged
  engaged items (known user ids, with their behaviour weights) and the request's ``history`` (weight of a click);
  the cold-start profile when there is nothing;
* ``history``: the known user's logged items, then the request's, newest last, the last ``history_length``;
* ``query``: the query table's vector for a query the simulator knew, else the exported text encoder's vector
  (projected as the space was; the attribute block of an attribute-weighted space is left at zero);
* ``extra``: shown earlier in the session (the request's ``shown_before``), the item's popularity feature.

Exploration modes and their exact propensities (:mod:`shopgym.numeric`):

* ``greedy``: the top ``k`` by score (ties: the earlier candidate); every propensity 1;
* ``epsilon``: with probability :math:`\epsilon` a uniformly random ranking of ``k`` of the ``N`` candidates,
  else the greedy one: per slot :math:`(1-\epsilon)[\sigma^g_j = i] + \epsilon/N`, per page
  :math:`(1-\epsilon)[\sigma = \sigma^g] + \epsilon (N-k)!/N!`;
* ``plackett_luce``: sample without replacement proportionally to :math:`e^{\ell_i}`,
  :math:`\ell_i = \max((s_i - \max_j s_j) / T, -50)` (:data:`PL_LOGIT_FLOOR`): per page the product of the
  sequential choice probabilities, per slot the exact marginal
  (:func:`~shopgym.numeric.plackett_luce_marginals`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encoders.base import l2_normalize
from encoders.profiles import ProfileState, vector
from shopgym.errors import ConfigError
from shopgym.numeric import (
    epsilon_mixture_propensities,
    plackett_luce_log_prob,
    plackett_luce_marginals,
    plackett_luce_sample,
    topk,
    uniform_rankings,
)
from shopgym.serve.manifest import verify_export
from shopgym.serve.text import text_encoder_from_manifest

MODES: tuple[str, ...] = ("greedy", "epsilon", "plackett_luce")
#: Plackett-Luce logits are raised to at least the best one minus this (every candidate keeps a weight of at
#: least e^-50 of the best's; bounds the propensity integral's range at any temperature)
PL_LOGIT_FLOOR = 50.0


class RequestError(ConfigError):
    """A request that cannot be served as sent; ``field`` names the offending field (a JSON path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


@dataclass(frozen=True)
class Exploration:
    """How the server turns scores into a shown ranking.

    Args:
        mode: one of :data:`MODES`.
        epsilon: exploration probability of ``epsilon``, in [0, 1].
        temperature: Plackett-Luce temperature :math:`T > 0` (scores divided by it).
    """

    mode: str = "greedy"
    epsilon: float = 0.1
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RequestError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise RequestError("epsilon", f"must be in [0, 1], got {self.epsilon}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise RequestError("temperature", f"must be a finite number > 0, got {self.temperature}")


@dataclass(frozen=True)
class Shown:
    """A served ranking and its probabilities.

    ``slots`` (k,) candidate columns, per-slot ``propensity`` (k,), the probability of each prefix (slots 1..j)
    ``prefix_propensity`` (k,; the last is the whole ranking's), and the candidates' ``scores`` (N,).
    """

    slots: np.ndarray
    propensity: np.ndarray
    prefix_propensity: np.ndarray
    scores: np.ndarray

    @property
    def slate_propensity(self) -> float:
        """The probability of the whole ranking (the last prefix's)."""
        return float(self.prefix_propensity[-1])


def choose(scores: np.ndarray, k: int, exploration: Exploration, rng: np.random.Generator) -> Shown:
    """The shown ranking of one request's (N,) ``scores`` under ``exploration`` (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)[None, :]
    n = s.shape[1]
    greedy = topk(s, k)
    if exploration.mode == "greedy":
        return Shown(greedy[0], np.ones(k), np.ones(k), s[0])
    if exploration.mode == "epsilon":
        slots = uniform_rankings(rng, 1, n, k) if rng.random() < exploration.epsilon else greedy
        propensity, prefix = epsilon_mixture_propensities(slots, greedy, exploration.epsilon, n)
        return Shown(slots[0], propensity[0], prefix[0], s[0])
    with np.errstate(over="ignore", divide="ignore"):
        logits = np.maximum((s - s.max()) / exploration.temperature, -PL_LOGIT_FLOOR)
    slots = plackett_luce_sample(rng, logits, k)
    prefix = np.exp(plackett_luce_log_prob(logits, slots, prefix=True))[0]
    return Shown(slots[0], plackett_luce_marginals(logits, slots)[0], prefix, s[0])


class ServedModel:
    """An export folder ready to rank requests (checksums verified first).

    Args:
        folder: the export folder (``shopgym export``).
        threads: ONNX Runtime intra-op threads per inference.

    Raises:
        ConfigError: the folder is not an export, or a file does not match its checksum.
    """

    def __init__(self, folder: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from safetensors.numpy import load_file

        self.folder = Path(folder)
        self.manifest: dict[str, Any] = verify_export(self.folder)
        read = lambda name: json.loads((self.folder / name).read_text(encoding="utf-8"))  # noqa: E731
        self.item_ids = pd.Index(read("item_ids.json"), dtype=object)
        self.user_ids = pd.Index(read("user_ids.json"), dtype=object)
        self._item_pos = {item: i for i, item in enumerate(self.item_ids)}  # hash lookups: no Index per request
        self._user_pos = {user: i for i, user in enumerate(self.user_ids)}
        self.query_texts: dict[str, int] = {q: i for i, q in enumerate(read("queries.json"))}
        tables = load_file(str(self.folder / "serving.safetensors"))
        self.item_vecs = tables["item_vecs"]
        self.popularity = tables["popularity"]
        self.default_profile = tables["default_profile"].astype(np.float64)
        self.user_history, self.user_weight = tables["user_history"], tables["user_history_weight"]
        self.query_vecs, self.projection = tables["query_vecs"], tables["projection"]
        serving = self.manifest["serving"]
        self.history_length = int(serving["history_length"])
        self.click_weight = float(serving["behaviour_weights"]["click"])
        self.slate_size = int(self.manifest["dims"]["slate_size"])
        self.text_encoder = text_encoder_from_manifest(self.folder, self.manifest["text_encoder"], threads)
        encoder_dim = self.manifest["text_encoder"].get("dim")
        if self.text_encoder is not None and encoder_dim is not None and int(encoder_dim) > self.projection.shape[0]:
            raise ConfigError(f"{self.folder}: the text encoder's {encoder_dim} dimensions do not fit the space's "
                              f"projection ({self.projection.shape[0]} rows); export again")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def has_users(self) -> bool:
        """Whether the model was fitted with user ids (else requests carry none)."""
        return len(self.user_ids) > 0

    def item_index(self, ids: list[str], field: str) -> np.ndarray:
        """Catalog positions of ``ids``; :class:`RequestError` naming ``field[i]`` for the first unknown id."""
        idx = np.fromiter((self._item_pos.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        if (idx < 0).any():
            bad = int(np.flatnonzero(idx < 0)[0])
            raise RequestError(f"{field}[{bad}]", f"unknown item id {ids[bad]!r} (not in the exported catalog "
                                                  f"of {len(self.item_ids)} items)")
        return idx.astype(np.int64)

    def query_vector(self, text: str) -> np.ndarray:
        """(d,) float32 the query's vector (zero for browsing)."""
        if not text:
            return np.zeros(self.item_vecs.shape[1], np.float32)
        row = self.query_texts.get(text)
        if row is not None:
            return self.query_vecs[row]
        if self.text_encoder is None:
            raise RequestError("query", f"{text!r} is not one of the {len(self.query_texts)} queries this model "
                               "knows and it has no text encoder (items were encoded from features); send a "
                               "known query or none")
        raw = self.text_encoder.encode([text]).astype(np.float64)
        pad = self.projection.shape[0] - raw.shape[1]  # the attribute block: zero for an unseen query
        if pad > 0:
            raw = np.concatenate([raw, np.zeros((1, pad))], axis=1)
        return l2_normalize(l2_normalize(raw) @ self.projection)[0].astype(np.float32)

    def features(self, candidates: np.ndarray, *, user_id: str | None = None, history: np.ndarray | None = None,
                 query: str = "", shown_before: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The graph's inputs (batch of one) for a request (catalog positions already resolved)."""
        row = -1
        if user_id is not None and self.has_users:
            row = self._user_pos.get(user_id, -1)
        recent = np.zeros(0, np.int64) if history is None else history
        logged = self.user_history[row][self.user_history[row] >= 0] if row >= 0 else np.zeros(0, np.int64)
        logged_w = self.user_weight[row][self.user_history[row] >= 0] if row >= 0 else np.zeros(0)
        items = np.concatenate([logged, recent])
        weights = np.concatenate([logged_w, np.full(len(recent), self.click_weight)]).astype(np.float64)
        state = ProfileState((weights[:, None] * self.item_vecs[items]).sum(axis=0, keepdims=True),
                             np.array([weights.sum()]))
        profile = vector(state, self.default_profile)
        hist = np.full((1, self.history_length), -1, np.int64)
        tail = items[-self.history_length:]
        if len(tail):
            hist[0, -len(tail):] = tail
        shown = np.zeros(len(candidates), np.float32) if shown_before is None else \
            np.isin(candidates, shown_before).astype(np.float32)
        extra = np.stack([shown, self.popularity[candidates]], axis=1)[None]
        q = self.query_vector(query)
        values = {"user": profile.astype(np.float32), "query": q[None].astype(np.float32),
                  "is_search": np.array([1.0 if query else 0.0], np.float32),
                  "candidates": candidates[None].astype(np.int64), "history": hist,
                  "user_ids": np.array([row], np.int64), "extra": extra.astype(np.float32)}
        return {name: values[name] for name in self.input_names}

    def score(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) float64 scores of the request's candidates."""
        return np.asarray(self.session.run(None, feeds)[0][0], dtype=np.float64)

    def rank(self, candidates: list[str], k: int, exploration: Exploration, rng: np.random.Generator, *,
             user_id: str | None = None, history: list[str] | None = None, query: str = "",
             shown_before: list[str] | None = None) -> Shown:
        """The shown ranking of one request given by item ids (``shown.slots`` index ``candidates``).

        Resolves the ids (:class:`RequestError` naming an unknown one), builds the inputs, scores, and chooses.
        """
        cands = self.item_index(candidates, "candidates")
        recent = self.item_index(history, "history") if history else None
        before = self.item_index(shown_before, "shown_before") if shown_before else None
        feeds = self.features(cands, user_id=user_id, history=recent, query=query, shown_before=before)
        return choose(self.score(feeds), k, exploration, rng)
