"""The HTTP API of ``shopgym serve`` (FastAPI): ``POST /rank``, ``POST /feedback``, ``GET /health``, ``GET /metadata``.

Every request is validated before anything is scored or logged; a request that cannot be served gets HTTP 422
with FastAPI's error shape, ``{"detail": [{"loc": ["body", <field>, ...], "msg": ..., "type": ...}]}``, naming
the field (unknown item ids by their index in the list, ``k`` larger than the candidates, NaN, an empty or
oversized candidate list, duplicates, wrong types, unknown fields). Feedback for a page already written to
the log gets 409. The OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopgym.serve.log import FeedbackError, Page, ServedLog
from shopgym.serve.model import Exploration, RequestError, ServedModel

#: the largest candidate list a request may carry by default
MAX_CANDIDATES = 10_000
#: the largest request body by default, bytes
MAX_BODY_BYTES = 4 * 1024 * 1024

ItemId = Field(min_length=1, max_length=256)


class RankRequest(BaseModel):
    """A page to rank: who, what they searched, which candidates, how many to show and how to explore."""

    model_config = ConfigDict(extra="forbid", strict=True)

    candidates: list[str] = Field(min_length=1, description="candidate item ids (distinct, in the catalog)")
    k: int | None = Field(None, ge=1, description="items to show (default: the slate size the agent was trained "
                          "with, or all candidates if fewer); at most the number of candidates")
    user_id: str | None = Field(None, max_length=256, description="the shopper's id (models fitted with user ids)")
    history: list[str] = Field(default_factory=list, max_length=1000,
                               description="item ids the shopper engaged with recently, newest last")
    query: str = Field("", max_length=2000, description="search text; empty when browsing")
    shown_before: list[str] = Field(default_factory=list, max_length=10_000,
                                    description="item ids already shown to the shopper this session")
    mode: Literal["greedy", "epsilon", "plackett_luce"] | None = Field(
        None, description="exploration (default: the server's --mode)")
    epsilon: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                  description="exploration probability of mode epsilon")
    temperature: float | None = Field(None, gt=0.0, allow_inf_nan=False,
                                      description="Plackett-Luce temperature (scores divided by it)")

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            seen: set[str] = set()
            for i, v in enumerate(values):
                if v in seen:
                    raise ValueError(f"candidates[{i}] repeats item id {v!r}; send each candidate once")
                seen.add(v)
        return values


class ShownItem(BaseModel):
    """One shown slot."""

    item_id: str
    position: int = Field(description="1 = top")
    propensity: float = Field(description="probability that this item is shown at this position")
    score: float = Field(description="the model's score")


class RankResponse(BaseModel):
    """The shown ranking with its probabilities."""

    request_id: str
    items: list[ShownItem]
    slate_propensity: float = Field(description="probability of this whole ranking")
    mode: str
    model: str


class FeedbackRequest(BaseModel):
    """What the shopper did with one shown slot (events accumulate; a purchase implies a cart and a click)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=64)
    position: int | None = Field(None, ge=1, description="the slot (1 = top); or give item_id")
    item_id: str | None = Field(None, min_length=1, max_length=256, description="the shown item; or give position")
    clicked: bool = False
    carted: bool = False
    purchased: bool = False
    revenue: float = Field(0.0, ge=0.0, allow_inf_nan=False)


def _error(field: str, message: str, kind: str = "value_error", status: int = 422) -> JSONResponse:
    loc: list[Any] = ["body"]
    for part in field.replace("]", "").split("["):
        for name in part.split("."):
            if name:
                loc.append(int(name) if name.isdigit() else name)
    return JSONResponse(status_code=status, content={"detail": [{"loc": loc, "msg": message, "type": kind}]})


class BodyLimit:
    """ASGI middleware: a body larger than ``limit`` bytes gets 422.

    A declared ``content-length`` over the limit is answered before the body is read; a chunked body that grows
    past the limit is cut off there (it then fails to parse: 422 as well).
    """

    def __init__(self, app: Any, limit: int, counts: dict[str, int]) -> None:
        self.app, self.limit, self.counts = app, limit, counts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Check the body's size, then pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.limit):
            self.counts["rejected"] += 1
            response = _error("", f"request body of {size.decode(errors='replace')} bytes is larger than the "
                              f"limit of {self.limit} bytes; send fewer candidates per request", kind="too_large")
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, limited, send)


def create_app(export: str | Path, log: str | Path, *, exploration: Exploration | None = None, seed: int = 0,
               feedback_window: float = 60.0, part_rows: int = 10_000, flush_interval: float = 30.0,
               threads: int = 1, max_candidates: int = MAX_CANDIDATES,
               max_body_bytes: int = MAX_BODY_BYTES,
               on_shutdown: Callable[[ServedLog], None] | None = None) -> FastAPI:
    """The app serving the export folder ``export`` and logging to ``log`` (see :mod:`shopgym.serve.log`).

    ``on_shutdown`` is called with the log after its last part is written.

    Raises:
        ConfigError: the export fails its checksums, or ``log`` holds another catalog's log.
    """
    model = ServedModel(export, threads=threads)
    default = exploration or Exploration()
    manifest = model.manifest
    served_log = ServedLog(log, Path(export) / "items.parquet", with_users=model.has_users,
                           feedback_window=feedback_window, part_rows=part_rows, flush_interval=flush_interval,
                           meta={"export": str(Path(export).resolve()), "agent": manifest["agent"]["name"],
                                 "model_sha256": manifest["files"]["model.onnx"], "mode": default.mode,
                                 "epsilon": default.epsilon, "temperature": default.temperature, "seed": seed})
    rng = np.random.default_rng(seed)
    agent_name = str(manifest["agent"]["name"])
    started = time.time()
    counts = {"ranked": 0, "feedback": 0, "rejected": 0}
    stop = threading.Event()

    def flusher() -> None:
        while not stop.wait(min(1.0, flush_interval / 2)):
            served_log.flush()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=flusher, name="served-log", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            served_log.flush(everything=True)
            if on_shutdown is not None:
                on_shutdown(served_log)

    app = FastAPI(title="shopgym serve", version=str(manifest.get("shopgym_version")), lifespan=lifespan,
                  description=f"Ranks candidates with the exported {manifest['agent']['name']} "
                  "and logs what it showed, with propensities, in shopgym's data format.")
    app.state.model, app.state.log, app.state.counts = model, served_log, counts
    app.add_middleware(BodyLimit, limit=max_body_bytes, counts=counts)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each bad input back: a NaN cannot be written as JSON (a 500), and an
        # oversized list would be sent back whole. Name the field and say what is wrong, nothing else.
        counts["rejected"] += 1
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. bytes that are not UTF-8 JSON)
            counts["rejected"] += 1
            return _error("", f"the body could not be read as JSON ({exc.detail}); send a UTF-8 JSON object",
                          kind="json_invalid")
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        counts["rejected"] += 1
        return _error(exc.field, exc.detail)

    @app.exception_handler(FeedbackError)
    async def feedback_error(request: Request, exc: FeedbackError) -> JSONResponse:
        counts["rejected"] += 1
        return _error(exc.field, exc.detail, kind="conflict" if exc.status == 409 else "value_error",
                      status=exc.status)

    @app.post("/rank", response_model=RankResponse)
    async def rank(body: RankRequest) -> JSONResponse:
        """Rank ``candidates``; return the shown items with per-slot and whole-page propensities."""
        n = len(body.candidates)
        if n > max_candidates:
            raise RequestError("candidates", f"{n} candidates is more than this server's limit of "
                               f"{max_candidates} (--max-candidates)")
        k = min(model.slate_size, n) if body.k is None else body.k
        if k > n:
            raise RequestError("k", f"{k} is larger than the {n} candidates sent; send more candidates or a "
                               "smaller k")
        if body.user_id is not None and not model.has_users:
            raise RequestError("user_id", "this model was trained on logs without user ids; omit user_id (send "
                               "the shopper's recent items as history)")
        explore = Exploration(body.mode or default.mode,
                              default.epsilon if body.epsilon is None else body.epsilon,
                              default.temperature if body.temperature is None else body.temperature)
        shown = model.rank(body.candidates, k, explore, rng, user_id=body.user_id, history=body.history,
                           query=body.query, shown_before=body.shown_before)
        request_id = served_log.new_request_id()
        ids = [body.candidates[int(c)] for c in shown.slots]
        served_log.add(Page(request_id, time.time(), body.user_id, body.query, ids, shown.propensity,
                            shown.prefix_propensity))
        counts["ranked"] += 1
        # the RankResponse schema, written directly (FastAPI would validate the model it just built)
        return JSONResponse({
            "request_id": request_id, "slate_propensity": shown.slate_propensity, "mode": explore.mode,
            "model": agent_name,
            "items": [{"item_id": i, "position": j + 1, "propensity": float(p), "score": float(shown.scores[c])}
                      for j, (i, p, c) in enumerate(zip(ids, shown.propensity, shown.slots, strict=True))]})

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        """Record what the shopper did with a shown slot (by position or item id)."""
        if (body.position is None) == (body.item_id is None):
            raise RequestError("position", "give exactly one of position and item_id")
        position = body.position
        if position is None:
            position = served_log.position_of(body.request_id, str(body.item_id))
        served_log.feedback(body.request_id, position, clicked=body.clicked, carted=body.carted,
                            purchased=body.purchased, revenue=body.revenue)
        counts["feedback"] += 1
        return {"request_id": body.request_id, "position": position, "recorded": True}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and counters."""
        return {"status": "ok", "agent": manifest["agent"]["name"], "uptime_seconds": time.time() - started,
                "pages_pending": served_log.pending(), "rows_logged": served_log.rows_written, **counts}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """The export's manifest."""
        return manifest

    return app
