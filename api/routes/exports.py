"""``POST /v1/cases/{case_id}/exports``: the case's evidence package, streamed as a zip."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.auth import CanExportCase
from api.deps import RuntimeDep
from ingest.export import stream_export

router = APIRouter(prefix="/v1/cases", tags=["exports"])


@router.post(
    "/{case_id:path}/exports",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def export_case(rt: RuntimeDep, principal: CanExportCase, case_id: str) -> StreamingResponse:
    """A BagIt bag of every original, derivative, custody chain and log leaf of the case,
    each leaf with a tlog-proof against one checkpoint (DESIGN.md, "Package"). Logged as an
    ``export`` custody event per item naming the package's SHA-256."""
    stream = stream_export(rt, case_id=case_id, actor=principal.actor)
    return StreamingResponse(
        iter(stream),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{stream.folder}.zip"'},
    )
