"""Domain errors → HTTP problem responses (RFC 9457) and CLI exit codes. The only place that
knows both sides; a test checks every error class has a mapping."""

from __future__ import annotations

from typing import Any

from api.ranges import RangeNotSatisfiable
from configs.errors import ConfigError, SystemRefused
from ingest.errors import (
    AccessError,
    BadPassword,
    BadUploadRequest,
    BodyStalled,
    CheckpointPending,
    ChecksumMismatch,
    DeviceRefused,
    Forbidden,
    HoldsChanging,
    IngestError,
    IntakeRefused,
    IntegrityMismatch,
    InvalidInput,
    ItemDeleted,
    LogKeyExists,
    LogKeyMissing,
    MediaError,
    MetadataError,
    OffsetConflict,
    RetentionError,
    SeqReplayed,
    ServerUnavailable,
    StillHeld,
    TooLarge,
    TooManyUploads,
    Unauthenticated,
    UnsupportedTusVersion,
    UploadExpired,
    UploadHomeSlow,
    UploadHomeUnavailable,
    UploadNotFound,
    WrongContentType,
)
from integrity.errors import IntegrityError, LiuhenError
from storage.errors import (
    Conflict,
    IndexUnavailable,
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
    (SeqReplayed, 409, "Manifest sequence number replayed"),
    (OffsetConflict, 409, "Upload offset conflict"),
    (UploadExpired, 410, "Upload expired"),
    (ChecksumMismatch, 460, "Checksum Mismatch"),
    (TooManyUploads, 429, "Too many concurrent uploads"),
    (UploadNotFound, 404, "Upload not found"),
    (BodyStalled, 408, "Request Timeout"),
    (BadUploadRequest, 400, "Bad upload request"),
    (UnsupportedTusVersion, 412, "Precondition Failed"),
    (WrongContentType, 415, "Unsupported Media Type"),
    (DeviceRefused, 400, "Device request refused"),
    (IntakeRefused, 422, "Not accepted as evidence"),
    (InvalidInput, 422, "Invalid request"),
    (BadPassword, 401, "Unauthorized"),
    (Unauthenticated, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (AccessError, 403, "Forbidden"),
    (StillHeld, 409, "Held: not deleted"),
    (ItemDeleted, 409, "Deleted when its retention ended"),
    (HoldsChanging, 409, "Legal hold changing: try again"),
    (RetentionError, 500, "Retention failure"),
    (RangeNotSatisfiable, 416, "Range Not Satisfiable"),
    (NotFound, 404, "Not found"),
    (ObjectNotFound, 404, "Stored object not found"),
    (Conflict, 409, "Conflict"),
    (ObjectLocked, 409, "Locked by retention"),
    (StoreUnavailable, 503, "Object store unavailable"),
    (IndexUnavailable, 503, "Index database unavailable"),
    (ServerUnavailable, 503, "Server unavailable"),
    (UploadHomeUnavailable, 503, "The upload's serving process is unavailable"),
    (UploadHomeSlow, 504, "The upload's serving process did not answer in time"),
    (CheckpointPending, 503, "No checkpoint covers it yet"),
    (LogKeyExists, 409, "A log key is already there"),
    (LogKeyMissing, 500, "No log key to sign with"),
    (StorageError, 500, "Storage failure"),
    (IntegrityError, 500, "Integrity check failed"),
    (MediaError, 500, "Media processing failed"),
    (MetadataError, 500, "Metadata processing failed"),
    (IngestError, 500, "Intake failure"),
    (ConfigError, 500, "Configuration error"),
    (SystemRefused, 500, "Refused by the operating system"),
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


EX_TEMPFAIL = 75
"""sysexits.h: a temporary failure; trying again later may work (store or index down)."""
EX_CONFIG = 78
"""sysexits.h: a configuration error (settings, a missing log key): trying again will not do."""


def exit_code(error: LiuhenError) -> int:
    """CLI exit status: 3 refused input, 4 not found, 5 integrity failure, 75 a service that is
    unavailable now, 78 a configuration to fix first, 1 otherwise."""
    if isinstance(error, StoreUnavailable | IndexUnavailable | ServerUnavailable):
        return EX_TEMPFAIL
    if isinstance(error, ConfigError | LogKeyMissing):
        return EX_CONFIG
    if isinstance(error, IntakeRefused | InvalidInput | ItemDeleted):
        return 3
    if isinstance(error, NotFound | ObjectNotFound):
        return 4
    if isinstance(error, IntegrityError):
        return 5
    return 1
