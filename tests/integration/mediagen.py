"""Generate short test media with the static ffmpeg from imageio-ffmpeg.

Every function writes one file into ``directory`` and returns its path. Clips are 2 s long so
the whole media suite stays fast; sizes and codecs mimic what body cameras and phones produce.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg

CREATION_TIME = "2026-03-01T08:00:00Z"
LOCATION = "+40.8423+111.7490/"
DURATION_S = 2.0

_VIDEO = "testsrc2=size={w}x{h}:rate={fps}:duration={d}"
_AUDIO = "sine=frequency=440:sample_rate={rate}:duration={d}"


def ffmpeg_exe() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run_ffmpeg(*args: str) -> None:
    """Run the static ffmpeg quietly; raise with its stderr when it fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr}")


def _lavfi_video(w: int, h: int, fps: int = 30, d: float = DURATION_S) -> list[str]:
    return ["-f", "lavfi", "-i", _VIDEO.format(w=w, h=h, fps=fps, d=d)]


def _lavfi_audio(rate: int = 48000, d: float = DURATION_S) -> list[str]:
    return ["-f", "lavfi", "-i", _AUDIO.format(rate=rate, d=d)]


_H264_HIGH = ["-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-preset", "veryfast"]
_TAGS = ["-metadata", f"creation_time={CREATION_TIME}", "-metadata", f"location={LOCATION}"]


def body_cam_1080p(directory: Path, name: str = "bodycam-1080p.mp4") -> Path:
    """1920x1080 30 fps H.264 High + AAC with creation time and ISO 6709 location tags."""
    out = directory / name
    run_ffmpeg(
        *_lavfi_video(1920, 1080), *_lavfi_audio(), *_H264_HIGH, "-c:a", "aac", *_TAGS, str(out)
    )
    return out


def small_h264(directory: Path, name: str = "small-640x360.mp4") -> Path:
    """640x360 H.264 High + AAC: already proxy-shaped, so the proxy is a remux."""
    out = directory / name
    run_ffmpeg(*_lavfi_video(640, 360), *_lavfi_audio(), *_H264_HIGH, "-c:a", "aac", str(out))
    return out


def hevc_mp4(directory: Path) -> Path:
    out = directory / "hevc.mp4"
    run_ffmpeg(
        *_lavfi_video(1280, 720),
        *_lavfi_audio(),
        *[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=0",
        ],
        *["-c:a", "aac", str(out)],
    )
    return out


def mjpeg_avi(directory: Path) -> Path:
    """Older body cameras: Motion JPEG with PCM audio in AVI."""
    out = directory / "mjpeg.avi"
    run_ffmpeg(
        *_lavfi_video(1280, 720), *_lavfi_audio(rate=16000), "-c:v", "mjpeg", "-q:v", "5",
        *["-c:a", "pcm_s16le", str(out)],
    )  # fmt: skip
    return out


def h264_mkv(directory: Path) -> Path:
    out = directory / "clip.mkv"
    run_ffmpeg(*_lavfi_video(1280, 720), *_lavfi_audio(), *_H264_HIGH, "-c:a", "libopus", str(out))
    return out


def h264_ts(directory: Path) -> Path:
    out = directory / "clip.ts"
    run_ffmpeg(*_lavfi_video(640, 360), *_lavfi_audio(), *_H264_HIGH, "-c:a", "aac", str(out))
    return out


def portrait_phone(directory: Path) -> Path:
    """A phone clip stored landscape with a display matrix (like an iPhone's ``rotate=90``).

    The stored picture is white on its left half, black on its right: shown upright (turned
    90° clockwise) the top half is white, so tests can tell a correct turn from a wrong one.
    ``-metadata:s:v rotate=90`` is ignored by ffmpeg 7+, so the matrix is set as an input
    option and the stream copied; -90 (counter-clockwise) is how phones write portrait.
    """
    plain = directory / "portrait-plain.mp4"
    halves = f"color=c=black:s=1280x720:r=30:d={DURATION_S},drawbox=w=640:h=720:color=white:t=fill"
    run_ffmpeg("-f", "lavfi", "-i", halves, *_lavfi_audio(), *_H264_HIGH, "-c:a", "aac", str(plain))
    out = directory / "portrait.mov"
    run_ffmpeg("-display_rotation", "-90", "-i", str(plain), "-c", "copy", str(out))
    plain.unlink()
    return out


def aac_m4a(directory: Path) -> Path:
    out = directory / "voice.m4a"
    run_ffmpeg(*_lavfi_audio(), "-c:a", "aac", *_TAGS, str(out))
    return out


def amr(directory: Path) -> Path:
    """AMR-NB (8 kHz mono), as handheld recorders write it; the static build has libopencore."""
    out = directory / "voice.amr"
    run_ffmpeg(*_lavfi_audio(rate=8000), "-c:a", "libopencore_amrnb", "-b:a", "12.2k", str(out))
    return out


def wav(directory: Path) -> Path:
    out = directory / "voice.wav"
    run_ffmpeg(*_lavfi_audio(rate=16000), "-c:a", "pcm_s16le", str(out))
    return out


def mp3(directory: Path) -> Path:
    out = directory / "voice.mp3"
    run_ffmpeg(*_lavfi_audio(rate=44100), "-c:a", "libmp3lame", "-b:a", "64k", str(out))
    return out


def top_level_boxes(path: Path) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level ISO BMFF box, reading only box headers."""
    boxes: list[tuple[bytes, int, int]] = []
    end = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= end:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", f.read(8))
            elif size == 0:
                size = end - offset
            if size < 8:
                break
            boxes.append((kind, offset, size))
            offset += size
    return boxes


def _copy_prefix(src: Path, dst: Path, length: int) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        remaining = length
        while remaining > 0:
            chunk = fin.read(min(remaining, 1 << 20))
            if not chunk:
                break
            fout.write(chunk)
            remaining -= len(chunk)


def moov_missing(directory: Path) -> Path:
    """A camera that lost power: ftyp + mdat written, the trailing moov never was."""
    full = small_h264(directory, name="full-for-cut.mp4")
    moov = next(offset for kind, offset, _ in top_level_boxes(full) if kind == b"moov")
    out = directory / "power-loss.mp4"
    _copy_prefix(full, out, moov)
    full.unlink()
    return out


def random_bytes(directory: Path) -> Path:
    """64 KiB of noise, the same in every run: FFmpeg takes about one in a hundred noise files
    for a raw stream (h263, lrc lyrics), so fresh noise made the expected problem vary."""
    out = directory / "random.mp4"
    out.write_bytes(random.Random(20261203).randbytes(64 * 1024))
    return out


def lyrics_only(directory: Path) -> Path:
    """Timed text (LRC), which FFmpeg opens as a container of one subtitle stream."""
    out = directory / "lyrics.mp4"
    out.write_text("[00:00.00]执法开始\n[00:05.00]出示证件\n[00:09.50]执法结束\n", "utf-8")
    return out


def empty(directory: Path) -> Path:
    out = directory / "empty.mp4"
    out.write_bytes(b"")
    return out


def truncated_avi(directory: Path, *, keep: float = 0.5) -> Path:
    """An MJPEG AVI cut to ``keep`` of its length (no idx1 index at the end)."""
    full = mjpeg_avi(directory)
    out = directory / f"truncated-{int(keep * 100)}.avi"
    _copy_prefix(full, out, int(full.stat().st_size * keep))
    full.unlink()
    return out


def truncated_avi_header(directory: Path) -> Path:
    """An AVI cut inside its header list: nothing of the streams can be known."""
    full = mjpeg_avi(directory)
    out = directory / "truncated-header.avi"
    _copy_prefix(full, out, 96)
    full.unlink()
    return out


def half_jpeg(directory: Path, source: Path) -> Path:
    """A photo cut in half, as a failed card write leaves it."""
    out = directory / "half.jpg"
    _copy_prefix(source, out, source.stat().st_size // 2)
    return out


def renamed_copy(src: Path, directory: Path, name: str) -> Path:
    """A copy under a hostile name (``-y.mp4``, quotes, colons, CJK) or a lying extension."""
    out = directory / name
    shutil.copyfile(src, out)
    return out


class ClipCache:
    """Makes each clip once per test module, each in its own folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def get(self, maker: Callable[[Path], Path]) -> Path:
        name = maker.__name__
        if name not in self._made:
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            self._made[name] = maker(folder)
        return self._made[name]


def timed_clip(
    directory: Path,
    name: str,
    *,
    creation_time: str,
    seconds: float = 4.0,
    location: str | None = LOCATION,
) -> Path:
    """A small H.264 + AAC clip (640x360, proxy-shaped) recorded at ``creation_time``."""
    out = directory / name
    tags = ["-metadata", f"creation_time={creation_time}"]
    if location:
        tags += ["-metadata", f"location={location}"]
    run_ffmpeg(
        *_lavfi_video(640, 360, d=seconds), *_lavfi_audio(d=seconds), *_H264_HIGH,
        "-c:a", "aac", *tags, str(out),
    )  # fmt: skip
    return out
