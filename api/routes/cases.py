from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import CanReadCase
from api.deps import RuntimeDep
from ingest import catalog
from ingest.manifest import check_case_id

router = APIRouter(prefix="/v1/cases", tags=["cases"])


@router.get("/{case_id:path}")
def get_case(rt: RuntimeDep, _principal: CanReadCase, case_id: str) -> dict[str, Any]:
    """The items linked to a case (case IDs may contain ``/``)."""
    check_case_id(case_id, rt.settings.case_id_pattern)
    with rt.sessions() as session:
        return catalog.case_document(session, case_id)
