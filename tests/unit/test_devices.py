"""Pure logic of device intake: the v1 manifest, its signature, the credential file, tus
metadata, the push client's backoff and the late-upload rule."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.routes.uploads import parse_metadata
from configs.settings import DEFAULT_CASE_ID_PATTERN
from ingest.devices import (
    Credential,
    hash_token,
    load_credential,
    private_key_text,
    public_key_text,
    verify_signature,
    write_credential,
)
from ingest.errors import BadSignature, BadUploadRequest, ManifestError
from ingest.intake import late_upload_problem
from ingest.manifest import Manifest, parse_device_manifest
from ingest.push import Retry
from integrity.leaves import canonical_json

SHA = hashlib.sha256(b"clip").hexdigest()


def _manifest(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "device_id": "A123456",
        "officer_id": "100001",
        "seq": 7,
        "device_time": "2026-03-01T08:10:00+08:00",
        "file_name": "A123456_100001_20260301080000_0001.MP4",
        "size": 4,
        "sha256": SHA,
        "case_ids": ["CASE-1"],
    }
    return doc | extra


def _parse(doc: dict[str, Any] | bytes) -> Any:
    text = doc if isinstance(doc, bytes) else canonical_json(doc)
    return parse_device_manifest(text, case_id_pattern=DEFAULT_CASE_ID_PATTERN)


def test_manifest_maps_onto_the_seal() -> None:
    m = _parse(
        _manifest(
            captured_start="2026-03-01T08:00:00+08:00",
            captured_end="2026-03-01T08:05:00+08:00",
            important=True,
        )
    )
    intake = m.to_intake(signature="c2ln")
    assert isinstance(intake, Manifest)
    assert intake.capture_start == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert intake.capture_end == datetime(2026, 3, 1, 0, 5, tzinfo=UTC)
    assert (intake.device_id, intake.officer_id, intake.sha256, intake.size) == (
        "A123456",
        "100001",
        SHA,
        4,
    )
    assert intake.case_ids == ("CASE-1",) and intake.signature == "c2ln"
    assert m.important is True and m.seq == 7


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"v": 2}, "v"),
        ({"seq": "7"}, "seq"),
        ({"seq": -1}, "seq"),
        ({"size": True}, "size"),
        ({"sha256": SHA.upper()}, "sha256"),
        ({"device_time": "2026-03-01T08:10:00"}, "device_time"),
        ({"device_time": 1700000000}, "device_time"),
        ({"file_name": "../etc/passwd"}, "file_name"),
        ({"case_ids": ["bad case id!"]}, "invalid case ID"),
        ({"extra": 1}, "extra"),
        (
            {"captured_start": "2026-03-01T09:00:00Z", "captured_end": "2026-03-01T08:00:00Z"},
            "before",
        ),
    ],
)
def test_manifest_refusals(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        _parse(_manifest(**change))


def test_missing_field_is_refused() -> None:
    doc = _manifest()
    del doc["officer_id"]
    with pytest.raises(ManifestError, match="officer_id"):
        _parse(doc)


def test_manifest_must_be_canonical() -> None:
    pretty = json.dumps(_manifest(), indent=1).encode()
    with pytest.raises(ManifestError, match="canonical"):
        _parse(pretty)
    with pytest.raises(ManifestError, match="canonical JSON"):
        _parse(b'{"seq":1.5,"v":1}')
    with pytest.raises(ManifestError, match="not valid JSON"):
        _parse(b"\xff")
    with pytest.raises(ManifestError, match="object"):
        _parse(b"[]")


def test_signature_over_the_exact_bytes() -> None:
    key = Ed25519PrivateKey.generate()
    text = canonical_json(_manifest())
    signature = base64.b64encode(key.sign(text)).decode()
    verify_signature(public_key_text(key), text, signature)
    with pytest.raises(BadSignature, match="does not verify"):
        verify_signature(public_key_text(key), text.replace(b'"seq":7', b'"seq":8'), signature)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(BadSignature, match="does not verify"):
        verify_signature(public_key_text(other), text, signature)
    with pytest.raises(BadSignature, match="64 bytes"):
        verify_signature(public_key_text(key), text, base64.b64encode(b"short").decode())
    with pytest.raises(BadSignature, match="base64"):
        verify_signature(public_key_text(key), text, "!!!")


def test_credential_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    cred = Credential(
        device_id="A123456",
        token="lhd_x",
        signing_key=private_key_text(key),
        log_key="liuhen.local/log+abcd+AAAA",
        server=None,
    )
    path = tmp_path / "dev" / "cred.json"
    write_credential(path, cred)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = json.loads(path.read_text())
    assert list(raw) == ["v", "device_id", "token", "signing_key", "log_key", "server"]
    assert len(base64.b64decode(raw["signing_key"])) == 32
    again = load_credential(path)
    assert again == cred
    text = b"manifest"
    verify_signature(public_key_text(key), text, again.sign(text))
    path.write_text('{"v": 1}')
    with pytest.raises(ManifestError, match="not a liuhen device credential"):
        load_credential(path)
    with pytest.raises(ManifestError, match="cannot read"):
        load_credential(tmp_path / "absent.json")


def test_tokens_are_stored_hashed() -> None:
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_tus_metadata() -> None:
    header = f"manifest {base64.b64encode(b'{}').decode()},signature c2ln,flag"
    assert parse_metadata(header) == {"manifest": b"{}", "signature": b"sig", "flag": b""}
    assert parse_metadata(None) == {}
    for bad in ("manifest !!!", "a b c", "manifest e30=,manifest e30=", " x,", "k\u00e9y e30="):
        with pytest.raises(BadUploadRequest):
            parse_metadata(bad)


def test_backoff_has_jitter_and_a_cap() -> None:
    retry = Retry(attempts=5, base_s=0.5, cap_s=4.0)
    delays = [retry.delay(a) for a in range(12) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # random, not a fixed schedule
    assert max(retry.delay(0) for _ in range(50)) <= 0.5


def test_late_upload_rule() -> None:
    limit = timedelta(hours=24)
    end = datetime(2026, 3, 1, tzinfo=UTC)
    m = Manifest(capture_end=end)
    assert late_upload_problem(m, received_at=end + timedelta(hours=23), limit=limit) is None
    late = late_upload_problem(m, received_at=end + timedelta(hours=30), limit=limit)
    assert late is not None and late.code == "late_upload" and "30.0 h" in late.message
    only_start = Manifest(capture_start=end)
    assert late_upload_problem(only_start, received_at=end + timedelta(days=2), limit=limit)
    assert late_upload_problem(Manifest(), received_at=end, limit=limit) is None


def test_late_upload_judged_on_the_server_clock() -> None:
    """The capture end is the device's clock: a camera 30 h behind that uploads 2 h after
    recording is on time; one 30 h ahead that uploads 26 h after is late."""
    limit, hour_ms = timedelta(hours=24), 3_600_000
    server_end = datetime(2026, 3, 2, 6, tzinfo=UTC)
    behind = Manifest(capture_end=server_end - timedelta(hours=30))  # what that device wrote
    received = server_end + timedelta(hours=2)
    assert late_upload_problem(behind, received_at=received, limit=limit) is not None
    assert (
        late_upload_problem(behind, received_at=received, limit=limit, clock_offset_ms=30 * hour_ms)
        is None
    )
    ahead = Manifest(capture_end=server_end + timedelta(hours=30))
    received = server_end + timedelta(hours=26)
    assert late_upload_problem(ahead, received_at=received, limit=limit) is None
    late = late_upload_problem(
        ahead, received_at=received, limit=limit, clock_offset_ms=-30 * hour_ms
    )
    assert late is not None and "26.0 h" in late.message and "server's clock" in late.message


@pytest.mark.parametrize("years", [-7973, 7973])
def test_an_absurd_device_clock_is_no_correction(years: int) -> None:
    """A device at year 9999 (or 1) with a plausible capture end: its offset would overflow
    or land out of range; the end is judged as the device wrote it."""
    limit = timedelta(hours=24)
    end = datetime(2026, 3, 1, tzinfo=UTC)
    offset_ms = years * 365 * 86_400_000
    m = Manifest(capture_end=end)
    assert (
        late_upload_problem(
            m, received_at=end + timedelta(hours=1), limit=limit, clock_offset_ms=offset_ms
        )
        is None
    )
    late = late_upload_problem(
        m, received_at=end + timedelta(hours=30), limit=limit, clock_offset_ms=offset_ms
    )
    assert late is not None and "30.0 h" in late.message
