"""What a file is, read from its content: ``probe()``.

Video and audio go through PyAV in-process, handed a reader without a name (libav would
otherwise trust the extension); images go through Pillow (HEIC via pillow-heif). A container
whose own framing shows it cut short (no ``moov``, a box past the end, a RIFF size beyond the
file) is reported as a problem, or names the error when nothing decodes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import av
from PIL import Image

from ingest.errors import ProbeError
from ingest.media.tools import register_heif
from ingest.media.values import Kind, ProbeResult, media_error
from ingest.problems import Problem, ProblemCode
from ingest.sniff import image_brand

DECODE_CHECK_PACKETS = 600
"""Enough packets to reach the first frame of any sane interleaving."""

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
    return image_brand(head) is not None


def _iso_boxes(path: Path) -> tuple[set[bytes], bool]:
    """Top-level ISO BMFF box types (headers only), and whether the last box runs past EOF.
    A set: a crafted file of millions of 8-byte boxes must not become a list of millions."""
    end = path.stat().st_size
    kinds: set[bytes] = set()
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
            kinds.add(kind)
            offset += size
        return kinds, offset > end


def _structure_problem(path: Path, head: bytes) -> tuple[ProblemCode, str] | None:
    """(code, message) when the container's own framing shows the file is cut short."""
    if head[4:8] == b"ftyp":
        kinds, overrun = _iso_boxes(path)
        if b"moov" not in kinds and b"moof" not in kinds:
            return (
                ProblemCode.MOOV_MISSING,
                "the MP4/MOV has no moov atom (recording was not finalised)",
            )
        if overrun:
            return ProblemCode.TRUNCATED, "the last MP4/MOV box runs past the end of the file"
    elif head[:4] == b"RIFF" and len(head) >= 8:
        (declared,) = struct.unpack("<I", head[4:8])
        if declared + 8 > path.stat().st_size:
            return (
                ProblemCode.TRUNCATED,
                "the RIFF (AVI/WAV) header declares more bytes than the file has",
            )
    return None


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


AV_OPTIONS = {"protocol_whitelist": "none"}
"""No demuxer may open anything of its own: an upload that is an SDP file would otherwise
make the worker listen on UDP ports for whoever sends packets (and hold the job), an
``ffconcat`` or HLS list would read other files or fetch URLs. The upload itself is read
through a Python file object, which is no protocol."""


@contextmanager
def open_av(path: Path) -> Iterator[av.container.InputContainer]:
    # Tags that are not UTF-8 (GBK from Chinese cameras) are replaced, not fatal: strict
    # decoding made a playable video unprocessable and lost its creation time.
    with (
        path.open("rb") as f,
        av.open(
            _NamelessReader(f), mode="r", options=AV_OPTIONS, metadata_errors="replace"
        ) as container,
    ):
        yield container


def probe(path: Path) -> ProbeResult:
    """Describe ``path`` from its content; ProbeError (with a specific ``code``) if unreadable."""
    if path.stat().st_size == 0:
        raise media_error(ProbeError, ProblemCode.EMPTY, f"{path.name}: the file is empty")
    head = _read_head(path)
    if _looks_like_image(head):
        return _probe_image(path, head)
    structure = _structure_problem(path, head)
    try:
        with open_av(path) as container:
            result = _describe_av(container, path.name)
    except av.FFmpegError as exc:
        code, why = structure or (ProblemCode.NOT_MEDIA, "no known audio/video/image format")
        raise media_error(ProbeError, code, f"{path.name}: {why} ({exc.strerror})") from exc
    if structure is not None:
        result.problems.insert(0, Problem("probe", *structure))
    return result


def main_video(container: av.container.InputContainer) -> av.VideoStream | None:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # cover art is no video
            return stream
    return None


def _describe_av(container: av.container.InputContainer, name: str) -> ProbeResult:
    video = main_video(container)
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise media_error(
            ProbeError,
            ProblemCode.NO_MEDIA_STREAMS,
            f"{name}: FFmpeg reads it as {container.format.name}, with no audio or video in it",
        )
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
        duration=stream_duration(container, video or audio),
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
            if n >= DECODE_CHECK_PACKETS:
                break
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    # frame.rotation is the display matrix angle, counter-clockwise.
                    return (-int(frame.rotation)) % 360
                return 0
    except av.FFmpegError as exc:
        problems.append(Problem("probe", _undecodable(stream), f"{stream.type}: {exc.strerror}"))
        return 0
    problems.append(
        Problem("probe", _undecodable(stream), f"no {stream.type} frame could be decoded")
    )
    return 0


def _undecodable(stream: av.stream.Stream) -> ProblemCode:
    if stream.type == "video":
        return ProblemCode.VIDEO_UNDECODABLE
    return ProblemCode.AUDIO_UNDECODABLE  # the only other kind of stream probe checks


def _rotate_tag(stream: av.VideoStream) -> int:
    """The legacy ``rotate`` stream tag (clockwise), for files without a display matrix."""
    try:
        return int(stream.metadata.get("rotate", "0")) % 360
    except ValueError:
        return 0


def stream_duration(
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
    register_heif()
    try:
        with Image.open(path) as im:
            fmt = str(im.format)
            width, height = im.size
            orientation = int(im.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise media_error(
            ProbeError,
            ProblemCode.IMAGE_UNREADABLE,
            f"{path.name}: image header unreadable ({exc})",
        ) from exc
    rotation = {3: 180, 6: 90, 8: 270}.get(orientation, 0)
    if orientation in (5, 6, 7, 8):  # these EXIF orientations swap the axes
        width, height = height, width
    media_type = Image.MIME.get(fmt, "application/octet-stream")
    if fmt == "MPO":  # a phone JPEG with a second (depth/preview) frame
        media_type = "image/jpeg"
    media_type = image_brand(head) or media_type  # HEIF's generic brands too, as sniff says
    return ProbeResult(
        kind="image",
        media_type=media_type,
        container=fmt,
        width=width,
        height=height,
        rotation=rotation,
    )
