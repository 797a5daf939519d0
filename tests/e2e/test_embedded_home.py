"""The embedded default as a person meets it at a terminal: one ``LIUHEN_HOME``, commands run
one after another in fresh processes, the home's SeaweedFS started on demand, kept running
between commands, stopped, killed, and started again on its existing data.

Nothing here is the session's SeaweedFS: liuhen starts its own under the test's home.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from minio import Minio
from minio.error import S3Error

from tests.cli import LIUHEN, CliResult, cli_env, run_cli
from tests.conftest import TESTDATA
from tests.integration import mediagen

PHOTOS = sorted((TESTDATA / "photos" / "gps").glob("*.jpg"))


def _weed_processes(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "weed" and any(str(home) in arg for arg in cmdline):
            found.append(proc)
    return found


def _keepers(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "storage.seaweed" in cmdline and any(str(home) in arg for arg in cmdline):
            found.append(proc)
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    run_cli("services", "stop", env=cli_env(home), cwd=tmp_path)
    for proc in _weed_processes(home) + _keepers(home):  # only if the test failed half-way
        proc.kill()


def _liuhen(*args: str | Path, home: Path, cwd: Path, ok: bool = True) -> CliResult:
    result = run_cli(*args, env=cli_env(home), cwd=cwd, timeout_s=240)
    if ok:
        assert result.returncode == 0, str(result)
    return result


def _status(home: Path, cwd: Path) -> dict[str, object]:
    doc = _liuhen("services", "status", "--json", home=home, cwd=cwd).json()
    store: dict[str, object] = doc["object_store"]
    return store


def test_one_home_at_a_terminal(home: Path, tmp_path: Path) -> None:
    # Nothing runs before the first command that needs the store.
    assert _status(home, tmp_path)["running"] is False
    assert _weed_processes(home) == []

    ingested = _liuhen("ingest", *PHOTOS, "--case", "A-2026-1", "--json", home=home, cwd=tmp_path)
    items = ingested.json()["items"]
    assert len(items) == len(PHOTOS) == 8

    # The server outlived the ingest, and is the one process the status names.
    status = _status(home, tmp_path)
    assert status["running"] is True
    assert [p.pid for p in _weed_processes(home)] == [status["pid"]]
    assert status["leases"] == 0  # the ingest has left; the keeper holds no lease
    assert len(_keepers(home)) == 1

    # Never anonymous: the generated identity is private and the only way in.
    root = home / "seaweed"
    assert (root / "identities.json").stat().st_mode & 0o777 == 0o600
    key = json.loads((root / "identities.json").read_text())["identities"][0]["credentials"][0]
    endpoint = str(status["endpoint"])
    with pytest.raises(S3Error) as refused:
        list(Minio(endpoint, secure=False).list_objects("liuhen-evidence"))
    assert refused.value.code == "AccessDenied"
    with pytest.raises(S3Error):
        Minio(
            endpoint, access_key=key["accessKey"], secret_key="x" * 40, secure=False
        ).bucket_exists("liuhen-evidence")

    # Back-to-back reads, each in a fresh process, right after the start: all succeed.
    out = tmp_path / "out"
    out.mkdir()
    for item, photo in zip(items, PHOTOS, strict=True):
        _liuhen("get", item["id"], "-o", out / photo.name, home=home, cwd=tmp_path)
        assert (out / photo.name).read_bytes() == photo.read_bytes()
    verified = _liuhen("verify", "--all", "--json", home=home, cwd=tmp_path).json()
    assert verified["ok"] is True and verified["checked"] == 8

    # Stopped: the index-only commands answer without starting it again.
    stopped = _liuhen("services", "stop", "--json", home=home, cwd=tmp_path).json()
    assert stopped == {"stopped": True}
    assert _weed_processes(home) == [] and _keepers(home) == []
    first = items[0]["id"]
    for args in (
        ("item", first, "--json"),
        ("case", "A-2026-1", "--json"),
        ("log", "key"),
        ("log", "checkpoint"),
        ("receipt", first),
    ):
        _liuhen(*args, home=home, cwd=tmp_path)
        assert _weed_processes(home) == [], f"liuhen {' '.join(args)} started the store"
    assert _status(home, tmp_path)["running"] is False

    # A restart on existing data is readable at once (ready means readable).
    _liuhen("get", first, "-o", out / "again.jpg", home=home, cwd=tmp_path)
    assert (out / "again.jpg").read_bytes() == PHOTOS[0].read_bytes()
    before = _status(home, tmp_path)
    assert before["running"] is True

    # Killed between two commands: the next one notices and starts it again.
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    _liuhen("get", items[-1]["id"], "-o", out / "after-kill.jpg", home=home, cwd=tmp_path)
    assert (out / "after-kill.jpg").read_bytes() == PHOTOS[-1].read_bytes()
    after = _status(home, tmp_path)
    assert after["running"] is True and after["pid"] != before["pid"]
    assert after["endpoint"] == before["endpoint"]  # stable ports, kept in the home
    verified = _liuhen("verify", "--all", "--json", home=home, cwd=tmp_path).json()
    assert verified["ok"] is True, verified


def _running_job(db: Path) -> str | None:
    """The item whose pipeline job is running now, if any."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT item_id FROM jobs WHERE state = 'running'").fetchone()
    except sqlite3.Error:  # not migrated yet
        return None
    return str(row[0]) if row else None


def test_store_killed_during_a_pipeline_run(home: Path, tmp_path: Path) -> None:
    clip = mediagen.body_cam_1080p(tmp_path)
    digest = hashlib.sha256(clip.read_bytes()).hexdigest()
    with (tmp_path / "stdout").open("w+") as out, (tmp_path / "stderr").open("w+") as err:
        proc = subprocess.Popen(
            [str(LIUHEN), "ingest", str(clip), "--case", "K-1", "--wait", "--json"],
            stdout=out,
            stderr=err,
            env=cli_env(home),
            cwd=tmp_path,
        )
        db = home / "index.sqlite3"
        deadline = time.monotonic() + 120
        killed = None
        while killed is None:
            assert proc.poll() is None, "the ingest finished before the store could be killed"
            assert time.monotonic() < deadline, "the pipeline never started"
            running = _running_job(db)
            if running is not None:
                (weed,) = _weed_processes(home)
                weed.kill()  # SIGKILL, mid-run
                killed = running
            time.sleep(0.05)
        proc.wait(timeout=300)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert proc.returncode == 0, stderr
    (item,) = json.loads(stdout)["items"]
    assert (item["id"], item["sha256"]) == (killed, digest)
    assert item["status"] == "ready", stderr
    doc = _liuhen("item", item["id"], "--json", home=home, cwd=tmp_path).json()
    assert {"proxy", "contact"} <= {d["role"] for d in doc["derivatives"]}
    verified = _liuhen("verify", "--all", "--json", home=home, cwd=tmp_path).json()
    assert verified["ok"] is True, verified
    actions = [e["action"] for e in doc["custody"]]
    assert "sealed" in actions
