"""ingest.manifest: what a device may declare, and everything that is refused."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from configs.settings import DEFAULT_CASE_ID_PATTERN
from ingest.errors import IntakeRefused, ManifestError
from ingest.manifest import (
    MAX_DECLARED_SIZE,
    Manifest,
    check_case_id,
    check_file_name,
    kept_file_name,
    parse_manifest,
    path_text,
)

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def parse(raw: object) -> Manifest:
    if isinstance(raw, dict):
        return parse_manifest(raw, case_id_pattern=DEFAULT_CASE_ID_PATTERN)
    text = raw if isinstance(raw, str | bytes) else json.dumps(raw)
    return parse_manifest(text, case_id_pattern=DEFAULT_CASE_ID_PATTERN)


def test_a_full_manifest() -> None:
    m = parse(
        {
            "device_id": "DSJ-0042",
            "officer_id": "010203",
            "case_ids": ["JX/2026/0042", "A-1"],
            "file_name": "DSJ-0042_010203_20260101083000.mp4",
            "sha256": SHA.upper(),
            "size": 123,
            "device_time": "2026-01-01T08:30:00+08:00",
            "capture_start": "2026-01-01T00:20:00Z",
            "capture_end": "2026-01-01T00:29:59Z",
            "signature": "MEUCIQ...",
        }
    )
    assert m.case_ids == ("JX/2026/0042", "A-1")
    assert m.sha256 == SHA  # normalised to lower case
    assert m.size == 123
    assert m.device_time == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert m.device_time is not None and m.device_time.utcoffset() == timedelta(hours=8)
    assert m.capture_start == datetime(2026, 1, 1, 0, 20, tzinfo=UTC)


def test_text_bytes_and_dict_give_the_same_manifest() -> None:
    doc = {"device_id": "D1", "case_ids": ["A-1"], "size": 5}
    assert parse(json.dumps(doc)) == parse(json.dumps(doc).encode()) == parse(doc)


def test_an_empty_manifest_is_valid() -> None:
    assert parse("{}") == Manifest()


def test_manifest_is_frozen() -> None:
    m = parse("{}")
    with pytest.raises(ValidationError):
        m.size = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        ('{"a": 1', "not valid JSON"),
        ("[]", "JSON object"),
        ('["A-1"]', "JSON object"),
        ("null", "JSON object"),
        ("42", "JSON object"),
        ('"{}"', "JSON object"),
    ],
)
def test_not_a_json_object(raw: str | bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(raw)


@pytest.mark.parametrize(
    "case_id",
    ["../x", "", " A-1", "A-1 ", "A 1", "A" * 65, "A-1\n", "/A", "-A", "A\x00", "案-1", "A.1"],
)
def test_bad_case_ids(case_id: str) -> None:
    with pytest.raises(ManifestError, match="invalid case ID"):
        parse({"case_ids": [case_id]})


@pytest.mark.parametrize("case_id", ["A", "A" * 64, "JX/2026/0042", "a_b-c", "2026"])
def test_good_case_ids(case_id: str) -> None:
    assert parse({"case_ids": [case_id]}).case_ids == (case_id,)


def test_case_id_pattern_comes_from_settings() -> None:
    assert check_case_id("X-1", r"X-\d+") == "X-1"
    with pytest.raises(ManifestError):
        parse_manifest('{"case_ids": ["A-1"]}', case_id_pattern=r"X-\d+")


def test_case_ids_must_be_a_list_of_strings() -> None:
    for value in ("A-1", [1], [None], {"A-1": True}):
        with pytest.raises(ManifestError, match="case_ids"):
            parse({"case_ids": value})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../clip.mp4", "plain name"),
        ("dcim/clip.mp4", "plain name"),
        ("/etc/passwd", "plain name"),
        ("..\\clip.mp4", "plain name"),
        ("..", "plain name"),
        (".", "plain name"),
        ("", "1 to 255"),
        ("a" * 256, "1 to 255"),
        ("clip\x00.mp4", "control characters"),
        ("clip\n.mp4", "control characters"),
        ("clip\x1b[31m.mp4", "control characters"),
        ("evil\u202egpj.mp4", "control characters"),  # right-to-left override
        ("a\u2028b.mp4", "control characters"),  # line separator
    ],
)
def test_bad_file_names(name: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse({"file_name": name})
    with pytest.raises(ValueError, match=message):
        check_file_name(name)


@pytest.mark.parametrize(
    "name", ["clip.mp4", "执法记录仪_0001.MP4", "a" * 255, ".hidden", "a b.jpg"]
)
def test_good_file_names(name: str) -> None:
    assert parse({"file_name": name}).file_name == name


@pytest.mark.parametrize("size", [0, -1, MAX_DECLARED_SIZE + 1, 1.5, 12.0, "12", True])
def test_bad_sizes(size: object) -> None:
    with pytest.raises(ManifestError, match="size"):
        parse({"size": size})


@pytest.mark.parametrize("size", [1, 4 * 1024**3, MAX_DECLARED_SIZE])
def test_good_sizes(size: int) -> None:
    assert parse({"size": size}).size == size


@pytest.mark.parametrize(
    "sha", ["z" * 64, SHA[:63], SHA + "0", " " + SHA[1:], "sha256:" + SHA, 42, ""]
)
def test_bad_sha256(sha: object) -> None:
    with pytest.raises(ManifestError, match="sha256"):
        parse({"sha256": sha})


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ManifestError, match="evil"):
        parse({"case_ids": [], "evil": 1})


@pytest.mark.parametrize("field", ["device_id", "officer_id"])
@pytest.mark.parametrize("value", ["../d", "", "a" * 65, "d 1", "-d", "警号1"])
def test_bad_party_ids(field: str, value: str) -> None:
    with pytest.raises(ManifestError, match=field):
        parse({field: value})


@pytest.mark.parametrize("field", ["device_time", "capture_start", "capture_end"])
def test_times_must_carry_an_offset(field: str) -> None:
    with pytest.raises(ManifestError, match="UTC offset"):
        parse({field: "2026-01-01T08:00:00"})
    with pytest.raises(ManifestError, match=field):
        parse({field: "yesterday"})
    assert parse({field: "2026-01-01T08:00:00+08:00"}).model_dump()[field] == datetime(
        2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))
    )


def test_signature_is_bounded() -> None:
    assert parse({"signature": "s" * 4096}).signature == "s" * 4096
    with pytest.raises(ManifestError, match="signature"):
        parse({"signature": "s" * 4097})


def test_every_fault_is_listed_in_one_error() -> None:
    with pytest.raises(ManifestError) as caught:
        parse({"size": 0, "sha256": "x", "evil": 1})
    message = str(caught.value)
    assert "size" in message and "sha256" in message and "evil" in message


def test_a_bad_manifest_is_a_refusal_of_the_request() -> None:
    assert issubclass(ManifestError, IntakeRefused)


def test_capture_end_before_start_is_refused() -> None:
    with pytest.raises(ManifestError, match="capture_end is before capture_start"):
        parse_manifest(
            {
                "capture_start": "2026-03-01T08:00:00+08:00",
                "capture_end": "2026-03-01T07:59:59+08:00",
            },
            case_id_pattern=DEFAULT_CASE_ID_PATTERN,
        )
    ok = parse_manifest(
        {"capture_start": "2026-03-01T08:00:00+08:00", "capture_end": "2026-03-01T00:00:00Z"},
        case_id_pattern=DEFAULT_CASE_ID_PATTERN,
    )
    assert ok.capture_end == ok.capture_start


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("IMG_0001.JPG", "IMG_0001.JPG"),
        ("现场记录.mp4", "现场记录.mp4"),
        ("b\nx.jpg", "b<U+000A>x.jpg"),
        ("c\u200b.jpg", "c<U+200B>.jpg"),
        (os.fsdecode(b"\xd6\xd0.jpg"), "<0xD6><0xD0>.jpg"),  # GBK bytes on a UTF-8 system
    ],
)
def test_a_local_files_name_is_kept_readably_and_always_passes(name: str, kept: str) -> None:
    assert kept_file_name(name) == kept
    check_file_name(kept_file_name(name))


def test_a_path_is_text_json_can_carry_whatever_its_bytes() -> None:
    """A name of bytes that are not UTF-8 used to reach stdout raw: one JSON document that a
    strict reader (jq) refuses."""
    path = Path(os.fsdecode(b"/cam/\xd6\xd0.jpg"))
    text = path_text(path)
    assert text == "/cam/\\xd6\\xd0.jpg"
    assert json.loads(json.dumps({"file": text}, ensure_ascii=False).encode("utf-8"))
    assert path_text(Path("/cam/现场.jpg")) == "/cam/现场.jpg"
