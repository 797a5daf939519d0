"""tus intake on real services: a stock client (tuspy), resume after a dropped connection,
every refusal with its status (nothing sealed, the refusal logged), idempotency, late uploads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tusclient import client as tus_client

from api.app import create_app
from configs.settings import Settings
from ingest import devices
from ingest.devices import Credential
from ingest.errors import ManifestError
from ingest.runtime import Runtime
from integrity.leaves import canonical_json
from integrity.verify import verify_receipt
from storage import keys
from storage import people as pstore
from storage import repository as repo
from storage.db import transaction
from storage.tables import CustodyEvent, DeviceEvent, Item, Upload
from tests.conftest import SettingsFactory
from tests.integration.devicekit import (
    OCTETS,
    TUS,
    clip,
    creation_headers,
    enroll,
    live_server,
    manifest_for,
    metadata,
)
from tests.people import bearer, make_user

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def intake_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(intake={"sync_every_bytes": 65536, "max_upload_bytes": 4 << 20})


@pytest.fixture
def client(intake_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(intake_settings, workers=0)) as c:
        yield c


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def _items(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.execute(select(func.count()).select_from(Item)).scalar_one())


def _refusals(rt: Runtime, device_id: str) -> list[DeviceEvent]:
    with rt.sessions() as s:
        return [e for e in devices.events_of(s, device_id=device_id) if e.action == "refused"]


def _upload_all(client: TestClient, cred: Credential, data: bytes, meta: dict[str, str]) -> str:
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
    assert r.status_code == 201, r.text
    url: str = r.headers["location"]
    r = client.patch(
        url,
        content=data,
        headers={
            **TUS,
            "Authorization": f"Bearer {cred.token}",
            "Content-Type": OCTETS,
            "Upload-Offset": "0",
        },
    )
    assert r.status_code == 204, r.text
    assert r.headers["upload-offset"] == str(len(data))
    return url


def _sealed(client: TestClient, cred: Credential, url: str, data: bytes) -> dict[str, Any]:
    r = client.get(url, headers={"Authorization": f"Bearer {cred.token}"})
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    assert doc["state"] == "sealed"
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    verify_receipt(
        leaf_data=doc["leaf"].encode(),
        receipt_text=doc["receipt"],
        verifier_key=cred.log_key,
    )
    return doc


def test_discovery_and_cors(client: TestClient) -> None:
    r = client.options(
        "/v1/uploads",
        headers={"Origin": "https://web.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert set(r.headers["tus-extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert "sha256" in r.headers["tus-checksum-algorithm"]
    assert r.headers["tus-max-size"] == str(4 << 20)
    assert r.headers["access-control-allow-origin"] in {"*", "https://web.example"}
    assert "Upload-Offset" in r.headers["access-control-allow-headers"]
    assert "Location" in r.headers["access-control-expose-headers"]


def test_signed_upload_is_sealed_with_its_manifest(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-SEAL")
    data = clip(200_000)
    manifest = manifest_for(cred, data, seq=1, important=True)
    meta = metadata(cred, manifest)
    url = _upload_all(client, cred, data, meta)
    doc = _sealed(client, cred, url, data)
    leaf = json.loads(doc["leaf"])
    assert leaf["manifest_signature"] == meta["signature"]
    assert leaf["device_id"] == "DEV-SEAL" and leaf["officer_id"] == "100001"
    with runtime.sessions() as s:
        item = s.get(Item, doc["id"])
        assert item is not None
        signed = item.manifest["signed"]
        assert signed["manifest"] == meta["manifest"] and signed["signature"] == meta["signature"]
        assert item.device_clock_offset_ms is not None and abs(item.device_clock_offset_ms) < 5000
        # A reviewer can check the device vouched for these bytes with its public key.
        devices.verify_signature(
            signed["public_key"], signed["manifest"].encode(), leaf["manifest_signature"]
        )
        upload = s.get(Upload, doc["upload"])
        assert upload is not None and upload.state == "sealed" and upload.item_id == doc["id"]
    assert not (runtime.settings.uploads_dir / f"{doc['upload']}.bin").exists()


def test_the_longest_device_id_uploads(client: TestClient, runtime: Runtime) -> None:
    """A device ID may be 64 characters: its custody rows (``device:`` + the ID) fit."""
    device_id = "D" + "9" * 63
    cred = enroll(runtime, device_id)
    data = clip(50_000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    doc = _sealed(client, cred, _upload_all(client, cred, data, meta), data)
    assert json.loads(doc["leaf"])["device_id"] == device_id
    with runtime.sessions() as s:
        actors = s.scalars(select(CustodyEvent.actor).where(CustodyEvent.item_id == doc["id"]))
        assert f"device:{device_id}" in set(actors)


def test_a_unit_named_in_chinese_enrolls_and_owns_its_uploads(
    client: TestClient, runtime: Runtime
) -> None:
    """Units are named as people's are (一中队, 城关所), for devices as for officers."""
    cred = enroll(runtime, "DEV-UNIT", unit="城关所一中队")
    data = clip(2000)
    doc = _sealed(
        client,
        cred,
        _upload_all(client, cred, data, metadata(cred, manifest_for(cred, data, seq=1))),
        data,
    )
    with runtime.sessions() as s:
        assert pstore.item_unit(s, item_id=doc["id"]) == "城关所一中队"
    for bad in (" 一中队", "", "x" * 101):
        with pytest.raises(ManifestError, match="unit"):
            enroll(runtime, f"DEV-BAD-{len(bad)}", unit=bad)


def test_clock_offset_is_recorded(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-CLOCK")
    data = clip(5000)
    slow = (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="seconds")
    url = _upload_all(
        client, cred, data, metadata(cred, manifest_for(cred, data, seq=1, device_time=slow))
    )
    doc = _sealed(client, cred, url, data)
    offset = doc["item"]["device_clock_offset_ms"]
    assert 599_000 < offset < 610_000


def test_late_upload_problem(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-LATE")
    data = clip(5000)
    ended = datetime.now(UTC) - timedelta(hours=30)
    manifest = manifest_for(
        cred,
        data,
        seq=1,
        captured_start=(ended - timedelta(minutes=5)).isoformat(timespec="seconds"),
        captured_end=ended.isoformat(timespec="seconds"),
    )
    doc = _sealed(client, cred, _upload_all(client, cred, data, metadata(cred, manifest)), data)
    codes = [p["code"] for p in doc["item"]["problems"]]
    assert codes == ["late_upload"]
    # The pipeline rewrites its own problems and keeps the arrival's.
    from ingest import jobs

    jobs.run(runtime, doc["id"])
    with runtime.sessions() as s:
        item = s.get(Item, doc["id"])
        assert item is not None and item.status != "sealed"
        assert "late_upload" in [p["code"] for p in item.problems]
    on_time = clip(5000)
    manifest = manifest_for(
        cred, on_time, seq=2, captured_end=datetime.now(UTC).isoformat(timespec="seconds")
    )
    url = _upload_all(client, cred, on_time, metadata(cred, manifest))
    assert _sealed(client, cred, url, on_time)["item"]["problems"] == []


def test_same_bytes_twice_are_one_item(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-TWICE")
    data = clip(30_000)
    first = _sealed(
        client,
        cred,
        _upload_all(client, cred, data, metadata(cred, manifest_for(cred, data, seq=1))),
        data,
    )
    second = _sealed(
        client,
        cred,
        _upload_all(
            client, cred, data, metadata(cred, manifest_for(cred, data, seq=2, case_ids=["CASE-2"]))
        ),
        data,
    )
    assert second["id"] == first["id"] and second["duplicate"] and not first["duplicate"]
    assert second["case_ids"] == ["CASE-1", "CASE-2"]


# --- refusals --------------------------------------------------------------------------------


def _problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.headers["tus-resumable"] == "1.0.0"
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["detail"]
    if code:
        assert doc["code"] == code
    return doc


def _refused_cleanly(rt: Runtime, device_id: str | None, before: int, code: str) -> None:
    assert _items(rt) == before, "a refused upload must seal nothing"
    if device_id is not None:
        events = _refusals(rt, device_id)
        assert events and events[-1].details is not None
        assert events[-1].details["code"] == code
        assert events[-1].actor == f"device:{device_id}" and events[-1].reason


def test_missing_and_bad_token(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-TOKEN")
    data = clip(1000)
    headers = creation_headers(cred, len(data), metadata(cred, manifest_for(cred, data, seq=1)))
    before = _items(runtime)
    no_token = {k: v for k, v in headers.items() if k != "Authorization"}
    _problem(client.post("/v1/uploads", headers=no_token), 401, "unauthenticated")
    bad = {**headers, "Authorization": "Bearer lhd_not-a-token"}
    _problem(client.post("/v1/uploads", headers=bad), 401, "unauthenticated")
    _refused_cleanly(runtime, None, before, "unauthenticated")
    with runtime.sessions() as s:
        assert s.execute(select(func.count()).select_from(Upload)).scalar_one() == 0


def test_forged_signature_and_wrong_key(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-SIG")
    other = enroll(runtime, "DEV-OTHER")
    data = clip(1000)
    before = _items(runtime)
    manifest = manifest_for(cred, data, seq=1)
    meta = metadata(cred, manifest)
    forged = {**meta, "signature": base64.b64encode(bytes(64)).decode()}
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), forged))
    _problem(r, 403, "bad_signature")
    _refused_cleanly(runtime, "DEV-SIG", before, "bad_signature")
    # Signed with another device's key (its own credential's key is not this device's).
    wrong = {**meta, "signature": other.sign(canonical_json(manifest))}
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), wrong))
    _problem(r, 403, "bad_signature")
    # A changed manifest under the old signature.
    changed = {**meta, "manifest": canonical_json({**manifest, "size": 999}).decode()}
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), changed))
    _problem(r, 403, "bad_signature")
    assert len(_refusals(runtime, "DEV-SIG")) == 3
    # After rotate-key the old signing key is a wrong key too (and the old token is unknown).
    with transaction(runtime.sessions) as s:
        rotated = devices.rotate_key(
            s, device_id="DEV-SIG", actor="test", log_key=runtime.ledger.key.verifier_key
        ).credential
    r = client.post("/v1/uploads", headers=creation_headers(rotated, len(data), meta))
    _problem(r, 403, "bad_signature")
    _problem(client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta)), 401)
    good = metadata(rotated, manifest)
    r = client.post("/v1/uploads", headers=creation_headers(rotated, len(data), good))
    assert r.status_code == 201, r.text
    with runtime.sessions() as s:  # the refused attempts did not use up the seq
        device = devices.get_enrolled(s, device_id="DEV-SIG")
        assert device.last_seq == 1


def test_replayed_seq(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-SEQ")
    data = clip(1000)
    _upload_all(client, cred, data, metadata(cred, manifest_for(cred, data, seq=5)))
    before = _items(runtime)
    again = clip(1000)
    for seq in (5, 4):
        meta = metadata(cred, manifest_for(cred, again, seq=seq))
        r = client.post("/v1/uploads", headers=creation_headers(cred, len(again), meta))
        _problem(r, 409, "seq_replayed")
    _refused_cleanly(runtime, "DEV-SEQ", before, "seq_replayed")


def test_a_creation_whose_answer_was_lost_is_answered_again(
    client: TestClient, runtime: Runtime
) -> None:
    """The 201 never reached the device (a bad network): the very same POST again gets the
    same upload, not a replayed-seq refusal and an orphan holding one of its few slots; after
    the seal it still points to the sealed upload, whose receipt the device can fetch."""
    cred = enroll(runtime, "DEV-LOST")
    data = clip(3000)
    headers = creation_headers(cred, len(data), metadata(cred, manifest_for(cred, data, seq=1)))
    first = client.post("/v1/uploads", headers=headers)
    assert first.status_code == 201
    for _ in range(runtime.settings.intake.max_concurrent_per_device + 1):
        again = client.post("/v1/uploads", headers=headers)
        assert again.status_code == 201, again.text
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["upload-offset"] == "0"
    with runtime.sessions() as s:
        rows = s.scalars(select(Upload).where(Upload.device_id == "DEV-LOST")).all()
        assert [r.state for r in rows] == ["receiving"]
    url = first.headers["location"]
    auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
    r = client.patch(url, content=data, headers={**auth, "Upload-Offset": "0"})
    assert r.status_code == 204
    after = client.post("/v1/uploads", headers=headers)  # the last answer lost too
    assert (after.status_code, after.headers["location"]) == (201, url)
    assert after.headers["upload-offset"] == str(len(data))
    _sealed(client, cred, url, data)
    assert _refusals(runtime, "DEV-LOST") == []


def test_disabled_device(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-OFF")
    data = clip(1000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
    url = r.headers["location"]
    with transaction(runtime.sessions) as s:
        devices.disable(s, device_id="DEV-OFF", actor="test", reason="lost")
    before = _items(runtime)
    patch = {
        **TUS,
        "Authorization": f"Bearer {cred.token}",
        "Content-Type": OCTETS,
        "Upload-Offset": "0",
    }
    _problem(client.patch(url, content=data, headers=patch), 403, "device_disabled")
    meta2 = metadata(cred, manifest_for(cred, data, seq=2))
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta2))
    _problem(r, 403, "device_disabled")
    _refused_cleanly(runtime, "DEV-OFF", before, "device_disabled")
    assert len(_refusals(runtime, "DEV-OFF")) == 2


def test_wrong_officer(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-OFFICER", officer_id="100001")
    data = clip(1000)
    before = _items(runtime)
    meta = metadata(cred, manifest_for(cred, data, seq=1, officer_id="999999"))
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
    _problem(r, 403, "officer_not_assigned")
    _refused_cleanly(runtime, "DEV-OFFICER", before, "officer_not_assigned")
    # After reassignment the new officer is the right one, the old one is refused.
    with transaction(runtime.sessions) as s:
        devices.assign(s, device_id="DEV-OFFICER", officer_id="999999", actor="test")
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
    assert r.status_code == 201, r.text
    with runtime.sessions() as s:
        doc = devices.device_document(s, devices.get_enrolled(s, device_id="DEV-OFFICER"))
    assert [a["officer_id"] for a in doc["assignments"]] == ["100001", "999999"]
    assert doc["assignments"][0]["until"] is not None and doc["assignments"][1]["until"] is None


def test_wrong_checksum_keeps_nothing_of_the_chunk(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-SUM")
    data = clip(100_000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    url = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta)).headers[
        "location"
    ]
    auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    before = _items(runtime)
    r = client.patch(
        url,
        content=data[:50_000],
        headers={**auth, "Upload-Offset": "0", "Upload-Checksum": f"sha256 {wrong}"},
    )
    _problem(r, 460, "checksum_mismatch")
    _refused_cleanly(runtime, "DEV-SUM", before, "checksum_mismatch")
    head = client.head(url, headers=auth)
    assert head.headers["upload-offset"] == "0"
    right = base64.b64encode(hashlib.sha256(data[:50_000]).digest()).decode()
    r = client.patch(
        url,
        content=data[:50_000],
        headers={**auth, "Upload-Offset": "0", "Upload-Checksum": f"sha256 {right}"},
    )
    assert r.status_code == 204 and r.headers["upload-offset"] == "50000"
    # A stale offset is a conflict.
    r = client.patch(url, content=data[50_000:], headers={**auth, "Upload-Offset": "0"})
    _problem(r, 409, "offset_conflict")
    r = client.patch(url, content=data[50_000:], headers={**auth, "Upload-Offset": "50000"})
    assert r.status_code == 204
    _sealed(client, cred, url, data)


def test_a_delete_that_waited_for_the_seal_leaves_it_sealed(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device gives up (DELETE) while its last PATCH is being sealed: the DELETE waits
    for the upload's lock, and then finds it sealed (409); the seal and its receipt stay."""
    from ingest.uploads import Uploads

    cred = enroll(runtime, "DEV-RACE")
    data = clip(5000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
    url = r.headers["location"]
    sealing, go = threading.Event(), threading.Event()
    real_seal = Uploads._seal

    def held_seal(self: Uploads, upload_id: str, sha256: str) -> Any:
        sealing.set()
        assert go.wait(30)
        return real_seal(self, upload_id, sha256)

    monkeypatch.setattr(Uploads, "_seal", held_seal)
    auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
    answers: dict[str, int] = {}

    def patch() -> None:
        headers = {**auth, "Content-Type": OCTETS, "Upload-Offset": "0"}
        answers["patch"] = client.patch(url, content=data, headers=headers).status_code

    def delete() -> None:
        answers["delete"] = client.delete(url, headers=auth).status_code

    last = threading.Thread(target=patch)
    last.start()
    assert sealing.wait(30), "the seal did not start"
    giving_up = threading.Thread(target=delete)
    giving_up.start()
    time.sleep(1)  # the DELETE is waiting for the upload's lock
    go.set()
    last.join(60)
    giving_up.join(60)
    assert answers == {"patch": 204, "delete": 409}
    _sealed(client, cred, url, data)  # still sealed, with its receipt


def test_a_seal_committed_before_a_crash_is_not_received_again(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the seal's commit, before the upload is marked sealed: the next
    GET finds the item this very manifest sealed and marks the upload, logging nothing more
    (sealing again would log a ``received_again`` that never happened)."""
    from ingest.uploads import Uploads

    cred = enroll(runtime, "DEV-CRASH")
    data = clip(4000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    real_close = Uploads._close

    def killed_before_marking(self: Uploads, upload_id: str, *, state: str, **kw: Any) -> Any:
        if state == "sealed":
            raise RuntimeError("killed (test)")
        return real_close(self, upload_id, state=state, **kw)

    monkeypatch.setattr(Uploads, "_close", killed_before_marking)
    with pytest.raises(RuntimeError, match="killed"):
        _upload_all(client, cred, data, meta)
    monkeypatch.undo()
    with runtime.sessions() as s:
        (row,) = s.scalars(select(Upload).where(Upload.device_id == "DEV-CRASH")).all()
        assert row.state == "receiving" and row.offset == len(data)
        url = f"/v1/uploads/{row.id}"
    doc = _sealed(client, cred, url, data)
    with runtime.sessions() as s:
        actions = [e.action for e in repo.custody_of(s, item_id=doc["id"])]
    assert actions == ["sealed"]


def test_bytes_that_differ_from_the_manifest(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-HASH")
    data = clip(10_000)
    manifest = manifest_for(cred, data, seq=1, sha256=hashlib.sha256(b"x").hexdigest())
    before = _items(runtime)
    r = client.post(
        "/v1/uploads", headers=creation_headers(cred, len(data), metadata(cred, manifest))
    )
    url = r.headers["location"]
    auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
    r = client.patch(url, content=data, headers={**auth, "Upload-Offset": "0"})
    _problem(r, 422, "integrity_mismatch")
    _refused_cleanly(runtime, "DEV-HASH", before, "integrity_mismatch")
    _problem(client.get(url, headers=auth), 422, "integrity_mismatch")
    # The copy streamed to the store while the bytes arrived is gone too (never retained).
    key = keys.original_key(manifest["sha256"])
    store = runtime.store
    assert list(store.client.list_objects(store.bucket, prefix=key, include_version=True)) == []


def test_oversize(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-BIG")
    size = (4 << 20) + 1
    manifest = manifest_for(cred, b"", seq=1, size=size, sha256="0" * 64)
    before = _items(runtime)
    r = client.post("/v1/uploads", headers=creation_headers(cred, size, metadata(cred, manifest)))
    _problem(r, 413, "too_large")
    _refused_cleanly(runtime, "DEV-BIG", before, "too_large")
    # A body longer than the declared length is refused too.
    data = clip(1000)
    r = client.post(
        "/v1/uploads",
        headers=creation_headers(cred, len(data), metadata(cred, manifest_for(cred, data, seq=2))),
    )
    auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
    r = client.patch(
        r.headers["location"], content=data + b"more", headers={**auth, "Upload-Offset": "0"}
    )
    _problem(r, 413, "too_large")
    assert _items(runtime) == before


def test_expired_upload_is_refused_and_swept(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(intake={"upload_expiry_s": 1, "sweep_interval_s": 1})
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        cred = enroll(rt, "DEV-EXP")
        data = clip(10_000)
        r = client.post(
            "/v1/uploads",
            headers=creation_headers(
                cred, len(data), metadata(cred, manifest_for(cred, data, seq=1))
            ),
        )
        url = r.headers["location"]
        upload_id = url.rsplit("/", 1)[1]
        with transaction(rt.sessions) as s:  # a day passes
            row = s.get(Upload, upload_id)
            assert row is not None
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
        before = _items(rt)
        _problem(client.patch(url, content=data, headers={**auth, "Upload-Offset": "0"}), 410)
        assert client.head(url, headers=auth).status_code == 410
        _refused_cleanly(rt, "DEV-EXP", before, "upload_expired")
        old = (datetime.now(UTC) - timedelta(seconds=5)).timestamp()
        orphan = rt.settings.uploads_dir / "01ORPHANFROMACRASH0000000.bin"
        orphan.write_bytes(b"half")
        # A crash between ending an upload and removing its spool leaves the spool behind.
        other = clip(5_000)
        r = client.post(
            "/v1/uploads",
            headers=creation_headers(
                cred, len(other), metadata(cred, manifest_for(cred, other, seq=2))
            ),
        )
        assert client.delete(r.headers["location"], headers=auth).status_code == 204
        left = rt.settings.uploads_dir / f"{r.headers['location'].rsplit('/', 1)[1]}.bin"
        left.write_bytes(b"left by a crash")
        for path in (orphan, left):
            os.utime(path, (old, old))
        # Nobody creates an upload from now on: the server's own sweep frees all three.
        spool = rt.settings.uploads_dir / f"{upload_id}.bin"
        deadline = time.monotonic() + 15
        while orphan.exists() or left.exists() or spool.exists():
            assert time.monotonic() < deadline, "the server never swept by itself"
            time.sleep(0.1)
        with rt.sessions() as s:
            row = s.get(Upload, upload_id)
            assert row is not None and row.state == "expired"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("manifest !!!,signature AAAA", "bad_upload_request"),
        ("signature QUFBQQ==", "bad_upload_request"),
        ("manifest bm90IGpzb24=,signature QUFBQQ==", "bad_signature"),
        ("", "bad_upload_request"),
    ],
)
def test_garbage_metadata(client: TestClient, runtime: Runtime, header: str, code: str) -> None:
    cred = enroll(runtime, "DEV-GARBAGE")
    before = _items(runtime)
    headers = {
        **TUS,
        "Authorization": f"Bearer {cred.token}",
        "Upload-Length": "100",
        "Upload-Metadata": header,
    }
    status = 403 if code == "bad_signature" else 400
    _problem(client.post("/v1/uploads", headers=headers), status, code)
    _refused_cleanly(runtime, "DEV-GARBAGE", before, code)


def test_signed_garbage_manifest(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-SIGNED-GARBAGE")
    before = _items(runtime)
    for text in (b"not json", b'{"v": 1}', canonical_json({"v": 1, "device_id": "x"})):
        meta = {"manifest": text.decode(), "signature": cred.sign(text), "filename": "a.mp4"}
        r = client.post("/v1/uploads", headers=creation_headers(cred, 100, meta))
        _problem(r, 422, "bad_manifest")
    _refused_cleanly(runtime, "DEV-SIGNED-GARBAGE", before, "bad_manifest")


def test_too_many_concurrent_uploads(make_settings: SettingsFactory) -> None:
    settings = make_settings(intake={"max_concurrent_per_device": 2})
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        cred = enroll(rt, "DEV-MANY")
        urls = []
        for seq in (1, 2, 3):
            data = clip(1000)
            meta = metadata(cred, manifest_for(cred, data, seq=seq))
            r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
            if seq < 3:
                assert r.status_code == 201
                urls.append(r.headers["location"])
            else:
                _problem(r, 429, "too_many_uploads")
        # Termination frees a slot.
        auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
        assert client.delete(urls[0], headers=auth).status_code == 204
        assert client.head(urls[0], headers=auth).status_code == 404
        r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
        assert r.status_code == 201, r.text


def test_another_devices_upload_is_not_found(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-MINE")
    other = enroll(runtime, "DEV-THEIRS")
    data = clip(1000)
    r = client.post(
        "/v1/uploads",
        headers=creation_headers(cred, len(data), metadata(cred, manifest_for(cred, data, seq=1))),
    )
    auth = {**TUS, "Authorization": f"Bearer {other.token}"}
    _problem(client.get(r.headers["location"], headers=auth), 404, "upload_not_found")


# --- a stock client and a real socket ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_tuspy_uploads_and_resumes(intake_settings: Settings) -> None:
    with live_server(intake_settings) as (base, rt):
        cred = enroll(rt, "DEV-TUSPY")
        data = clip(600_000)
        client = tus_client.TusClient(
            f"{base}/v1/uploads", headers={"Authorization": f"Bearer {cred.token}"}
        )
        meta = metadata(cred, manifest_for(cred, data, seq=1))
        first = client.uploader(
            file_stream=io.BytesIO(data), chunk_size=200_000, metadata=meta, upload_checksum=True
        )
        first.upload_chunk()  # type: ignore[no-untyped-call]
        assert first.offset == 200_000
        url = str(first.url)
        # A new client process: only the URL survives; it asks the server and goes on.
        again = client.uploader(
            file_stream=io.BytesIO(data), url=url, chunk_size=200_000, upload_checksum=True
        )
        assert again.offset == 200_000
        again.upload()
        assert again.offset == len(data)
        r = httpx.get(url, headers={"Authorization": f"Bearer {cred.token}"})
        doc = r.json()
        assert doc["state"] == "sealed" and doc["sha256"] == hashlib.sha256(data).hexdigest()
        verify_receipt(
            leaf_data=doc["leaf"].encode(), receipt_text=doc["receipt"], verifier_key=cred.log_key
        )


@contextlib.contextmanager
def _half_sent_patch(
    base: str, url: str, cred: Credential, data: bytes, sent: int
) -> Iterator[socket.socket]:
    """A raw PATCH declaring all of ``data`` whose socket has sent only ``sent`` bytes."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"PATCH {url[len(base) :]} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {cred.token}\r\nContent-Type: {OCTETS}\r\n"
            f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[:sent])
        sock.settimeout(30)
        yield sock


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_resume_after_dropped_connection(intake_settings: Settings) -> None:
    with live_server(intake_settings) as (base, rt):
        cred = enroll(rt, "DEV-DROP")
        data = clip(1_000_000)
        meta = metadata(cred, manifest_for(cred, data, seq=1))
        r = httpx.post(f"{base}/v1/uploads", headers=creation_headers(cred, len(data), meta))
        url = base + r.headers["location"]
        sent = 600_000
        with _half_sent_patch(base, url, cred, data, sent):  # then the connection is cut
            pass
        auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
        offset = -1
        for _ in range(100):  # the server notices the drop and records what it has
            h = httpx.head(url, headers=auth)
            offset = int(h.headers["upload-offset"])
            if offset > 0:
                break
            threading.Event().wait(0.1)
        assert 0 < offset <= sent, offset
        r = httpx.patch(
            url,
            content=data[offset:],
            headers={**auth, "Content-Type": OCTETS, "Upload-Offset": str(offset)},
        )
        assert r.status_code == 204, r.text
        doc = httpx.get(url, headers=auth).json()
        assert doc["sha256"] == hashlib.sha256(data).hexdigest() and doc["size"] == len(data)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_uploads_of_the_same_bytes_are_one_item(intake_settings: Settings) -> None:
    with live_server(intake_settings) as (base, rt):
        creds = [enroll(rt, f"DEV-SAME-{i}") for i in range(4)]
        data = clip(300_000)
        ids: list[str] = []

        def upload(cred: Credential) -> None:
            meta = metadata(cred, manifest_for(cred, data, seq=1))
            r = httpx.post(f"{base}/v1/uploads", headers=creation_headers(cred, len(data), meta))
            url = base + r.headers["location"]
            auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
            r = httpx.patch(
                url,
                content=data,
                headers={**auth, "Content-Type": OCTETS, "Upload-Offset": "0"},
                timeout=60,
            )
            assert r.status_code == 204, r.text
            ids.append(httpx.get(url, headers=auth, timeout=60).json()["id"])

        threads = [threading.Thread(target=upload, args=(c,)) for c in creds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == 4 and len(set(ids)) == 1
        with rt.sessions() as s:
            sha = hashlib.sha256(data).hexdigest()
            n = s.execute(select(func.count()).select_from(Item).where(Item.sha256 == sha))
            assert n.scalar_one() == 1


def test_creation_with_upload(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-CWU")
    data = clip(70_000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    headers = {**creation_headers(cred, len(data), meta), "Content-Type": OCTETS}
    r = client.post("/v1/uploads", content=data, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["upload-offset"] == str(len(data)) and r.headers["upload-expires"]
    _sealed(client, cred, r.headers["location"], data)


def test_same_bytes_by_another_path_are_the_same_item(
    client: TestClient, runtime: Runtime, tmp_path: Any
) -> None:
    from ingest.intake import seal_file
    from ingest.manifest import Manifest

    data = clip(20_000)
    f = tmp_path / "clip.mp4"
    f.write_bytes(data)
    ingested = seal_file(runtime, f, Manifest(file_name="clip.mp4"), actor="test")
    cred = enroll(runtime, "DEV-PATHS")
    doc = _sealed(
        client,
        cred,
        _upload_all(client, cred, data, metadata(cred, manifest_for(cred, data, seq=1))),
        data,
    )
    assert doc["id"] == ingested.item_id and doc["duplicate"]
    custody = [c["action"] for c in doc["item"]["custody"]]
    assert custody[-1] == "received_again"
    details = doc["item"]["custody"][-1]["details"]
    assert details["device_id"] == "DEV-PATHS" and details["manifest_signature"]


def test_device_admin_over_http(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(), workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        admin = bearer(make_user(rt, "admin-1", "admin"))
        officer = bearer(make_user(rt, "100009", "officer", "unit-9"))
        body = {"device_id": "DEV-HTTP", "officer_id": "100002", "unit": "unit-9"}
        assert client.post("/v1/devices", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/v1/devices", json=body, headers=wrong).status_code == 401
        assert client.post("/v1/devices", json=body, headers=officer).status_code == 403
        r = client.post("/v1/devices", json=body, headers=admin)
        assert r.status_code == 201, r.text
        doc = r.json()
        assert set(doc) == {"device_id", "officer_id", "unit", "public_key", "credential"}
        cred = Credential.model_validate(doc["credential"])
        assert cred.log_key == rt.ledger.key.verifier_key
        assert client.post("/v1/devices", json=body, headers=admin).status_code == 409
        # The credential works: the device may ask who it is.
        me = client.get("/v1/devices/me", headers={"Authorization": f"Bearer {cred.token}"})
        assert me.status_code == 200 and me.json()["officer_id"] == "100002"
        # ...but a device token is no user's token, let alone an admin's.
        device_auth = {"Authorization": f"Bearer {cred.token}"}
        assert client.get("/v1/devices", headers=device_auth).status_code == 401
        listed = client.get("/v1/devices", headers=admin).json()["devices"]
        assert [d["device_id"] for d in listed] == ["DEV-HTTP"]
        r = client.post("/v1/devices/DEV-HTTP/assign", json={"officer_id": "100003"}, headers=admin)
        assert r.status_code == 200 and r.json()["officer_id"] == "100003"
        r = client.post("/v1/devices/DEV-HTTP/rotate-key", headers=admin)
        assert r.status_code == 200
        rotated = Credential.model_validate(r.json()["credential"])
        assert client.get("/v1/devices/me", headers=device_auth).status_code == 401
        new_auth = {"Authorization": f"Bearer {rotated.token}"}
        assert client.get("/v1/devices/me", headers=new_auth).status_code == 200
        r = client.post("/v1/devices/DEV-HTTP/disable", json={"reason": "lost"}, headers=admin)
        assert r.status_code == 200 and r.json()["disabled"]
        assert client.get("/v1/devices/me", headers=new_auth).status_code == 403
        assert client.post("/v1/devices/NOPE/disable", headers=admin).status_code == 404


def test_only_admins_administer_devices(client: TestClient) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    for role in ("officer", "reviewer", "auditor"):
        token = bearer(make_user(rt, f"u-{role}", role, "unit-9" if role == "officer" else None))
        assert client.get("/v1/devices", headers=token).status_code == 403, role


def test_seaweedfs_filer_tus_is_off(s3_server: Any) -> None:
    """The embedded SeaweedFS must not offer its own tus endpoint (it bypasses Object Lock)."""
    import psutil

    port = s3_server.endpoint.rsplit(":", 1)[1]
    (weed,) = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and f"-s3.port={port}" in p.info["cmdline"]
    ]
    args = weed.info["cmdline"]
    assert "-filer.tusBasePath=" in args
    filer = next(a for a in args if a.startswith("-filer.port=")).split("=", 1)[1]
    base = f"http://127.0.0.1:{filer}/.tus"
    r = httpx.options(f"{base}/")
    assert "tus-version" not in r.headers
    r = httpx.post(f"{base}/buckets/x/y", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"})
    assert r.status_code != 201 and "location" not in r.headers


def test_protocol_errors(client: TestClient, runtime: Runtime) -> None:
    cred = enroll(runtime, "DEV-PROTO")
    data = clip(1000)
    headers = creation_headers(cred, len(data), metadata(cred, manifest_for(cred, data, seq=1)))
    old = {**headers, "Tus-Resumable": "0.2.2"}
    _problem(client.post("/v1/uploads", headers=old), 412, "unsupported_tus_version")
    no_length = {k: v for k, v in headers.items() if k != "Upload-Length"}
    _problem(client.post("/v1/uploads", headers=no_length), 400, "bad_upload_request")
    deferred = {**no_length, "Upload-Defer-Length": "1"}
    _problem(client.post("/v1/uploads", headers=deferred), 400, "bad_upload_request")
    mismatch = {**headers, "Upload-Length": "999"}
    _problem(client.post("/v1/uploads", headers=mismatch), 422, "bad_manifest")
    r = client.post("/v1/uploads", headers=headers)
    url = r.headers["location"]
    auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
    r = client.patch(
        url, content=data, headers={**auth, "Content-Type": "text/plain", "Upload-Offset": "0"}
    )
    _problem(r, 415, "wrong_content_type")
    r = client.patch(
        url, content=data, headers={**auth, "Content-Type": OCTETS, "Upload-Offset": "-1"}
    )
    _problem(r, 400, "bad_upload_request")
    for digit in (b"\xb2", b"\xd9\xa3"):  # a latin-1 "²", UTF-8 Arabic-Indic "3": digits to str
        r = client.patch(
            url, content=data, headers={**auth, "Content-Type": OCTETS, "Upload-Offset": digit}
        )
        _problem(r, 400, "bad_upload_request")
    r = client.patch(
        url,
        content=data,
        headers={
            **auth,
            "Content-Type": OCTETS,
            "Upload-Offset": "0",
            "Upload-Checksum": "md5 AAAA",
        },
    )
    _problem(r, 400, "bad_upload_request")
    with runtime.sessions() as s:
        row = s.get(Upload, url.rsplit("/", 1)[1])
        assert row is not None and row.offset == 0 and row.state == "receiving"


@pytest.mark.parametrize("stream", [True, False])
def test_upload_streams_to_the_store_as_it_arrives(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, stream: bool
) -> None:
    from ingest.retrieve import resolve, write_to_file
    from storage import objects

    parts: list[int] = []
    real_put = objects.PartWriter.put

    def counting_put(self: objects.PartWriter, data: bytes) -> None:
        parts.append(len(data))
        real_put(self, data)

    monkeypatch.setattr(objects.PartWriter, "put", counting_put)
    settings = make_settings(intake={"stream_to_store": stream, "sync_every_bytes": 1 << 20})
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        cred = enroll(rt, "DEV-STREAM")
        data = clip(19 << 20)
        meta = metadata(cred, manifest_for(cred, data, seq=1))
        url = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta)).headers[
            "location"
        ]
        auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
        offset = 0
        for size in (9 << 20, 9 << 20, 1 << 20):
            chunk = data[offset : offset + size]
            digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
            r = client.patch(
                url,
                content=chunk,
                headers={
                    **auth,
                    "Upload-Offset": str(offset),
                    "Upload-Checksum": f"sha256 {digest}",
                },
            )
            assert r.status_code == 204, r.text
            offset += size
        doc = _sealed(client, cred, url, data)
        # 8 MiB parts sent while the upload went on, the tail after the last byte.
        assert parts == ([8 << 20, 8 << 20, 3 << 20] if stream else [])
        target = resolve(rt, doc["id"])
        out = tmp_path / "copy.mp4"
        write_to_file(rt, target, out)  # re-hashed on the way out
        assert out.read_bytes() == data
        stat = rt.store.client.stat_object(
            rt.store.bucket, target.key, version_id=target.version_id
        )
        assert stat.size == len(data)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_body_that_goes_silent_is_cut_off_and_the_upload_resumes(
    make_settings: SettingsFactory,
) -> None:
    """A phone that changed networks leaves its PATCH open with no FIN: after
    ``body_idle_s`` the server keeps what arrived and frees the upload for the next PATCH
    (it held the upload's lock for ever, each resume a 409)."""
    settings = make_settings(intake={"sync_every_bytes": 65536, "body_idle_s": 1.5})
    with live_server(settings) as (base, rt):
        cred = enroll(rt, "DEV-SILENT")
        data = clip(1_000_000)
        meta = metadata(cred, manifest_for(cred, data, seq=1))
        r = httpx.post(f"{base}/v1/uploads", headers=creation_headers(cred, len(data), meta))
        url = base + r.headers["location"]
        auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
        with _half_sent_patch(base, url, cred, data, 600_000) as sock:
            answer = ""  # the socket stays open, silent; the answer may come in pieces
            while "body_stalled" not in answer and (part := sock.recv(4096)):
                answer += part.decode("latin-1")
            assert answer.startswith("HTTP/1.1 408"), answer
            assert "body_stalled" in answer
            offset = int(httpx.head(url, headers=auth).headers["upload-offset"])
            assert 0 < offset <= 600_000
            r = httpx.patch(
                url,
                content=data[offset:],
                headers={**auth, "Content-Type": OCTETS, "Upload-Offset": str(offset)},
            )
            assert r.status_code == 204, r.text
        doc = httpx.get(url, headers=auth).json()
        assert doc["state"] == "sealed" and doc["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_complete_upload_whose_seal_failed_is_sealed_later_and_never_expires(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last byte is in and the seal fails (the store is down). A stock tus client then
    reads HEAD, sees offset == length and asks no more: HEAD seals it, and an upload no
    device asks for again is sealed by the sweep; neither expires (it was swept away, spool
    and all, a day later)."""
    from ingest.uploads import Uploads
    from storage.errors import StoreUnavailable

    settings = make_settings(intake={"upload_expiry_s": 1, "sweep_interval_s": 1})
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        cred = enroll(rt, "DEV-UNSEALED")
        auth = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
        failing = Uploads._seal

        def store_down(self: Uploads, upload_id: str, sha256: str) -> Any:
            raise StoreUnavailable("the store is down (test)")

        ids, blobs = [], []
        for seq in (1, 2):
            data = clip(5000 + seq)
            meta = metadata(cred, manifest_for(cred, data, seq=seq))
            r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
            monkeypatch.setattr(Uploads, "_seal", store_down)
            url = r.headers["location"]
            r = client.patch(url, content=data, headers={**auth, "Upload-Offset": "0"})
            _problem(r, 503, "store_unavailable")
            assert client.head(url, headers=auth).status_code == 503  # still failing
            monkeypatch.setattr(Uploads, "_seal", failing)
            ids.append(url.rsplit("/", 1)[1])
            blobs.append(data)
        with transaction(rt.sessions) as s:  # a day passes, nobody asks
            for upload_id in ids:
                row = s.get(Upload, upload_id)
                assert row is not None and row.state == "receiving"
                row.expires_at = row.updated_at = datetime.now(UTC) - timedelta(days=1)
        h = client.head(f"/v1/uploads/{ids[0]}", headers=auth)
        assert h.status_code == 200 and h.headers["upload-offset"] == str(len(blobs[0]))
        uploads = client.app.state.uploads  # type: ignore[attr-defined]
        assert uploads.sweep(force=True) == 0  # nothing expired
        for upload_id, data in zip(ids, blobs, strict=True):
            with rt.sessions() as s:
                row = s.get(Upload, upload_id)
                assert row is not None
                assert row.state == "sealed", row.state
                item = s.get(Item, row.item_id)
                assert item is not None and item.sha256 == hashlib.sha256(data).hexdigest()
            _sealed(client, cred, f"/v1/uploads/{upload_id}", data)


def test_the_same_creation_twice_at_once_is_one_upload(
    client: TestClient, runtime: Runtime
) -> None:
    """A client that gave up waiting sends its POST again while the first is still being
    answered: both get the one upload, neither a replayed seq."""
    cred = enroll(runtime, "DEV-TWICE")
    for seq in range(1, 4):
        data = clip(2_000 + seq)
        headers = creation_headers(
            cred, len(data), metadata(cred, manifest_for(cred, data, seq=seq))
        )
        answers = _at_once(2, lambda h=headers: client.post("/v1/uploads", headers=h))
        assert sorted(a.status_code for a in answers) == [201, 201], [a.text for a in answers]
        assert len({a.headers["location"] for a in answers}) == 1
    with runtime.sessions() as s:
        assert (
            s.execute(
                select(func.count()).select_from(Upload).where(Upload.device_id == "DEV-TWICE")
            ).scalar_one()
            == 3
        )


def _at_once(n: int, call: Any) -> list[Any]:
    """``call()`` from ``n`` threads released together; their answers."""
    barrier = threading.Barrier(n)
    answers: list[Any] = []

    def run() -> None:
        barrier.wait()
        answers.append(call())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def test_a_creation_that_lost_the_seq_to_its_twin_answers_with_the_twin(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race above, made certain: the second request's first look finds nothing (its twin
    had not committed yet), then the seq is taken; it answers with the twin's upload."""
    cred = enroll(runtime, "DEV-TWIN")
    data = clip(3_000)
    headers = creation_headers(cred, len(data), metadata(cred, manifest_for(cred, data, seq=1)))
    first = client.post("/v1/uploads", headers=headers)
    assert first.status_code == 201, first.text
    uploads = client.app.state.uploads  # type: ignore[attr-defined]
    real, looks = uploads._created_already, []

    def not_yet_the_first_time(*args: Any) -> Any:
        looks.append(args)
        return None if len(looks) == 1 else real(*args)

    monkeypatch.setattr(uploads, "_created_already", not_yet_the_first_time)
    second = client.post("/v1/uploads", headers=headers)
    assert second.status_code == 201, second.text
    assert second.headers["location"] == first.headers["location"] and len(looks) == 2
