"""Sample recordings for ``liuhen demo``: made on the spot with the bundled ffmpeg and Pillow,
shaped like what a body camera and a phone produce (so the demo shows the whole pipeline)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import imageio_ffmpeg
from PIL import Image, ImageDraw

DEMO_CASE = "DEMO-2026-0001"
DEMO_DEVICE = "DSJ-A1234567"
DEMO_OFFICER = "110123"


def _ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    subprocess.run([*cmd, "-y", *args], check=True, capture_output=True, timeout=300)


def write_large_recording(path: Path, size_mib: int) -> str:
    """``size_mib`` MiB of incompressible bytes (each MiB distinct), written as a stream, for
    trying big uploads; returns their SHA-256."""
    mib = 1024 * 1024
    block = bytearray(os.urandom(mib))
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(size_mib):
            block[:8] = i.to_bytes(8, "big")
            f.write(block)
            digest.update(block)
    return digest.hexdigest()


def make_samples(directory: Path, *, now: datetime | None = None) -> list[Path]:
    """A body-camera clip (GA/T 947-style name, creation time, ISO 6709 place), an audio
    note, and a photo; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    start = (now or datetime.now(UTC)) - timedelta(hours=1)
    local = start.astimezone(UTC) + timedelta(hours=8)
    stamp = local.strftime("%Y%m%d%H%M%S")
    clip = directory / f"{DEMO_DEVICE.split('-')[1]}_{DEMO_OFFICER}_{stamp}_0001.MP4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30:duration=6",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=6",
        "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-preset", "veryfast",
        "-c:a", "aac",
        "-metadata", f"creation_time={start.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "-metadata", "location=+40.8423+111.7490/",
        str(clip),
    )  # fmt: skip
    audio = directory / f"REC_{stamp}.m4a"
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=4",
        "-c:a", "aac", "-metadata", f"creation_time={start.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        str(audio),
    )  # fmt: skip
    photo = directory / f"IMG_{local.strftime('%Y%m%d_%H%M%S')}.jpg"
    img = Image.new("RGB", (1600, 1200), (40, 70, 110))
    ImageDraw.Draw(img).rectangle((200, 200, 1400, 1000), outline=(250, 250, 250), width=12)
    img.save(photo, quality=90)
    return [clip, audio, photo]
