"""Two serving processes (own homes, own spools; one index, one bucket, one log key) behind a
load balancer: a device's tus requests may reach either, and the one without the upload's
spool forwards them to the one with it (``api.advertise_url``, ``uploads.served_by``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import Request, Response
from sqlalchemy import func, select
from tusclient import client as tus_client

from api.upload_forward import forward
from configs.settings import Settings
from ingest.devices import Credential
from ingest.errors import UploadExpired, UploadHomeSlow, UploadHomeUnavailable
from ingest.metrics import REGISTRY
from ingest.runtime import Runtime
from ingest.uploads import EXPIRED, Uploads
from integrity.verify import verify_receipt
from storage.db import transaction
from storage.tables import Item, Upload
from tests.conftest import SettingsFactory
from tests.integration.devicekit import (
    OCTETS,
    TUS,
    clip,
    creation_headers,
    enroll,
    free_port,
    live_server,
    manifest_for,
    metadata,
)
from tests.tcpproxy import cuttable

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def _settings(make_settings: SettingsFactory, tmp_path: Path, name: str, port: int) -> Settings:
    return make_settings(
        home=tmp_path / name,
        log={"key_path": tmp_path / "log.key"},  # one deployment signs with one key
        api={"advertise_url": f"http://127.0.0.1:{port}"},
        intake={"sync_every_bytes": 65536, "max_upload_bytes": 4 << 20},
    )


@contextlib.contextmanager
def _two_servers(
    make_settings: SettingsFactory, tmp_path: Path
) -> Iterator[tuple[tuple[str, Runtime, Settings], tuple[str, Runtime, Settings]]]:
    pa, pb = free_port(), free_port()
    sa, sb = (_settings(make_settings, tmp_path, n, p) for n, p in (("a", pa), ("b", pb)))
    with live_server(sa, pa) as (base_a, rt_a), live_server(sb, pb) as (base_b, rt_b):
        yield (base_a, rt_a, sa), (base_b, rt_b, sb)


def _forwarded(status: str) -> float:
    return REGISTRY.get_sample_value("liuhen_uploads_forwarded_total", {"status": status}) or 0.0


def _auth(cred: Credential) -> dict[str, str]:
    return {**TUS, "Authorization": f"Bearer {cred.token}"}


def _create(base: str, cred: Credential, data: bytes, seq: int) -> str:
    meta = metadata(cred, manifest_for(cred, data, seq=seq))
    r = httpx.post(f"{base}/v1/uploads", headers=creation_headers(cred, len(data), meta))
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


def _patch(base: str, path: str, cred: Credential, data: bytes, offset: int) -> httpx.Response:
    headers = {**_auth(cred), "Content-Type": OCTETS, "Upload-Offset": str(offset)}
    return httpx.patch(base + path, content=data, headers=headers, timeout=60)


def _row(rt: Runtime, path: str) -> Upload:
    with rt.sessions() as session:
        row = session.get(Upload, path.rsplit("/", 1)[1])
        assert row is not None
        session.expunge(row)
        return row


def _begun_then_stopped(
    settings: Settings, port: int, device_id: str, data: bytes
) -> tuple[str, Credential, str]:
    """An upload created and its first 100,000 bytes sent to a process that then stops:
    its base URL, the device, the upload's path."""
    with live_server(settings, port) as (base, rt):
        cred = enroll(rt, device_id)
        path = _create(base, cred, data, seq=1)
        assert _patch(base, path, cred, data[:100_000], 0).status_code == 204
    return base, cred, path


def test_a_stock_client_behind_a_round_robin_balancer(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """tuspy opens a connection per request; the balancer hands each to the next process."""
    with _two_servers(make_settings, tmp_path) as ((base_a, rt, _), (base_b, _, _)):
        ports = [("127.0.0.1", int(b.rsplit(":", 1)[1])) for b in (base_a, base_b)]
        cred = enroll(rt, "DEV-BALANCED")
        data = clip(700_000)
        before = _forwarded("204")
        with cuttable(*ports) as balancer:
            base = f"http://127.0.0.1:{balancer.port}"
            client = tus_client.TusClient(
                f"{base}/v1/uploads", headers={"Authorization": f"Bearer {cred.token}"}
            )
            uploader = client.uploader(
                file_stream=io.BytesIO(data),
                chunk_size=100_000,
                metadata=metadata(cred, manifest_for(cred, data, seq=1)),
                upload_checksum=True,
            )
            uploader.upload()
            assert uploader.offset == len(data)
            doc = httpx.get(str(uploader.url), headers=_auth(cred), timeout=60).json()
        assert doc["state"] == "sealed", doc
        assert doc["sha256"] == hashlib.sha256(data).hexdigest() and doc["size"] == len(data)
        verify_receipt(
            leaf_data=doc["leaf"].encode(), receipt_text=doc["receipt"], verifier_key=cred.log_key
        )
        assert _forwarded("204") - before >= 2  # about half of the seven PATCHes
        with rt.sessions() as session:
            count = select(func.count()).select_from(Item).where(Item.sha256 == doc["sha256"])
            assert session.execute(count).scalar_one() == 1


def test_requests_reaching_the_other_process_are_forwarded(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with _two_servers(make_settings, tmp_path) as ((base_a, rt, sa), (base_b, _, sb)):
        cred = enroll(rt, "DEV-FORWARD")
        data = clip(600_000)
        path = _create(base_a, cred, data, seq=1)
        spool_a = sa.uploads_dir / f"{path.rsplit('/', 1)[1]}.bin"
        spool_b = sb.uploads_dir / spool_a.name
        assert _row(rt, path).served_by == base_a and spool_a.exists()

        r = _patch(base_b, path, cred, data[:200_000], 0)
        assert r.status_code == 204, r.text
        assert r.headers["upload-offset"] == "200000" and r.headers["tus-resumable"] == "1.0.0"
        assert len(r.headers.get_list("date")) == 1  # the home's is not passed on beside ours
        assert spool_a.stat().st_size == 200_000 and not spool_b.exists()
        h = httpx.head(base_b + path, headers=_auth(cred))
        assert h.status_code == 200 and h.headers["upload-offset"] == "200000"

        # The device's connection drops halfway through a forwarded body: what arrived is
        # kept by the process with the spool, as when it is sent there directly.
        port_b = int(base_b.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port_b)) as sock:
            head = (
                f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                f"Authorization: Bearer {cred.token}\r\nContent-Type: {OCTETS}\r\n"
                f"Upload-Offset: 200000\r\nContent-Length: 200000\r\n\r\n"
            )
            sock.sendall(head.encode() + data[200_000:300_000])
            time.sleep(0.5)
        offset = 200_000
        for _ in range(100):
            offset = int(httpx.head(base_b + path, headers=_auth(cred)).headers["upload-offset"])
            if offset > 200_000:
                break
            time.sleep(0.1)
        assert 200_000 < offset <= 300_000, offset
        r = _patch(base_b, path, cred, data[offset:400_000], offset)
        assert r.status_code == 204 and r.headers["upload-offset"] == "400000", r.text

        # Already forwarded once: answered here, never sent on (no loop), and the answer
        # says where the bytes are.
        r = httpx.patch(
            base_b + path,
            content=data[400_000:500_000],
            headers={
                **_auth(cred),
                "Content-Type": OCTETS,
                "Upload-Offset": "400000",
                "X-Liuhen-Forwarded-By": "http://elsewhere",
            },
        )
        assert r.status_code == 409 and r.json()["code"] == "offset_conflict"
        assert base_a in r.json()["detail"]
        assert _row(rt, path).offset == 400_000

        # A bad chunk through the forwarder is refused by the process with the spool.
        bad = {**_auth(cred), "Content-Type": OCTETS, "Upload-Offset": "400000"}
        bad["Upload-Checksum"] = "sha256 " + "A" * 43 + "="
        r = httpx.patch(base_b + path, content=data[400_000:], headers=bad)
        assert r.status_code == 460 and r.json()["code"] == "checksum_mismatch"
        assert _row(rt, path).offset == 400_000

        r = _patch(base_b, path, cred, data[400_000:], 400_000)  # the last byte: sealed
        assert r.status_code == 204, r.text
        row = _row(rt, path)
        assert row.state == "sealed" and row.item_id and not spool_a.exists()
        doc = httpx.get(base_b + path, headers=_auth(cred)).json()  # from the index, on B
        assert doc["sha256"] == hashlib.sha256(data).hexdigest()

        # Termination through the other process ends the upload and frees the spool.
        other = clip(300_000)
        path2 = _create(base_a, cred, other, seq=2)
        assert _patch(base_b, path2, cred, other[:100_000], 0).status_code == 204
        d = httpx.delete(base_b + path2, headers=_auth(cred))
        assert d.status_code == 204, d.text
        assert _row(rt, path2).state == "terminated"
        assert not (sa.uploads_dir / f"{path2.rsplit('/', 1)[1]}.bin").exists()


def test_the_spooling_process_away_loses_nothing(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """The process with the spool stops: the other answers 503 (try again) and changes
    nothing; once it is back on its address and home, the upload goes on where it stood."""
    pa, pb = free_port(), free_port()
    sa, sb = (_settings(make_settings, tmp_path, n, p) for n, p in (("a", pa), ("b", pb)))
    data = clip(500_000)
    base_a, cred, path = _begun_then_stopped(sa, pa, "DEV-AWAY", data)
    with live_server(sb, pb) as (base_b, rt_b):
        before = _forwarded("unreachable")
        started = time.monotonic()
        r = _patch(base_b, path, cred, data[100_000:], 100_000)
        assert time.monotonic() - started < 30
        assert r.status_code == 503 and r.json()["code"] == "upload_home_unavailable"
        assert r.headers["retry-after"] == "5" and base_a in r.json()["detail"]
        h = httpx.head(base_b + path, headers=_auth(cred))
        assert h.status_code == 503
        assert _forwarded("unreachable") - before == 2
        row = _row(rt_b, path)
        assert row.offset == 100_000 and row.state == "receiving"
        with live_server(sa, pa):  # back, on the same home and address
            r = _patch(base_b, path, cred, data[100_000:], 100_000)
            assert r.status_code == 204, r.text
            doc = httpx.get(base_b + path, headers=_auth(cred)).json()
            assert doc["state"] == "sealed" and doc["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_home_back_under_a_new_address_claims_its_spools(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A restart on the same home but another address (a new pod IP): its first sweep moves
    the uploads whose spool it holds to that address, so the others forward there."""
    pa, pb, pa2 = free_port(), free_port(), free_port()
    sa, sb = (_settings(make_settings, tmp_path, n, p) for n, p in (("a", pa), ("b", pb)))
    data = clip(400_000)
    _, cred, path = _begun_then_stopped(sa, pa, "DEV-MOVED", data)
    sa2 = _settings(make_settings, tmp_path, "a", pa2)  # same home, new address
    with live_server(sa2, pa2) as (base_a2, rt), live_server(sb, pb) as (base_b, _):
        deadline = time.monotonic() + 15
        while _row(rt, path).served_by != base_a2:
            assert time.monotonic() < deadline, _row(rt, path).served_by
            time.sleep(0.1)
        r = _patch(base_b, path, cred, data[100_000:], 100_000)
        assert r.status_code == 204, r.text
        assert _row(rt, path).state == "sealed"


def test_a_home_that_takes_the_request_and_stays_silent_is_504(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Not "away" (503): the request went out whole; the home may still be sealing."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        home = f"http://127.0.0.1:{silent.getsockname()[1]}"
        scope = {
            "type": "http",
            "method": "HEAD",
            "path": "/v1/uploads/x",
            "query_string": b"",
            "headers": [(b"tus-resumable", b"1.0.0")],
            "client": ("127.0.0.1", 1234),
        }
        before = _forwarded("timeout")
        with pytest.raises(UploadHomeSlow, match="HEAD"):
            _forward(Request(scope), home, answer_s=0.5)
        assert _forwarded("timeout") - before == 1
    with pytest.raises(UploadHomeUnavailable):  # nothing listens there any more
        _forward(Request(scope), home, answer_s=0.5)


def _forward(request: Request, home: str, *, answer_s: float) -> Response:
    async def run() -> Response:
        return await forward(request, home, here="http://127.0.0.1:1", body=None, answer_s=answer_s)

    return anyio.run(run)


def test_another_processs_sweep_ends_only_what_is_still_expired(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A sweep without the spool holds no lock on it: between its look (expired) and its
    update, a PATCH on the spool's process may have moved the expiry on. The update ends
    the upload only if it is still expired by the sweep's time."""
    with _two_servers(make_settings, tmp_path) as ((base_a, rt, _), (base_b, rt_b, _)):
        cred = enroll(rt, "DEV-RACE")
        data = clip(300_000)
        path = _create(base_a, cred, data, seq=1)
        assert _patch(base_a, path, cred, data[:100_000], 0).status_code == 204
        upload_id = path.rsplit("/", 1)[1]
        other = Uploads(rt_b)
        looked = _row(rt, path).expires_at - timedelta(seconds=1)  # its expiry moved past it
        assert not other._end_unfinished(upload_id, state=EXPIRED, expired_by=looked)
        assert _row(rt, path).state == "receiving"
        assert _patch(base_b, path, cred, data[100_000:200_000], 100_000).status_code == 204
        with transaction(rt.sessions) as s:  # a day passes without a byte
            row = s.get(Upload, upload_id)
            assert row is not None
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert other.sweep(force=True) == 1
        assert _row(rt, path).state == "expired"
        with pytest.raises(UploadExpired, match="ended while this request was writing"):
            Uploads(rt)._record_offset(upload_id, 250_000)  # the home's writer, a moment late
        assert _row(rt, path).offset == 200_000
