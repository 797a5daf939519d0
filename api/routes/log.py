"""The log, for auditors and monitors: key, latest checkpoint, consistency proofs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from api.auth import CanReadLog
from api.deps import RuntimeDep

router = APIRouter(prefix="/v1/log", tags=["log"])


@router.get("/key", response_class=PlainTextResponse)
def log_key(rt: RuntimeDep) -> str:
    """The log's verifier key (C2SP note verifier-key string). Public: anyone may check."""
    return rt.ledger.key.verifier_key + "\n"


@router.get("/checkpoint", response_class=PlainTextResponse)
def checkpoint(rt: RuntimeDep, _principal: CanReadLog) -> str:
    """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
    return rt.ledger.publish().note


@router.get("/proof/consistency")
def consistency(
    rt: RuntimeDep,
    _principal: CanReadLog,
    size1: Annotated[int, Query(alias="from", ge=1)],
    size2: Annotated[int, Query(alias="to", ge=1)],
) -> dict[str, Any]:
    """RFC 9162 consistency proof between two tree sizes (base64 hashes), 1 ≤ from ≤ to ≤ the
    latest checkpoint's size. (RFC 9162 defines no proof from the empty tree.)"""
    size = rt.ledger.publish().checkpoint.size
    if not size1 <= size2 <= size:
        # A caller's bad range, not a broken log: answer 400 before the ledger sees it.
        raise HTTPException(400, f"need 1 <= from <= to <= {size}, got from={size1}, to={size2}")
    return {"from": size1, "to": size2, "proof": rt.ledger.consistency(size1, size2)}
