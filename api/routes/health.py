from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import RuntimeDep

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz(rt: RuntimeDep) -> dict[str, str]:
    """The index answers and the bucket exists with versioning (WORM) on."""
    with rt.sessions() as session:
        session.execute(text("SELECT 1"))
    rt.store.ensure_bucket()
    return {"status": "ok"}
