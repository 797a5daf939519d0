"""The HTTP API: ``create_app(settings)`` builds it; nothing is opened at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import web
from api.errors import problem
from api.ranges import RangeNotSatisfiable
from api.routes import (
    cases,
    devices,
    exports,
    health,
    holds,
    items,
    links,
    log,
    metrics,
    search,
    uploads,
)
from configs.settings import Settings
from ingest.metrics import answered as count_error
from ingest.metrics import count as count_coded
from ingest.queue import BackgroundWorkers
from ingest.runtime import Runtime, open_runtime
from integrity.errors import LiuhenError
from storage.errors import StoreUnavailable

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_S = 5
"""What a 503 (store or index unavailable) tells the client to wait before trying again."""
logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, workers: int | None = None, runtime: Runtime | None = None
) -> FastAPI:
    """The app; its lifespan opens the runtime (or uses ``runtime``, which the caller then
    closes) and runs the pipeline worker pool."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or open_runtime(settings)
        try:
            # Reach the store now: the embedded server starts (or is joined) and stays leased
            # while we serve. A store that is down is no reason not to serve: requests that
            # need it answer 503 until it is back.
            _ = rt.store.client
        except StoreUnavailable as e:
            logger.warning("serving without the object store for now: %s", e)
        # Sync endpoints run on anyio's thread pool; a seal holds its thread while it waits
        # for its checkpoint, so the pool is sized for many waiting uploads, not CPU.
        to_thread.current_default_thread_limiter().total_tokens = settings.api.threads
        pool = BackgroundWorkers(
            rt.queue, settings.pipeline.workers if workers is None else workers
        )
        app.state.runtime = rt
        pool.start()
        stop_signer = rt.ledger.sign_in_background()  # leaves nobody asked a receipt for
        stop_sweep = uploads.sweep_in_background(app, rt)
        try:
            yield
        finally:
            stop_sweep()
            stop_signer()
            pool.stop(timeout=30)
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="liuhen 留痕",
        summary="Evidence intake for body cameras: WORM originals, tamper-evident log, case index.",
        version="0.1.0",
        lifespan=lifespan,
    )
    for router in (health.router, items.router, cases.router, log.router):
        app.include_router(router)
    for router in (devices.router, uploads.router):  # device intake
        app.include_router(router)
    app.include_router(exports.router)
    app.include_router(metrics.router)
    for router in (search.router, links.router, holds.router):
        app.include_router(router)
    web.install(app)  # the web pages (api/routes/web.py) and their static files
    app.state.web_directory = web.PeopleDirectory()  # web logins: the people service's users
    _install_error_handlers(app)
    return app


def _coded(request: Request, status: int, title: str, code: str, detail: str) -> JSONResponse:
    """An RFC 9457 problem document of liuhen's own ``code`` for an error that is no
    ``LiuhenError`` (FastAPI's validation, the database refusing a value, the unexpected)."""
    doc = {
        "type": f"urn:liuhen:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    return JSONResponse(doc, status_code=status, media_type=PROBLEM_JSON)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LiuhenError)
    async def domain_error(request: Request, exc: LiuhenError) -> JSONResponse:
        doc = problem(exc, instance=request.url.path)
        count_error(exc)
        headers: dict[str, str] = {}
        if doc["status"] == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="liuhen"'
        if isinstance(exc, RangeNotSatisfiable):
            headers["Content-Range"] = f"bytes */{exc.size}"  # RFC 9110 §15.5.17
        if doc["status"] == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        elif doc["status"] >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            doc, status_code=doc["status"], media_type=PROBLEM_JSON, headers=headers
        )

    @app.exception_handler(DataError)
    async def value_refused(request: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL refuses a NUL character, or a value longer than its column, in a path,
        # a query or a body: the request's fault, not the server's (SQLite takes them).
        logger.warning("%s %s: the database refused a value: %s", request.method,
                       request.url.path, str(exc.orig).splitlines()[0])  # fmt: skip
        detail = "a value the index cannot hold (a NUL character, or too long)"
        count_coded("request", "bad_value")
        return _coded(request, 422, "Invalid request", "bad_value", detail)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still a problem document: a client parses one shape of error, whatever went wrong.
        logger.exception("%s %s: unexpected %s", request.method, request.url.path, exc)
        count_error(exc)
        detail = "an unexpected error; it is logged on the server"
        return _coded(request, 500, "Internal error", "internal_error", detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        count_coded("request", "bad_request")
        return _coded(request, 422, "Invalid request", "bad_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # RFC 9457 §4.2.1: with "about:blank" the title is the status phrase; specifics go
        # in "detail".
        doc = {
            "type": "about:blank",
            "title": _phrase(exc.status_code),
            "status": exc.status_code,
            "detail": str(exc.detail),
            "instance": request.url.path,
        }
        return JSONResponse(
            doc, status_code=exc.status_code, media_type=PROBLEM_JSON, headers=exc.headers
        )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
