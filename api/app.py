"""The HTTP API: ``create_app(settings)`` builds it; nothing is opened at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import problem
from api.routes import cases, devices, health, items, log, uploads
from configs.settings import Settings
from ingest.runtime import open_runtime
from ingest.worker import WorkerPool
from integrity.errors import LiuhenError

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger(__name__)


def create_app(settings: Settings, *, workers: int | None = None) -> FastAPI:
    """The app; its lifespan opens the runtime and runs the pipeline worker pool."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = open_runtime(settings)
        pool = WorkerPool(rt, settings.pipeline.workers if workers is None else workers)
        app.state.runtime = rt
        pool.start()
        try:
            yield
        finally:
            pool.stop(timeout=30)
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
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LiuhenError)
    async def domain_error(request: Request, exc: LiuhenError) -> JSONResponse:
        doc = problem(exc, instance=request.url.path)
        if doc["status"] >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(doc, status_code=doc["status"], media_type=PROBLEM_JSON)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        doc = {
            "type": "urn:liuhen:problem:bad_request",
            "title": "Invalid request",
            "status": 422,
            "detail": detail,
            "code": "bad_request",
            "instance": request.url.path,
        }
        return JSONResponse(doc, status_code=422, media_type=PROBLEM_JSON)

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
