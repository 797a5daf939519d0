"""Stills of a video: evenly spaced thumbnails found by seeking (OpenCV, PyAV where OpenCV
cannot seek), and a contact sheet of them."""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from ingest.errors import MediaError
from ingest.media.probing import DECODE_CHECK_PACKETS, main_video, open_av
from ingest.media.tools import tool_versions, write_atomic
from ingest.media.values import (
    JPEG_QUALITY,
    THUMB_MAX_PX,
    Derived,
    ProbeResult,
    Recipe,
    media_error,
)
from ingest.problems import ProblemCode

_Image = npt.NDArray[np.uint8]
_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _write_jpeg(img: _Image, final: Path) -> None:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise media_error(MediaError, ProblemCode.ENCODE_FAILED, f"could not encode {final.name}")
    write_atomic(final, buf.tobytes())


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
    with open_av(src) as container:
        video = main_video(container)
        if video is None or video.time_base is None:
            return None
        start = float(video.start_time * video.time_base) if video.start_time else 0.0
        if lead_s is not None:
            seek_to = max(start, start + time - lead_s)
            container.seek(int(seek_to / video.time_base), stream=video, backward=True)
        for n, frame in enumerate(container.decode(video)):
            if n >= DECODE_CHECK_PACKETS:
                break
            if frame.time is not None and frame.time + 1e-3 >= start + time:
                return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
    return None


MAX_FRAME_PIXELS = 8192 * 4320
"""The largest frame thumbnails are decoded from in this process (8K video and more)."""


def make_thumbnails(
    src: Path, info: ProbeResult, workdir: Path, *, count: int = 6
) -> list[Derived]:
    """JPEG stills at evenly spaced times, by seeking (never decoding the whole clip)."""
    pixels = (info.width or 0) * (info.height or 0)
    if pixels > MAX_FRAME_PIXELS:
        # A 424 KB upload can declare 12000 x 12000 frames: decoding and converting them here
        # (no address-space limit in this process, unlike ffmpeg's) took 3.6 GB.
        raise media_error(
            MediaError,
            ProblemCode.NO_THUMBNAILS,
            f"frames of {info.width} x {info.height} are beyond the {MAX_FRAME_PIXELS} "
            "pixels thumbnails are made from (the proxy is scaled by ffmpeg)",
        )
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
        raise media_error(
            MediaError, ProblemCode.NO_FRAMES, "no frame could be decoded for thumbnails"
        )
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
        raise media_error(
            MediaError, ProblemCode.NO_THUMBNAILS, "no thumbnail to put on a contact sheet"
        )
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
