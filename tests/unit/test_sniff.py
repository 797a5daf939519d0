"""ingest.sniff: the media type comes from the first bytes, never from the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.sniff import EXTENSIONS, OCTET, extension_for, sniff, sniff_file


def _ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x20ftyp" + brand + b"\x00\x00\x02\x00isomiso2avc1mp41"


TS_PACKET = b"\x47" + b"\x00" * 187
NMEA = "application/vnd.nmea"

HEADS = {
    "mp4 isom": (_ftyp(b"isom"), "video/mp4"),
    "mp4 avc1": (_ftyp(b"avc1"), "video/mp4"),
    "mp4 unknown brand": (_ftyp(b"xyz1"), "video/mp4"),
    "3gp": (_ftyp(b"3gp4"), "video/mp4"),
    "heic": (_ftyp(b"heic"), "image/heic"),
    "heif mif1": (_ftyp(b"mif1"), "image/heic"),
    "heif msf1": (_ftyp(b"msf1"), "image/heic"),
    "heic sequence hevc": (_ftyp(b"hevc"), "image/heic"),
    "heic sequence hevx": (_ftyp(b"hevx"), "image/heic"),
    "avif": (_ftyp(b"avif"), "image/avif"),
    "avif sequence": (_ftyp(b"avis"), "image/avif"),
    "m4a": (_ftyp(b"M4A "), "audio/mp4"),
    "quicktime ftyp": (_ftyp(b"qt  "), "video/quicktime"),
    "quicktime moov first": (b"\x00\x00\x00\x08moov" + b"\x00" * 20, "video/quicktime"),
    "quicktime mdat first": (b"\x00\x00\x00\x08mdat" + b"\x00" * 20, "video/quicktime"),
    "quicktime wide": (b"\x00\x00\x00\x08wide" + b"\x00" * 20, "video/quicktime"),
    "jpeg": (b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00", "image/jpeg"),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    "avi": (b"RIFF\x00\x00\x00\x00AVI LIST", "video/x-msvideo"),
    "wav": (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
    "riff other": (b"RIFF\x00\x00\x00\x00WEBPVP8 ", OCTET),
    "matroska": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska"),
    "webm": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
    "mpeg-ts": (TS_PACKET * 3, "video/mp2t"),
    "one ts packet only": (TS_PACKET, OCTET),
    "amr": (b"#!AMR\n\x3c", "audio/amr"),
    "mp3 id3": (b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
    "mp3 frame": (b"\xff\xfb\x90\x64\x00", "audio/mpeg"),
    "gpx": (b'<?xml version="1.0"?>\n<gpx version="1.1">', "application/gpx+xml"),
    "gpx no declaration": (b'\n  <gpx version="1.1">', "application/gpx+xml"),
    "xml, not gpx": (b'<?xml version="1.0"?>\n<kml>', OCTET),
    "nmea gps": (b"$GPRMC,083000.00,A,4050.538,N,11144.940,E,0.0,0.0,010126,,,A*6C\r\n", NMEA),
    "nmea gnss": (b"$GNGGA,083000.00,4050.538,N,11144.940,E,1,08,0.9,1050.0,M,,M,,*47", NMEA),
    "nmea beidou": (b"$BDGGA,083000.00,4050.538,N,11144.940,E,1,08,0.9,1050.0,M,,M,,*47", NMEA),
    "nmea after blank lines": (b"\r\n\r\n$GPGGA,083000.00,4050.538,N,11144.940,E,1", NMEA),
    "dollar, not nmea": (b"$ echo hello", OCTET),
    "empty": (b"", OCTET),
    "text": (b"hello, world", OCTET),
    "elf": (b"\x7fELF\x02\x01\x01\x00", OCTET),
    "short ftyp": (b"\x00\x00\x00\x08ftyp", OCTET),
}


@pytest.mark.parametrize("name", HEADS)
def test_sniff(name: str) -> None:
    head, expected = HEADS[name]
    assert sniff(head) == expected


@pytest.mark.parametrize("length", range(14))
def test_short_heads_never_fail(length: int) -> None:
    for head, _ in HEADS.values():
        assert sniff(head[:length]) in {*EXTENSIONS, OCTET}


def test_the_name_does_not_matter(tmp_path: Path) -> None:
    liar = tmp_path / "photo.jpg"
    liar.write_bytes(_ftyp(b"isom") + b"\x00" * 4096)
    assert sniff_file(liar) == "video/mp4"
    nameless = tmp_path / "noextension"
    nameless.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)
    assert sniff_file(nameless) == "image/jpeg"


def test_only_the_first_512_bytes_are_read(tmp_path: Path) -> None:
    path = tmp_path / "track.txt"
    path.write_bytes(b" " * 512 + b"<gpx>")
    assert sniff_file(path) == OCTET


def test_extensions() -> None:
    assert extension_for("video/mp4") == "mp4"
    assert extension_for("image/jpeg") == "jpg"
    assert extension_for("video/quicktime") == "mov"
    assert extension_for(OCTET) == "bin"
    assert extension_for("application/x-unheard-of") == "bin"
    for media_type, ext in EXTENSIONS.items():
        assert ext.isalnum() and ext.islower(), media_type


def test_every_sniffed_type_has_an_extension() -> None:
    for head, _ in HEADS.values():
        media_type = sniff(head)
        assert media_type == OCTET or media_type in EXTENSIONS, media_type
