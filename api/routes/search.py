"""Search: ``GET /v1/items`` with filters, in capture-time order, cursor-paginated."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import CanSearch
from api.deps import RuntimeDep
from ingest import search

router = APIRouter(prefix="/v1/items", tags=["search"])


@router.get("")
def search_items(
    rt: RuntimeDep,
    principal: CanSearch,
    case: str | None = None,
    officer: str | None = None,
    device: str | None = None,
    unit: str | None = None,
    from_: Annotated[str | None, Query(alias="from", description="ISO 8601, inclusive")] = None,
    to: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
    bbox: Annotated[str | None, Query(description="W,S,E,N in decimal degrees")] = None,
    status: str | None = None,
    media_type: str | None = None,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=search.MAX_LIMIT)] = search.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Items the caller may see, oldest capture time first: ``{"items", "next"}``. There is
    no total count: a count would tell how many items the caller may not see."""
    filters = search.Filters(
        case=case,
        officer=officer,
        device=device,
        unit=unit,
        start=search.parse_time(from_, "from"),
        end=search.parse_time(to, "to"),
        bbox=search.parse_bbox(bbox),
        status=status,
        media_type=media_type,
    )
    with rt.sessions() as session:
        return search.search(
            session, principal=principal, filters=filters, cursor=cursor, limit=limit
        )
