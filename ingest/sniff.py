"""Media type from the first bytes, never from the file name (names are data, and lie)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

OCTET = "application/octet-stream"
HEIC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
)
"""ISO BMFF brands of HEIF images and image sequences (ISO/IEC 23008-12), ``mif1``/``msf1``
being the generic ones phones also write as major brand: all ``image/heic``. The one list:
``ingest.media`` and ``ingest.timeplace`` ask `image_brand` too."""
AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
"""AV1 images and image sequences: ``image/avif``."""
_AUDIO_BRANDS = {b"M4A ", b"M4B "}
_QT_BRANDS = {b"qt  "}
# An NMEA 0183 sentence: "$", an address (talker + type such as GPRMC, BDGGA, or a
# proprietary P... such as PTNTHPR), then a comma. Loggers may start with any of them.
_NMEA_START = re.compile(rb"\$[A-Z][A-Z0-9]{3,8},")


def image_brand(head: bytes) -> str | None:
    """``image/heic`` or ``image/avif`` when ``head`` opens an ISO BMFF image, else None."""
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in HEIC_BRANDS:
        return "image/heic"
    if brand in AVIF_BRANDS:
        return "image/avif"
    return None


def sniff(head: bytes) -> str:
    """MIME type of a file from its first 512 bytes (or ``application/octet-stream``)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        image = image_brand(head)
        if image is not None:
            return image
        if brand in _AUDIO_BRANDS:
            return "audio/mp4"
        if brand in _QT_BRANDS:
            return "video/quicktime"
        return "video/mp4"
    if head[4:8] in {b"moov", b"mdat", b"wide", b"free", b"skip"}:
        return "video/quicktime"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video/mp2t"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head.startswith(b"ID3") or head[:2] in {b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"}:
        return "audio/mpeg"
    stripped = head.lstrip()
    if (stripped.startswith(b"<?xml") and b"<gpx" in head) or stripped.startswith(b"<gpx"):
        return "application/gpx+xml"
    if _NMEA_START.match(stripped):
        return "application/vnd.nmea"
    return OCTET


def sniff_file(path: Path) -> str:
    with path.open("rb") as f:
        return sniff(f.read(512))


EXTENSIONS = {
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/x-msvideo": "avi",
    "video/x-matroska": "mkv",
    "video/webm": "webm",
    "video/mp2t": "ts",
    "audio/mp4": "m4a",
    "audio/wav": "wav",
    "audio/amr": "amr",
    "audio/mpeg": "mp3",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/heic": "heic",
    "image/avif": "avif",
    "application/gpx+xml": "gpx",
    "application/vnd.nmea": "nmea",
}


def extension_for(media_type: str) -> str:
    return EXTENSIONS.get(media_type, "bin")
