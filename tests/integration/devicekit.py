"""Helpers for the device-intake tests: enroll, sign manifests, speak tus, run a live server."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn

from api.app import create_app
from configs.settings import Settings
from ingest import devices
from ingest.devices import Credential
from ingest.runtime import Runtime
from integrity.leaves import canonical_json
from storage.db import transaction

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def clip(size: int) -> bytes:
    """Bytes no other test uploads (the bucket is shared), looking like an MP4."""
    return MP4_HEAD + os.urandom(size - len(MP4_HEAD))


def enroll(
    rt: Runtime, device_id: str, officer_id: str = "100001", unit: str = "unit-1"
) -> Credential:
    with transaction(rt.sessions) as session:
        return devices.enroll(
            session,
            device_id=device_id,
            officer_id=officer_id,
            unit=unit,
            model="DSJ-X1",
            actor="test",
            log_key=rt.ledger.key.verifier_key,
        ).credential


def manifest_for(
    cred: Credential, data: bytes, *, seq: int, officer_id: str = "100001", **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "device_id": cred.device_id,
        "officer_id": officer_id,
        "seq": seq,
        "device_time": datetime.now(UTC).isoformat(timespec="seconds"),
        "file_name": "clip.mp4",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "case_ids": ["CASE-1"],
    }
    return doc | extra


def metadata(cred: Credential, manifest: dict[str, Any] | bytes) -> dict[str, str]:
    """What a stock tus client takes: text values (it base64-encodes them itself)."""
    text = manifest if isinstance(manifest, bytes) else canonical_json(manifest)
    return {
        "manifest": text.decode(),
        "signature": cred.sign(text),
        "filename": "clip.mp4",
    }


def metadata_header(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())


def creation_headers(cred: Credential, length: int, meta: dict[str, str]) -> dict[str, str]:
    return {
        **TUS,
        "Authorization": f"Bearer {cred.token}",
        "Upload-Length": str(length),
        "Upload-Metadata": metadata_header(meta),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(settings: Settings, port: int | None = None) -> Iterator[tuple[str, Runtime]]:
    """The real app under uvicorn on a loopback port (a free one unless given), in a thread
    of this process."""
    app = create_app(settings, workers=0)
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app.state.runtime
    finally:
        server.should_exit = True
        thread.join(30)
