"""The device registry over HTTP (admin only): enroll, list, disable, rotate-key, assign.

Admins only (a user token with the admin role; ``ingest.access`` decides, like every route),
except ``GET /v1/devices/me``, which a device asks with its own token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from api.auth import CanAdministerDevices
from api.deps import RuntimeDep
from api.routes.uploads import DeviceDep
from ingest import devices
from storage.db import transaction

router = APIRouter(prefix="/v1/devices", tags=["devices"])


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
def enroll(rt: RuntimeDep, admin: CanAdministerDevices, body: EnrollRequest) -> dict[str, Any]:
    """Enroll a device; the answer carries the credential (shown once: keep it secret)."""
    with transaction(rt.sessions) as session:
        enrolled = devices.enroll(
            session,
            device_id=body.device_id,
            officer_id=body.officer_id,
            unit=body.unit,
            model=body.model,
            actor=admin.actor,
            log_key=rt.ledger.key.verifier_key,
            server=body.server,
        )
        return _enrolled(enrolled)


@router.get("")
def list_devices(rt: RuntimeDep, _admin: CanAdministerDevices) -> dict[str, Any]:
    with rt.sessions() as session:
        return {"devices": devices.list_devices(session)}


@router.post("/{device_id}/disable")
def disable(
    rt: RuntimeDep, admin: CanAdministerDevices, device_id: str, body: DisableRequest | None = None
) -> dict[str, Any]:
    with transaction(rt.sessions) as session:
        device = devices.disable(
            session, device_id=device_id, actor=admin.actor, reason=body.reason if body else None
        )
        return devices.device_document(session, device)


@router.post("/{device_id}/rotate-key")
def rotate_key(rt: RuntimeDep, admin: CanAdministerDevices, device_id: str) -> dict[str, Any]:
    with transaction(rt.sessions) as session:
        return _enrolled(
            devices.rotate_key(
                session, device_id=device_id, actor=admin.actor, log_key=rt.ledger.key.verifier_key
            )
        )


@router.post("/{device_id}/assign")
def assign(
    rt: RuntimeDep, admin: CanAdministerDevices, device_id: str, body: AssignRequest
) -> dict[str, Any]:
    with transaction(rt.sessions) as session:
        device = devices.assign(
            session, device_id=device_id, officer_id=body.officer_id, actor=admin.actor
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
