"""What travels with an upload: who, which cases, what the device says the bytes are.

A manifest is refused (``ManifestError``, never a half-stored item) when it is garbage JSON,
names an invalid case, tries a path in the file name, or declares an impossible size.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from datetime import datetime
from pathlib import Path
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
    if any(unicodedata.category(c) == "Cs" for c in name):  # no UTF-8: no leaf could hold it
        raise ValueError("file_name contains a lone surrogate (bytes that are not UTF-8)")


def path_text(path: Path) -> str:
    """The path as text that JSON can carry: bytes that are not UTF-8 (a card mounted with
    another character set) are written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def kept_file_name(name: str) -> str:
    """A local file's name as an item keeps it: characters :func:`check_file_name` refuses
    (control and format characters, bytes that are not UTF-8: a card mounted with another
    character set) written as ``<U+XXXX>`` / ``<0xNN>``, the rest as it is."""
    out = []
    for c in name:
        category = unicodedata.category(c)
        if category == "Cs" and 0xDC80 <= ord(c) <= 0xDCFF:  # surrogateescape: one raw byte
            out.append(f"<0x{ord(c) - 0xDC00:02X}>")
        elif category in {"Cc", "Cf", "Zl", "Zp", "Cs"}:
            out.append(f"<U+{ord(c):04X}>")
        else:
            out.append(c)
    return "".join(out)[:255]


def check_case_id(case_id: str, pattern: str) -> str:
    if not re.fullmatch(pattern, case_id):
        raise ManifestError(f"invalid case ID {case_id!r}: must match {pattern}")
    return case_id


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"a key given twice: {', '.join(twice)}")  # which one would count?
    return dict(pairs)


def _json_object(raw: str | bytes) -> dict[str, Any]:
    """A manifest's JSON object; ManifestError for anything else (nested without end, keys
    given twice, not an object)."""
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ManifestError(f"manifest is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise ManifestError("manifest must be a JSON object")
    return data


def parse_manifest(raw: str | bytes | dict[str, Any], *, case_id_pattern: str) -> Manifest:
    """Parse and validate a manifest from JSON text or a dict; ManifestError on any fault."""
    data = _json_object(raw) if isinstance(raw, str | bytes) else raw
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


# --- the signed device manifest (DESIGN.md, "Device intake") ----------------------------------


class DeviceManifest(BaseModel):
    """The v1 manifest a device signs. Its canonical JSON text is what the signature covers;
    :meth:`to_intake` maps it onto the :class:`Manifest` the seal takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = Field(strict=True, ge=1, le=1)
    """Format version: 1."""
    device_id: PartyId
    officer_id: PartyId
    """The officer carrying the device; must be the one it is assigned to."""
    seq: int = Field(strict=True, ge=0, lt=1 << 63)
    """Strictly increasing per device: a replayed or older manifest is refused."""
    device_time: datetime
    """The device's clock when it started the upload (RFC 3339 with offset)."""
    file_name: str
    size: int = Field(strict=True, ge=1, le=MAX_DECLARED_SIZE)
    sha256: str
    """Lowercase hex SHA-256 of the file, as the device computed it."""
    case_ids: tuple[str, ...] = Field(default=(), max_length=64)
    captured_start: datetime | None = None
    captured_end: datetime | None = None
    important: bool | None = Field(default=None, strict=True)
    """The officer marked the recording as important (重要)."""

    @field_validator("sha256")
    @classmethod
    def _hex_lower(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("sha256 must be 64 lowercase hexadecimal characters")
        return v

    @field_validator("file_name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_file_name(v)
        return v

    @field_validator("device_time", "captured_start", "captured_end", mode="before")
    @classmethod
    def _rfc3339(cls, v: object) -> object:
        if v is None:
            return v
        if not isinstance(v, str) or not _RFC3339.fullmatch(v):
            raise ValueError("times must be RFC 3339 strings with an offset")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> DeviceManifest:
        if self.captured_start and self.captured_end and self.captured_end < self.captured_start:
            raise ValueError("captured_end is before captured_start")
        return self

    def to_intake(self, *, signature: str) -> Manifest:
        """The seal's view of this manifest (field names of ``liuhen ingest``)."""
        return Manifest(
            device_id=self.device_id,
            officer_id=self.officer_id,
            case_ids=self.case_ids,
            file_name=self.file_name,
            sha256=self.sha256,
            size=self.size,
            device_time=self.device_time,
            capture_start=self.captured_start,
            capture_end=self.captured_end,
            signature=signature,
        )


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def parse_device_manifest(text: bytes, *, case_id_pattern: str) -> DeviceManifest:
    """Parse the manifest bytes a device signed. They must be canonical JSON (the leaf rules):
    the bytes checked are the bytes signed, with one spelling only. ManifestError otherwise."""
    from integrity.errors import CanonicalJSONError
    from integrity.leaves import canonical_json

    data = _json_object(text)
    try:
        canonical = canonical_json(data)
    except CanonicalJSONError as e:
        raise ManifestError(f"manifest is not canonical JSON: {e}") from e
    if canonical != text:
        raise ManifestError(
            "manifest is not in canonical form (sorted keys, no spaces, UTF-8, no floats)"
        )
    try:
        manifest = DeviceManifest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in e.errors()
        )
        raise ManifestError(f"invalid manifest: {problems}") from e
    for case_id in manifest.case_ids:
        check_case_id(case_id, case_id_pattern)
    return manifest
