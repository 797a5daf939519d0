"""Linking items and cases, with a required reason (custody events ``link`` / ``unlink``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import CanLink
from api.deps import RuntimeDep
from ingest import links

router = APIRouter(prefix="/v1/items", tags=["cases"])


class Reason(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="Why (logged as custody).")


@router.put("/{item_id}/cases/{case_id:path}")
def link_item(
    rt: RuntimeDep, principal: CanLink, item_id: str, case_id: str, body: Reason
) -> dict[str, Any]:
    """Link an item to a case (created when new; a case without a unit takes yours)."""
    return links.link(
        rt,
        item_id=item_id,
        case_id=case_id,
        reason=body.reason,
        actor=principal.actor,
        unit=principal.unit,
    )


@router.delete("/{item_id}/cases/{case_id:path}")
def unlink_item(
    rt: RuntimeDep,
    principal: CanLink,
    item_id: str,
    case_id: str,
    reason: Annotated[str, Query(min_length=1, max_length=2000, description="Why.")],
) -> dict[str, Any]:
    """Unlink an item from a case; ``?reason=`` is required."""
    return links.unlink(rt, item_id=item_id, case_id=case_id, reason=reason, actor=principal.actor)
