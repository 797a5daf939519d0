"""Deciding the capture time from every source, by DESIGN.md's order of trust."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from ingest.problems import Problem, ProblemCode
from ingest.timeplace.clock import (
    DEFAULT_LOCAL_OFFSET,
    MAX_UTC_OFFSET,
    STAGE_TIME,
    format_offset,
    plausible,
    require_aware,
)
from ingest.timeplace.exif import PhotoMeta
from ingest.timeplace.filenames import FileNameInfo

_ZONE_STEP: Final = timedelta(minutes=15)


@dataclass(frozen=True)
class CaptureTime:
    """The decided capture time and how it was decided."""

    captured_at: datetime | None
    """UTC, or None when no source gave a usable time."""
    source: str | None
    """gps | exif_offset | container | exif_gps_offset | exif_local | filename | manifest."""
    device_clock_offset: timedelta | None
    """GPS time − device time, set when they disagree beyond the skew threshold."""
    utc_offset: timedelta | None
    """Zone offset of the capture's local time, when known or assumed."""
    problems: tuple[Problem, ...] = field(default=())


def _round_to_zone(delta: timedelta) -> timedelta:
    steps = round(delta / _ZONE_STEP)
    return _ZONE_STEP * steps


def _derive_offset(local: datetime, gps: datetime) -> timedelta | None:
    """Zone offset local − UTC rounded to 15 min; None when beyond ±14 h (a wrong clock)."""
    offset = _round_to_zone(local.replace(tzinfo=UTC) - gps)
    return offset if abs(offset) <= MAX_UTC_OFFSET else None


def _as_local(naive: datetime, offset: timedelta) -> datetime:
    return naive.replace(tzinfo=timezone(offset)).astimezone(UTC)


@dataclass
class _Decision:
    problems: list[Problem] = field(default_factory=list)
    device_clock_offset: timedelta | None = None

    def check_skew(self, gps: datetime, device: datetime, what: str, threshold: timedelta) -> None:
        delta = gps - device
        if abs(delta) > threshold:
            self.device_clock_offset = delta
            self.problems.append(
                Problem(
                    STAGE_TIME,
                    ProblemCode.CLOCK_SKEW,
                    f"{what} differs from GPS time by {_describe(delta)} "
                    f"(threshold {_describe(threshold)})",
                )
            )

    def assumed_zone(self, offset: timedelta, what: str) -> None:
        self.problems.append(
            Problem(
                STAGE_TIME,
                ProblemCode.UTC_OFFSET_ASSUMED,
                f"{what} has no zone; assumed UTC{format_offset(offset)}",
            )
        )


def _describe(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    sign = "-" if delta < timedelta(0) else "+"
    return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _exif_device_time(
    photo: PhotoMeta | None, gps: datetime | None, hint: timedelta | None
) -> tuple[datetime | None, timedelta | None, str]:
    """(device time as UTC, zone offset, how the zone was found) for a photo's EXIF time."""
    if photo is None or photo.local_time is None:
        return None, None, ""
    local = photo.local_time
    if photo.utc_offset is not None:
        return _as_local(local, photo.utc_offset), photo.utc_offset, "exif_offset"
    if gps is not None:
        derived = _derive_offset(local, gps)
        if derived is not None:
            return _as_local(local, derived), derived, "exif_gps_offset"
        # No real zone explains the difference: compare the raw clock (in the hinted zone, or
        # as if it were UTC) so the skew shows the camera's actual error.
        return _as_local(local, hint or timedelta(0)), None, "exif_unzoned"
    return None, None, "exif_local"


def resolve_capture_time(
    *,
    photo: PhotoMeta | None,
    container_time: datetime | None,
    filename: FileNameInfo | None,
    manifest_start: datetime | None,
    gps_time: datetime | None,
    local_offset_hint: timedelta | None = None,
    skew_threshold: timedelta = timedelta(seconds=120),
    gps_reference: datetime | None = None,
) -> CaptureTime:
    """Decide the capture time by DESIGN.md's order of trust, and check the device clock.

    1. ``gps``: ``gps_time``, or the photo's own GPS date+time stamp: the capture instant.
    2. ``exif_offset``: DateTimeOriginal with OffsetTimeOriginal.
    3. ``container``: MP4/MOV ``creation_time`` (UTC).
    4. ``exif_gps_offset``: DateTimeOriginal with a zone derived from ``gps_reference``, a GPS
       time near but not at the capture (e.g. the nearest track fix): the difference rounded to
       15 minutes, accepted only within ±14 h.
    5. ``exif_local``: DateTimeOriginal in ``local_offset_hint`` (else +08:00).
    6. ``filename``: the name's local time in ``local_offset_hint``, default +08:00
       (Asia/Shanghai) with a ``utc_offset_assumed`` problem; UTC names (PXL_) as they are.
    7. ``manifest``: the device's declared capture start.

    With a GPS time, a device time (EXIF, else container) more than ``skew_threshold`` away
    adds a ``clock_skew`` problem and sets ``device_clock_offset`` = GPS − device.
    """
    for name, value in (
        ("container_time", container_time),
        ("manifest_start", manifest_start),
        ("gps_time", gps_time),
        ("gps_reference", gps_reference),
    ):
        require_aware(value, name)
    decision = _Decision()
    gps = gps_time or (photo.gps_datetime if photo else None)
    exif_time, exif_zone, zone_how = _exif_device_time(
        photo, gps or gps_reference, local_offset_hint
    )

    if gps is not None:
        device = exif_time if exif_time is not None else container_time
        if device is not None:
            what = "camera clock (EXIF)" if exif_time is not None else "container creation_time"
            decision.check_skew(gps, device, what, skew_threshold)
        return _result(gps.astimezone(UTC), "gps", exif_zone, decision)
    if exif_time is not None and zone_how == "exif_offset":
        return _result(exif_time, "exif_offset", exif_zone, decision)
    if container_time is not None:
        return _result(container_time.astimezone(UTC), "container", exif_zone, decision)
    if exif_time is not None and zone_how == "exif_gps_offset":
        return _result(exif_time, "exif_gps_offset", exif_zone, decision)
    zone = local_offset_hint if local_offset_hint is not None else DEFAULT_LOCAL_OFFSET
    if photo is not None and photo.local_time is not None:
        if local_offset_hint is None:
            decision.assumed_zone(zone, "EXIF DateTimeOriginal")
        return _result(_as_local(photo.local_time, zone), "exif_local", zone, decision)
    if filename is not None and filename.started_at is not None:
        started = filename.started_at
        if started.tzinfo is not None:
            return _result(started.astimezone(UTC), "filename", started.utcoffset(), decision)
        if local_offset_hint is None:
            decision.assumed_zone(zone, "file name time")
        return _result(_as_local(started, zone), "filename", zone, decision)
    if manifest_start is not None and plausible(manifest_start):  # a device's word, unchecked
        return _result(manifest_start.astimezone(UTC), "manifest", None, decision)
    decision.problems.append(
        Problem(STAGE_TIME, ProblemCode.CAPTURE_TIME_UNKNOWN, "no source gave a time")
    )
    return _result(None, None, None, decision)


def _result(
    when: datetime | None, source: str | None, zone: timedelta | None, decision: _Decision
) -> CaptureTime:
    return CaptureTime(
        captured_at=when,
        source=source,
        device_clock_offset=decision.device_clock_offset,
        utc_offset=zone,
        problems=tuple(decision.problems),
    )
