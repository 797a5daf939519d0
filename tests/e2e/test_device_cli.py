"""Device intake through the console script: enroll, push (a verified receipt), a ``liuhen serve``
killed with SIGKILL mid-upload and restarted, and a collection-station import killed halfway
and resumed. SQLite index, the session's SeaweedFS."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from configs.settings import Settings
from ingest.devices import load_credential
from ingest.runtime import Runtime, open_runtime
from integrity.receipts import parse_receipt
from integrity.verify import verify_receipt
from storage.tables import CustodyEvent, DeviceEvent, Item
from tests.cli import LIUHEN, CliResult, cli_env, run_cli
from tests.integration.devicekit import (
    OCTETS,
    TUS,
    clip,
    creation_headers,
    free_port,
    manifest_for,
    metadata,
)

INGEST_KEYS = {"id", "sha256", "size", "status", "case_ids", "log_index", "leaf", "receipt"}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    e = cli_env(tmp_path / "home", settings)
    e["LIUHEN_PIPELINE__WORKERS"] = "0"
    e["LIUHEN_INTAKE__SYNC_EVERY_BYTES"] = "65536"
    return e


@pytest.fixture
def index(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings)
    yield rt
    rt.close()


def _count(rt: Runtime, table: type, *where: Any) -> int:
    with rt.sessions() as s:
        return int(s.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


class Serve:
    """``liuhen serve`` as a subprocess on a free port."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd, self.port = env, cwd, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.cwd / f"serve-{time.monotonic_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(LIUHEN), "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "liuhen serve exited"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("liuhen serve did not answer")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[Serve]:
    s = Serve(env, tmp_path)
    yield s
    s.stop()


def _enroll(env: dict[str, str], cwd: Path, device: str, server: str | None = None) -> Path:
    cred = cwd / f"{device}.json"
    args = ["device", "enroll", device, "--officer", "100001", "--unit", "unit-1"]
    args += ["-o", str(cred), "--json", *(["--server", server] if server else [])]
    r = run_cli(*args, env=env, cwd=cwd)
    assert r.returncode == 0, r
    doc = r.json()
    assert set(doc) == {"device_id", "officer_id", "unit", "public_key", "credential"}
    assert doc["device_id"] == device and doc["credential"] == str(cred)
    return cred


def test_enroll_list_disable_rotate(env: dict[str, str], tmp_path: Path, index: Runtime) -> None:
    cred_path = _enroll(env, tmp_path, "CAM-ENROLL")
    assert stat.S_IMODE(cred_path.stat().st_mode) == 0o600
    raw = json.loads(cred_path.read_text())
    assert set(raw) == {"v", "device_id", "token", "signing_key", "log_key", "server"}
    assert raw["v"] == 1 and raw["server"] is None
    assert raw["log_key"] == index.ledger.key.verifier_key
    r = run_cli("device", "list", "--json", env=env, cwd=tmp_path)
    (listed,) = r.json()["devices"]
    assert listed["device_id"] == "CAM-ENROLL" and not listed["disabled"]
    again = run_cli(
        "device",
        "enroll",
        "CAM-ENROLL",
        "--officer",
        "1",
        "--unit",
        "u",
        "-o",
        str(tmp_path / "x.json"),
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode != 0 and again.json()["error"]["status"] == 409
    rotated = tmp_path / "rotated.json"
    r = run_cli(
        "device", "rotate-key", "CAM-ENROLL", "-o", str(rotated), "--json", env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r
    new = load_credential(rotated)
    assert new.token != raw["token"] and r.json()["public_key"] != listed["public_key"]
    r = run_cli(
        "device", "disable", "CAM-ENROLL", "--reason", "lost", "--json", env=env, cwd=tmp_path
    )
    assert r.returncode == 0 and r.json()["disabled"]
    actions = [e.action for e in _events(index, "CAM-ENROLL")]
    assert actions == ["enroll", "rotate_key", "disable"]


def _events(rt: Runtime, device_id: str) -> list[DeviceEvent]:
    with rt.sessions() as s:
        return list(s.scalars(select(DeviceEvent).where(DeviceEvent.device_id == device_id)))


def test_push_prints_verified_receipts(
    env: dict[str, str], tmp_path: Path, serve: Serve, index: Runtime
) -> None:
    serve.start()
    cred = _enroll(env, tmp_path, "CAM-PUSH")
    files = []
    for i in range(2):
        f = tmp_path / f"clip{i}.mp4"
        f.write_bytes(clip(300_000 + i))
        files.append(f)

    def push(*args: str | Path) -> CliResult:
        return run_cli(
            "push", *args, "--server", serve.base, "--credential", cred, "--json",
            env=env, cwd=tmp_path,
        )  # fmt: skip

    r = push(*files, "--case", "C-1")
    assert r.returncode == 0, r
    items = r.json()["items"]
    assert [i["file"] for i in items] == [str(f) for f in files]
    log_key = load_credential(cred).log_key
    for item, f in zip(items, files, strict=True):
        assert INGEST_KEYS <= set(item)
        assert item["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert item["case_ids"] == ["C-1"]
        verify_receipt(
            leaf_data=item["leaf"].encode(), receipt_text=item["receipt"], verifier_key=log_key
        )
    # Pushing again: same items, nothing new.
    r = push(files[0])
    assert r.returncode == 0 and r.json()["items"][0]["id"] == items[0]["id"]
    assert _count(index, Item, Item.device_id == "CAM-PUSH") == 2
    # A folder among the files: said so, before anything is sent.
    folder = tmp_path / "DCIM"
    folder.mkdir()
    r = push(folder)
    assert r.returncode == 3 and "a folder" in r.json()["error"]["detail"], str(r)
    # A disabled device's push fails, with the server's refusal, and exits non-zero.
    run_cli("device", "disable", "CAM-PUSH", env=env, cwd=tmp_path)
    r = push(files[1])
    assert r.returncode != 0 and r.json()["error"]["code"] == "device_disabled"


def test_push_fetches_receipts_while_the_next_files_upload(
    env: dict[str, str], tmp_path: Path, serve: Serve
) -> None:
    """Checkpoints at most every 1.5 s: a push that waited for each file's receipt before
    sending the next would need a checkpoint per file; fetching receipts while the next files
    upload, they share checkpoints. Every receipt still verifies, in the files' order."""
    env["LIUHEN_LOG__CHECKPOINT_INTERVAL_MS"] = "1500"
    serve.start()
    cred = _enroll(env, tmp_path, "CAM-AHEAD")
    files = []
    for i in range(6):
        f = tmp_path / f"ahead{i}.mp4"
        f.write_bytes(clip(20_000 + i))
        files.append(f)
    r = run_cli(
        "push", *files, "--server", serve.base, "--credential", cred, "--json", env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r
    items = r.json()["items"]
    assert [i["file"] for i in items] == [str(f) for f in files]
    log_key = load_credential(cred).log_key
    for item in items:
        verify_receipt(
            leaf_data=item["leaf"].encode(), receipt_text=item["receipt"], verifier_key=log_key
        )
    checkpoints = {parse_receipt(item["receipt"]).checkpoint_note for item in items}
    assert len(checkpoints) < len(files)
    state = cred.with_name(cred.name + ".push-state.json")
    assert json.loads(state.read_text())["uploads"] == {}
    # A file refused halfway: the ones before it are sealed and reported, none after it sent.
    before, empty, after = tmp_path / "before.mp4", tmp_path / "empty.mp4", tmp_path / "after.mp4"
    before.write_bytes(clip(21_000))
    empty.write_bytes(b"")
    after.write_bytes(clip(22_000))
    r = run_cli(
        "push", before, empty, after, "--server", serve.base, "--credential", cred, "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode != 0
    doc = r.json()
    assert [i["file"] for i in doc["items"]] == [str(before)]
    assert "empty" in doc["error"]["detail"]
    assert json.loads(state.read_text())["uploads"] == {}


def test_upload_resumes_after_serve_is_killed(
    env: dict[str, str], tmp_path: Path, serve: Serve, index: Runtime
) -> None:
    serve.start()
    cred = load_credential(_enroll(env, tmp_path, "CAM-KILL"))
    data = clip(3_000_000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    r = httpx.post(f"{serve.base}/v1/uploads", headers=creation_headers(cred, len(data), meta))
    assert r.status_code == 201, r.text
    url = serve.base + r.headers["location"]
    auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
    # A slow body: the server fsyncs and records as it goes; it is killed in the middle.
    sent = 0

    def slow() -> Iterator[bytes]:
        nonlocal sent
        while sent < len(data):
            block = data[sent : sent + 100_000]
            sent += len(block)
            if sent >= 1_500_000:
                serve.kill9()
                return
            yield block
            time.sleep(0.02)

    with pytest.raises(httpx.TransportError):
        httpx.patch(
            url,
            content=slow(),
            headers={**auth, "Content-Type": OCTETS, "Upload-Offset": "0"},
            timeout=30,
        )
    assert serve.proc is not None and serve.proc.returncode == -signal.SIGKILL
    serve.start()
    h = httpx.head(url, headers=auth)
    assert h.status_code == 200, h.text
    offset = int(h.headers["upload-offset"])
    assert 0 < offset < 1_500_000
    # The spool may hold bytes beyond the acknowledged offset; they are cut, then re-sent.
    r = httpx.patch(
        url,
        content=data[offset:],
        headers={**auth, "Content-Type": OCTETS, "Upload-Offset": str(offset)},
        timeout=60,
    )
    assert r.status_code == 204, r.text
    doc = httpx.get(url, headers=auth, timeout=60).json()
    assert doc["state"] == "sealed" and doc["sha256"] == hashlib.sha256(data).hexdigest()
    verify_receipt(
        leaf_data=doc["leaf"].encode(), receipt_text=doc["receipt"], verifier_key=cred.log_key
    )
    assert _count(index, Item, Item.device_id == "CAM-KILL") == 1


# --- the collection station ------------------------------------------------------------------


def _camera_folder(root: Path, n: int, size: int) -> list[Path]:
    folder = root / "DCIM" / "100MEDIA"
    folder.mkdir(parents=True)
    files = []
    for i in range(n):
        f = folder / f"A123456_100001_20260301{8 + i // 60:02d}{i % 60:02d}00_{i:04d}.MP4"
        f.write_bytes(clip(size))
        old = time.time() - 3600
        os.utime(f, (old, old))
        files.append(f)
    (root / "DCIM" / "index.dat").write_bytes(b"camera bookkeeping")
    return files


def test_dock_import_killed_halfway_resumes(
    env: dict[str, str], tmp_path: Path, index: Runtime
) -> None:
    camera = tmp_path / "camera"
    files = _camera_folder(camera, 24, 400_000)
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    receipts = tmp_path / "receipts"
    args = ["dock", "import", str(camera), "--receipts", str(receipts), "--erase", "--json"]
    proc = subprocess.Popen(
        [str(LIUHEN), *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if receipts.is_dir() and len(list(receipts.rglob("*.receipt.json"))) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    remaining = {f.name for f in files if f.exists()}
    assert remaining and len(remaining) < len(files), "the kill should land halfway"
    for f in files:  # nothing erased without its receipt, and that receipt verifies
        if f.name not in remaining:
            doc = json.loads(
                (receipts / "DCIM" / "100MEDIA" / f"{f.name}.receipt.json").read_text()
            )
            assert doc["sha256"] == digests[f.name]
            verify_receipt(
                leaf_data=doc["leaf"].encode(),
                receipt_text=doc["receipt"],
                verifier_key=index.ledger.key.verifier_key,
            )
    r = run_cli(*args, env=env, cwd=tmp_path)
    assert r.returncode == 0, r
    doc = r.json()
    assert set(doc) == {"sealed", "skipped", "failed"} and doc["failed"] == []
    assert {Path(s["file"]).name for s in doc["sealed"]} >= remaining
    assert [s["reason"] for s in doc["skipped"]] == ["not a media file"]
    assert not any(f.exists() for f in files)
    with index.sessions() as s:
        rows = s.execute(select(Item.sha256, Item.device_id, Item.officer_id, Item.original_name))
        sealed = {row.sha256: row for row in rows}
        again = s.execute(
            select(func.count())
            .select_from(CustodyEvent)
            .where(CustodyEvent.action == "received_again")
        ).scalar_one()
    for f in files:  # every file sealed exactly once, with the file name's hints
        row = sealed[digests[f.name]]
        assert (row.device_id, row.officer_id, row.original_name) == ("A123456", "100001", f.name)
        doc = json.loads((receipts / "DCIM" / "100MEDIA" / f"{f.name}.receipt.json").read_text())
        assert doc["sha256"] == digests[f.name]
    assert again == 0, "a resumed import must not seal a file a second time"
    # A third run finds nothing to do.
    r = run_cli(*args, env=env, cwd=tmp_path)
    assert r.json()["sealed"] == []


def test_dock_skips_files_still_being_written(
    env: dict[str, str], tmp_path: Path, index: Runtime
) -> None:
    camera = tmp_path / "cam"
    camera.mkdir()
    growing = camera / "20260301080000_100001_0001.MP4"
    growing.write_bytes(clip(10_000))
    stop = False

    def grow() -> None:
        with growing.open("ab") as f:
            while not stop:
                f.write(os.urandom(1000))
                f.flush()
                time.sleep(0.05)

    t = threading.Thread(target=grow)
    t.start()
    try:
        r = run_cli(
            "dock",
            "import",
            str(camera),
            "--json",
            env={**env, "LIUHEN_INTAKE__DOCK_STABLE_S": "1"},
            cwd=tmp_path,
        )
    finally:
        stop = True
        t.join()
    assert r.returncode == 0, r
    assert r.json()["skipped"] == [{"file": str(growing), "reason": "still being written"}]
    assert _count(index, Item, Item.original_name == growing.name) == 0
    old = time.time() - 60
    os.utime(growing, (old, old))
    r = run_cli("dock", "import", str(camera), "--json", env=env, cwd=tmp_path)
    assert [Path(s["file"]).name for s in r.json()["sealed"]] == [growing.name]
    assert growing.exists(), "without --erase the camera keeps its file"


def test_dock_with_an_unknown_unit_stops_at_once(env: dict[str, str], tmp_path: Path) -> None:
    camera = tmp_path / "DCIM"
    camera.mkdir()
    photo = camera / "IMG_0001.JPG"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    for command in ("import", "watch"):  # watch too: no later pass would fix the name
        r = run_cli("dock", command, camera, "--unit", "三中队x", "--json", env=env, cwd=tmp_path,
                    timeout_s=60)  # fmt: skip
        assert r.returncode == 3, r
        assert "unit '三中队x' is not known here" in r.json()["error"]["detail"], r
    assert photo.exists()


def test_push_killed_resumes_the_same_upload(
    env: dict[str, str], tmp_path: Path, serve: Serve, index: Runtime
) -> None:
    serve.start()
    cred = _enroll(env, tmp_path, "CAM-RESUME")
    f = tmp_path / "long.mp4"
    f.write_bytes(clip(24 << 20))
    args = [
        "push",
        str(f),
        "--server",
        serve.base,
        "--credential",
        str(cred),
        "--chunk-mb",
        "1",
        "--json",
    ]
    proc = subprocess.Popen(
        [str(LIUHEN), *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = cred.with_name(cred.name + ".push-state.json")
    token = load_credential(cred).token
    auth = {**TUS, "Authorization": f"Bearer {token}"}
    url, offset = None, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        uploads = json.loads(state.read_text())["uploads"] if state.exists() else {}
        if uploads:
            (url,) = [u["url"] for u in uploads.values()]
            offset = int(httpx.head(url, headers=auth).headers["upload-offset"])
            if offset >= 2 << 20:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert url is not None and 0 < offset < f.stat().st_size, "the kill should land mid-upload"
    r = run_cli(*args, env=env, cwd=tmp_path)
    assert r.returncode == 0, r
    (item,) = r.json()["items"]
    assert url.endswith("/" + item["upload"]), "the same upload was resumed, not a new one"
    assert item["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert json.loads(state.read_text())["uploads"] == {}
    assert _count(index, Item, Item.device_id == "CAM-RESUME") == 1


def test_dock_watch_seals_what_arrives(env: dict[str, str], tmp_path: Path, index: Runtime) -> None:
    camera = tmp_path / "watched"
    camera.mkdir()
    receipts = tmp_path / "r"
    watch_env = {**env, "LIUHEN_INTAKE__DOCK_POLL_S": "0.5", "LIUHEN_INTAKE__DOCK_STABLE_S": "0.5"}
    proc = subprocess.Popen(
        [str(LIUHEN), "dock", "watch", str(camera), "--receipts", str(receipts), "--json"],
        env=watch_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        clip_path = camera / "DSJ_A1234567_20260301_080000.MP4"
        clip_path.write_bytes(clip(50_000))
        receipt = receipts / f"{clip_path.name}.receipt.json"
        deadline = time.monotonic() + 60
        while not receipt.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receipt.exists()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    doc = json.loads(out)
    assert [Path(s["file"]).name for s in doc["sealed"]] == [clip_path.name]
    assert _count(index, Item, Item.original_name == clip_path.name) == 1
