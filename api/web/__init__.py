"""The web pages: templates, static files, the login session. ``install(app)`` adds them."""

from __future__ import annotations

from fastapi import FastAPI

from api.web.session import PeopleDirectory

__all__ = ["PeopleDirectory", "install"]


def install(app: FastAPI) -> None:
    """Include the page routes and serve ``api/web/static`` at ``/static``."""
    from fastapi.staticfiles import StaticFiles

    from api.routes import web
    from api.web.pages import STATIC_DIR

    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
