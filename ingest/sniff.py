"""Media type from the first bytes, never from the file name (names are data, and lie)."""

from __future__ import annotations

import re
from pathlib import Path

OCTET = "application/octet-stream"
_HEIC_BRANDS = {b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"hevc"}
_AUDIO_BRANDS = {b"M4A ", b"M4B "}
_QT_BRANDS = {b"qt  "}
# An NMEA 0183 sentence: "$", an address (talker + type such as GPRMC, BDGGA, or a
# proprietary P... such as PTNTHPR), then a comma. Loggers may start with any of them.
_NMEA_START = re.compile(rb"\$[A-Z][A-Z0-9]{3,8},")


def sniff(head: bytes) -> str:
    """MIME type of a file from its first 512 bytes (or ``application/octet-stream``)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return "image/heic"
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
    "application/gpx+xml": "gpx",
    "application/vnd.nmea": "nmea",
}


def extension_for(media_type: str) -> str:
    return EXTENSIONS.get(media_type, "bin")
