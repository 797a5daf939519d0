"""Legal hold on a case: an admin holds or releases it, with a reason."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import CanHoldCase
from api.deps import RuntimeDep
from api.routes.links import Reason
from ingest import retention

router = APIRouter(prefix="/v1/cases", tags=["cases"])


@router.post("/{case_id:path}/hold")
def hold_case(rt: RuntimeDep, principal: CanHoldCase, case_id: str, body: Reason) -> dict[str, Any]:
    """Hold the case: every item in it gets the S3 legal hold on all its objects."""
    return retention.set_case_hold(
        rt, case_id=case_id, held=True, reason=body.reason, actor=principal.actor
    )


@router.post("/{case_id:path}/release")
def release_case(
    rt: RuntimeDep, principal: CanHoldCase, case_id: str, body: Reason
) -> dict[str, Any]:
    """Release the case: its items lose the hold unless another open case holds them."""
    return retention.set_case_hold(
        rt, case_id=case_id, held=False, reason=body.reason, actor=principal.actor
    )
