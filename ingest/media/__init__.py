"""The one media adapter: everything liuhen knows about containers, codecs and pixels.

    probe()                   what a file is (PyAV in-process for video/audio, Pillow for images)
    make_proxy()              a browser-playable MP4 (or M4A) via the ffmpeg binary
    make_thumbnails()         evenly spaced stills via OpenCV seeking
    make_contact_sheet()      those stills in one grid
    make_waveform()           a PNG of an audio-only item, decoded as a stream
    make_photo_derivatives()  display image and thumbnail of a photo
    derive()                  whichever of these fit the item; failures become Problems

The original is only ever opened for reading. Formats are detected from content, never from the
file name: libav is handed a reader without a name (it would otherwise trust the extension),
and ffmpeg is told the demuxer that the probe found.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import av
import cv2
import ffmpeg
import imageio_ffmpeg
import numpy as np
import numpy.typing as npt
import PIL
from PIL import Image, ImageFile, ImageOps

from ingest.errors import MediaError, ProbeError, ToolTimeout, TranscodeError
from ingest.problems import Problem

__all__ = [
    "Derived",
    "Limits",
    "ProbeResult",
    "Recipe",
    "derive",
    "make_contact_sheet",
    "make_photo_derivatives",
    "make_proxy",
    "make_thumbnails",
    "make_waveform",
    "probe",
    "proxy_command",
    "tool_versions",
]

Kind = Literal["video", "audio", "image"]

GIB = 1 << 30
PROXY_MAX_SHORT_SIDE = 720
THUMB_MAX_PX = 320
DISPLAY_MAX_PX = 2048
JPEG_QUALITY = 88
WAVEFORM_SIZE = (1200, 240)  # width, height in pixels
_DECODE_CHECK_PACKETS = 600  # enough to reach the first frame of any sane interleaving
_STDERR_TAIL_BYTES = 4096
# Profiles every browser's H.264 decoder plays; anything else is re-encoded.
_PLAYABLE_H264_PROFILES = frozenset({"Baseline", "Constrained Baseline", "Main", "High"})


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """What a file is, as read from its content."""

    kind: Kind
    """'video', 'audio' or 'image'."""
    media_type: str
    """MIME type from the content, e.g. video/mp4, video/quicktime, audio/amr, image/heic."""
    container: str
    """Demuxer (libav) or image format (Pillow) name that understood the file."""
    duration: float | None = None
    """Seconds, or None when the container does not say (and for images)."""
    width: int | None = None
    """Pixels as displayed, i.e. after rotation."""
    height: int | None = None
    """Pixels as displayed, i.e. after rotation."""
    rotation: int = 0
    """Clockwise degrees (0, 90, 180, 270) to turn the stored picture to display it upright."""
    video_codec: str | None = None
    video_profile: str | None = None
    audio_codec: str | None = None
    fps: float | None = None
    creation_time: str | None = None
    """The container's raw ``creation_time`` tag, unparsed."""
    location: str | None = None
    """The raw ISO 6709 location tag (``location`` / ``com.apple.quicktime.location.ISO6709``)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Container-level tags as found."""
    problems: list[Problem] = field(default_factory=list)
    """What was noticed while probing: truncation, an undecodable stream, ..."""


@dataclass(frozen=True)
class Recipe:
    """How a derivative was made, precisely enough to make it again."""

    tool: str
    version: str
    args: tuple[str, ...]
    """Tool arguments with ``{input}`` / ``{output}`` in place of paths."""
    params: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "version": self.version,
            "args": list(self.args),
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class Derived:
    role: str
    """proxy, thumb-000, contact, waveform, display."""
    path: Path
    media_type: str
    ext: str
    recipe: Recipe


@dataclass(frozen=True)
class Limits:
    """Resource limits for one external tool run."""

    timeout_s: float = 600
    memory_bytes: int = 2 * GIB
    """Address-space cap (RLIMIT_AS) of the child process."""


def _media_error(cls: type[MediaError], code: str, message: str) -> MediaError:
    """An error whose instance ``code`` names the problem precisely (the class keeps its own)."""
    err = cls(message)
    err.code = code
    return err


# --------------------------------------------------------------------------- versions


@functools.cache
def _tool_versions(ffmpeg_exe: str) -> tuple[tuple[str, str], ...]:
    done = subprocess.run(
        [ffmpeg_exe, "-hide_banner", "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    first = done.stdout.splitlines()[0] if done.stdout else "unknown"
    versions = {"ffmpeg": first.split(" Copyright")[0].removeprefix("ffmpeg version ").strip()}
    versions["pyav"] = av.__version__
    for lib, parts in sorted(av.library_versions.items()):
        versions[f"pyav.{lib}"] = ".".join(str(p) for p in parts)
    versions["opencv"] = cv2.__version__
    versions["pillow"] = PIL.__version__
    versions["pillow_heif"] = _pillow_heif_version()
    return tuple(versions.items())


def tool_versions(ffmpeg_exe: str | None = None) -> dict[str, str]:
    """Versions of every media tool a recipe may depend on (cached per ffmpeg binary)."""
    return dict(_tool_versions(ffmpeg_exe or _default_ffmpeg()))


def _default_ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _pillow_heif_version() -> str:
    import pillow_heif

    return str(pillow_heif.__version__)


@functools.cache
def _register_heif() -> None:
    """Teach Pillow HEIC once, on first use rather than at import."""
    import pillow_heif

    pillow_heif.register_heif_opener()


# --------------------------------------------------------------------------- sniffing

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"avif", b"avis"}) | _HEIC_BRANDS
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",
)


def _read_head(path: Path, size: int = 64) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _looks_like_image(head: bytes) -> bool:
    if head.startswith(_IMAGE_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _iso_boxes(path: Path) -> tuple[list[bytes], bool]:
    """Top-level ISO BMFF box types (headers only), and whether the last box runs past EOF."""
    end = path.stat().st_size
    kinds: list[bytes] = []
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= end:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                large = f.read(8)
                if len(large) < 8:  # the 64-bit size itself is cut off
                    return kinds, True
                (size,) = struct.unpack(">Q", large)
            elif size == 0:  # "extends to end of file"
                size = end - offset
            if size < 8:
                return kinds, True
            kinds.append(kind)
            offset += size
        return kinds, offset > end


def _structure_problem(path: Path, head: bytes) -> tuple[str, str] | None:
    """(code, message) when the container's own framing shows the file is cut short."""
    if head[4:8] == b"ftyp":
        kinds, overrun = _iso_boxes(path)
        if b"moov" not in kinds and b"moof" not in kinds:
            return "moov_missing", "the MP4/MOV has no moov atom (recording was not finalised)"
        if overrun:
            return "truncated", "the last MP4/MOV box runs past the end of the file"
    elif head[:4] == b"RIFF" and len(head) >= 8:
        (declared,) = struct.unpack("<I", head[4:8])
        if declared + 8 > path.stat().st_size:
            return "truncated", "the RIFF (AVI/WAV) header declares more bytes than the file has"
    return None


# --------------------------------------------------------------------------- probe


class _NamelessReader:
    """A file object without a ``name``: libav then detects the format by content alone."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def read(self, n: int) -> bytes:
        return self._f.read(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


@contextmanager
def _open_av(path: Path) -> Iterator[av.container.InputContainer]:
    with path.open("rb") as f, av.open(_NamelessReader(f), mode="r") as container:
        yield container


def probe(path: Path) -> ProbeResult:
    """Describe ``path`` from its content; ProbeError (with a specific ``code``) if unreadable."""
    if path.stat().st_size == 0:
        raise _media_error(ProbeError, "empty", f"{path.name}: the file is empty")
    head = _read_head(path)
    if _looks_like_image(head):
        return _probe_image(path, head)
    structure = _structure_problem(path, head)
    try:
        with _open_av(path) as container:
            result = _describe_av(container)
    except av.FFmpegError as exc:
        code, why = structure or ("not_media", "no known audio/video/image format")
        raise _media_error(ProbeError, code, f"{path.name}: {why} ({exc.strerror})") from exc
    if structure is not None:
        result.problems.insert(0, Problem("probe", *structure))
    return result


def _main_video(container: av.container.InputContainer) -> av.VideoStream | None:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # cover art is no video
            return stream
    return None


def _describe_av(container: av.container.InputContainer) -> ProbeResult:
    video = _main_video(container)
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise _media_error(ProbeError, "no_media_streams", "the container has no audio or video")
    tags = {str(k): str(v) for k, v in container.metadata.items()}
    problems: list[Problem] = []
    rotation, width, height, fps = 0, None, None, None
    if video is not None:
        rotation = _decode_check(container, video, problems) or _rotate_tag(video)
        width, height = video.codec_context.width or None, video.codec_context.height or None
        if rotation in (90, 270):
            width, height = height, width
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else None
    if audio is not None:
        _decode_check(container, audio, problems)
    kind: Kind = "video" if video is not None else "audio"
    return ProbeResult(
        kind=kind,
        media_type=_av_media_type(container.format.name, tags.get("major_brand"), kind),
        container=container.format.name,
        duration=_duration(container, video or audio),
        width=width,
        height=height,
        rotation=rotation,
        video_codec=video.codec_context.codec.canonical_name if video is not None else None,
        video_profile=(video.codec_context.profile or None) if video is not None else None,
        audio_codec=audio.codec_context.codec.canonical_name if audio is not None else None,
        fps=fps,
        creation_time=tags.get("creation_time"),
        location=_location(tags),
        tags=tags,
        problems=problems,
    )


def _decode_check(
    container: av.container.InputContainer, stream: av.stream.Stream, problems: list[Problem]
) -> int:
    """Decode the stream's first frame (bounded); returns clockwise rotation for video."""
    try:
        container.seek(0)  # an earlier check may have read past this stream's first packet
        for n, packet in enumerate(container.demux(stream)):
            if n >= _DECODE_CHECK_PACKETS:
                break
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    # frame.rotation is the display matrix angle, counter-clockwise.
                    return (-int(frame.rotation)) % 360
                return 0
    except av.FFmpegError as exc:
        problems.append(
            Problem("probe", f"{stream.type}_undecodable", f"{stream.type}: {exc.strerror}")
        )
        return 0
    problems.append(
        Problem("probe", f"{stream.type}_undecodable", f"no {stream.type} frame could be decoded")
    )
    return 0


def _rotate_tag(stream: av.VideoStream) -> int:
    """The legacy ``rotate`` stream tag (clockwise), for files without a display matrix."""
    try:
        return int(stream.metadata.get("rotate", "0")) % 360
    except ValueError:
        return 0


def _duration(
    container: av.container.InputContainer, stream: av.stream.Stream | None
) -> float | None:
    if container.duration is not None and container.duration > 0:
        return float(container.duration / av.time_base)
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def _location(tags: dict[str, str]) -> str | None:
    for key in ("com.apple.quicktime.location.ISO6709", "location", "location-eng"):
        if tags.get(key):
            return tags[key]
    return None


_AUDIO_TYPES = {
    "amr": "audio/amr",
    "amrnb": "audio/amr",
    "amrwb": "audio/amr-wb",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
}
_VIDEO_TYPES = {
    "avi": "video/x-msvideo",
    "mpegts": "video/mp2t",
    "flv": "video/x-flv",
    "asf": "video/x-ms-asf",
    "mpeg": "video/mpeg",
    "ogg": "video/ogg",
    "h264": "video/h264",
    "hevc": "video/h265",
}


def _av_media_type(format_name: str, major_brand: str | None, kind: Kind) -> str:
    names = format_name.split(",")
    if "mov" in names:
        brand = (major_brand or "").strip()
        if brand == "qt":
            return "video/quicktime"
        if brand.startswith(("3gp", "3g2")):
            return f"{kind}/3gpp"
        return f"{kind}/mp4"
    if "matroska" in names:
        return f"{kind}/x-matroska"
    table = _VIDEO_TYPES if kind == "video" else _AUDIO_TYPES
    for name in names:
        if name in table:
            return table[name]
    return "application/octet-stream"


def _probe_image(path: Path, head: bytes) -> ProbeResult:
    _register_heif()
    try:
        with Image.open(path) as im:
            fmt = str(im.format)
            width, height = im.size
            orientation = int(im.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _media_error(
            ProbeError, "image_unreadable", f"{path.name}: image header unreadable ({exc})"
        ) from exc
    rotation = {3: 180, 6: 90, 8: 270}.get(orientation, 0)
    if orientation in (5, 6, 7, 8):  # these EXIF orientations swap the axes
        width, height = height, width
    media_type = Image.MIME.get(fmt, "application/octet-stream")
    if fmt == "MPO":  # a phone JPEG with a second (depth/preview) frame
        media_type = "image/jpeg"
    if head[4:8] == b"ftyp":
        media_type = "image/heic" if head[8:12] in _HEIC_BRANDS else media_type
    return ProbeResult(
        kind="image",
        media_type=media_type,
        container=fmt,
        width=width,
        height=height,
        rotation=rotation,
    )


# --------------------------------------------------------------------------- running ffmpeg


def _file_url(path: Path) -> str:
    """An absolute ``file:`` URL: no name (``-y.mp4``, ``concat:x``) can read as an option."""
    return "file:" + str(path.resolve())


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, loaded before any fork (loading a library in a forked child may hang)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _run_tool(cmd: list[str], *, limits: Limits, workdir: Path) -> None:
    """Run a media tool with a time and memory cap; stderr goes to a file, not into memory.

    On Linux the tool is killed when the thread that started it dies, so a worker killed
    mid-transcode leaves no ffmpeg running on.
    """
    prctl = _prctl()
    parent = os.getpid()

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above took effect
                os._exit(1)

    with tempfile.TemporaryFile(dir=workdir) as err:
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=limits.timeout_s,
                preexec_fn=cap_memory,  # only setrlimit runs between fork and exec
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _media_error(
                ToolTimeout, "tool_timeout", f"{Path(cmd[0]).name} ran past {limits.timeout_s:g} s"
            ) from exc
        if done.returncode != 0:
            raise _media_error(
                TranscodeError,
                "transcode_failed",
                f"{Path(cmd[0]).name} exited with {done.returncode}: {_stderr_tail(err)}",
            )


def _stderr_tail(err: IO[bytes]) -> str:
    size = err.seek(0, os.SEEK_END)
    err.seek(max(0, size - _STDERR_TAIL_BYTES))
    lines = [ln.strip() for ln in err.read().decode("utf-8", "replace").splitlines()]
    unique = list(dict.fromkeys(ln for ln in lines if ln))
    return "; ".join(unique[-5:])[-600:] or "no error output"


def _partial(final: Path) -> Path:
    return final.with_name(f".{final.stem}.partial{final.suffix}")


# --------------------------------------------------------------------------- proxy


@dataclass(frozen=True)
class _ProxyPlan:
    command: list[str]
    role_ext: str
    media_type: str
    params: dict[str, object]


# Global options first: ffmpeg ignores options that trail the last output.
_FFMPEG_GLOBALS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y")


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def _proxy_size(info: ProbeResult) -> tuple[int, int]:
    """Displayed size scaled so the short side is at most 720 (720p), both dimensions even."""
    w, h = info.width or 0, info.height or 0
    scale = min(1.0, PROXY_MAX_SHORT_SIDE / max(1, min(w, h)))
    return _even(w * scale), _even(h * scale)


def _can_remux(info: ProbeResult) -> bool:
    return (
        info.video_codec == "h264"
        and info.video_profile in _PLAYABLE_H264_PROFILES
        and info.audio_codec in (None, "aac")
        and info.rotation == 0
        and min(info.width or 0, info.height or 0) <= PROXY_MAX_SHORT_SIDE
        and (info.width or 1) % 2 == 0
        and (info.height or 1) % 2 == 0
    )


def _proxy_plan(src: Path, info: ProbeResult, dst: Path, ffmpeg_exe: str) -> _ProxyPlan:
    if info.kind not in ("video", "audio"):
        raise _media_error(TranscodeError, "no_proxy", f"a {info.kind} has no playback proxy")
    demuxer = info.container.split(",")[0]  # the content-detected format, not the extension
    inp = ffmpeg.input(_file_url(src), f=demuxer)
    out_opts: dict[str, object] = {"format": "mp4", "movflags": "+faststart", "sn": None}
    params: dict[str, object] = {}
    if info.kind == "audio":
        mode = "remux" if info.audio_codec == "aac" else "transcode"
        streams = [inp["a:0"]]
        out_opts |= {"c:a": "copy"} if mode == "remux" else {"c:a": "aac", "b:a": "128k"}
        ext, media_type = "m4a", "audio/mp4"
    else:
        mode = "remux" if _can_remux(info) else "transcode"
        streams = [inp["V:0"]] + ([inp["a:0"]] if info.audio_codec else [])
        ext, media_type = "mp4", "video/mp4"
        if mode == "remux":
            out_opts["c"] = "copy"
        else:
            width, height = _proxy_size(info)
            # ffmpeg autorotates decoded frames, so scale sees (and writes) the displayed size.
            out_opts |= {
                "c:v": "libx264",
                "profile:v": "high",
                "pix_fmt": "yuv420p",
                "preset": "veryfast",
                "crf": 23,
                "vf": f"scale={width}:{height}",
                "c:a": "aac",
                "b:a": "128k",
            }
            params |= {"width": width, "height": height}
    compiled = ffmpeg.output(*streams, _file_url(dst), **out_opts).compile(cmd=[])
    command = [ffmpeg_exe, *_FFMPEG_GLOBALS, *compiled]
    params |= {"mode": mode, "source_media_type": info.media_type}
    return _ProxyPlan(command, ext, media_type, params)


def proxy_command(
    src: Path, info: ProbeResult, dst: Path, ffmpeg_exe: str | None = None
) -> list[str]:
    """The exact ffmpeg command make_proxy runs, for benchmarks and for the record."""
    return _proxy_plan(src, info, dst, ffmpeg_exe or _default_ffmpeg()).command


def make_proxy(
    src: Path,
    info: ProbeResult,
    workdir: Path,
    *,
    limits: Limits,
    ffmpeg_exe: str | None = None,
) -> Derived:
    """H.264 High/AAC MP4 (≤720p, faststart, upright) or AAC M4A; remux when already fit."""
    exe = ffmpeg_exe or _default_ffmpeg()
    workdir.mkdir(parents=True, exist_ok=True)
    ext = "m4a" if info.kind == "audio" else "mp4"
    final = workdir / f"proxy.{ext}"
    partial = _partial(final)
    plan = _proxy_plan(src, info, partial, exe)
    try:
        _run_tool(plan.command, limits=limits, workdir=workdir)
        os.replace(partial, final)  # never leave a half-written proxy under its real name
    finally:
        partial.unlink(missing_ok=True)
    recipe_args = tuple(
        {_file_url(src): "{input}", _file_url(partial): "{output}"}.get(a, a)
        for a in plan.command[1:]
    )
    versions = tool_versions(exe)
    recipe = Recipe("ffmpeg", versions["ffmpeg"], recipe_args, plan.params | {"tools": versions})
    return Derived("proxy", final, plan.media_type, plan.role_ext, recipe)


# --------------------------------------------------------------------------- stills

_Image = npt.NDArray[np.uint8]
_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _write_jpeg(img: _Image, final: Path) -> None:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise _media_error(MediaError, "encode_failed", f"could not encode {final.name}")
    _write_atomic(final, buf.tobytes())


def _write_atomic(final: Path, data: bytes) -> None:
    partial = _partial(final)
    partial.write_bytes(data)
    os.replace(partial, final)


def _fit(img: _Image, max_px: int) -> _Image:
    h, w = img.shape[:2]
    scale = max_px / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _seek_times(info: ProbeResult, count: int) -> list[float] | None:
    """Mid-points (seconds) of ``count`` equal slices of the clip, if its length is known."""
    if not info.duration:
        return None
    return [info.duration * (i + 0.5) / count for i in range(count)]


def _grab_opencv(src: Path, times: list[float] | None, count: int) -> list[_Image | None]:
    """Seek and read one frame per time (or per frame-count slice when the length is unknown)."""
    cap = cv2.VideoCapture(str(src.resolve()), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return [None] * (len(times) if times else 1)
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # rotate from the probe, one rule for all
        if times is not None:
            points = [(cv2.CAP_PROP_POS_MSEC, t * 1000) for t in times]
        else:
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            slices = [(frames * (i + 0.5)) // count for i in range(count)] if frames > 0 else [0]
            points = [(cv2.CAP_PROP_POS_FRAMES, float(n)) for n in slices]
        grabbed: list[_Image | None] = []
        for prop, value in points:
            ok = cap.set(prop, value)
            ok, frame = cap.read() if ok else (False, None)
            grabbed.append(np.asarray(frame, dtype=np.uint8) if ok and frame is not None else None)
        return grabbed
    finally:
        cap.release()


def _grab_pyav(src: Path, time: float) -> _Image | None:
    """One frame at ``time`` by PyAV, for containers OpenCV cannot seek (MPEG-TS).

    MPEG-TS seeking lands imprecisely, often past the keyframe it needs, so seek a little
    earlier each try and, last, decode from the start; each try decodes a bounded number of
    frames, so a long clip yields fewer thumbnails rather than a full decode.
    """
    for lead_s in (1.0, 5.0, None):
        try:
            frame = _decode_at(src, time, lead_s)
        except av.FFmpegError:
            return None
        if frame is not None:
            return frame
    return None


def _decode_at(src: Path, time: float, lead_s: float | None) -> _Image | None:
    with _open_av(src) as container:
        video = _main_video(container)
        if video is None or video.time_base is None:
            return None
        start = float(video.start_time * video.time_base) if video.start_time else 0.0
        if lead_s is not None:
            seek_to = max(start, start + time - lead_s)
            container.seek(int(seek_to / video.time_base), stream=video, backward=True)
        for n, frame in enumerate(container.decode(video)):
            if n >= _DECODE_CHECK_PACKETS:
                break
            if frame.time is not None and frame.time + 1e-3 >= start + time:
                return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
    return None


def make_thumbnails(
    src: Path, info: ProbeResult, workdir: Path, *, count: int = 6
) -> list[Derived]:
    """JPEG stills at evenly spaced times, by seeking (never decoding the whole clip)."""
    workdir.mkdir(parents=True, exist_ok=True)
    times = _seek_times(info, count)
    grabbed = _grab_opencv(src, times, count)
    backends = {"opencv"}
    if times is not None:
        for i, frame in enumerate(grabbed):
            if frame is None:
                grabbed[i] = _grab_pyav(src, times[i])
                backends.add("pyav")
    frames = [f for f in grabbed if f is not None]
    if not frames:
        raise _media_error(MediaError, "no_frames", "no frame could be decoded for thumbnails")
    params: dict[str, object] = {
        "count": count,
        "max_px": THUMB_MAX_PX,
        "rotation": info.rotation,
        "seek": "even",
        "backends": sorted(backends),
        "tools": tool_versions(),
    }
    recipe = Recipe("opencv", cv2.__version__, (), params)
    derived = []
    for i, frame in enumerate(frames):
        if info.rotation in _ROTATE:
            frame = np.asarray(cv2.rotate(frame, _ROTATE[info.rotation]), dtype=np.uint8)
        final = workdir / f"thumb-{i:03d}.jpg"
        _write_jpeg(_fit(frame, THUMB_MAX_PX), final)
        derived.append(Derived(f"thumb-{i:03d}", final, "image/jpeg", "jpg", recipe))
    return derived


def make_contact_sheet(thumbs: list[Derived], workdir: Path) -> Derived:
    """The thumbnails in a near-square grid, each centred in a cell of the largest size."""
    images = [cv2.imread(str(t.path), cv2.IMREAD_COLOR) for t in thumbs]
    tiles = [np.asarray(img, dtype=np.uint8) for img in images if img is not None]
    if not tiles:
        raise _media_error(MediaError, "no_thumbnails", "no thumbnail to put on a contact sheet")
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    gap = 4
    sheet = np.full(
        (rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3), 32, dtype=np.uint8
    )
    for i, tile in enumerate(tiles):
        top = gap + (i // cols) * (cell_h + gap) + (cell_h - tile.shape[0]) // 2
        left = gap + (i % cols) * (cell_w + gap) + (cell_w - tile.shape[1]) // 2
        sheet[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    final = workdir / "contact.jpg"
    _write_jpeg(sheet, final)
    recipe = Recipe(
        "opencv",
        cv2.__version__,
        (),
        {"columns": cols, "rows": rows, "from": [t.role for t in thumbs]}
        | {"tools": tool_versions()},
    )
    return Derived("contact", final, "image/jpeg", "jpg", recipe)


# --------------------------------------------------------------------------- waveform


class _Peaks:
    """Running min/max per block of samples; halves its resolution to stay bounded."""

    def __init__(self, samples_per_block: int, max_blocks: int) -> None:
        self.per_block = max(1, samples_per_block)
        self.max_blocks = max_blocks
        self.lows: list[float] = []
        self.highs: list[float] = []
        self.position = 0

    def add(self, samples: npt.NDArray[np.float32]) -> None:
        start = 0
        while start < len(samples):
            block = self.position // self.per_block
            take = min(len(samples) - start, (block + 1) * self.per_block - self.position)
            chunk = samples[start : start + take]
            low, high = float(chunk.min()), float(chunk.max())
            if block == len(self.lows):
                self.lows.append(low)
                self.highs.append(high)
            else:
                self.lows[block] = min(self.lows[block], low)
                self.highs[block] = max(self.highs[block], high)
            start += take
            self.position += take
            if len(self.lows) > self.max_blocks:
                self._halve()

    def _halve(self) -> None:
        self.lows = [min(self.lows[i : i + 2]) for i in range(0, len(self.lows), 2)]
        self.highs = [max(self.highs[i : i + 2]) for i in range(0, len(self.highs), 2)]
        self.per_block *= 2


def _audio_peaks(src: Path, width: int) -> _Peaks:
    with _open_av(src) as container:
        if not container.streams.audio:
            raise _media_error(MediaError, "no_audio", "the file has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or 8000
        seconds = _duration(container, stream) or 60.0
        peaks = _Peaks(math.ceil(seconds * rate / width), max_blocks=2 * width)
        resampler = av.AudioResampler(format="flt", layout="mono")
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue  # a damaged packet costs one gap, not the waveform
            for frame in frames:
                for mono in resampler.resample(frame):
                    peaks.add(np.asarray(mono.to_ndarray()[0], dtype=np.float32))
    return peaks


def make_waveform(src: Path, workdir: Path) -> Derived:
    """PNG min/max waveform of the first audio stream, decoded as a stream (bounded memory)."""
    width, height = WAVEFORM_SIZE
    peaks = _audio_peaks(src, width)
    if not peaks.lows:
        raise _media_error(MediaError, "no_audio_frames", "no audio frame could be decoded")
    pick = np.arange(width) * len(peaks.lows) // width  # stretch or squeeze blocks to columns
    lows = np.clip(np.asarray(peaks.lows)[pick], -1.0, 1.0)
    highs = np.clip(np.asarray(peaks.highs)[pick], -1.0, 1.0)
    mid = (height - 1) / 2
    top = np.floor(mid - highs * mid).astype(int)
    bottom = np.ceil(mid - lows * mid).astype(int)
    rows = np.arange(height)[:, None]
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    img[round(mid), :] = (200, 200, 200)
    img[(rows >= top) & (rows <= bottom)] = (160, 80, 20)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise _media_error(MediaError, "encode_failed", "could not encode the waveform")
    workdir.mkdir(parents=True, exist_ok=True)
    final = workdir / "waveform.png"
    _write_atomic(final, buf.tobytes())
    recipe = Recipe(
        "pyav+opencv",
        av.__version__,
        (),
        {"width": width, "height": height, "channels": "mono-mix", "tools": tool_versions()},
    )
    return Derived("waveform", final, "image/png", "png", recipe)


# --------------------------------------------------------------------------- photos

_TRUNCATED_LOCK = threading.Lock()


@contextmanager
def _tolerate_truncation() -> Iterator[None]:
    """Let Pillow decode a cut image (padding the rest) for this call only.

    Pillow offers the switch only as a module global, so it is set and restored under a lock;
    other threads decoding at the same moment would see it too, which costs them nothing worse
    than a padded picture.
    """
    with _TRUNCATED_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _render_photo(
    src: Path, workdir: Path, *, truncated: bool
) -> tuple[list[Derived], list[Problem]]:
    problems: list[Problem] = []
    with Image.open(src) as im:
        im.draft("RGB", (DISPLAY_MAX_PX, DISPLAY_MAX_PX))  # JPEG: decode at a reduced scale
        im.load()
        try:
            upright = ImageOps.exif_transpose(im)
        except Exception as exc:  # any EXIF oddity only costs the orientation
            problems.append(Problem("photo", "orientation_unreadable", f"EXIF orientation: {exc}"))
            upright = im
        display = upright.convert("RGB")
    display.thumbnail((DISPLAY_MAX_PX, DISPLAY_MAX_PX), Image.Resampling.LANCZOS)
    thumb = display.copy()
    thumb.thumbnail((THUMB_MAX_PX, THUMB_MAX_PX), Image.Resampling.LANCZOS)
    versions = tool_versions()
    derived = []
    for role, img, max_px in (("display", display, DISPLAY_MAX_PX), ("thumb-000", thumb, 320)):
        final = workdir / f"{role}.jpg"
        partial = _partial(final)
        img.save(partial, "JPEG", quality=JPEG_QUALITY)
        os.replace(partial, final)
        params: dict[str, object] = {
            "max_px": max_px,
            "exif_transpose": True,
            "load_truncated": truncated,
            "tools": versions,
        }
        recipe = Recipe("pillow", PIL.__version__, (), params)
        derived.append(Derived(role, final, "image/jpeg", "jpg", recipe))
    return derived, problems


def _photo_derivatives(src: Path, workdir: Path) -> tuple[list[Derived], list[Problem]]:
    _register_heif()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _render_photo(src, workdir, truncated=False)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        first_error = exc
    # A card that lost power leaves half a JPEG: still evidence, so show what is there.
    try:
        with _tolerate_truncation():
            derived, problems = _render_photo(src, workdir, truncated=True)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _media_error(MediaError, "image_unreadable", f"image undecodable: {exc}") from exc
    note = Problem("photo", "truncated", f"image decoded with missing data: {first_error}")
    return derived, [note, *problems]


def make_photo_derivatives(src: Path, workdir: Path) -> list[Derived]:
    """``display`` (upright, ≤2048 px) and ``thumb-000`` (≤320 px) JPEGs; HEIC included.

    A truncated image is still rendered; its recipes then say ``load_truncated: True``.
    """
    return _photo_derivatives(src, workdir)[0]


# --------------------------------------------------------------------------- derive


def _guard(stage: str, step: Callable[[], list[Derived]], problems: list[Problem]) -> list[Derived]:
    """Run one step; its failure becomes a Problem so the other steps still run."""
    try:
        return step()
    except MediaError as exc:
        problems.append(Problem(stage, exc.code, str(exc)))
    except Exception as exc:  # a tool's own error type must not lose the item
        problems.append(Problem(stage, "unexpected_error", f"{type(exc).__name__}: {exc}"))
    return []


def derive(
    src: Path,
    info: ProbeResult,
    workdir: Path,
    *,
    limits: Limits,
    thumbs: int = 6,
    ffmpeg_exe: str | None = None,
) -> tuple[list[Derived], list[Problem]]:
    """Every derivative that fits ``info.kind``; what fails is reported, never raised."""
    problems: list[Problem] = []
    derived: list[Derived] = []

    def photo() -> list[Derived]:
        made, noted = _photo_derivatives(src, workdir)
        problems.extend(noted)
        return made

    def proxy() -> list[Derived]:
        return [make_proxy(src, info, workdir, limits=limits, ffmpeg_exe=ffmpeg_exe)]

    if info.kind == "image":
        return _guard("photo", photo, problems), problems
    derived += _guard("proxy", proxy, problems)
    if info.kind == "audio":
        derived += _guard("waveform", lambda: [make_waveform(src, workdir)], problems)
        return derived, problems
    stills = _guard(
        "thumbnails", lambda: make_thumbnails(src, info, workdir, count=thumbs), problems
    )
    if 0 < len(stills) < thumbs:
        problems.append(
            Problem("thumbnails", "thumbnails_partial", f"{len(stills)} of {thumbs} made")
        )
    if stills:
        derived += stills
        derived += _guard("contact", lambda: [make_contact_sheet(stills, workdir)], problems)
    return derived, problems
