"""The media adapter against real files: clips made by ffmpeg, photos from ../shared/testdata."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFile

from ingest import media
from ingest.errors import MediaError, ProbeError, ToolTimeout, TranscodeError
from ingest.media import Derived, Limits, ProbeResult
from ingest.sniff import sniff_file
from tests.integration import mediagen as gen

PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "photos"
PHOTO_FILES = sorted(p for d in ("gps", "mobile", "broken") for p in (PHOTOS / d).iterdir())
LIMITS = Limits(timeout_s=120)

Maker = Callable[[Path], Path]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> gen.ClipCache:
    return gen.ClipCache(tmp_path_factory.mktemp("clips"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def untouched(path: Path) -> Iterator[None]:
    """The original is sacred: same bytes and mtime after whatever runs inside."""
    before, mtime = _sha256(path), path.stat().st_mtime_ns
    yield
    assert _sha256(path) == before
    assert path.stat().st_mtime_ns == mtime


def _roles(derived: list[Derived]) -> list[str]:
    return [d.role for d in derived]


def _by_role(derived: list[Derived], role: str) -> Derived:
    return next(d for d in derived if d.role == role)


def _read_bgr(path: Path) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.asarray(img, dtype=np.uint8)


# --------------------------------------------------------------------------- probe

PROBE_CASES: list[tuple[Maker, str, str, str | None, str | None, tuple[int, int] | None]] = [
    (gen.body_cam_1080p, "video", "video/mp4", "h264", "aac", (1920, 1080)),
    (gen.small_h264, "video", "video/mp4", "h264", "aac", (640, 360)),
    (gen.hevc_mp4, "video", "video/mp4", "hevc", "aac", (1280, 720)),
    (gen.mjpeg_avi, "video", "video/x-msvideo", "mjpeg", "pcm_s16le", (1280, 720)),
    (gen.h264_mkv, "video", "video/x-matroska", "h264", "opus", (1280, 720)),
    (gen.h264_ts, "video", "video/mp2t", "h264", "aac", (640, 360)),
    (gen.portrait_phone, "video", "video/quicktime", "h264", "aac", (720, 1280)),
    (gen.aac_m4a, "audio", "audio/mp4", None, "aac", None),
    (gen.amr, "audio", "audio/amr", None, "amr_nb", None),
    (gen.wav, "audio", "audio/wav", None, "pcm_s16le", None),
    (gen.mp3, "audio", "audio/mpeg", None, "mp3", None),
]


@pytest.mark.parametrize(
    ("maker", "kind", "media_type", "vcodec", "acodec", "size"),
    PROBE_CASES,
    ids=[c[0].__name__ for c in PROBE_CASES],
)
def test_probe_reads_kind_type_codecs_and_size(
    clips: gen.ClipCache,
    maker: Maker,
    kind: str,
    media_type: str,
    vcodec: str | None,
    acodec: str | None,
    size: tuple[int, int] | None,
) -> None:
    src = clips.get(maker)
    with untouched(src):
        info = media.probe(src)
    assert (info.kind, info.media_type) == (kind, media_type)
    assert (info.video_codec, info.audio_codec) == (vcodec, acodec)
    assert (info.width, info.height) == (size or (None, None))
    assert info.duration == pytest.approx(gen.DURATION_S, abs=0.1)
    assert info.problems == []
    if kind == "video":
        assert info.fps == pytest.approx(30)


def test_probe_reads_body_cam_tags(clips: gen.ClipCache) -> None:
    info = media.probe(clips.get(gen.body_cam_1080p))
    assert info.video_profile == "High"
    assert info.rotation == 0
    assert info.creation_time is not None
    assert info.creation_time.startswith("2026-03-01T08:00:00")
    assert info.location == gen.LOCATION
    assert info.tags["major_brand"] == "isom"


def test_probe_reads_rotation_and_reports_displayed_size(clips: gen.ClipCache) -> None:
    info = media.probe(clips.get(gen.portrait_phone))
    assert info.rotation == 90
    assert (info.width, info.height) == (720, 1280)


def test_probe_trusts_content_not_the_file_name(clips: gen.ClipCache, tmp_path: Path) -> None:
    audio_as_jpeg = gen.renamed_copy(clips.get(gen.aac_m4a), tmp_path, "photo.jpg")
    avi_as_mp4 = gen.renamed_copy(clips.get(gen.mjpeg_avi), tmp_path, "clip.mp4")
    assert media.probe(audio_as_jpeg).media_type == "audio/mp4"
    assert media.probe(avi_as_mp4).media_type == "video/x-msvideo"
    # libav would take random bytes named .mp3 for MP3 if it were shown the name.
    noise = gen.renamed_copy(clips.get(gen.random_bytes), tmp_path, "noise.mp3")
    with pytest.raises(ProbeError, match="no known audio/video/image format"):
        media.probe(noise)


BROKEN: list[tuple[Maker, str]] = [
    (gen.moov_missing, "moov_missing"),
    (gen.random_bytes, "not_media"),
    (gen.lyrics_only, "no_media_streams"),
    (gen.empty, "empty"),
    (gen.truncated_avi_header, "truncated"),
]


@pytest.mark.parametrize(("maker", "code"), BROKEN, ids=[c for _, c in BROKEN])
def test_unreadable_input_raises_probe_error_with_code(
    clips: gen.ClipCache, maker: Maker, code: str
) -> None:
    src = clips.get(maker)
    with untouched(src), pytest.raises(ProbeError, match=src.name) as caught:
        media.probe(src)
    assert caught.value.code == code


def test_no_streams_names_the_format_ffmpeg_read(clips: gen.ClipCache) -> None:
    with pytest.raises(ProbeError, match="FFmpeg reads it as lrc, with no audio or video"):
        media.probe(clips.get(gen.lyrics_only))


def test_truncated_avi_probes_with_a_problem_and_still_derives(
    clips: gen.ClipCache, tmp_path: Path
) -> None:
    src = clips.get(gen.truncated_avi)
    with untouched(src):
        info = media.probe(src)
        derived, problems = media.derive(src, info, tmp_path, limits=LIMITS, thumbs=3)
    assert [p.code for p in info.problems] == ["truncated"]
    assert info.duration is not None
    assert info.duration < gen.DURATION_S
    assert problems == []
    assert _roles(derived) == ["proxy", "thumb-000", "thumb-001", "thumb-002", "contact"]


# --------------------------------------------------------------------------- proxy


def _assert_playable_proxy(proxy: Derived, source: ProbeResult) -> ProbeResult:
    out = media.probe(proxy.path)
    assert (proxy.role, proxy.media_type, proxy.ext) == ("proxy", "video/mp4", "mp4")
    assert (out.media_type, out.video_codec, out.video_profile) == ("video/mp4", "h264", "High")
    assert out.audio_codec == ("aac" if source.audio_codec else None)
    assert out.width is not None
    assert out.height is not None
    assert min(out.width, out.height) <= 720
    assert out.width % 2 == 0
    assert out.height % 2 == 0
    assert out.rotation == 0
    assert out.duration == pytest.approx(source.duration, abs=0.1)
    boxes = [kind for kind, _, _ in gen.top_level_boxes(proxy.path)]
    assert boxes.index(b"moov") < boxes.index(b"mdat"), "faststart puts moov first"
    return out


@pytest.mark.parametrize(
    "maker",
    [gen.body_cam_1080p, gen.hevc_mp4, gen.mjpeg_avi, gen.h264_mkv],
    ids=lambda m: m.__name__,
)
def test_proxy_reencodes_to_h264_high_720p(
    clips: gen.ClipCache, tmp_path: Path, maker: Maker
) -> None:
    src = clips.get(maker)
    info = media.probe(src)
    with untouched(src):
        proxy = media.make_proxy(src, info, tmp_path, limits=LIMITS)
    out = _assert_playable_proxy(proxy, info)
    assert (out.width, out.height) == (1280, 720)
    assert proxy.recipe.params["mode"] == "transcode"
    assert "libx264" in proxy.recipe.args
    assert list(tmp_path.iterdir()) == [proxy.path], "no partial or stderr files left behind"


@pytest.mark.parametrize("maker", [gen.small_h264, gen.h264_ts], ids=lambda m: m.__name__)
def test_proxy_remuxes_what_is_already_playable(
    clips: gen.ClipCache, tmp_path: Path, maker: Maker
) -> None:
    src = clips.get(maker)
    info = media.probe(src)
    with untouched(src):
        proxy = media.make_proxy(src, info, tmp_path, limits=LIMITS)
    out = _assert_playable_proxy(proxy, info)
    assert (out.width, out.height) == (640, 360)
    assert proxy.recipe.params["mode"] == "remux"
    assert "libx264" not in proxy.recipe.args
    assert ("-c", "copy") in zip(proxy.recipe.args, proxy.recipe.args[1:], strict=False)


def test_recipe_names_placeholders_and_tool_versions(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.small_h264)
    proxy = media.make_proxy(src, media.probe(src), tmp_path, limits=LIMITS)
    recipe = proxy.recipe.as_dict()
    assert recipe["tool"] == "ffmpeg"
    assert {"{input}", "{output}"} <= set(proxy.recipe.args)
    assert not any(str(tmp_path) in a or str(src.parent) in a for a in proxy.recipe.args)
    tools = proxy.recipe.params["tools"]
    assert isinstance(tools, dict)
    assert {"ffmpeg", "pyav", "pyav.libavcodec", "opencv", "pillow"} <= tools.keys()
    assert recipe["version"] == media.tool_versions()["ffmpeg"]


def _top_half_brighter(img: npt.NDArray[np.uint8]) -> bool:
    half = img.shape[0] // 2
    return float(img[:half].mean()) > float(img[half:].mean()) + 100


def test_rotated_clip_gives_upright_portrait_proxy_and_thumbnails(
    clips: gen.ClipCache, tmp_path: Path
) -> None:
    src = clips.get(gen.portrait_phone)
    info = media.probe(src)
    with untouched(src):
        proxy = media.make_proxy(src, info, tmp_path, limits=LIMITS)
        thumbs = media.make_thumbnails(src, info, tmp_path, count=2)
    out = _assert_playable_proxy(proxy, info)
    assert (out.width, out.height) == (720, 1280)
    assert proxy.recipe.params["mode"] == "transcode"
    with av.open(str(proxy.path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="gray")
    assert _top_half_brighter(np.asarray(first, dtype=np.uint8))
    for thumb in thumbs:
        img = _read_bgr(thumb.path)
        assert img.shape[:2] == (320, 180)
        assert _top_half_brighter(img)


@pytest.mark.parametrize(
    "maker", [gen.aac_m4a, gen.amr, gen.wav, gen.mp3], ids=lambda m: m.__name__
)
def test_audio_proxy_is_aac_m4a(clips: gen.ClipCache, tmp_path: Path, maker: Maker) -> None:
    src = clips.get(maker)
    info = media.probe(src)
    with untouched(src):
        proxy = media.make_proxy(src, info, tmp_path, limits=LIMITS)
    out = media.probe(proxy.path)
    assert (proxy.role, proxy.ext, proxy.media_type) == ("proxy", "m4a", "audio/mp4")
    assert (out.kind, out.media_type, out.audio_codec) == ("audio", "audio/mp4", "aac")
    assert out.duration == pytest.approx(info.duration, abs=0.1)
    assert proxy.recipe.params["mode"] == ("remux" if info.audio_codec == "aac" else "transcode")


def test_proxy_command_runs_bare(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.small_h264)
    dst = tmp_path / "bare.mp4"
    cmd = media.proxy_command(src, media.probe(src), dst)
    assert f"file:{src.resolve()}" in cmd
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert media.probe(dst).video_codec == "h264"


@pytest.mark.parametrize("name", ["-y.mp4", "-i x -y 留痕 'a:b' $(id) ;|.mp4"])
def test_hostile_file_names_are_only_ever_paths(
    clips: gen.ClipCache, tmp_path: Path, name: str
) -> None:
    src = gen.renamed_copy(clips.get(gen.small_h264), tmp_path, name)
    work = tmp_path / "work"
    with untouched(src):
        info = media.probe(src)
        derived, problems = media.derive(src, info, work, limits=LIMITS, thumbs=2)
    assert problems == []
    assert _roles(derived) == ["proxy", "thumb-000", "thumb-001", "contact"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "work"])


def test_timeout_raises_tool_timeout_and_leaves_nothing(
    clips: gen.ClipCache, tmp_path: Path
) -> None:
    src = clips.get(gen.body_cam_1080p)
    info = media.probe(src)
    with untouched(src), pytest.raises(ToolTimeout, match="ran past"):
        media.make_proxy(src, info, tmp_path, limits=Limits(timeout_s=0.05))
    assert list(tmp_path.iterdir()) == []


def test_memory_cap_fails_the_transcode(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.body_cam_1080p)
    info = media.probe(src)
    with pytest.raises(TranscodeError, match="exited with") as caught:
        media.make_proxy(src, info, tmp_path, limits=Limits(memory_bytes=32 << 20))
    assert caught.value.code == "transcode_failed"


# --------------------------------------------------------------------------- stills


def test_thumbnails_and_contact_sheet(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.body_cam_1080p)
    info = media.probe(src)
    with untouched(src):
        thumbs = media.make_thumbnails(src, info, tmp_path)
        sheet = media.make_contact_sheet(thumbs, tmp_path)
    assert _roles(thumbs) == [f"thumb-{i:03d}" for i in range(6)]
    for thumb in thumbs:
        assert (thumb.media_type, thumb.ext) == ("image/jpeg", "jpg")
        assert _read_bgr(thumb.path).shape == (180, 320, 3)
    # testsrc2 moves: stills from different times differ.
    assert len({_sha256(t.path) for t in thumbs}) == 6
    assert sheet.role == "contact"
    assert _read_bgr(sheet.path).shape == (2 * 184 + 4, 3 * 324 + 4, 3)


def test_thumbnails_from_mpeg_ts(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.h264_ts)
    thumbs = media.make_thumbnails(src, media.probe(src), tmp_path, count=4)
    assert len(thumbs) == 4
    assert all(_read_bgr(t.path).shape == (180, 320, 3) for t in thumbs)


def test_waveform_for_audio(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.wav)
    with untouched(src):
        wave = media.make_waveform(src, tmp_path)
    assert (wave.role, wave.media_type, wave.ext) == ("waveform", "image/png", "png")
    img = _read_bgr(wave.path)
    width, height = media.WAVEFORM_SIZE
    assert img.shape == (height, width, 3)
    # lavfi's sine has amplitude 1/8: a band of about ±15 px around the middle, nothing more
    # (the last column may hold only a few samples near a zero crossing).
    drawn = (img != 255).any(axis=2)
    band = drawn[height // 2 - 10 : height // 2 + 10]
    assert band.mean() > 0.99
    assert not drawn[: height // 2 - 20].any()
    assert not drawn[height // 2 + 20 :].any()


@pytest.mark.parametrize(
    ("maker", "roles"),
    [
        (gen.body_cam_1080p, ["proxy", "thumb-000", "thumb-001", "thumb-002", "contact"]),
        (gen.amr, ["proxy", "waveform"]),
    ],
    ids=["video", "audio"],
)
def test_derive_makes_what_fits_the_kind(
    clips: gen.ClipCache, tmp_path: Path, maker: Maker, roles: list[str]
) -> None:
    src = clips.get(maker)
    with untouched(src):
        derived, problems = media.derive(src, media.probe(src), tmp_path, limits=LIMITS, thumbs=3)
    assert problems == []
    assert _roles(derived) == roles
    assert all(d.path.is_file() and d.path.parent == tmp_path for d in derived)


@pytest.mark.parametrize("maker", [gen.random_bytes, gen.moov_missing], ids=lambda m: m.__name__)
def test_derive_never_raises_for_broken_input(
    clips: gen.ClipCache, tmp_path: Path, maker: Maker
) -> None:
    src = clips.get(maker)
    # What a stale or wrong probe would claim: each step must fail on its own, as a Problem.
    claimed = ProbeResult(
        kind="video",
        media_type="video/mp4",
        container="mov,mp4,m4a,3gp,3g2,mj2",
        duration=2.0,
        width=640,
        height=360,
        video_codec="h264",
        video_profile="High",
        audio_codec="aac",
    )
    with untouched(src):
        derived, problems = media.derive(src, claimed, tmp_path, limits=LIMITS)
    assert derived == []
    assert [(p.stage, p.code) for p in problems] == [
        ("proxy", "transcode_failed"),
        ("thumbnails", "no_frames"),
    ]
    assert all(p.message for p in problems)


def test_timeout_in_derive_is_a_problem(clips: gen.ClipCache, tmp_path: Path) -> None:
    src = clips.get(gen.body_cam_1080p)
    derived, problems = media.derive(
        src, media.probe(src), tmp_path, limits=Limits(timeout_s=0.05), thumbs=2
    )
    assert [(p.stage, p.code) for p in problems] == [("proxy", "tool_timeout")]
    assert _roles(derived) == ["thumb-000", "thumb-001", "contact"]


# --------------------------------------------------------------------------- photos


@pytest.mark.parametrize("photo", PHOTO_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_photo_gets_display_and_thumb(photo: Path, tmp_path: Path) -> None:
    with untouched(photo):
        info = media.probe(photo)
        derived, problems = media.derive(photo, info, tmp_path, limits=LIMITS)
    assert info.kind == "image"
    assert info.media_type == ("image/heic" if photo.suffix == ".heic" else "image/jpeg")
    assert _roles(derived) == ["display", "thumb-000"]
    assert all(p.code != "unexpected_error" for p in problems)
    with Image.open(_by_role(derived, "display").path) as display:
        assert display.format == "JPEG"
        assert max(display.size) <= media.DISPLAY_MAX_PX
        assert info.width is not None
        assert info.height is not None
        assert (display.width >= display.height) == (info.width >= info.height)
    with Image.open(_by_role(derived, "thumb-000").path) as thumb:
        assert max(thumb.size) <= media.THUMB_MAX_PX


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (400, 200), "white").save(src, "JPEG", exif=exif)
    info = media.probe(src)
    assert (info.width, info.height, info.rotation) == (200, 400, 90)
    derived = media.make_photo_derivatives(src, tmp_path / "out")
    with Image.open(_by_role(derived, "display").path) as display:
        assert display.size == (200, 400)


def test_truncated_jpeg_is_rendered_and_reported(tmp_path: Path) -> None:
    src = gen.half_jpeg(tmp_path, PHOTOS / "mobile" / "jolla.jpg")
    with untouched(src):
        derived, problems = media.derive(src, media.probe(src), tmp_path / "out", limits=LIMITS)
    assert _roles(derived) == ["display", "thumb-000"]
    assert [(p.stage, p.code) for p in problems] == [("photo", "truncated")]
    assert all(d.recipe.params["load_truncated"] is True for d in derived)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False, "the tolerance stays scoped to the call"


@pytest.mark.parametrize(
    ("fmt", "major_brand", "expected"),
    [
        ("HEIF", b"heic", "image/heic"),
        ("HEIF", b"mif1", "image/heic"),
        ("AVIF", None, "image/avif"),
    ],
)
def test_probe_and_sniff_name_heif_images_alike(
    tmp_path: Path, fmt: str, major_brand: bytes | None, expected: str
) -> None:
    # One brand list (ingest.sniff): the type sealed at intake is the type the probe finds.
    import pillow_heif

    pillow_heif.register_heif_opener()
    src = tmp_path / "photo"
    Image.new("RGB", (64, 48), "red").save(src, fmt)
    if major_brand is not None:
        data = bytearray(src.read_bytes())
        data[8:12] = major_brand
        src.write_bytes(bytes(data))
    assert sniff_file(src) == expected
    info = media.probe(src)
    assert (info.kind, info.media_type, info.width, info.height) == ("image", expected, 64, 48)


def test_not_an_image_at_all_fails_as_media_error(tmp_path: Path) -> None:
    src = tmp_path / "fake.jpg"
    src.write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    with pytest.raises(MediaError):
        media.probe(src)


# --------------------------------------------------------------------------- surface


def test_tool_versions_name_every_library() -> None:
    # The public names themselves are asserted in tests/unit/test_surfaces.py.
    versions = media.tool_versions()
    assert versions["ffmpeg"]
    assert versions["pyav"] == av.__version__
    assert versions["opencv"] == cv2.__version__


# --- inputs that used to escape the probe's care (a review's findings) ------------------------


SDP = (
    b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 0.0.0.0\nt=0 0\n"
    b"m=video 45710 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
)


@pytest.mark.parametrize(
    "body",
    [SDP, b"ffconcat version 1.0\nfile small-640x360.mp4\n",
     b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"],
    ids=["sdp", "ffconcat", "hls"],
)  # fmt: skip
def test_a_demuxer_opens_nothing_of_its_own(
    clips: gen.ClipCache, tmp_path: Path, body: bytes
) -> None:
    """An SDP upload made the probe listen on UDP for 20 s or, with packets coming, for ever;
    a concat list read another file beside it; an HLS list fetched a URL. Each is not media."""
    clip = clips.get(gen.small_h264)
    (tmp_path / clip.name).write_bytes(clip.read_bytes())  # what the concat list names
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    t0 = time.monotonic()
    with pytest.raises(ProbeError):
        media.probe(upload)
    assert time.monotonic() - t0 < 5


def test_tags_that_are_not_utf8_are_kept_readable_not_fatal(
    clips: gen.ClipCache, tmp_path: Path
) -> None:
    """A GBK title (Chinese cameras) made a playable clip unprocessable and lost its time."""
    src = clips.get(gen.small_h264)
    tagged = tmp_path / "gbk.mp4"
    title = "执法记录仪".encode("gbk")
    subprocess.run(
        [gen.ffmpeg_exe().encode(), b"-hide_banner", b"-loglevel", b"error", b"-y", b"-i",
         str(src).encode(), b"-c", b"copy", b"-metadata", b"title=" + title,
         b"-metadata", b"creation_time=2026-03-01T08:00:00Z", str(tagged).encode()],
        check=True, timeout=60,
    )  # fmt: skip
    info = media.probe(tagged)
    assert info.kind == "video" and info.width == 640
    assert info.creation_time is not None and info.creation_time.startswith("2026-03-01")


def test_a_size_the_probe_did_not_learn_is_taken_from_the_frames(
    clips: gen.ClipCache, tmp_path: Path
) -> None:
    """The probe's 0 x 0 made a 2 x 2 proxy."""
    src = clips.get(gen.body_cam_1080p)
    info = media.probe(src)
    blind = dataclasses.replace(info, width=None, height=None)
    proxy = media.make_proxy(src, blind, tmp_path, limits=LIMITS)
    out = media.probe(proxy.path)
    assert (out.width, out.height) == (1280, 720)


def test_frames_too_large_to_decode_here_give_a_problem_not_gigabytes(
    clips: gen.ClipCache, tmp_path: Path
) -> None:
    """12000 x 12000 frames in a 424 KB upload took 3.6 GB in the worker's own process."""
    src = clips.get(gen.small_h264)
    huge = dataclasses.replace(media.probe(src), width=12000, height=12000)
    with pytest.raises(MediaError) as caught:
        media.make_thumbnails(src, huge, tmp_path / "work", count=2)
    assert caught.value.code == "no_thumbnails" and "12000 x 12000" in str(caught.value)
    assert not (tmp_path / "work").exists()
