"""FastAPI dependencies: the runtime of this app. Who is asking: ``api/auth.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: nothing here blocks, and FastAPI runs a plain ``def`` dependency in a worker
    # thread, a thread hop on every request of every route.
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
