"""FastAPI dependencies: the runtime of this app, who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ingest.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def get_actor(x_liuhen_actor: Annotated[str | None, Header()] = None) -> str:
    """Who is acting. Until device and user authentication land, the caller names itself."""
    name = (x_liuhen_actor or "").strip()
    return f"api:{name[:64]}" if name else "api:anonymous"


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ActorDep = Annotated[str, Depends(get_actor)]
