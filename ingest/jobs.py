"""The pipeline: what happens to an item after it is sealed, in one place (``STAGES``).

A job carries only the item ID and reloads everything, so running it twice is harmless:
probe, time and place are recomputed and overwritten; a derivative whose role the item
already has is not made again. What fails becomes a problem on the item; nothing is lost.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest import media, timeplace
from ingest.errors import MediaError, MetadataError
from ingest.problems import Problem
from ingest.retrieve import resolve, write_to_file
from ingest.runtime import Runtime
from integrity.errors import IntegrityError
from integrity.leaves import derivative_leaf
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.errors import Conflict, ObjectStoreError
from storage.objects import retain_until
from storage.tables import Derivative, Item

log = logging.getLogger(__name__)

STAGES = ("fetch", "probe", "capture_time", "place", "derivatives", "finish")
"""The pipeline order. ``run`` below follows it; nothing else decides it."""

TRACK_TYPES = {"application/gpx+xml", "application/vnd.nmea"}
MEDIA_STAGES = {"probe", "proxy", "thumbnails", "contact", "waveform", "photo", "track", "fetch"}


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


@dataclass
class _Outcome:
    problems: list[Problem] = field(default_factory=list)
    info: media.ProbeResult | None = None
    values: dict[str, Any] = field(default_factory=dict)
    derived: list[media.Derived] = field(default_factory=list)


def run(rt: Runtime, item_id: str) -> str:
    """Process one item through every stage; return its final status."""
    snap = _load(rt, item_id)
    _set_status(rt, item_id, "processing")
    settings = rt.settings
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"job-{item_id}-", dir=settings.work_dir))
    out = _Outcome()
    try:
        src = workdir / "original"  # never the device's name: names are data, not paths
        try:
            write_to_file(rt, resolve(rt, item_id), src)
        except IntegrityError as e:
            out.problems.append(Problem("fetch", "original_mismatch", str(e)))
            return _finish(rt, snap, out, status="unprocessable")
        if snap.media_type in TRACK_TYPES:
            _track_item(src, workdir, out)
        else:
            _probe(snap, src, out)
            track = _linked_track(rt, snap, workdir, out)
            _time_and_place(rt, snap, src, track, out)
            if out.info is not None:
                made, noted = media.derive(
                    src,
                    out.info,
                    workdir / "out",
                    limits=_limits(rt),
                    thumbs=settings.pipeline.thumbnails,
                    ffmpeg_exe=settings.pipeline.ffmpeg,
                )
                out.derived += made
                out.problems += noted
            if track is not None:
                out.derived.append(_geojson(track, workdir, "track"))
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
        )


def _set_status(rt: Runtime, item_id: str, status: str) -> None:
    with transaction(rt.sessions) as session:
        repo.update_item(session, item_id=item_id, status=status)


def _limits(rt: Runtime) -> media.Limits:
    p = rt.settings.pipeline
    return media.Limits(timeout_s=p.job_timeout_s, memory_bytes=p.job_memory_mb * 1024 * 1024)


# --- stages --------------------------------------------------------------------------------


def _probe(snap: _Snapshot, src: Path, out: _Outcome) -> None:
    try:
        out.info = media.probe(src)
    except MediaError as e:
        out.problems.append(Problem("probe", e.code, str(e)))
        return
    out.problems += out.info.problems
    info = out.info
    out.values["media"] = {
        k: v for k, v in asdict(info).items() if k not in {"problems", "tags"} and v is not None
    }
    if info.media_type != snap.media_type:
        out.values["media_type"] = info.media_type


def _linked_track(
    rt: Runtime, snap: _Snapshot, workdir: Path, out: _Outcome
) -> timeplace.Track | None:
    if not snap.track_item_id:
        return None
    path = workdir / "track"
    try:
        write_to_file(rt, resolve(rt, snap.track_item_id), path)
        return timeplace.load_track(path)
    except (MetadataError, IntegrityError) as e:
        out.problems.append(Problem("place", e.code, f"linked track unusable: {e}"))
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
                Problem("place", "no_fix_near_capture", "the track has no fix near capture time")
            )


def _track_item(src: Path, workdir: Path, out: _Outcome) -> None:
    try:
        track = timeplace.load_track(src)
    except MetadataError as e:
        out.problems.append(Problem("track", e.code, str(e)))
        return
    out.derived.append(_geojson(track, workdir, "track"))
    if track.fixes:
        out.values["bbox"] = _bbox(track)
        times = [f.time for f in track.fixes if f.time is not None]
        if times:
            out.values.update(
                captured_at=min(times), captured_end=max(times), captured_at_source="gps"
            )
        first = track.fixes[0]
        out.values.update(gps_lat=first.lat_str, gps_lon=first.lon_str)


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
    """Upload each new derivative, then index and log it in one transaction."""
    for d in out.derived:
        if d.role in snap.roles:
            continue  # made by an earlier run: idempotent
        key = keys.derivative_key(snap.id, d.role, d.ext)
        try:
            stored = rt.store.put_file(key, d.path, content_type=d.media_type)
            now = datetime.now(UTC)
            with transaction(rt.sessions) as session:
                recipe = d.recipe.as_dict()

                def build(
                    stored_sha: str = stored.sha256,
                    size: int = stored.size,
                    role: str = d.role,
                    recipe: dict[str, Any] = recipe,
                ) -> dict[str, Any]:
                    return derivative_leaf(
                        item_id=snap.id,
                        sha256=stored_sha,
                        size=size,
                        parent_sha256=snap.sha256,
                        role=role,
                        recipe=recipe,
                    )

                leaf = rt.ledger.append(
                    session, kind="derivative", item_id=snap.id, build=build, now=now
                )
                repo.insert_derivative(
                    session,
                    derivative=Derivative(
                        item_id=snap.id,
                        role=d.role,
                        object_key=key,
                        version_id=stored.version_id,
                        sha256=stored.sha256,
                        size=stored.size,
                        media_type=d.media_type,
                        recipe=recipe,
                        created_at=now,
                        log_index=leaf.index,
                    ),
                )
                rt.store.retain(
                    key, stored.version_id, retain_until(rt.settings.retention, now=now)
                )
            snap.roles.add(d.role)
        except Conflict:
            continue  # another worker stored this role first
        except ObjectStoreError as e:
            out.problems.append(Problem(d.role, e.code, f"could not store {d.role}: {e}"))


def _status(out: _Outcome) -> str:
    if out.info is None and not out.derived:
        return "unprocessable"
    if any(p.stage in MEDIA_STAGES or p.stage.startswith("thumb") for p in out.problems):
        return "partial"
    return "ready"


def _finish(rt: Runtime, snap: _Snapshot, out: _Outcome, *, status: str) -> str:
    values = dict(out.values)
    values.update(status=status, problems=[p.as_dict() for p in _unique(out.problems)])
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
    """A job that kept failing: the item keeps what it has and says why."""
    with transaction(rt.sessions) as session:
        item: Item = repo.get_item(session, item_id=item_id)
        problems = list(item.problems or [])
        problems.append(Problem("pipeline", "pipeline_failed", message).as_dict())
        status = "partial" if item.status in {"processing", "sealed"} else item.status
        repo.update_item(session, item_id=item_id, status=status, problems=problems)


def _bbox(track: timeplace.Track) -> list[str]:
    """[min_lon, min_lat, max_lon, max_lat] as decimal strings (no floats in the index)."""
    return [f"{v:.7f}" for v in timeplace.bbox(track.fixes)]
