"""What travels with an upload: who, which cases, what the device says the bytes are.

A manifest is refused (``ManifestError``, never a half-stored item) when it is garbage JSON,
names an invalid case, tries a path in the file name, or declares an impossible size.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.errors import ManifestError

MAX_DECLARED_SIZE = 1 << 40  # 1 TiB: no body camera records a bigger single file
_PARTY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

PartyId = Annotated[str, Field(pattern=_PARTY_ID)]


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: PartyId | None = None
    officer_id: PartyId | None = None
    case_ids: tuple[str, ...] = ()
    file_name: str | None = None
    """The device's name for the file: data only, never a path on our side."""
    sha256: str | None = None
    """What the device computed; the seal refuses bytes that hash otherwise."""
    size: int | None = Field(default=None, ge=1, le=MAX_DECLARED_SIZE, strict=True)
    """Bytes, as a JSON integer: ``"12"``, ``12.0`` or ``true`` are type confusions, refused."""
    device_time: datetime | None = None
    """The device's clock when it uploaded (to learn its offset)."""
    capture_start: datetime | None = None
    capture_end: datetime | None = None
    signature: str | None = Field(default=None, max_length=4096)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _HEX64.match(v):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return v.lower() if v else v

    @field_validator("file_name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        check_file_name(v)
        return v

    @field_validator("device_time", "capture_start", "capture_end")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("times must carry a UTC offset (RFC 3339)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Manifest:
        if self.capture_start and self.capture_end and self.capture_end < self.capture_start:
            raise ValueError("capture_end is before capture_start")
        return self


def check_file_name(name: str) -> None:
    """A base name with no directory part, no traversal and no control characters."""
    if not name or len(name) > 255:
        raise ValueError("file_name must be 1 to 255 characters")
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError("file_name must be a plain name, not a path")
    if any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} for c in name):
        raise ValueError("file_name contains control characters")


def check_case_id(case_id: str, pattern: str) -> str:
    if not re.fullmatch(pattern, case_id):
        raise ManifestError(f"invalid case ID {case_id!r}: must match {pattern}")
    return case_id


def parse_manifest(raw: str | bytes | dict[str, Any], *, case_id_pattern: str) -> Manifest:
    """Parse and validate a manifest from JSON text or a dict; ManifestError on any fault."""
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ManifestError("manifest must be a JSON object")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in e.errors()
        )
        raise ManifestError(f"invalid manifest: {problems}") from e
    for case_id in manifest.case_ids:
        check_case_id(case_id, case_id_pattern)
    return manifest
