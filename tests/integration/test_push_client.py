"""The device client (`ingest.push.Pusher`) against the real app under uvicorn: the seq it
picks, a file that shrinks while it is sent, and a seal still running when it asks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from configs.settings import Settings
from ingest.devices import Credential
from ingest.errors import IntakeRefused
from ingest.push import Pusher, PushState, Retry
from ingest.runtime import Runtime
from ingest.uploads import Uploads
from tests.conftest import SettingsFactory
from tests.integration.devicekit import clip, enroll, live_server

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

FAST = Retry(attempts=12, base_s=0.2, cap_s=1.0)


@pytest.fixture
def push_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(intake={"sync_every_bytes": 65536})


def _pusher(cred: Credential, base: str, state: Path, **kw: Any) -> Pusher:
    return Pusher(cred, server=base, state=PushState(state), retry=FAST, **kw)


def _refusals(rt: Runtime, device_id: str) -> list[str]:
    from ingest import devices

    with rt.sessions() as s:
        return [
            str(e.details.get("code") if e.details else e.action)
            for e in devices.events_of(s, device_id=device_id)
            if e.action == "refused"
        ]


def test_a_fresh_state_after_seq_0_takes_seq_1(push_settings: Settings, tmp_path: Path) -> None:
    """The server's last seq 0 is a seq used: a new state file (a reinstalled app) must not
    send 0 again, which the device log would show as a replay that never happened."""
    with live_server(push_settings) as (base, rt):
        cred = enroll(rt, "DEV-SEQ0")
        for n in (1, 2):
            f = tmp_path / f"clip{n}.mp4"
            f.write_bytes(clip(3000 + n))
            pusher = _pusher(cred, base, tmp_path / f"s{n}.json")
            try:
                doc = pusher.push(f, case_ids=["A-2026-001"])
            finally:
                pusher.close()
            assert doc["verified"] is True
            assert pusher.state.last_seq == n - 1
        assert _refusals(rt, "DEV-SEQ0") == []


def test_a_file_that_shrinks_while_it_is_sent_is_refused(
    push_settings: Settings, tmp_path: Path
) -> None:
    """A loop recording rewrites the file mid-push: the client stops with a clear refusal
    (it sent empty PATCHes for ever)."""
    with live_server(push_settings) as (base, rt):
        cred = enroll(rt, "DEV-SHRINK")
        f = tmp_path / "loop.mp4"
        f.write_bytes(clip(400_000))
        pusher = _pusher(cred, base, tmp_path / "s.json", chunk_size=65536)

        def shrink(offset: int) -> None:
            if offset > 0:
                with f.open("r+b") as w:
                    w.truncate(100_000)

        started = time.monotonic()
        try:
            with pytest.raises(IntakeRefused, match="shrank"):
                pusher.push(f, case_ids=["A-2026-001"], progress=shrink)
        finally:
            pusher.close()
        assert time.monotonic() - started < 30


def test_a_seal_still_running_is_waited_for(
    push_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last PATCH times out on the client while the server seals slowly; the client's
    HEAD and GET meet the seal's lock (409) and wait for it instead of giving up."""
    real_seal = Uploads._seal
    slow = threading.Event()

    def slow_seal(self: Uploads, upload_id: str, sha256: str) -> Any:
        if not slow.is_set():
            slow.set()
            time.sleep(8)  # longer than the client's timeout and the 5 s lock wait
        return real_seal(self, upload_id, sha256)

    monkeypatch.setattr(Uploads, "_seal", slow_seal)
    with live_server(push_settings) as (base, rt):
        cred = enroll(rt, "DEV-SLOW")
        f = tmp_path / "clip.mp4"
        f.write_bytes(clip(50_000))
        pusher = _pusher(cred, base, tmp_path / "s.json", timeout_s=3)
        try:
            doc = pusher.push(f, case_ids=["A-2026-001"])
        finally:
            pusher.close()
        assert slow.is_set()
        assert doc["verified"] is True and doc["duplicate"] is False
