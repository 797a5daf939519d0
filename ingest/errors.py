"""Errors of the ingest package.

LiuhenError
 └── IngestError
      ├── IntakeRefused        the request is not evidence (empty file, bad manifest, ...)
      │    ├── ManifestError   the manifest is malformed or names something invalid
      │    ├── TooLarge        bigger than this way in accepts
      │    ├── EmptyFile       nothing to preserve
      │    ├── IntegrityMismatch  declared SHA-256 / size differ from the received bytes
      │    └── DeviceRefused   a device request that is refused (device intake, tus)
      │         ├── Unauthenticated      no or an unknown device token (401)
      │         ├── Forbidden            not allowed (403)
      │         │    ├── DeviceDisabled, OfficerNotAssigned, BadSignature
      │         ├── SeqReplayed          the manifest's seq is not above the last one (409)
      │         ├── OffsetConflict       Upload-Offset is not where the upload stands (409)
      │         ├── UploadExpired        the unfinished upload expired (410)
      │         ├── ChecksumMismatch     Upload-Checksum differs from the chunk (460)
      │         ├── TooManyUploads       too many unfinished uploads for one device (429)
      │         ├── UploadNotFound       no such upload (404)
      │         ├── BadUploadRequest     tus headers missing or malformed (400)
      │         ├── UnsupportedTusVersion  Tus-Resumable is not 1.0.0 (412)
      │         └── WrongContentType     a PATCH body that is not offset+octet-stream (415)
      ├── MediaError           a media tool could not read or make something
      │    ├── ProbeError      the container / image could not be understood
      │    ├── TranscodeError  ffmpeg failed to make a derivative
      │    └── ToolTimeout     a media tool ran past its time limit
      └── MetadataError        time / place metadata could not be read
           └── TrackParseError a GPS track (NMEA, GPX) is malformed
"""

from __future__ import annotations

from integrity.errors import LiuhenError


class IngestError(LiuhenError):
    code = "ingest_error"


class IntakeRefused(IngestError):
    code = "intake_refused"


class ManifestError(IntakeRefused):
    code = "bad_manifest"


class TooLarge(IntakeRefused):
    """Bigger than this way in takes (the simple upload); big files use resumable intake."""

    code = "too_large"


class EmptyFile(IntakeRefused):
    code = "empty_file"


class IntegrityMismatch(IntakeRefused):
    code = "integrity_mismatch"


class DeviceRefused(IntakeRefused):
    code = "device_refused"
    device_id: str | None = None
    """The authenticated device refused, when the refusal happened before the caller knew it."""


class Unauthenticated(DeviceRefused):
    code = "unauthenticated"


class Forbidden(DeviceRefused):
    code = "forbidden"


class DeviceDisabled(Forbidden):
    code = "device_disabled"


class OfficerNotAssigned(Forbidden):
    code = "officer_not_assigned"


class BadSignature(Forbidden):
    code = "bad_signature"


class SeqReplayed(DeviceRefused):
    code = "seq_replayed"


class OffsetConflict(DeviceRefused):
    code = "offset_conflict"


class UploadExpired(DeviceRefused):
    code = "upload_expired"


class ChecksumMismatch(DeviceRefused):
    code = "checksum_mismatch"


class TooManyUploads(DeviceRefused):
    code = "too_many_uploads"


class UploadNotFound(DeviceRefused):
    code = "upload_not_found"


class BadUploadRequest(DeviceRefused):
    code = "bad_upload_request"


class UnsupportedTusVersion(DeviceRefused):
    code = "unsupported_tus_version"


class WrongContentType(DeviceRefused):
    code = "wrong_content_type"


class MediaError(IngestError):
    code = "media_error"


class ProbeError(MediaError):
    code = "probe_failed"


class TranscodeError(MediaError):
    code = "transcode_failed"


class ToolTimeout(MediaError):
    code = "tool_timeout"


class MetadataError(IngestError):
    code = "metadata_error"


class TrackParseError(MetadataError):
    code = "track_parse_error"
