"""The device registry: enrollment, credentials, tokens, assignment, and the checks every device
request passes (DESIGN.md, "Device intake").

* A device is *enrolled* when it has a token hash and a signing key; rows made on the fly for a
  device named in a manifest or a file name are known but cannot authenticate.
* Tokens are 256-bit random strings; only their SHA-256 is stored (a fast hash is right for a
  high-entropy secret: there is nothing to brute-force).
* The device's Ed25519 key is made here and handed over in the credential file (mode 0600).
  Every key it has had stays in ``device_keys``; the upload row keeps the key it was checked with.
* Assignment is custody of the device: one officer at a time, every change a row with who and
  when (``device_assignments``).
* Registry actions and every refusal of an authenticated device are ``device_events`` rows
  (actor, action, reason, time). They are not log leaves: the log's leaves are about items
  (item, derivative, custody with a per-item chain), and a refusal concerns no item.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ingest.errors import (
    BadSignature,
    DeviceDisabled,
    Forbidden,
    ManifestError,
    OfficerNotAssigned,
    SeqReplayed,
    Unauthenticated,
)
from ingest.manifest import _PARTY_ID, DeviceManifest, parse_device_manifest
from ingest.people import UNIT
from storage import repository as repo
from storage.db import transaction
from storage.errors import Conflict, NotFound
from storage.tables import Device, DeviceAssignment, DeviceEvent, DeviceKey, Unit

CREDENTIAL_VERSION = 1
TOKEN_PREFIX = "lhd_"  # noqa: S105 - a prefix that names what a token is, not a secret


class Credential(BaseModel):
    """The credential file of DESIGN.md: ``{"v": 1, "device_id", "token", "signing_key",
    "log_key", "server"}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = Field(default=CREDENTIAL_VERSION, ge=1, le=1)
    device_id: str = Field(pattern=_PARTY_ID)
    token: str
    """The bearer token; the server keeps only its SHA-256."""
    signing_key: str
    """Base64 of the raw 32-byte Ed25519 private key."""
    log_key: str
    """The log's note verifier key: receipts are checked against it."""
    server: str | None = None

    def private_key(self) -> Ed25519PrivateKey:
        try:
            raw = base64.b64decode(self.signing_key, validate=True)
            return Ed25519PrivateKey.from_private_bytes(raw)
        except (binascii.Error, ValueError) as e:
            raise ManifestError(f"credential signing_key is not a base64 Ed25519 key: {e}") from e

    def sign(self, manifest_text: bytes) -> str:
        """The base64 signature over the manifest's canonical bytes."""
        return base64.b64encode(self.private_key().sign(manifest_text)).decode("ascii")


def write_credential(path: Path, credential: Credential) -> None:
    """Write the credential (mode 0600 from the first byte), replacing any old one atomically."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(credential.model_dump(mode="json"), indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def load_credential(path: Path) -> Credential:
    try:
        return Credential.model_validate_json(path.expanduser().read_bytes())
    except OSError as e:
        raise ManifestError(f"cannot read the credential file {path}: {e}") from e
    except ValidationError as e:
        raise ManifestError(f"{path} is not a liuhen device credential: {e}") from e


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def public_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def private_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Enrolled:
    device: Device
    credential: Credential


def _new_secrets(device: Device) -> tuple[str, Ed25519PrivateKey]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = Ed25519PrivateKey.generate()
    device.token_hash = hash_token(token)
    device.public_key = public_key_text(key)
    return token, key


def _credential(device: Device, token: str, key: Ed25519PrivateKey, **kw: Any) -> Credential:
    return Credential(device_id=device.id, token=token, signing_key=private_key_text(key), **kw)


def enroll(
    session: Session,
    *,
    device_id: str,
    officer_id: str,
    unit: str,
    model: str | None,
    actor: str,
    log_key: str,
    server: str | None = None,
    now: datetime | None = None,
) -> Enrolled:
    """Enroll a device (a known but unenrolled row is taken over); Conflict if enrolled."""
    now = now or datetime.now(UTC)
    for what, value in (("device ID", device_id), ("officer ID", officer_id)):
        _check_id(what, value)
    if not UNIT.fullmatch(unit):  # as for people: a unit's name is often Chinese (一中队)
        raise ManifestError(f"unit {unit!r} must be 1-100 characters without surrounding blanks")
    device = session.get(Device, device_id)
    if device is not None and device.enrolled_at is not None:
        raise Conflict(f"device {device_id} is already enrolled; use rotate-key for a new key")
    if device is None:
        device = Device(id=device_id, created_at=now)
        session.add(device)
    _ensure_unit(session, unit=unit, now=now)
    repo.ensure_person(session, person_id=officer_id, now=now)
    device.unit, device.model, device.enrolled_at = unit, model, now
    device.disabled_at = None
    token, key = _new_secrets(device)
    session.add(DeviceKey(device_id=device_id, public_key=device.public_key, created_at=now))
    session.flush()
    _assign(session, device, officer_id=officer_id, actor=actor, now=now)
    _event(session, device_id, "enroll", actor, now, details={"officer_id": officer_id})
    return Enrolled(device, _credential(device, token, key, log_key=log_key, server=server))


def rotate_key(
    session: Session,
    *,
    device_id: str,
    actor: str,
    log_key: str,
    server: str | None = None,
    now: datetime | None = None,
) -> Enrolled:
    """A new token and signing key; the old ones stop working at once (the old key is kept
    in ``device_keys`` so manifests it signed stay checkable)."""
    now = now or datetime.now(UTC)
    device = get_enrolled(session, device_id=device_id)
    session.execute(
        update(DeviceKey)
        .where(DeviceKey.device_id == device_id, DeviceKey.retired_at.is_(None))
        .values(retired_at=now)
    )
    token, key = _new_secrets(device)
    session.add(DeviceKey(device_id=device_id, public_key=device.public_key, created_at=now))
    _event(session, device_id, "rotate_key", actor, now, details={"public_key": device.public_key})
    return Enrolled(device, _credential(device, token, key, log_key=log_key, server=server))


def disable(
    session: Session, *, device_id: str, actor: str, reason: str | None, now: datetime | None = None
) -> Device:
    """Refuse every further request of the device (its token and key stay on record)."""
    now = now or datetime.now(UTC)
    device = get_enrolled(session, device_id=device_id)
    if device.disabled_at is None:
        device.disabled_at = now
        _event(session, device_id, "disable", actor, now, reason=reason)
    return device


def assign(
    session: Session, *, device_id: str, officer_id: str, actor: str, now: datetime | None = None
) -> Device:
    """Hand the device to another officer; the previous assignment ends now."""
    now = now or datetime.now(UTC)
    _check_id("officer ID", officer_id)
    device = get_enrolled(session, device_id=device_id)
    repo.ensure_person(session, person_id=officer_id, now=now)
    if device.officer_id != officer_id:
        _assign(session, device, officer_id=officer_id, actor=actor, now=now)
        _event(session, device_id, "assign", actor, now, details={"officer_id": officer_id})
    return device


def _assign(
    session: Session, device: Device, *, officer_id: str, actor: str, now: datetime
) -> None:
    session.execute(
        update(DeviceAssignment)
        .where(DeviceAssignment.device_id == device.id, DeviceAssignment.ended_at.is_(None))
        .values(ended_at=now)
    )
    session.add(
        DeviceAssignment(
            device_id=device.id, officer_id=officer_id, assigned_at=now, assigned_by=actor[:64]
        )
    )
    device.officer_id = officer_id


def _check_id(what: str, value: str) -> None:
    if not re.fullmatch(_PARTY_ID, value):
        raise ManifestError(f"invalid {what} {value!r}: letters, digits and _.:- only, 1-64")


def _ensure_unit(session: Session, *, unit: str, now: datetime) -> None:
    if session.get(Unit, unit) is None:
        session.add(Unit(id=unit, created_at=now))
        session.flush()


def get_enrolled(session: Session, *, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None or device.enrolled_at is None:
        raise NotFound(f"no enrolled device {device_id!r}")
    return device


def device_document(session: Session, device: Device) -> dict[str, Any]:
    history = session.scalars(
        select(DeviceAssignment)
        .where(DeviceAssignment.device_id == device.id)
        .order_by(DeviceAssignment.id)
    ).all()
    return {
        "device_id": device.id,
        "officer_id": device.officer_id,
        "unit": device.unit,
        "model": device.model,
        "public_key": device.public_key,
        "enrolled_at": _iso(device.enrolled_at),
        "disabled": device.disabled_at is not None,
        "disabled_at": _iso(device.disabled_at),
        "last_seq": device.last_seq,
        "assignments": [
            {
                "officer_id": a.officer_id,
                "from": _iso(a.assigned_at),
                "until": _iso(a.ended_at),
                "by": a.assigned_by,
            }
            for a in history
        ],
    }


def list_devices(session: Session) -> list[dict[str, Any]]:
    devices = session.scalars(
        select(Device).where(Device.enrolled_at.is_not(None)).order_by(Device.id)
    ).all()
    return [device_document(session, d) for d in devices]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --- authentication and manifest checks (every device request) -----------------------------


def authenticate_device(session: Session, token: str | None) -> Device:
    """The enrolled device holding ``token``. Unauthenticated (401) for a missing or unknown
    token; DeviceDisabled (403) for a disabled device (authenticated, and refused)."""
    if not token:
        raise Unauthenticated("a device bearer token is required (Authorization: Bearer ...)")
    device = session.scalars(select(Device).where(Device.token_hash == hash_token(token))).first()
    if device is None or device.enrolled_at is None:
        raise Unauthenticated("unknown device token")
    if device.disabled_at is not None:
        refused = DeviceDisabled(f"device {device.id} is disabled")
        refused.device_id = device.id  # authenticated, then refused: the caller logs it
        raise refused
    return device


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> None:
    """None if ``signature_b64`` is the device key's Ed25519 signature over ``message``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("the manifest signature is not base64") from None
    if len(signature) != 64:
        raise BadSignature(f"an Ed25519 signature has 64 bytes, this one {len(signature)}")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise BadSignature("the manifest signature does not verify with the device's key") from None


def check_manifest(
    session: Session,
    device: Device,
    *,
    manifest_text: bytes,
    signature: str,
    case_id_pattern: str,
) -> DeviceManifest:
    """Signature, parse, device, officer, and consume ``seq`` (inside the caller's transaction,
    so a refused or rolled-back upload does not use it up)."""
    if device.public_key is None:  # pragma: no cover - enrolled devices have a key
        raise Forbidden(f"device {device.id} has no signing key")
    verify_signature(device.public_key, manifest_text, signature)
    manifest = parse_device_manifest(manifest_text, case_id_pattern=case_id_pattern)
    if manifest.device_id != device.id:
        raise Forbidden(f"the manifest names device {manifest.device_id}, the token is {device.id}")
    if manifest.officer_id != device.officer_id:
        raise OfficerNotAssigned(
            f"device {device.id} is assigned to officer {device.officer_id}, "
            f"not {manifest.officer_id}"
        )
    taken = session.execute(
        update(Device)
        .where(
            Device.id == device.id,
            (Device.last_seq.is_(None)) | (Device.last_seq < manifest.seq),
        )
        .values(last_seq=manifest.seq)
    )
    if getattr(taken, "rowcount", 0) != 1:
        last = session.execute(select(Device.last_seq).where(Device.id == device.id)).scalar()
        raise SeqReplayed(
            f"manifest seq {manifest.seq} is not greater than the last accepted ({last})"
        )
    return manifest


# --- events --------------------------------------------------------------------------------


def _event(
    session: Session,
    device_id: str,
    action: str,
    actor: str,
    at: datetime,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        DeviceEvent(
            device_id=device_id,
            action=action,
            actor=actor[:64],
            at=at,
            reason=reason,
            details=details,
        )
    )


def record_refusal(
    sessions: sessionmaker[Session],
    *,
    device_id: str,
    code: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Log a refusal of an authenticated device in its own transaction (it must outlive the
    refused request's rollback)."""
    with transaction(sessions) as session:
        _event(
            session,
            device_id,
            "refused",
            f"device:{device_id}",
            datetime.now(UTC),
            reason=reason,
            details={"code": code, **(details or {})},
        )


def events_of(session: Session, *, device_id: str) -> list[DeviceEvent]:
    return list(
        session.scalars(
            select(DeviceEvent).where(DeviceEvent.device_id == device_id).order_by(DeviceEvent.id)
        )
    )
