"""The embedded SeaweedFS of a home, started, stopped, killed and restarted for real; the store's
failure classes and retries against it; the API while it is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from minio import Minio

from api.app import create_app
from configs.settings import Settings
from ingest.runtime import open_runtime
from storage.db import make_engine
from storage.errors import IndexUnavailable, ObjectNotFound, ObjectStoreError, StoreUnavailable
from storage.objects import ObjectStore, S3Endpoint
from storage.seaweed import EmbeddedSeaweed, volumes_on_disk
from tests.conftest import SettingsFactory
from tests.people import bearer, make_user

BUCKET = "liuhen-restart"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedSeaweed]:
    weed = EmbeddedSeaweed(tmp_path / "seaweed", idle_s=600)
    yield weed
    weed.release()
    weed.stop()


def _store(weed: EmbeddedSeaweed, *, retry_s: float = 0.0, bucket: str = BUCKET) -> ObjectStore:
    """A store that reaches ``weed`` through its launcher, as the runtime does."""

    def connect() -> S3Endpoint:
        s3 = weed.start()
        return S3Endpoint(s3.endpoint, s3.access_key, s3.secret_key)

    return ObjectStore(bucket=bucket, connect=connect, retry_s=retry_s)


def test_ten_restarts_on_existing_data_read_back_at_once(server: EmbeddedSeaweed) -> None:
    """Right after each start every object reads back by version ID, with no retrying: the
    start is only over once the master lists the volumes on disk and the canary reads. (Ten
    cycles, about 6 s each: twenty took two minutes of CI for a race none has shown since.)"""
    setup = _store(server, retry_s=5)
    setup.ensure_bucket()
    objects = [
        (setup.put_bytes(f"o/{i:02d}", os.urandom(3000 + i), content_type="x/y"), i)
        for i in range(14)
    ]
    expected = {o.key: setup.read_bytes(o.key, o.version_id) for o, _ in objects}
    used = [p for p in server.data.glob(f"{BUCKET}_*.dat") if p.stat().st_size > 8]
    assert len(used) >= 2, "the objects should span several volumes"
    server.release()
    for cycle in range(10):
        assert server.stop() is True
        server.start()
        assert volumes_on_disk(server.data) >= {int(p.stem.rpartition("_")[2]) for p in used}
        strict = _store(server, retry_s=0)  # a read that fails is a failure, not retried
        failures = [
            o.key for o, _ in objects if strict.read_bytes(o.key, o.version_id) != expected[o.key]
        ]
        assert failures == [], f"cycle {cycle}: {failures}"
        server.release()


def test_racing_starts_start_one_server(tmp_path: Path) -> None:
    root = tmp_path / "seaweed"
    code = (
        "import sys, json; from pathlib import Path; from storage.seaweed import EmbeddedSeaweed;"
        "w = EmbeddedSeaweed(Path(sys.argv[1])); s = w.start();"
        "print(json.dumps([s.endpoint, w.status().pid])); w.release()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        answers = {tuple(json.loads(p.communicate(timeout=180)[0])) for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert len(answers) == 1, answers  # one endpoint, one server process
    finally:
        EmbeddedSeaweed(root).stop()


def test_an_idle_server_stops_itself_and_a_lease_keeps_it(tmp_path: Path) -> None:
    weed = EmbeddedSeaweed(tmp_path / "seaweed", idle_s=2)
    try:
        weed.start()
        time.sleep(5)  # more than the idle time, with a lease held
        assert weed.status().running
        weed.release()
        deadline = time.monotonic() + 30
        while weed.status().running:
            assert time.monotonic() < deadline, "the keeper did not stop the idle server"
            time.sleep(0.5)
        assert weed.status().keeper_pid is None
    finally:
        weed.stop()


def test_a_killed_server_is_started_again_by_the_next_operation(
    server: EmbeddedSeaweed,
) -> None:
    store = _store(server, retry_s=60)
    store.ensure_bucket()
    stored = store.put_bytes("k/one", b"evidence", content_type="text/plain")
    first = server.status()
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    # The next read finds the server gone, starts it again, and succeeds.
    assert store.read_bytes(stored.key, stored.version_id) == b"evidence"
    again = server.status()
    assert again.running and again.pid != first.pid and again.endpoint == first.endpoint


def test_unavailable_is_not_absent(server: EmbeddedSeaweed) -> None:
    store = _store(server, retry_s=5)
    store.ensure_bucket()
    stored = store.put_bytes("k/two", b"bytes", content_type="text/plain")
    with pytest.raises(ObjectNotFound):
        store.read_bytes("k/none", stored.version_id)
    with pytest.raises(ObjectNotFound):
        store.size(stored.key, "not-a-version-of-it")
    s3 = server.start()
    server.stop()
    fixed = ObjectStore(
        bucket=BUCKET,
        endpoint=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        retry_s=1.5,
    )
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        fixed.read_bytes(stored.key, stored.version_id)
    assert time.monotonic() - began >= 0.5  # it retried before giving up


def test_a_bucket_without_object_lock_is_refused(server: EmbeddedSeaweed) -> None:
    s3 = server.start()
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    client.make_bucket("liuhen-unlocked")
    with pytest.raises(ObjectStoreError, match="versioning"):
        _store(server, bucket="liuhen-unlocked").ensure_bucket()
    from minio.commonconfig import ENABLED
    from minio.versioningconfig import VersioningConfig

    client.set_bucket_versioning("liuhen-unlocked", VersioningConfig(ENABLED))
    with pytest.raises(ObjectStoreError, match="no Object Lock"):
        _store(server, bucket="liuhen-unlocked").ensure_bucket()
    _store(server, bucket="liuhen-locked").ensure_bucket()  # made here, with both: accepted


def test_the_filer_takes_nothing_past_s3(server: EmbeddedSeaweed) -> None:
    server.start()
    ports = json.loads((server.root / "ports.json").read_text())
    base = f"http://127.0.0.1:{ports['filer']}"
    tus = urllib.request.Request(  # noqa: S310 - our loopback server
        f"{base}/.tus/buckets/x/y",
        method="POST",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(tus, timeout=5)  # noqa: S310
    assert "Location" not in caught.value.headers  # no tus upload was created
    write = urllib.request.Request(  # noqa: S310
        f"{base}/buckets/{BUCKET}/sneaky", data=b"x", method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(write, timeout=5)  # noqa: S310
    assert denied.value.code == 401  # the filer wants the JWT only S3 holds


def test_the_api_answers_503_while_the_store_is_down(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    weed = EmbeddedSeaweed(tmp_path / "private-seaweed")
    s3 = weed.start()
    settings: Settings = make_settings(
        s3={
            "endpoint": s3.endpoint,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "bucket": "liuhen-outage",
            "retry_s": 1.0,
        }
    )
    try:
        with TestClient(create_app(settings, workers=0)) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            client.headers.update(bearer(make_user(rt, "officer-o", "officer", "U-O")))
            manifest = json.dumps({"case_ids": ["OUT-1"], "file_name": "a.jpg"})
            photo = b"\xff\xd8\xff\xe0" + os.urandom(2000)
            made = client.post(
                "/v1/items", files={"file": ("a.jpg", photo)}, data={"manifest": manifest}
            )
            assert made.status_code == 201, made.text
            item_id = made.json()["id"]
            weed.release()
            weed.stop()
            read = client.get(f"/v1/items/{item_id}/original")
            assert read.status_code == 503, read.text
            assert read.headers["Retry-After"].isdigit()
            assert read.json()["code"] == "store_unavailable"
            again = client.post(
                "/v1/items",
                files={"file": ("b.jpg", photo + b"more")},
                data={"manifest": manifest},
            )
            assert again.status_code == 503, again.text
            assert again.headers["Retry-After"].isdigit()
            case = client.get("/v1/cases/OUT-1").json()
            assert [i["id"] for i in case["items"]] == [item_id]  # nothing half-stored
    finally:
        weed.stop()


def test_database_outages_are_translated(make_settings: SettingsFactory) -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    from sqlalchemy import text

    with pytest.raises(IndexUnavailable, match="unavailable"), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    settings = make_settings(database={"url": "postgresql+psycopg://postgres@127.0.0.1:1/none"})
    with pytest.raises(IndexUnavailable):
        open_runtime(settings)


def test_a_port_taken_before_the_listen_gives_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process may take a port between our check and the server's listen: the start is
    tried again on new ports (kept in the home) instead of failing."""
    import socket

    from storage import seaweed

    root = tmp_path / "seaweed"
    root.mkdir()
    for _attempt in range(20):  # the other test process may take the twin port first
        first = seaweed.Ports(*seaweed.pick_ports(4))
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", first.s3 + 10000))  # the S3 gateway's gRPC twin
            break
        except OSError:
            blocker.close()
    else:
        pytest.fail("no free port pair to block in 20 tries")
    (root / "ports.json").write_text(json.dumps(first.__dict__))
    blocker.listen()
    monkeypatch.setattr(seaweed, "_port_free_with_grpc", lambda _port: True)  # the race
    weed = EmbeddedSeaweed(root)
    try:
        s3 = weed.start()
        assert s3.endpoint != f"127.0.0.1:{first.s3}"
        kept = json.loads((root / "ports.json").read_text())
        assert s3.endpoint == f"127.0.0.1:{kept['s3']}"
        assert "address already in use" in (root / "weed.log").read_text()
    finally:
        blocker.close()
        weed.release()
        weed.stop()


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


@pytest.mark.parametrize("record", ["without start times", "with other start times"])
def test_a_stale_record_never_signals_someone_elses_process(tmp_path: Path, record: str) -> None:
    """The server died (kill -9, a reboot) and its PIDs went to other processes, here two
    sleeps, one leading its own group as every other home's server does: stopping, or the
    next start, must leave them alone."""
    root = tmp_path / "seaweed"
    root.mkdir()
    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)
    other = subprocess.Popen(["sleep", "300"])
    state: dict[str, object] = {"pid": leader.pid, "keeper_pid": other.pid, "s3_port": 1,
                                "master_port": 2, "started_at": time.time() - 3600}  # fmt: skip
    if record == "with other start times":
        state |= {"pid_ticks": 1, "keeper_ticks": 1, "starting": False}
    (root / "state.json").write_text(json.dumps(state))
    weed = EmbeddedSeaweed(root, idle_s=600)
    try:
        assert weed.stop() is False
        assert _alive(leader) and _alive(other)
        (root / "state.json").write_text(json.dumps(state))
        weed.start()  # stops "the leftover" first: still nobody else's process
        assert _alive(leader) and _alive(other)
        assert weed.status().running
    finally:
        weed.release()
        weed.stop()
        leader.kill()
        other.kill()


def test_a_command_killed_while_it_starts_the_server_leaves_no_orphan(tmp_path: Path) -> None:
    """SIGTERM (or a closed terminal) runs no Python cleanup: the server it was starting is
    recorded before the wait, so the next start stops it instead of failing on its locks."""
    root = tmp_path / "seaweed"
    code = (
        "import sys; from pathlib import Path; from storage.seaweed import EmbeddedSeaweed;"
        "EmbeddedSeaweed(Path(sys.argv[1])).start()"
    )
    starter = subprocess.Popen([sys.executable, "-c", code, str(root)])
    deadline = time.monotonic() + 60
    while not (root / "state.json").exists():
        assert time.monotonic() < deadline and starter.poll() is None
        time.sleep(0.05)
    starting = json.loads((root / "state.json").read_text())
    assert starting["starting"] is True
    starter.send_signal(signal.SIGTERM)
    starter.wait(30)
    orphan = starting["pid"]
    weed = EmbeddedSeaweed(root, idle_s=600)
    try:
        t0 = time.monotonic()
        weed.start()
        assert time.monotonic() - t0 < 30
        status = weed.status()
        assert status.running and status.pid != orphan
        deadline = time.monotonic() + 10
        while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the orphan was stopped, not left beside the new server
        assert not Path(f"/proc/{orphan}").exists() or _zombie(orphan)
    finally:
        weed.release()
        weed.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
