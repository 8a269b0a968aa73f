"""The OpenAI-compatible HTTP server: FastAPI routes over one engine loop (see loop.py).

    app = create_app(model, tok, model_name="tiny")            # or loader=lambda: llmlab.load(path)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (JSON, or SSE with
`stream: true`), GET /health (503 until the model is loaded and warmed up), GET /metrics
(Prometheus text), GET / (the chat page, from web/), /openapi.json, and with `preferences=FILE`
POST /v1/preferences (a human judgement of two answers → one line of FILE; see preferences.py). With
`api_key`, the /v1 routes
need `Authorization: Bearer KEY` (compared in constant time); the page, /health and /metrics do not.
Saturation: requests beyond the engine's rows wait in its queue, up to `max_waiting` of them; past
that a request is answered 429 at once (type `rate_limit_error`), never queued without bound.
`compare={"dpo": loader}` serves more models beside the first, each with its own engine thread,
picked by the requests' `model` (the chat page's compare mode can put one against the first);
/metrics describes the first model's engine.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from llmlab.generate import Engine
from llmlab.serve.errors import APIError, envelope, validation_error
from llmlab.serve.loop import EngineLoop
from llmlab.serve.metrics import Metrics
from llmlab.serve.preferences import PreferenceLog, PreferenceRequest, preference_record
from llmlab.serve.protocol import ChatRequest, CompletionRequest
from llmlab.serve.requests import Limits, chat_job, completion_job
from llmlab.serve.responses import now
from llmlab.serve.streams import JobRun

WEB = Path(__file__).parent / "web"
ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions")
ROUTES += ("/v1/preferences",)


class Server:
    """What the routes share: the engine loop, the tokenizer, the limits, the key."""

    def __init__(self, loop: EngineLoop, model_name: str, api_key: str | None, max_messages: int):
        self.loop, self.model_name, self.api_key, self.max_messages = loop, model_name, api_key, max_messages
        self.created = now()
        self.preferences: PreferenceLog | None = None  # where judgements go (None: not recorded)
        self.others: dict[str, Server] = {}  # models served beside this one, by name

    def all(self) -> list[Server]:
        return [self, *self.others.values()]

    @property
    def engine(self) -> Engine:
        return self.loop.engine

    def limits(self) -> Limits:
        cfg = self.engine.cfg
        return Limits(self.engine.max_batch, self.engine.max_len, cfg.vocab_size, self.max_messages)

    def pick(self, name: str) -> Server:
        """The server of the model a request names."""
        if name == self.model_name:
            return self
        if name in self.others:
            return self.others[name]
        served = ", ".join(repr(s.model_name) for s in self.all())
        raise APIError(
            404,
            f"model {name!r} does not exist; this server serves {served}",
            param="model",
            code="model_not_found",
        )

    def check_room(self) -> None:
        if self.loop.full():
            raise APIError(
                429,
                f"the server is at its limit ({self.engine.max_batch} running + {self.loop.max_waiting} "
                "waiting requests); retry later",
                type="rate_limit_error",
                code="server_busy",
            )


def create_app(
    model=None,
    tok=None,
    *,
    loader=None,
    model_name: str = "llmlab",
    api_key: str | None = None,
    max_batch: int = 32,
    compile: bool = False,
    dtype=None,
    max_waiting: int = 256,
    max_body_bytes: int = 4 * 2**20,
    max_messages: int = 512,
    warmup: bool = True,
    preferences: str | Path | None = None,
    compare: dict[str, Callable[[], tuple]] | None = None,
) -> FastAPI:
    """The app for one model: pass (model, tok), or `loader() -> (model, tok)` (run in the engine
    thread, so /health answers 503 while it loads). `preferences`: a JSONL file that POST
    /v1/preferences appends judgements to (None: the route answers 404). `compare`: {name: loader}
    of more models to serve beside this one, loaded and run the same way."""
    if (model is None) == (loader is None):
        raise ValueError("pass either a model (and its tokenizer) or a loader")

    def engine_maker(load):
        def make_engine() -> Engine:
            m, t = load()
            # max_len fixed at the context: the engine never resizes its cache to one batch's prompts
            return Engine(m, t, max_batch=max_batch, max_len=m.cfg.context, compile=compile, dtype=dtype)

        return make_engine

    metrics = Metrics()
    first = engine_maker(loader if loader is not None else lambda: (model, tok))
    server = Server(EngineLoop(first, metrics, max_waiting, warmup), model_name, api_key, max_messages)
    for name, load in (compare or {}).items():
        if name == model_name or not name:
            raise ValueError(f"compare: model name {name!r} must be non-empty and differ from {model_name!r}")
        # its own Metrics: the engine gauges of /metrics stay those of the first model
        other = EngineLoop(engine_maker(load), Metrics(), max_waiting, warmup)
        server.others[name] = Server(other, name, api_key, max_messages)
    if preferences is not None:
        server.preferences = PreferenceLog(preferences)

    async def lifespan(app: FastAPI):
        for s in server.all():
            s.loop.start()
        yield
        for s in server.all():
            s.loop.stop()
        if server.preferences is not None:
            server.preferences.close()

    app = FastAPI(title="llmlab", summary="An OpenAI-compatible server for llmlab models", lifespan=lifespan)
    app.state.server = server
    app.add_middleware(RequestGate, metrics=metrics, max_body_bytes=max_body_bytes)
    _error_handlers(app)
    _routes(app, server, metrics)
    app.mount("/web", StaticFiles(directory=WEB), name="web")
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(list(exc.errors())).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(envelope(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            envelope(f"internal error: {type(exc).__name__}", "server_error"), status_code=500
        )


def _routes(app: FastAPI, server: Server, metrics: Metrics) -> None:
    def authorized(request: Request) -> None:
        if server.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), server.api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key; send `Authorization: Bearer KEY`",
                type="authentication_error",
                code="invalid_api_key",
            )

    def ready() -> None:
        for s in server.all():
            if not s.loop.ready.is_set():
                why = s.loop.load_error or "the model is still loading"
                raise APIError(503, f"not ready: {why}", type="service_unavailable", code="loading")

    guards = [Depends(authorized), Depends(ready)]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/health")
    async def health() -> JSONResponse:
        loops = [s.loop for s in server.all()]
        if all(loop.ready.is_set() for loop in loops):
            return JSONResponse({"status": "ok", "model": server.model_name})
        error = next((loop.load_error for loop in loops if loop.load_error), None)
        return JSONResponse({"status": "failed" if error else "loading", "error": error}, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=guards)
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(s) for s in server.all()]}

    @app.get("/v1/models/{name}", dependencies=guards)
    async def model_card(name: str) -> dict:
        return _model_card(server.pick(name))

    @app.post("/v1/chat/completions", dependencies=guards)
    async def chat(body: ChatRequest, request: Request):
        srv = server.pick(body.model)
        srv.check_room()
        job = chat_job(body, srv.engine.tok, srv.limits())
        return await JobRun(srv, job, body, request, chat=True).respond()

    @app.post("/v1/completions", dependencies=guards)
    async def completions(body: CompletionRequest, request: Request):
        srv = server.pick(body.model)
        srv.check_room()
        job = completion_job(body, srv.engine.tok, srv.limits())
        return await JobRun(srv, job, body, request, chat=False).respond()

    @app.post("/v1/preferences", dependencies=[Depends(authorized)])  # needs no model: no `ready`
    async def preferences(body: PreferenceRequest) -> dict:
        if server.preferences is None:
            raise APIError(
                404,
                "this server does not record preferences; start it with `llmlab serve --preferences FILE`",
                code="preferences_off",
            )
        record = preference_record(body)
        try:
            await run_in_threadpool(server.preferences.append, record)  # fsync waits: not on the event loop
        except OSError as e:
            raise APIError(500, f"the judgement was not recorded: {e}", type="server_error") from None
        return {"object": "preference", "label": body.choice, "created": now()}


def _model_card(server: Server) -> dict:
    return {
        "id": server.model_name,
        "object": "model",
        "created": server.created,
        "owned_by": "llmlab",
        "max_model_len": server.engine.max_len,
    }


class RequestGate:
    """ASGI middleware: a body over `max_body_bytes` (by its Content-Length) is a 413 before it is read;
    every response's status is counted per route for /metrics."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = [500]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = int(dict(scope["headers"]).get(b"content-length", b"0"))
        except ValueError:
            length = -1
        try:
            if length < 0:
                await APIError(400, "bad Content-Length header").response()(scope, receive, counted_send)
            elif length > self.max_body_bytes:
                err = APIError(413, f"request body of {length} bytes; at most {self.max_body_bytes}")
                await err.response()(scope, receive, counted_send)
            else:
                await self.app(scope, receive, counted_send)
        finally:
            self.metrics.count_http(route, status[0])
