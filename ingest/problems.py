"""What could not be derived from an item, and why: the item keeps it, nothing is dropped.

An item's ``status`` and each problem's ``code`` are closed sets (`ItemStatus`, `ProblemCode`);
their values are the strings the item documents carry, so the JSON does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum, unique

from integrity.errors import LiuhenError


@unique
class ItemStatus(StrEnum):
    """Where an item stands in the pipeline (DESIGN.md; decided in ``ingest.jobs``)."""

    SEALED = "sealed"
    """Stored, logged and queued; not processed yet."""
    PROCESSING = "processing"
    READY = "ready"
    """Every derivative step succeeded (warnings may remain in ``problems``)."""
    PARTIAL = "partial"
    """At least one derivative is missing or degraded; what was made is kept."""
    UNPROCESSABLE = "unprocessable"
    """Nothing could be derived; the original is kept and retrievable."""


@unique
class ProblemCode(StrEnum):
    """Every code a problem may carry, grouped by who writes it."""

    # media: probe
    EMPTY = "empty"
    NOT_MEDIA = "not_media"
    MOOV_MISSING = "moov_missing"
    TRUNCATED = "truncated"
    """A container cut short (probe), or a photo decoded with missing data (photo)."""
    NO_MEDIA_STREAMS = "no_media_streams"
    IMAGE_UNREADABLE = "image_unreadable"
    VIDEO_UNDECODABLE = "video_undecodable"
    AUDIO_UNDECODABLE = "audio_undecodable"
    # media: derivatives
    NO_PROXY = "no_proxy"
    NO_FRAMES = "no_frames"
    NO_THUMBNAILS = "no_thumbnails"
    THUMBNAILS_PARTIAL = "thumbnails_partial"
    NO_AUDIO = "no_audio"
    NO_AUDIO_FRAMES = "no_audio_frames"
    ENCODE_FAILED = "encode_failed"
    ORIENTATION_UNREADABLE = "orientation_unreadable"
    # timeplace: capture time
    EXIF_MISSING = "exif_missing"
    EXIF_UNREADABLE = "exif_unreadable"
    EXIF_TRUNCATED = "exif_truncated"
    EXIF_BAD_DATETIME = "exif_bad_datetime"
    EXIF_BAD_OFFSET = "exif_bad_offset"
    GPS_TIME_INVALID = "gps_time_invalid"
    CLOCK_SKEW = "clock_skew"
    UTC_OFFSET_ASSUMED = "utc_offset_assumed"
    CAPTURE_TIME_UNKNOWN = "capture_time_unknown"
    # timeplace: place
    EXIF_BAD_VALUE = "exif_bad_value"
    EXIF_BAD_RATIONAL = "exif_bad_rational"
    GPS_INVALID = "gps_invalid"
    GPS_ZERO = "gps_zero"
    # intake
    LATE_UPLOAD = "late_upload"
    # the pipeline (ingest.jobs)
    ORIGINAL_MISMATCH = "original_mismatch"
    ORIGINAL_MISSING = "original_missing"
    NO_FIX_NEAR_CAPTURE = "no_fix_near_capture"
    UNEXPECTED_ERROR = "unexpected_error"
    PIPELINE_FAILED = "pipeline_failed"
    # codes of the errors the pipeline turns into problems (`Problem.from_error`)
    MEDIA_ERROR = "media_error"
    PROBE_FAILED = "probe_failed"
    TRANSCODE_FAILED = "transcode_failed"
    TOOL_TIMEOUT = "tool_timeout"
    METADATA_ERROR = "metadata_error"
    TRACK_PARSE_ERROR = "track_parse_error"
    INTEGRITY_ERROR = "integrity_error"
    HASH_MISMATCH = "hash_mismatch"
    PROOF_ERROR = "proof_error"
    NOTE_ERROR = "note_error"
    SIGNATURE_ERROR = "signature_error"
    RECEIPT_ERROR = "receipt_error"
    CANONICAL_JSON_ERROR = "canonical_json_error"
    TIMESTAMP_ERROR = "timestamp_error"
    LEAF_FORMAT = "leaf_format"
    PACKAGE_ERROR = "package_error"
    LOG_CORRUPT = "log_corrupt"
    OBJECT_STORE_ERROR = "object_store_error"
    OBJECT_NOT_FOUND = "object_not_found"
    OBJECT_LOCKED = "object_locked"
    STORE_UNAVAILABLE = "store_unavailable"


@dataclass(frozen=True)
class Problem:
    stage: str
    """Pipeline stage that noticed it: probe, capture_time, place, proxy, thumbnails, ..."""
    code: ProblemCode
    """Stable machine-readable name, e.g. ``moov_missing``, ``clock_skew``, ``exif_unreadable``."""
    message: str
    """One sentence for a person."""

    @classmethod
    def from_error(cls, stage: str, error: LiuhenError, message: str | None = None) -> Problem:
        """The problem an expected error becomes: its ``code``, and its text unless given."""
        return cls(stage, ProblemCode(error.code), str(error) if message is None else message)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Problem:
        """A problem as the index stores it (`as_dict`); an unknown code raises ValueError."""
        return cls(data["stage"], ProblemCode(data["code"]), data["message"])

    def as_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "code": self.code.value, "message": self.message}
