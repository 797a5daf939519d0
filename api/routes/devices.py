"""The device registry over HTTP (admin only): enroll, list, disable, rotate-key, assign.

Until user accounts and roles land, an admin is whoever presents the bearer token whose SHA-256
is ``intake.admin_token_sha256``; with none configured these endpoints answer 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from api.deps import RuntimeDep
from api.routes.uploads import DeviceDep
from ingest import devices
from ingest.devices import hash_token
from ingest.errors import Forbidden, Unauthenticated
from storage.db import transaction

router = APIRouter(prefix="/v1/devices", tags=["devices"])


def require_admin(request: Request, rt: RuntimeDep) -> str:
    """The acting admin (``admin:token``), or 401 / 403."""
    expected = rt.settings.intake.admin_token_sha256
    if not expected:
        raise Forbidden("device administration over HTTP is not configured on this server")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("an admin bearer token is required")
    if not hmac.compare_digest(hash_token(token.strip()), expected.lower()):
        raise Forbidden("this token may not administer devices")
    return "api:admin"


AdminDep = Annotated[str, Depends(require_admin)]


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str
    officer_id: str
    unit: str
    model: str | None = None
    server: str | None = None


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    officer_id: str


class DisableRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = None


def _enrolled(enrolled: devices.Enrolled) -> dict[str, Any]:
    return {
        "device_id": enrolled.device.id,
        "officer_id": enrolled.device.officer_id,
        "unit": enrolled.device.unit,
        "public_key": enrolled.device.public_key,
        "credential": enrolled.credential.model_dump(mode="json"),
    }


@router.post("", status_code=201)
def enroll(rt: RuntimeDep, admin: AdminDep, body: EnrollRequest) -> dict[str, Any]:
    """Enroll a device; the answer carries the credential (shown once: keep it secret)."""
    with transaction(rt.sessions) as session:
        enrolled = devices.enroll(
            session,
            device_id=body.device_id,
            officer_id=body.officer_id,
            unit=body.unit,
            model=body.model,
            actor=admin,
            log_key=rt.ledger.key.verifier_key,
            server=body.server,
        )
        return _enrolled(enrolled)


@router.get("")
def list_devices(rt: RuntimeDep, _admin: AdminDep) -> dict[str, Any]:
    with rt.sessions() as session:
        return {"devices": devices.list_devices(session)}


@router.post("/{device_id}/disable")
def disable(
    rt: RuntimeDep, admin: AdminDep, device_id: str, body: DisableRequest | None = None
) -> dict[str, Any]:
    with transaction(rt.sessions) as session:
        device = devices.disable(
            session, device_id=device_id, actor=admin, reason=body.reason if body else None
        )
        return devices.device_document(session, device)


@router.post("/{device_id}/rotate-key")
def rotate_key(rt: RuntimeDep, admin: AdminDep, device_id: str) -> dict[str, Any]:
    with transaction(rt.sessions) as session:
        return _enrolled(
            devices.rotate_key(
                session, device_id=device_id, actor=admin, log_key=rt.ledger.key.verifier_key
            )
        )


@router.post("/{device_id}/assign")
def assign(rt: RuntimeDep, admin: AdminDep, device_id: str, body: AssignRequest) -> dict[str, Any]:
    with transaction(rt.sessions) as session:
        device = devices.assign(
            session, device_id=device_id, officer_id=body.officer_id, actor=admin
        )
        return devices.device_document(session, device)


@router.get("/me")
def me(rt: RuntimeDep, device: DeviceDep) -> dict[str, Any]:
    """The calling device (device token): whom it is assigned to, the last ``seq`` accepted."""
    return {
        "device_id": device.id,
        "officer_id": device.officer_id,
        "unit": device.unit,
        "last_seq": device.last_seq,
        "log_key": rt.ledger.key.verifier_key,
    }
