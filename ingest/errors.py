"""Errors of the ingest package.

LiuhenError
 └── IngestError
      ├── IntakeRefused        the request is not evidence (empty file, bad manifest, ...)
      │    ├── ManifestError   the manifest is malformed or names something invalid
      │    ├── TooLarge        bigger than this way in accepts
      │    ├── EmptyFile       nothing to preserve
      │    ├── IntegrityMismatch  declared SHA-256 / size differ from the received bytes
      │    └── DeviceRefused   a device request that is refused (device intake, tus)
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
      ├── MetadataError        time / place metadata could not be read
      │    └── TrackParseError a GPS track (NMEA, GPX) is malformed
      ├── LogKeyMissing        the production profile has no log key to sign with
      ├── LogKeyExists         init-key would overwrite a log key
      ├── CheckpointPending    no checkpoint covers a leaf yet, none signed in time
      ├── SignerRace           another signer stored its checkpoint first (retried)
      ├── InvalidInput         a bad argument to a people / search / retention command
      ├── AccessError          who is asking may not do this
      │    ├── Unauthenticated no (valid) credentials: a missing, unknown or revoked token
      │    │    └── BadPassword a wrong user name or password
      │    └── Forbidden       known, but not allowed (the denial is logged)
      │         └── DeviceDisabled, OfficerNotAssigned, BadSignature (device intake)
      ├── RetentionError       a hold or a deletion could not be carried out
      │    ├── StillHeld       the item is under legal hold or retention: not deleted
      │    ├── ItemDeleted     the item was deleted when its retention ended: its bytes
      │    │                   cannot be sealed again, nor the item linked (409)
      │    └── HoldsChanging   a hold change kept meeting changed objects: try again (409)
      ├── ServerUnavailable    liuhen push: the server did not answer through every retry
      └── UploadHomeUnavailable  the serving process that spools an upload does not answer
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


class BodyStalled(DeviceRefused):
    """No byte of a request body arrived for ``intake.body_idle_s``: what did is kept and the
    upload is free to resume (a silent client must not hold it)."""

    code = "body_stalled"


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


class LogKeyMissing(IngestError):
    """The production profile found no log key to sign with (it never makes one itself)."""

    code = "log_key_missing"


class LogKeyExists(IngestError):
    """``liuhen log init-key`` would overwrite an existing key."""

    code = "log_key_exists"


class CheckpointPending(IngestError):
    """No checkpoint covers the leaf yet and none was signed in time (no signer reachable)."""

    code = "checkpoint_pending"


class SignerRace(IngestError):
    """Another signer stored a checkpoint first; what this one signed was not stored."""

    code = "signer_race"


class InvalidInput(IngestError):
    """A bad argument (an unknown role, a malformed cursor or bbox, an empty reason)."""

    code = "invalid_input"


class AccessError(IngestError):
    code = "access_error"


class Unauthenticated(AccessError):
    code = "unauthenticated"


class BadPassword(Unauthenticated):
    code = "bad_password"


class Forbidden(AccessError):
    code = "forbidden"
    device_id: str | None = None
    """The authenticated device refused (device intake), so that the refusal is recorded."""


class DeviceDisabled(Forbidden):
    code = "device_disabled"


class OfficerNotAssigned(Forbidden):
    code = "officer_not_assigned"


class BadSignature(Forbidden):
    code = "bad_signature"


class RetentionError(IngestError):
    code = "retention_error"


class ItemDeleted(RetentionError):
    """The item was deleted when its retention ended. Its row, leaves and custody stay, so the
    same bytes are the same item: they are refused, never answered as a duplicate whose
    original is gone (a dock would then erase the last copy on the camera)."""

    code = "item_deleted"


class HoldsChanging(RetentionError):
    """A legal-hold change kept finding its items' objects changed: nothing was committed."""

    code = "holds_changing"


class StillHeld(RetentionError):
    code = "still_held"


class ServerUnavailable(IngestError):
    """``liuhen push``: the liuhen server did not answer (or kept answering 5xx) through every
    retry."""

    code = "server_unavailable"


class UploadHomeUnavailable(IngestError):
    """A tus request reached a serving process without the upload's spool, and the process
    that has it (``uploads.served_by``) does not answer: nothing is lost, try again (503)."""

    code = "upload_home_unavailable"


class UploadHomeSlow(IngestError):
    """A forwarded tus request reached the upload's serving process, which did not answer in
    time: it may still be sealing (a last PATCH is answered after the seal); ask with HEAD
    (504)."""

    code = "upload_home_slow"
