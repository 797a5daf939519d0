"""The pipeline: what happens to an item after it is sealed, in one place.

``run`` follows this order; nothing else decides it:

    fetch          copy the original out of object storage, re-hashed on the way out
    probe          what the bytes are, from their content (``media.probe``)
    capture_time   when: GPS, EXIF, container tag, file name, manifest (DESIGN.md order)
    place          where: EXIF GPS, ISO 6709 tag, else the linked track's fix nearest in time
    derivatives    what the kind calls for: proxy + thumbnails + contact sheet (video),
                   proxy + waveform (audio), display + thumbnail (photo), GeoJSON (tracks)
    store          upload, index and log (a ``derivative`` leaf) each derivative not yet stored
    finish         write time, place, media facts, problems and status to the item

A job carries only the item ID and reloads everything, so running it twice is harmless:
probe, time and place are recomputed and overwritten, problems replaced; derivatives are made
only when the item lacks one its kind calls for, and a role the item already has is never
stored or logged again. What fails becomes a problem on the item; nothing is lost.

Status, decided by ``_status`` (and ``mark_failed`` for a job that kept raising):

    ready          every derivative step succeeded. Warnings stay in ``problems`` and do not
                   lower the status: ``clock_skew``, ``utc_offset_assumed``,
                   ``capture_time_unknown``, a probe that saw a ``truncated`` container but
                   could still derive everything, a linked track without a fix near capture.
    partial        at least one derivative step (proxy, thumbnails, contact, waveform, photo,
                   track, store) failed or degraded (a JPEG decoded with missing data);
                   whatever was made is kept.
    unprocessable  nothing could be derived: the original is missing or does not match its
                   hash (fetch), or no tool understands it (probe, track).

A job that raises is retried by the queue (``ingest.queue.task``: an unreachable store is
waited for, without using up attempts); when it gives up,
``mark_failed`` adds a ``pipeline_failed`` problem and sets ``partial`` if an earlier run
stored derivatives, else ``unprocessable``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from configs.settings import Settings
from ingest import derivative_store, media, metrics, timeplace
from ingest.errors import MediaError, MetadataError
from ingest.problems import ItemStatus, Problem, ProblemCode
from ingest.retrieve import resolve, write_to_file
from ingest.runtime import Runtime
from ingest.timeplace.clock import STAGE_TIME
from integrity.errors import IntegrityError
from storage import repository as repo
from storage.db import transaction
from storage.errors import IndexUnavailable, ObjectNotFound, StoreUnavailable
from storage.tables import Item

log = logging.getLogger(__name__)

TRACK_TYPES = frozenset({"application/gpx+xml", "application/vnd.nmea"})
DERIVATIVE_STAGES = frozenset(
    {"proxy", "thumbnails", "contact", "waveform", "photo", "track", "store"}
)
"""Stages whose problems mean a derivative is missing or degraded: the item is ``partial``."""


@dataclass
class _Snapshot:
    """What the job needs of the item, read once at the start."""

    id: str
    sha256: str
    media_type: str
    original_name: str | None
    manifest: dict[str, Any]
    track_item_id: str | None
    roles: set[str]
    """Derivative roles the item already has (stored by an earlier run)."""
    problems: list[Problem]
    """The item's problems as the last run left them."""


@dataclass
class _Outcome:
    problems: list[Problem] = field(default_factory=list)
    info: media.ProbeResult | None = None
    values: dict[str, Any] = field(default_factory=dict)
    derived: list[media.Derived] = field(default_factory=list)


def run(rt: Runtime, item_id: str) -> ItemStatus:
    """Process one item through every stage; return its final status."""
    with metrics.timed("pipeline"):
        return _run(rt, item_id)


def _run(rt: Runtime, item_id: str) -> ItemStatus:
    snap = _load(rt, item_id)
    _set_status(rt, item_id, ItemStatus.PROCESSING)
    workdir = _make_workdir(rt.settings, item_id)
    out = _Outcome()
    try:
        src = workdir / "original"  # never the device's name: names are data, not paths
        with metrics.timed("fetch"):
            fetched = _fetch(rt, snap, src, out)
        if not fetched:
            return _finish(rt, snap, out, status=ItemStatus.UNPROCESSABLE)
        if snap.media_type in TRACK_TYPES:
            _track_item(src, workdir, out)
        else:
            with metrics.timed("probe"):
                _probe(snap, src, out)
            with metrics.timed("time_and_place"):
                track = _guarded_time_and_place(rt, snap, src, workdir, out)
            with metrics.timed("derive"):
                _derive(rt, snap, src, workdir, out)
            if track is not None:
                out.derived.append(_geojson(track, workdir, "track"))
        with metrics.timed("store_derivatives"):
            _store_derivatives(rt, snap, out)
        return _finish(rt, snap, out, status=_status(out))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _load(rt: Runtime, item_id: str) -> _Snapshot:
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        roles = {d.role for d in repo.derivatives_of(session, item_id=item_id)}
        return _Snapshot(
            item.id,
            item.sha256,
            item.media_type,
            item.original_name,
            dict(item.manifest or {}),
            item.track_item_id,
            roles,
            [Problem.from_dict(p) for p in item.problems or []],
        )


def _set_status(rt: Runtime, item_id: str, status: ItemStatus) -> None:
    with transaction(rt.sessions) as session:
        repo.update_item(session, item_id=item_id, status=status)


def _limits(rt: Runtime) -> media.Limits:
    p = rt.settings.pipeline
    return media.Limits(timeout_s=p.job_timeout_s, memory_bytes=p.job_memory_mb * 1024 * 1024)


# --- work directories ----------------------------------------------------------------------


def _make_workdir(settings: Settings, item_id: str) -> Path:
    """A scratch folder ``<work>/<pid>@<host>@<item>-XXXX``: leftovers name their process."""
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{os.getpid()}@{socket.gethostname()}@{item_id}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=settings.work_dir))


def remove_stale_workdirs(settings: Settings, *, alive: Callable[[int], bool]) -> int:
    """Delete scratch folders of dead processes of this host (a worker killed mid-transcode
    leaves its half-written proxy behind); returns how many were removed."""
    if not settings.work_dir.is_dir():
        return 0
    host = socket.gethostname()
    removed = 0
    for entry in settings.work_dir.iterdir():
        pid, _, rest = entry.name.partition("@")
        owner, at, _ = rest.partition("@")
        if entry.is_dir() and at and owner == host and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


# --- stages --------------------------------------------------------------------------------


def _fetch(rt: Runtime, snap: _Snapshot, src: Path, out: _Outcome) -> bool:
    """Copy the original to ``src``; False (and a problem) when it is gone or not what was
    sealed. An unreachable store raises: that is worth a retry, a missing object is not."""
    try:
        write_to_file(rt, resolve(rt, snap.id), src)
    except IntegrityError as e:
        out.problems.append(Problem("fetch", ProblemCode.ORIGINAL_MISMATCH, str(e)))
        return False
    except ObjectNotFound as e:
        out.problems.append(Problem("fetch", ProblemCode.ORIGINAL_MISSING, str(e)))
        return False
    return True


def _probe(snap: _Snapshot, src: Path, out: _Outcome) -> None:
    try:
        out.info = media.probe(src)
    except MediaError as e:
        out.problems.append(Problem.from_error("probe", e))
        return
    except Exception as e:  # a parser's own error on hostile bytes must not lose the item
        out.problems.append(
            Problem("probe", ProblemCode.UNEXPECTED_ERROR, f"{type(e).__name__}: {e}")
        )
        return
    out.problems += out.info.problems
    info = out.info
    out.values["media"] = {
        k: v for k, v in asdict(info).items() if k not in {"problems", "tags"} and v is not None
    }
    if info.media_type != snap.media_type:
        out.values["media_type"] = info.media_type


def _guarded_time_and_place(
    rt: Runtime, snap: _Snapshot, src: Path, workdir: Path, out: _Outcome
) -> timeplace.Track | None:
    """Time and place, as the probe is guarded: a parser's own error on hostile metadata
    (a time past the calendar, say) is a problem of this stage, and the derivatives are still
    made. An unreachable store or index is raised: the job is tried again."""
    try:
        track = _linked_track(rt, snap, workdir, out)
        _time_and_place(rt, snap, src, track, out)
    except (StoreUnavailable, IndexUnavailable):
        raise
    except Exception as e:
        log.warning("item %s: time and place failed: %s: %s", snap.id, type(e).__name__, e)
        out.problems.append(
            Problem(STAGE_TIME, ProblemCode.UNEXPECTED_ERROR, f"{type(e).__name__}: {e}")
        )
        return None
    return track


def _linked_track(
    rt: Runtime, snap: _Snapshot, workdir: Path, out: _Outcome
) -> timeplace.Track | None:
    if not snap.track_item_id:
        return None
    path = workdir / "track"
    try:
        write_to_file(rt, resolve(rt, snap.track_item_id), path)
        return timeplace.load_track(path)
    except (MetadataError, IntegrityError, ObjectNotFound) as e:
        out.problems.append(Problem.from_error("place", e, f"linked track unusable: {e}"))
        return None


def _time_and_place(
    rt: Runtime, snap: _Snapshot, src: Path, track: timeplace.Track | None, out: _Outcome
) -> None:
    p = rt.settings.pipeline
    info = out.info
    photo = None
    if snap.media_type.startswith("image/") or (info is not None and info.kind == "image"):
        photo = timeplace.read_photo_metadata(src)
        out.problems += photo.problems
    container_time = timeplace.parse_container_time(info.creation_time or "") if info else None
    name = timeplace.parse_capture_filename(snap.original_name) if snap.original_name else None
    manifest_start = _aware(snap.manifest.get("capture_start"))
    hint = timedelta(minutes=p.local_utc_offset_minutes)

    def decide(reference: datetime | None) -> timeplace.CaptureTime:
        return timeplace.resolve_capture_time(
            photo=photo,
            container_time=container_time,
            filename=name,
            manifest_start=manifest_start,
            gps_time=None,
            local_offset_hint=hint,
            skew_threshold=timedelta(seconds=p.clock_skew_threshold_s),
            gps_reference=reference,
        )

    when = decide(None)
    fix: timeplace.Fix | None = None
    if track is not None and when.captured_at is not None:
        fix = timeplace.nearest_fix(track, when.captured_at)
        if fix is not None and fix.time is not None and when.source not in {"gps", "exif_offset"}:
            when = decide(fix.time)
    out.problems += when.problems
    out.values.update(
        captured_at=when.captured_at,
        captured_at_source=when.source,
        utc_offset_minutes=_minutes(when.utc_offset),
    )
    if when.device_clock_offset is not None:
        out.values["device_clock_offset_ms"] = round(
            when.device_clock_offset.total_seconds() * 1000
        )

    place = photo.gps if photo is not None and photo.gps is not None else None
    if place is None and info is not None and info.location:
        place = timeplace.parse_iso6709(info.location)
    if place is None:
        place = fix
    if place is not None:
        out.values.update(gps_lat=place.lat_str, gps_lon=place.lon_str)
    if track is not None and track.fixes:
        out.values["bbox"] = _bbox(track)
        if fix is None:
            out.problems.append(
                Problem(
                    "place",
                    ProblemCode.NO_FIX_NEAR_CAPTURE,
                    "the track has no fix near capture time",
                )
            )


def _wanted_roles(info: media.ProbeResult, thumbs: int) -> set[str]:
    """The roles ``media.derive`` makes for this kind when every step succeeds."""
    if info.kind == "image":
        return {"display", "thumb-000"}
    if info.kind == "audio":
        return {"proxy", "waveform"}
    return {"proxy", "contact", *(f"thumb-{i:03d}" for i in range(thumbs))}


def _derive(rt: Runtime, snap: _Snapshot, src: Path, workdir: Path, out: _Outcome) -> None:
    """Make the derivatives, unless an earlier run already stored all of them: then what that
    run noted while making them (a JPEG decoded with missing data) still holds."""
    info = out.info
    thumbs = rt.settings.pipeline.thumbnails
    if info is None:
        return
    if _wanted_roles(info, thumbs) <= snap.roles:
        made_by = DERIVATIVE_STAGES - {"track", "store"}  # the stages media.derive reports
        out.problems += [p for p in snap.problems if p.stage in made_by]
        return
    made, noted = media.derive(
        src,
        info,
        workdir / "out",
        limits=_limits(rt),
        thumbs=thumbs,
        ffmpeg_exe=rt.settings.pipeline.ffmpeg,
    )
    out.derived += made
    out.problems += noted


def _track_item(src: Path, workdir: Path, out: _Outcome) -> None:
    try:
        track = timeplace.load_track(src)
    except MetadataError as e:
        out.problems.append(Problem.from_error("track", e))
        return
    out.derived.append(_geojson(track, workdir, "track"))
    if not track.fixes:
        return
    out.values["bbox"] = _bbox(track)
    timed = [(f.time, f) for f in track.fixes if f.time is not None]
    start = track.fixes[0]
    if timed:
        start = min(timed, key=lambda pair: pair[0])[1]
        out.values.update(
            captured_at=min(t for t, _ in timed),
            captured_end=max(t for t, _ in timed),
            captured_at_source="gps",
        )
    out.values.update(gps_lat=start.lat_str, gps_lon=start.lon_str)


def _geojson(track: timeplace.Track, workdir: Path, role: str) -> media.Derived:
    path = workdir / f"{role}.geojson"
    path.write_text(json.dumps(timeplace.track_to_geojson(track), separators=(",", ":")))
    recipe = media.Recipe(
        tool="liuhen.timeplace",
        version="1",
        args=(),
        params={"source_format": track.source_format, "fixes": len(track.fixes)},
    )
    return media.Derived(role, path, "application/geo+json", "geojson", recipe)


def _store_derivatives(rt: Runtime, snap: _Snapshot, out: _Outcome) -> None:
    """Upload each new derivative under its Object Lock, then index and log them all in one
    transaction (``ingest.derivative_store``). A role the item already has is skipped; a role
    another worker stored meanwhile is theirs. An unreachable store raises (retry later);
    any other store failure becomes a ``store`` problem."""
    out.problems += derivative_store.store_new(
        rt, item_id=snap.id, parent_sha256=snap.sha256, have=snap.roles, derived=out.derived
    )


def _status(out: _Outcome) -> ItemStatus:
    if out.info is None and not out.derived:
        return ItemStatus.UNPROCESSABLE
    if any(p.stage in DERIVATIVE_STAGES for p in out.problems):
        return ItemStatus.PARTIAL
    return ItemStatus.READY


def _finish(rt: Runtime, snap: _Snapshot, out: _Outcome, *, status: ItemStatus) -> ItemStatus:
    values = dict(out.values)
    # Intake problems (``late_upload``) are facts of the arrival, not of this run: kept.
    kept = [p for p in snap.problems if p.stage == "intake"]
    values.update(status=status, problems=[p.as_dict() for p in _unique(kept + out.problems)])
    with transaction(rt.sessions) as session:
        repo.update_item(session, item_id=snap.id, **values)
    return status


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: dict[tuple[str, str, str], Problem] = {}
    for p in problems:
        seen.setdefault((p.stage, p.code, p.message), p)
    return list(seen.values())


def _aware(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _minutes(offset: timedelta | None) -> int | None:
    return None if offset is None else round(offset.total_seconds() / 60)


def mark_failed(rt: Runtime, item_id: str, message: str) -> None:
    """A job that kept raising: the item keeps what it has and says why.

    Its status becomes ``partial`` when an earlier run stored derivatives, else
    ``unprocessable``; a ``pipeline_failed`` problem carries the last error.
    """
    with transaction(rt.sessions) as session:
        item: Item = repo.get_item(session, item_id=item_id)
        problems = list(item.problems or [])
        failed = Problem("pipeline", ProblemCode.PIPELINE_FAILED, message).as_dict()
        if failed not in problems:
            problems.append(failed)
        has_derivatives = bool(repo.derivatives_of(session, item_id=item_id))
        status = ItemStatus.PARTIAL if has_derivatives else ItemStatus.UNPROCESSABLE
        repo.update_item(session, item_id=item_id, status=status, problems=problems)


def _bbox(track: timeplace.Track) -> list[str]:
    """[min_lon, min_lat, max_lon, max_lat] as decimal strings (no floats in the index)."""
    return [f"{v:.7f}" for v in timeplace.bbox(track.fixes)]
