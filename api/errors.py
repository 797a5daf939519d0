"""Domain errors → HTTP problem responses (RFC 9457) and CLI exit codes. The only place that
knows both sides; a test checks every error class has a mapping."""

from __future__ import annotations

from typing import Any

from configs.errors import ConfigError
from ingest.errors import (
    BadUploadRequest,
    ChecksumMismatch,
    DeviceRefused,
    Forbidden,
    IntakeRefused,
    IntegrityMismatch,
    MediaError,
    MetadataError,
    OffsetConflict,
    SeqReplayed,
    TooLarge,
    TooManyUploads,
    Unauthenticated,
    UnsupportedTusVersion,
    UploadExpired,
    UploadNotFound,
    WrongContentType,
)
from integrity.errors import IntegrityError, LiuhenError
from storage.errors import (
    Conflict,
    NotFound,
    ObjectLocked,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)

# Most specific first: the first matching class decides.
STATUS: tuple[tuple[type[LiuhenError], int, str], ...] = (
    (IntegrityMismatch, 422, "The bytes do not match what the manifest declares"),
    (TooLarge, 413, "Content Too Large"),
    (Unauthenticated, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (SeqReplayed, 409, "Manifest sequence number replayed"),
    (OffsetConflict, 409, "Upload offset conflict"),
    (UploadExpired, 410, "Upload expired"),
    (ChecksumMismatch, 460, "Checksum Mismatch"),
    (TooManyUploads, 429, "Too many concurrent uploads"),
    (UploadNotFound, 404, "Upload not found"),
    (BadUploadRequest, 400, "Bad upload request"),
    (UnsupportedTusVersion, 412, "Precondition Failed"),
    (WrongContentType, 415, "Unsupported Media Type"),
    (DeviceRefused, 400, "Device request refused"),
    (IntakeRefused, 422, "Not accepted as evidence"),
    (NotFound, 404, "Not found"),
    (ObjectNotFound, 404, "Stored object not found"),
    (Conflict, 409, "Conflict"),
    (ObjectLocked, 409, "Locked by retention"),
    (StoreUnavailable, 503, "Object store unavailable"),
    (StorageError, 500, "Storage failure"),
    (IntegrityError, 500, "Integrity check failed"),
    (MediaError, 500, "Media processing failed"),
    (MetadataError, 500, "Metadata processing failed"),
    (ConfigError, 500, "Configuration error"),
    (LiuhenError, 500, "Internal error"),
)


def status_for(error: LiuhenError) -> tuple[int, str]:
    for cls, status, title in STATUS:
        if isinstance(error, cls):
            return status, title
    return 500, "Internal error"  # pragma: no cover - LiuhenError is last in STATUS


def problem(error: LiuhenError, *, instance: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem document for ``error``."""
    status, title = status_for(error)
    doc: dict[str, Any] = {
        "type": f"urn:liuhen:problem:{error.code}",
        "title": title,
        "status": status,
        "detail": str(error),
        "code": error.code,
    }
    if instance:
        doc["instance"] = instance
    return doc


def exit_code(error: LiuhenError) -> int:
    """CLI exit status: 3 refused input, 4 not found, 5 integrity failure, 1 otherwise."""
    if isinstance(error, IntakeRefused):
        return 3
    if isinstance(error, NotFound | ObjectNotFound):
        return 4
    if isinstance(error, IntegrityError):
        return 5
    return 1
