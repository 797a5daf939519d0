"""The pipeline on real services: sealed media → jobs → the item row, its derivatives in object
storage and their log leaves.

SQLite by default; the queue tests (a worker killed mid-transcode, concurrent claimers, a job
that raises) run on PostgreSQL, a job re-queued while it runs on both. Expected values come from the
inputs: mediagen's tags, ExifTool's answers in photos/exiftool.json, the track files read here
with code independent of ``ingest.timeplace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image
from sqlalchemy import select

from configs.settings import Settings
from ingest import catalog, jobs, media
from ingest.errors import EmptyFile, TranscodeError
from ingest.intake import SealResult, seal_file
from ingest.manifest import Manifest
from ingest.media import derivatives
from ingest.pipeline_hooks import after_ingest, link_track
from ingest.queue import BackgroundWorkers, JobInfo
from ingest.retrieve import resolve, write_to_file
from ingest.runtime import Runtime
from ingest.timeplace.clock import STAGE_TIME
from storage import repository as repo
from storage.db import transaction
from storage.tables import Derivative, Item, Job, LogLeaf
from tests.conftest import TESTDATA, SettingsFactory
from tests.integration import mediagen as gen

PHOTOS = TESTDATA / "photos"
TRACKS = TESTDATA / "tracks"
EXIFTOOL: dict[str, dict[str, Any]] = {
    e["SourceFile"]: e for e in json.loads((PHOTOS / "exiftool.json").read_text())
}
THUMBS = 3  # pipeline.thumbnails in these tests' settings
VIDEO_ROLES = {"proxy", "contact", *(f"thumb-{i:03d}" for i in range(THUMBS))}
AUDIO_ROLES = {"proxy", "waveform"}
PHOTO_ROLES = {"display", "thumb-000"}
DERIVATIVE_STAGES = {"proxy", "thumbnails", "contact", "waveform", "photo", "track", "store"}

Maker = Callable[[Path], Path]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def backend() -> str:
    """SQLite unless a test asks for PostgreSQL with ``parametrize("backend", ...)``."""
    return "sqlite"


@pytest.fixture
def settings(make_settings: SettingsFactory, request: pytest.FixtureRequest) -> Settings:
    """Two attempts (one retry, after 2 s), or the pipeline settings a test passes indirectly."""
    pipeline = {"thumbnails": THUMBS, "max_attempts": 2, **getattr(request, "param", {})}
    return make_settings(pipeline=pipeline)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> gen.ClipCache:
    return gen.ClipCache(tmp_path_factory.mktemp("clips"))


# --------------------------------------------------------------------------- helpers


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seal(rt: Runtime, path: Path, **manifest: Any) -> SealResult:
    return seal_file(rt, path, Manifest(file_name=path.name, **manifest), actor="test")


def document(rt: Runtime, item_id: str) -> dict[str, Any]:
    with rt.sessions() as session:
        return catalog.item_document(session, repo.get_item(session, item_id=item_id))


def job_of(rt: Runtime, item_id: str) -> JobInfo:
    job = rt.queue.job(item_id)
    assert job is not None
    return job


def processed(rt: Runtime, item_id: str) -> dict[str, Any]:
    """Run the item's job through the queue; the job must end ``done``, never ``failed``."""
    assert rt.queue.wait_for([item_id], timeout_s=120) == set()
    job = job_of(rt, item_id)
    assert (job.state, job.attempts) == ("done", 0)
    return document(rt, item_id)


def problems(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["stage"], p["code"]) for p in doc["problems"]}


def roles(doc: dict[str, Any]) -> set[str]:
    return {d["role"] for d in doc["derivatives"]}


def parse_ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def derivative_leaves(rt: Runtime, item_id: str) -> dict[int, dict[str, Any]]:
    with rt.sessions() as session:
        rows = session.scalars(
            select(LogLeaf).where(LogLeaf.item_id == item_id, LogLeaf.kind == "derivative")
        ).all()
        return {row.idx: json.loads(row.data) for row in rows}


def check_derivatives(rt: Runtime, doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Every derivative: bytes in object storage hash to the index, retained, logged as a
    ``derivative`` leaf whose parent is the original. Returns the downloaded files."""
    out.mkdir(parents=True, exist_ok=True)
    leaves = derivative_leaves(rt, doc["id"])
    assert len(leaves) == len(doc["derivatives"]), "one derivative leaf per derivative"
    with rt.sessions() as session:
        rows = {d.role: d for d in repo.derivatives_of(session, item_id=doc["id"])}
    files = {}
    for d in doc["derivatives"]:
        path = out / d["role"]
        write_to_file(rt, resolve(rt, doc["id"], d["role"]), path)  # re-hashes on the way
        assert sha256_of(path) == d["sha256"], d["role"]
        assert path.stat().st_size == d["size"], d["role"]
        leaf = leaves[d["log_index"]]
        assert leaf["kind"] == "derivative"
        assert leaf["v"] == 1
        assert (leaf["item_id"], leaf["role"]) == (doc["id"], d["role"])
        assert (leaf["sha256"], leaf["size"]) == (d["sha256"], d["size"])
        assert leaf["parent_sha256"] == doc["sha256"]
        assert leaf["recipe"] == d["recipe"]
        row = rows[d["role"]]
        assert row.object_key.startswith(f"derived/{doc['id']}/{d['role']}.")
        mode, until = rt.store.retention(row.object_key, row.version_id)
        assert mode == "COMPLIANCE"
        assert until is not None
        assert until > datetime.now(UTC) + rt.settings.retention - timedelta(hours=1)
        files[d["role"]] = path
    return files


def check_original(rt: Runtime, doc: dict[str, Any], src: Path, sha_before: str, out: Path) -> None:
    """The original is sacred: the stored version still holds exactly the device's bytes."""
    assert sha256_of(src) == sha_before == doc["sha256"]
    copy = out / "original-copy"
    write_to_file(rt, resolve(rt, doc["id"]), copy)
    assert copy.read_bytes() == src.read_bytes()


def iso6709(tag: str) -> tuple[float, float]:
    """Decimal-degree ISO 6709 (``+40.8423+111.7490/``), read without ingest.timeplace."""
    match = re.fullmatch(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)/", tag)
    assert match is not None
    return float(match[1]), float(match[2])


def gps_of(doc: dict[str, Any]) -> tuple[float, float] | None:
    gps = doc["gps"]
    return None if gps is None else (float(gps["lat"]), float(gps["lon"]))


def is_jpeg(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "JPEG"
        img.load()
        return img.size


# --------------------------------------------------------------------------- video and audio

CLIP_CASES: list[tuple[Maker, str]] = [
    (gen.body_cam_1080p, "video/mp4"),
    (gen.small_h264, "video/mp4"),
    (gen.hevc_mp4, "video/mp4"),
    (gen.mjpeg_avi, "video/x-msvideo"),
    (gen.h264_mkv, "video/x-matroska"),
    (gen.h264_ts, "video/mp2t"),
    (gen.portrait_phone, "video/quicktime"),
    (gen.aac_m4a, "audio/mp4"),
    (gen.amr, "audio/amr"),
    (gen.wav, "audio/wav"),
    (gen.mp3, "audio/mpeg"),
]
TAGGED = {gen.body_cam_1080p, gen.aac_m4a}  # made with creation_time and location tags


@pytest.mark.parametrize(
    ("maker", "media_type"), CLIP_CASES, ids=[m.__name__ for m, _ in CLIP_CASES]
)
def test_clip_becomes_ready_with_verified_derivatives(
    rt: Runtime, clips: gen.ClipCache, tmp_path: Path, maker: Maker, media_type: str
) -> None:
    src = clips.get(maker)
    before = sha256_of(src)
    doc = processed(rt, seal(rt, src).item_id)

    audio = media_type.startswith("audio/")
    assert doc["status"] == "ready"
    assert doc["media_type"] == media_type
    assert roles(doc) == (AUDIO_ROLES if audio else VIDEO_ROLES)
    assert not {stage for stage, _ in problems(doc)} & DERIVATIVE_STAGES
    files = check_derivatives(rt, doc, tmp_path / "derived")
    check_original(rt, doc, src, before, tmp_path)

    proxy = media.probe(files["proxy"])
    kinds = {d["role"]: d["media_type"] for d in doc["derivatives"]}
    if audio:
        assert (proxy.kind, proxy.audio_codec, kinds["proxy"]) == ("audio", "aac", "audio/mp4")
        assert kinds["waveform"] == "image/png"
        with Image.open(files["waveform"]) as wave:
            assert wave.format == "PNG"
    else:
        assert (proxy.kind, proxy.video_codec, kinds["proxy"]) == ("video", "h264", "video/mp4")
        assert proxy.width is not None
        assert proxy.height is not None
        assert min(proxy.width, proxy.height) <= 720
        # Upright: a portrait source (the phone clip) gives a portrait proxy and thumbnails.
        portrait = maker is gen.portrait_phone
        assert (proxy.height > proxy.width) == portrait
        for i in range(THUMBS):
            w, h = is_jpeg(files[f"thumb-{i:03d}"])
            assert (h > w) == portrait
        is_jpeg(files["contact"])
    assert doc["media"]["duration"] == pytest.approx(gen.DURATION_S, abs=0.1)

    if maker in TAGGED:
        assert parse_ts(doc["captured_at"]) == parse_ts(gen.CREATION_TIME)
        assert doc["captured_at_source"] == "container"
        lat, lon = iso6709(gen.LOCATION)
        assert gps_of(doc) == pytest.approx((lat, lon), abs=1e-7)
    else:  # no tag, no name pattern, no manifest time: a warning, not a lower status
        assert (doc["captured_at"], doc["captured_at_source"], doc["gps"]) == (None, None, None)
        assert ("capture_time", "capture_time_unknown") in problems(doc)


def test_small_h264_proxy_is_a_remux(rt: Runtime, clips: gen.ClipCache) -> None:
    src = clips.get(gen.small_h264)
    doc = processed(rt, seal(rt, src).item_id)
    proxy = next(d for d in doc["derivatives"] if d["role"] == "proxy")
    assert proxy["recipe"]["params"]["mode"] == "remux"
    assert "libx264" not in proxy["recipe"]["args"]
    assert doc["media"]["width"] == 640  # already proxy-sized: nothing re-encoded


# --------------------------------------------------------------------------- broken media


def forged_ftyp(directory: Path) -> Path:
    """Twelve bytes: an ``ftyp`` box claiming a 64-bit size whose bytes are missing."""
    out = directory / "forged.mp4"
    out.write_bytes(b"\x00\x00\x00\x01ftyp" + b"\x00" * 4)
    return out


def half_photo(directory: Path) -> Path:
    return gen.half_jpeg(directory, PHOTOS / "mobile" / "jolla.jpg")


BROKEN: list[tuple[Maker, str, set[str], tuple[str, str]]] = [
    (gen.moov_missing, "unprocessable", set(), ("probe", "moov_missing")),
    (gen.random_bytes, "unprocessable", set(), ("probe", "not_media")),
    (gen.lyrics_only, "unprocessable", set(), ("probe", "no_media_streams")),
    (gen.truncated_avi_header, "unprocessable", set(), ("probe", "truncated")),
    (forged_ftyp, "unprocessable", set(), ("probe", "moov_missing")),
    # The container is cut, but every frame in it decodes: all derivatives, a warning.
    (gen.truncated_avi, "ready", VIDEO_ROLES, ("probe", "truncated")),
    # The picture itself is cut: shown padded, so the derivatives are degraded.
    (half_photo, "partial", PHOTO_ROLES, ("photo", "truncated")),
]


@pytest.mark.parametrize(
    ("maker", "status", "made", "problem"), BROKEN, ids=[b[0].__name__ for b in BROKEN]
)
def test_broken_media_is_kept_and_marked(
    rt: Runtime,
    clips: gen.ClipCache,
    tmp_path: Path,
    maker: Maker,
    status: str,
    made: set[str],
    problem: tuple[str, str],
) -> None:
    src = clips.get(maker)
    before = sha256_of(src)
    sealed = seal(rt, src)
    doc = processed(rt, sealed.item_id)
    assert doc["status"] == status
    assert problem in problems(doc)
    assert all(p["message"] for p in doc["problems"])
    assert not any(p["code"] == "unexpected_error" for p in doc["problems"])
    assert roles(doc) == made
    check_derivatives(rt, doc, tmp_path / "derived")
    check_original(rt, doc, src, before, tmp_path)
    assert doc["log_index"] == sealed.log_index  # still the sealed, logged item


def test_random_bytes_keep_their_sniffed_type(rt: Runtime, clips: gen.ClipCache) -> None:
    doc = processed(rt, seal(rt, clips.get(gen.random_bytes)).item_id)
    assert doc["media_type"] == "application/octet-stream"  # the .mp4 name is not believed
    assert doc["media"] is None


def test_empty_file_is_refused_at_intake(rt: Runtime, clips: gen.ClipCache) -> None:
    with pytest.raises(EmptyFile, match="empty"):
        seal(rt, clips.get(gen.empty))
    with rt.sessions() as session:
        assert session.scalars(select(Item)).all() == []
        assert repo.log_size(session) == 0
    assert rt.queue.depth() == 0


def test_missing_original_is_a_fetch_problem(rt: Runtime, clips: gen.ClipCache) -> None:
    sealed = seal(rt, clips.get(gen.wav))
    with transaction(rt.sessions) as session:  # an index row pointing at nothing
        repo.update_item(session, item_id=sealed.item_id, object_key="originals/sha256/gone")
    doc = processed(rt, sealed.item_id)
    assert doc["status"] == "unprocessable"
    assert problems(doc) == {("fetch", "original_missing")}
    assert doc["derivatives"] == []


def test_forged_original_is_a_fetch_problem(rt: Runtime, clips: gen.ClipCache) -> None:
    sealed = seal(rt, clips.get(gen.wav))
    with rt.sessions() as session:
        key = repo.get_item(session, item_id=sealed.item_id).object_key
    # A put over a sealed key makes a new version; point the index at it (a forgery).
    forged = rt.store.put_bytes(key, b"RIFF not the recording", content_type="audio/wav")
    with transaction(rt.sessions) as session:
        repo.update_item(session, item_id=sealed.item_id, version_id=forged.version_id)
    doc = processed(rt, sealed.item_id)
    assert doc["status"] == "unprocessable"
    assert problems(doc) == {("fetch", "original_mismatch")}
    assert sealed.sha256 in doc["problems"][0]["message"]
    assert doc["derivatives"] == []


# --------------------------------------------------------------------------- photos

PHOTO_FOLDERS = ["gps", "mobile", "broken"]


def exiftool_gps_time(entry: dict[str, Any]) -> datetime:
    day = datetime.strptime(entry["GPSDateStamp"], "%Y:%m:%d").replace(tzinfo=UTC)
    hours, minutes, seconds = entry["GPSTimeStamp"].split(":")
    return day + timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


@pytest.mark.parametrize("folder", PHOTO_FOLDERS)
def test_every_real_photo_goes_through(rt: Runtime, tmp_path: Path, folder: str) -> None:
    photos = sorted((PHOTOS / folder).iterdir())
    assert photos
    sealed = {p: seal(rt, p) for p in photos}
    assert rt.queue.wait_for([s.item_id for s in sealed.values()], timeout_s=300) == set()
    for photo, s in sealed.items():
        name = f"{folder}/{photo.name}"
        entry = EXIFTOOL[name]
        job = job_of(rt, s.item_id)
        assert (job.state, job.attempts) == ("done", 0), name
        doc = document(rt, s.item_id)
        assert doc["status"] in {"ready", "partial"}, name
        assert roles(doc) == PHOTO_ROLES, name
        assert doc["media_type"] == ("image/heic" if photo.suffix == ".heic" else "image/jpeg")
        check_derivatives(rt, doc, tmp_path / s.item_id)
        check_original(rt, doc, photo, s.sha256, tmp_path)
        if "GPSLatitude" in entry:
            expected = (entry["GPSLatitude"], entry["GPSLongitude"])
            assert gps_of(doc) == pytest.approx(expected, abs=1e-5), name
        else:
            assert doc["gps"] is None, name
        if name.startswith("gps/DSCN"):  # the Nikon whose clock is ~22 h off its GPS
            assert ("capture_time", "clock_skew") in problems(doc), name
            assert doc["status"] == "ready", "a clock warning does not lower the status"
            assert doc["captured_at_source"] == "gps"
            assert parse_ts(doc["captured_at"]) == exiftool_gps_time(entry)
            # The camera's clock has no zone: it is read in the configured local zone.
            zone = timezone(timedelta(minutes=rt.settings.pipeline.local_utc_offset_minutes))
            camera = datetime.strptime(entry["DateTimeOriginal"] + "Z", "%Y:%m:%d %H:%M:%S%z")
            skew = exiftool_gps_time(entry) - camera.replace(tzinfo=zone)
            assert doc["device_clock_offset_ms"] == pytest.approx(
                skew.total_seconds() * 1000, abs=1000
            )
        else:
            assert ("capture_time", "clock_skew") not in problems(doc), name


# --------------------------------------------------------------------------- tracks


def gpx_fixes(path: Path) -> list[tuple[datetime, float, float]]:
    text = path.read_text(encoding="latin-1")
    pattern = r'<trkpt lat="([^"]+)" lon="([^"]+)">.*?<time>([^<]+)</time>'
    return [
        (datetime.fromisoformat(t.replace("Z", "+00:00")), float(lat), float(lon))
        for lat, lon, t in re.findall(pattern, text)
    ]


def nmea_fixes(path: Path) -> list[tuple[datetime, float, float]]:
    fixes = []
    for line in path.read_text().splitlines():
        f = line.split(",")
        if f[0].endswith("RMC") and f[2] == "A":
            when = datetime.strptime(f[9] + f[1][:6], "%d%m%y%H%M%S").replace(tzinfo=UTC)
            lat = int(f[3][:2]) + float(f[3][2:]) / 60
            lon = int(f[5][:3]) + float(f[5][3:]) / 60
            fixes.append((when, -lat if f[4] == "S" else lat, -lon if f[6] == "W" else lon))
    return fixes


TRACK_CASES = [
    ("Geotag.gpx", gpx_fixes, "application/gpx+xml"),
    ("Geotag2.nmea", nmea_fixes, "application/vnd.nmea"),
]


def clip_at(
    directory: Path, when: datetime, name: str = "tracked.mp4", *, seconds: int = 2
) -> Path:
    """A small H.264 clip whose creation_time is ``when`` and that has no location tag."""
    out = directory / name
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    gen.run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
        "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-preset", "ultrafast",
        "-metadata", f"creation_time={stamp}", str(out),
    )  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("track_name", "read_fixes", "track_type"), TRACK_CASES, ids=[c[0] for c in TRACK_CASES]
)
def test_clip_with_sidecar_track_gets_place_bbox_and_geojson(
    rt: Runtime,
    tmp_path: Path,
    track_name: str,
    read_fixes: Callable[[Path], list[tuple[datetime, float, float]]],
    track_type: str,
) -> None:
    track_file = TRACKS / track_name
    fixes = read_fixes(track_file)
    assert len(fixes) >= 3
    start, end = min(t for t, _, _ in fixes), max(t for t, _, _ in fixes)
    when = (start + (end - start) / 2).replace(microsecond=0)  # inside the track's span
    near = min(fixes, key=lambda f: abs(f[0] - when))
    clip = clip_at(tmp_path, when)

    sealed = seal(rt, clip, case_ids=("A-2026-7",), device_id="DSJ-X1", officer_id="110123")
    results: list[dict[str, Any]] = [{"id": sealed.item_id, "status": sealed.status}]
    after_ingest(rt, results, track=track_file, wait=True, actor="test")
    assert results[0]["status"] == "ready"

    doc = document(rt, sealed.item_id)
    assert doc["status"] == "ready"
    assert roles(doc) == VIDEO_ROLES | {"track"}
    assert parse_ts(doc["captured_at"]) == when
    assert doc["captured_at_source"] == "container"
    assert gps_of(doc) == pytest.approx((near[1], near[2]), abs=1e-7)
    lats, lons = [f[1] for f in fixes], [f[2] for f in fixes]
    expected_bbox = (min(lons), min(lats), max(lons), max(lats))
    assert tuple(float(v) for v in doc["bbox"]) == pytest.approx(expected_bbox, abs=1e-7)
    files = check_derivatives(rt, doc, tmp_path / "derived")
    feature = json.loads(files["track"].read_text())
    assert feature["geometry"]["type"] == "LineString"
    coords = [v for c in feature["geometry"]["coordinates"] for v in (c[1], c[0])]
    assert coords == pytest.approx([v for _, lat, lon in fixes for v in (lat, lon)], abs=1e-9)
    track_item = doc["custody"][-1]["details"]["track_item_id"]
    assert [e["action"] for e in doc["custody"]] == ["sealed", "link_track"]

    track_doc = document(rt, track_item)
    assert track_doc["media_type"] == track_type
    assert track_doc["status"] == "ready"
    assert roles(track_doc) == {"track"}
    check_derivatives(rt, track_doc, tmp_path / "track-derived")
    check_original(rt, track_doc, track_file, sha256_of(track_file), tmp_path)
    assert (parse_ts(track_doc["captured_at"]), parse_ts(track_doc["captured_end"])) == (start, end)
    first = min(fixes)
    assert gps_of(track_doc) == pytest.approx((first[1], first[2]), abs=1e-7)
    # The track belongs with the clip: same case, device and officer.
    assert track_doc["case_ids"] == ["A-2026-7"]
    assert (track_doc["device_id"], track_doc["officer_id"]) == ("DSJ-X1", "110123")


def test_track_far_from_capture_time_gives_bbox_but_no_fix(rt: Runtime, tmp_path: Path) -> None:
    track_file = TRACKS / "Geotag.gpx"
    end = max(t for t, _, _ in gpx_fixes(track_file))
    clip = clip_at(tmp_path, end + timedelta(hours=1))
    sealed = seal(rt, clip)
    after_ingest(rt, [{"id": sealed.item_id}], track=track_file, wait=True, actor="test")
    doc = document(rt, sealed.item_id)
    assert doc["status"] == "ready"
    assert doc["gps"] is None
    assert doc["bbox"] is not None
    assert ("place", "no_fix_near_capture") in problems(doc)
    assert "track" in roles(doc)


# --------------------------------------------------------------------------- idempotency


def leaf_count(rt: Runtime) -> int:
    with rt.sessions() as session:
        return repo.log_size(session)


def facts(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("status", "problems", "captured_at", "captured_at_source", "gps", "bbox", "media")
    derivatives = sorted((d["role"], d["sha256"], d["log_index"]) for d in doc["derivatives"])
    return {**{k: doc[k] for k in keep}, "derivatives": derivatives}


def test_running_every_stage_twice_changes_nothing(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpx = TRACKS / "Geotag.gpx"
    start = min(t for t, _, _ in gpx_fixes(gpx))
    clip = seal(rt, clip_at(tmp_path, start + timedelta(seconds=20)))
    photo = seal(rt, PHOTOS / "gps" / "DSCN0010.jpg")
    cut = seal(rt, half_photo(tmp_path))
    audio = seal(rt, gen.aac_m4a(tmp_path))
    track = seal(rt, gpx)
    link_track(rt, [clip.item_id], track.item_id, actor="test")
    ids = [clip.item_id, photo.item_id, cut.item_id, audio.item_id, track.item_id]
    assert rt.queue.wait_for(ids, timeout_s=120) == set()
    first = {i: facts(document(rt, i)) for i in ids}
    size = leaf_count(rt)
    assert first[clip.item_id]["bbox"] is not None
    assert {r for r, _, _ in first[clip.item_id]["derivatives"]} == VIDEO_ROLES | {"track"}
    assert first[cut.item_id]["status"] == "partial"  # what derive noted must survive a re-run

    def no_second_derive(*_: object, **__: object) -> object:
        raise AssertionError("derivatives the item already has were made again")

    monkeypatch.setattr(media, "derive", no_second_derive)
    for item_id in ids:
        assert jobs.run(rt, item_id) == first[item_id]["status"]
        assert facts(document(rt, item_id)) == first[item_id]
    assert leaf_count(rt) == size, "a re-run logs nothing new"
    for item_id in ids:
        assert len(derivative_leaves(rt, item_id)) == len(first[item_id]["derivatives"])
    with rt.sessions() as session:
        assert len(session.scalars(select(Derivative)).all()) == sum(
            len(f["derivatives"]) for f in first.values()
        )


def test_rerun_completes_a_partial_item_without_duplicates(
    rt: Runtime, clips: gen.ClipCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = clips.get(gen.small_h264)
    item_id = seal(rt, src).item_id

    def broken_proxy(*_: object, **__: object) -> media.Derived:
        raise TranscodeError("ffmpeg crashed (test)")

    with monkeypatch.context() as patch:
        patch.setattr(derivatives, "make_proxy", broken_proxy)  # where derive() finds it
        assert jobs.run(rt, item_id) == "partial"
    first = document(rt, item_id)
    assert ("proxy", "transcode_failed") in problems(first)
    assert roles(first) == VIDEO_ROLES - {"proxy"}

    assert jobs.run(rt, item_id) == "ready"
    second = document(rt, item_id)
    assert roles(second) == VIDEO_ROLES
    assert problems(second) == problems(first) - {("proxy", "transcode_failed")}
    kept = {(d["role"], d["sha256"], d["log_index"]) for d in first["derivatives"]}
    assert kept < {(d["role"], d["sha256"], d["log_index"]) for d in second["derivatives"]}
    assert len(derivative_leaves(rt, item_id)) == len(VIDEO_ROLES)
    check_derivatives(rt, second, tmp_path)


# --------------------------------------------------------------------------- the queue


def distinct_clips(directory: Path, source: Path, count: int) -> list[Path]:
    """Copies of one clip that differ in a tag only (distinct bytes: distinct items)."""
    out = []
    for i in range(count):
        path = directory / f"copy-{i}.mp4"
        gen.run_ffmpeg("-i", str(source), "-c", "copy", "-metadata", f"title=copy {i}", str(path))
        out.append(path)
    return out


def count_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the item ID of every ``jobs.run`` call (the workers call it by module)."""
    real = jobs.run
    calls: list[str] = []

    def run(rt: Runtime, item_id: str) -> str:
        calls.append(item_id)
        return real(rt, item_id)

    monkeypatch.setattr(jobs, "run", run)
    return calls


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_workers_process_each_item_once(
    rt: Runtime, clips: gen.ClipCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = distinct_clips(tmp_path, clips.get(gen.small_h264), 4)
    ids = [seal(rt, p).item_id for p in paths]
    runs = count_runs(monkeypatch)
    pool = BackgroundWorkers(rt.queue, 2)
    pool.start()
    try:
        assert rt.queue.wait_for(ids, timeout_s=120) == set()  # a third claimer in this thread
    finally:
        pool.stop(timeout=60)
    assert sorted(runs) == sorted(ids), "each job claimed and run exactly once"
    for item_id in ids:
        job = job_of(rt, item_id)
        assert (job.state, job.attempts) == ("done", 0)
        doc = document(rt, item_id)
        assert doc["status"] == "ready"
        assert roles(doc) == VIDEO_ROLES
        assert len(derivative_leaves(rt, item_id)) == len(VIDEO_ROLES)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("settings", [{"max_attempts": 1}], indirect=True)
def test_job_requeued_while_running_runs_again(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``liuhen ingest --track`` links the track after the clip's job may have started: the
    running job must not be settled as done over the new request, and the finished run does
    not count against the new one (one attempt allowed here)."""
    nmea = TRACKS / "Geotag2.nmea"
    start = min(t for t, _, _ in nmea_fixes(nmea))
    clip = seal(rt, clip_at(tmp_path, start + timedelta(seconds=5)))
    track = seal(rt, nmea)
    started, go = threading.Event(), threading.Event()
    real_derive = media.derive
    derives: list[str] = []

    def gated_derive(*args: Any, **kwargs: Any) -> Any:
        derives.append("derive")
        started.set()
        assert go.wait(60)
        return real_derive(*args, **kwargs)

    monkeypatch.setattr(media, "derive", gated_derive)
    runs = count_runs(monkeypatch)
    pool = BackgroundWorkers(rt.queue, 1)
    pool.start()
    try:
        assert started.wait(60), "the clip's job did not start"
        assert job_of(rt, clip.item_id).state == "running"
        link_track(rt, [clip.item_id], track.item_id, actor="test")  # re-queues the clip
        go.set()
        # Only the pool's one thread claims jobs here: it must run the clip a second time.
        ids = (clip.item_id, track.item_id)
        finished = {"done", "failed"}
        wait_until("the jobs to finish", lambda: all(job_of(rt, i).state in finished for i in ids))
    finally:
        go.set()
        pool.stop(timeout=60)
    assert [job_of(rt, i).state for i in ids] == ["done", "done"]
    doc = document(rt, clip.item_id)
    assert doc["status"] == "ready"
    assert "track" in roles(doc), "the second run took the linked track into account"
    assert doc["bbox"] is not None
    assert runs.count(clip.item_id) == 2
    assert derives == ["derive"], "the second run made only what was missing"
    assert job_of(rt, clip.item_id).attempts == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_job_that_raises_marks_its_item_and_the_worker_goes_on(
    rt: Runtime, clips: gen.ClipCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_src = gen.renamed_copy(clips.get(gen.wav), tmp_path, "boom.wav")
    bad = seal(rt, bad_src)
    good = seal(rt, clips.get(gen.amr))
    real_derive = jobs._derive

    def crashing_derive(rt: Runtime, snap: Any, *args: Any) -> None:
        if snap.id == bad.item_id:  # time and place are guarded: a bug past them, then
            raise RuntimeError("parser bug on a hostile name (test)")
        real_derive(rt, snap, *args)

    monkeypatch.setattr(jobs, "_derive", crashing_derive)
    pool = BackgroundWorkers(rt.queue, 1)
    pool.start()
    try:
        # One retry after a 1-2 s back-off (max_attempts = 2), then the item is marked.
        assert rt.queue.wait_for([bad.item_id, good.item_id], timeout_s=60) == set()
    finally:
        pool.stop(timeout=60)
    job = job_of(rt, bad.item_id)
    assert (job.state, job.attempts) == ("failed", rt.settings.pipeline.max_attempts)
    doc = document(rt, bad.item_id)
    assert doc["status"] == "unprocessable"  # nothing was derived before it raised
    assert problems(doc) == {("pipeline", "pipeline_failed")}
    assert doc["problems"][0]["message"] == "RuntimeError: parser bug on a hostile name (test)"
    check_original(rt, doc, bad_src, sha256_of(bad_src), tmp_path)
    assert document(rt, good.item_id)["status"] == "ready"
    assert job_of(rt, good.item_id).state == "done"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_item_that_keeps_killing_workers_is_given_up(
    rt: Runtime, clips: gen.ClipCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run's worker died (say PyAV crashed on the bytes): after ``max_attempts`` such
    runs the job is not run again, or it would take down every new worker in turn."""
    item_id = seal(rt, clips.get(gen.wav)).item_id
    limit = rt.settings.pipeline.max_attempts
    with transaction(rt.sessions) as session:
        job = session.get(Job, item_id)  # the embedded runner's row
        assert job is not None
        job.state, job.attempts = "running", limit
        job.locked_by = f"{socket.gethostname()}:{dead_pid()}:0"
        job.locked_until = datetime.now(UTC) + timedelta(hours=1)
    runs = count_runs(monkeypatch)
    assert rt.queue.wait_for([item_id], timeout_s=30) == set()
    assert runs == []
    info = job_of(rt, item_id)
    assert (info.state, info.attempts) == ("failed", limit + 1)
    doc = document(rt, item_id)
    assert doc["status"] == "unprocessable"
    assert problems(doc) == {("pipeline", "pipeline_failed")}
    assert f"gave up after {limit} run(s) that never finished" in doc["problems"][0]["message"]


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env.update(
        LIUHEN_HOME=str(settings.home_dir),
        LIUHEN_DATABASE__URL=settings.database_url,
        LIUHEN_S3__EMBEDDED="false",
        LIUHEN_S3__ENDPOINT=settings.s3.endpoint,
        LIUHEN_S3__ACCESS_KEY=settings.s3.access_key,
        LIUHEN_S3__SECRET_KEY=settings.s3.secret_key.get_secret_value(),
        LIUHEN_S3__BUCKET=settings.s3.bucket,
        LIUHEN_PIPELINE__THUMBNAILS=str(settings.pipeline.thumbnails),
        LIUHEN_PIPELINE__MAX_ATTEMPTS=str(settings.pipeline.max_attempts),
        LIUHEN_PIPELINE__WORKERS="1",
    )
    return env


@pytest.fixture
def workers(rt: Runtime, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts ``liuhen worker`` processes; kills whatever is left of them at the end."""
    started: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "worker.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        exe = Path(sys.executable).parent / "liuhen"
        proc = subprocess.Popen(
            [str(exe), "worker", "--threads", "1"],
            env=worker_env(rt.settings),
            stdout=log,
            stderr=log,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with_children = [proc.pid]
        try:
            with_children += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        for pid in with_children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)
    log.close()


def wait_until(what: str, check: Callable[[], object], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ffmpeg_child(proc: subprocess.Popen[bytes]) -> psutil.Process | None:
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if "ffmpeg" in c.name()), None)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_worker_killed_mid_transcode_is_finished_by_the_next(
    rt: Runtime, tmp_path: Path, workers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    src = tmp_path / "long-1080p.mp4"  # long enough that the transcode is still going
    gen.run_ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30:duration=6",
        "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-preset", "ultrafast",
        str(src),
    )  # fmt: skip
    item_id = seal(rt, src).item_id

    first = workers()
    ffmpeg = wait_until("an ffmpeg child of the worker", lambda: ffmpeg_child(first))
    assert job_of(rt, item_id).state == "running"
    first.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    gone, _ = psutil.wait_procs([ffmpeg], timeout=2)
    assert gone == [ffmpeg], "ffmpeg dies with the worker that started it"
    leftovers = list(rt.settings.work_dir.glob(f"{first.pid}@*"))
    assert leftovers, "the killed worker left its scratch folder"
    with rt.sessions() as session:
        assert repo.derivatives_of(session, item_id=item_id) == []
        assert repo.get_item(session, item_id=item_id).status == "processing"

    second = workers()
    wait_until("the item's job to finish", lambda: job_of(rt, item_id).state == "done", 120)
    second.send_signal(signal.SIGTERM)  # finishes its current job, then exits
    assert second.wait(60) == 0

    doc = document(rt, item_id)
    assert doc["status"] == "ready"
    assert roles(doc) == VIDEO_ROLES
    with rt.sessions() as session:
        proxies = session.scalars(
            select(Derivative).where(Derivative.item_id == item_id, Derivative.role == "proxy")
        ).all()
    assert len(proxies) == 1
    assert len(derivative_leaves(rt, item_id)) == len(VIDEO_ROLES)
    assert "requeued 1 job(s) left by a crashed worker" in (tmp_path / "worker.log").read_text()
    check_derivatives(rt, doc, tmp_path / "derived")
    assert not any(p.exists() for p in leftovers), "the next worker removed the dead one's files"


def test_an_error_of_time_and_place_leaves_the_derivatives_to_be_made(
    rt: Runtime, clips: gen.ClipCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the probe, time and place are guarded: a parser's own error on hostile metadata
    (here raised on purpose) is a problem of that stage, not three failed runs and an item
    unprocessable with no proxy."""

    def broken(*_args: object, **_kw: object) -> None:
        raise OverflowError("date value out of range (test)")

    monkeypatch.setattr(jobs, "_time_and_place", broken)
    doc = processed(rt, seal(rt, clips.get(gen.small_h264)).item_id)
    assert doc["status"] == "ready", doc["problems"]
    assert "proxy" in {d["role"] for d in doc["derivatives"]}
    assert (STAGE_TIME, "unexpected_error") in {(p["stage"], p["code"]) for p in doc["problems"]}
