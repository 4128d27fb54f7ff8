"""Simulated shoppers for a served ranker: the simulator's sessions send ``/rank`` and ``/feedback`` requests.

Closes the production loop in the simulator: each live session of a :class:`~envs.rerank.ReRankVectorEnv`
becomes a request (its candidates' item ids, the shopper's id, the query text, the items shown earlier in the
session, the items clicked in it as ``history``), the server's ranking is shown to the simulated shopper, and
every click, cart and purchase goes back as feedback. ``rank`` and ``feedback`` are callables, so the same
shoppers drive a server over HTTP (:func:`http_endpoints`) or an export in process (:func:`in_process_ranker`,
the served policy's value measured without HTTP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

Rank = Callable[[dict[str, Any]], dict[str, Any]]
Feedback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ShopperRun:
    """What the shoppers did: per page, clicks, carts and purchases (arrays over the pages served)."""

    clicks: np.ndarray
    carts: np.ndarray
    purchases: np.ndarray

    @property
    def pages(self) -> int:
        """Pages served."""
        return len(self.clicks)

    def mean_clicks(self) -> tuple[float, float]:
        """Mean clicks per page and its standard error."""
        return float(self.clicks.mean()), float(self.clicks.std(ddof=1) / np.sqrt(max(self.pages, 1)))


def http_endpoints(client: Any) -> tuple[Rank, Feedback]:
    """``rank`` and ``feedback`` over an ``httpx.Client`` (or FastAPI ``TestClient``); a non-200 answer raises."""
    def rank(body: dict[str, Any]) -> dict[str, Any]:
        answer = client.post("/rank", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"/rank answered {answer.status_code}: {answer.text[:500]}")
        return answer.json()

    def feedback(body: dict[str, Any]) -> None:
        answer = client.post("/feedback", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"/feedback answered {answer.status_code}: {answer.text[:500]}")

    return rank, feedback


def in_process_ranker(model: Any, exploration: Any, seed: int = 0) -> Rank:
    """``rank`` on a :class:`~shopgym.serve.model.ServedModel` without HTTP (same features, same exploration)."""
    rng = np.random.default_rng(seed)

    def rank(body: dict[str, Any]) -> dict[str, Any]:
        shown = model.rank(body["candidates"], int(body["k"]), exploration, rng, user_id=body.get("user_id"),
                           history=body.get("history"), query=body.get("query", ""),
                           shown_before=body.get("shown_before"))
        return {"request_id": "", "items": [{"item_id": body["candidates"][int(c)], "position": j + 1}
                                            for j, c in enumerate(shown.slots)]}

    return rank


def send_shoppers(rank: Rank, feedback: Feedback | None, sim: Any, pages: int, *, batch: int = 8, seed: int = 0,
                  progress: bool = False) -> ShopperRun:
    """Serve ``pages`` pages (rounded up to whole batches) of ``batch`` parallel simulated sessions.

    Args:
        rank: sends a ``/rank`` body, returns the answer.
        feedback: sends a ``/feedback`` body (None: no feedback).
        sim: the simulator (:class:`envs.core.Simulator`) whose shoppers respond.
        pages: pages to serve.
        batch: sessions stepped together.
        seed: the env's seed.
        progress: a progress bar.
    """
    from envs.rerank import ReRankVectorEnv

    env = ReRankVectorEnv(batch, simulator=sim, observation="ids")  # agents rank from the context
    env.reset(seed=seed)
    item_ids = np.asarray([str(i) for i in sim.space.item_ids], dtype=object)
    user_ids = np.asarray([str(u) for u in sim.users.user_ids], dtype=object)
    queries = np.asarray(sim.space.query_texts, dtype=object)
    k = int(sim.config.slate_size)
    clicked_items: list[list[str]] = [[] for _ in range(batch)]
    clicks, carts, buys = [], [], []
    steps = -(-pages // batch)
    for _ in tqdm(range(steps), disable=not progress, desc="shoppers", unit="step"):
        ctx = env.ranking_context()
        slots = np.empty((batch, k), dtype=np.int64)
        request_ids = []
        for b in range(batch):  # one HTTP request per page: the unit the server serves
            cand = item_ids[ctx.candidates[b]]
            body: dict[str, Any] = {"candidates": cand.tolist(), "k": k}
            if ctx.user_ids[b] >= 0 and len(user_ids):
                body["user_id"] = user_ids[ctx.user_ids[b]]
            q = int(ctx.sessions.query[b]) if ctx.sessions is not None else -1
            if q >= 0:
                body["query"] = str(queries[q])
            before = cand[ctx.extra[b, :, 0] > 0]
            if len(before):
                body["shown_before"] = before.tolist()
            if clicked_items[b]:
                body["history"] = clicked_items[b][-20:]
            answer = rank(body)
            column = {item: j for j, item in enumerate(body["candidates"])}
            slots[b] = [column[item["item_id"]] for item in answer["items"]]
            request_ids.append(answer["request_id"])
        _, _, terminated, truncated, info = env.step_slots(slots)
        shown = item_ids[info["shown"]]
        for b in range(batch):
            for j in np.flatnonzero(info["clicked"][b]):
                clicked_items[b].append(str(shown[b, j]))
                if feedback is not None:
                    feedback({"request_id": request_ids[b], "position": int(j) + 1, "clicked": True,
                              "carted": bool(info["carted"][b, j]), "purchased": bool(info["purchased"][b, j]),
                              "revenue": float(sim.prices[info["shown"][b, j]]) if info["purchased"][b, j] else 0.0})
            if terminated[b] or truncated[b]:
                clicked_items[b] = []
        clicks.append(info["clicked"].sum(axis=1))
        carts.append(info["carted"].sum(axis=1))
        buys.append(info["purchased"].sum(axis=1))
    return ShopperRun(np.concatenate(clicks).astype(np.float64), np.concatenate(carts).astype(np.float64),
                      np.concatenate(buys).astype(np.float64))
