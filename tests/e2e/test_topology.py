"""The production topology, with faults: separate SeaweedFS processes (master, two volume
servers with replication 001, filer, S3 gateway), PostgreSQL, two ``liuhen serve`` and three
``liuhen worker`` processes (``scripts/topology.py``). A mixed batch goes in through both APIs;
mid-run one volume server and one busy worker are killed with SIGKILL (the volume server is
started again a few seconds later: with 001 every write needs both copies); then a device's
tus upload goes in through a round-robin balancer over both APIs. Every item must
end ``ready``, each derivative made and logged once, the log dense, ``verify --all`` clean.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tusclient import client as tus_client

from ingest.devices import load_credential
from scripts.topology import Topology
from scripts.topology import main as topology_cli
from tests.cli import LIUHEN
from tests.conftest import TESTDATA
from tests.integration import mediagen as gen
from tests.integration.devicekit import manifest_for, metadata
from tests.tcpproxy import cuttable

PHOTOS = sorted((TESTDATA / "photos" / "gps").glob("*.jpg"))[:3]
EXTRA_PHOTO = sorted((TESTDATA / "photos" / "gps").glob("*.jpg"))[3]
VIDEO_ROLES = {"proxy", "contact", *(f"thumb-{i:03d}" for i in range(3))}
ROLES = {"video": VIDEO_ROLES, "audio": {"proxy", "waveform"}, "image": {"display", "thumb-000"}}


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    topo = Topology.create(
        tmp_path / "topology",
        api=2,
        workers=3,
        settings={
            "LIUHEN_QUEUE__HEARTBEAT_S": "1",
            "LIUHEN_QUEUE__STALLED_S": "4",  # a loaded machine delays beats
            "LIUHEN_QUEUE__STORE_RETRY_CAP_S": "2",
            "LIUHEN_PIPELINE__THUMBNAILS": "3",
            "LIUHEN_LOG_LEVEL": "INFO",
        },
    )
    try:
        topo.start()
        yield topo
    finally:
        Topology(topo.root).stop()  # as saved: a restart by the script changes a pid


def batch(directory: Path) -> list[tuple[Path, str]]:
    """Three 1080p clips (transcoded: long enough to be killed mid-run), a small clip
    (remuxed), a WAV, three real photos; each with the kind it is."""
    out: list[tuple[Path, str]] = []
    for i in range(3):
        path = directory / f"bodycam-{i}.mp4"
        gen.run_ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30:duration=3",
            "-f", "lavfi", "-i", f"sine=frequency={440 + 10 * i}:duration=3",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            str(path),
        )  # fmt: skip
        out.append((path, "video"))
    out.append((gen.small_h264(directory), "video"))
    out.append((gen.wav(directory), "audio"))
    out += [(p, "image") for p in PHOTOS]
    return out


def busy_worker(topo: Topology) -> str | None:
    """A worker with an ffmpeg child: killing it kills a job mid-transcode."""
    for name in topo.workers():
        pid = topo.state.procs[name].pid
        try:
            children = psutil.Process(pid).children(recursive=True) if pid else []
        except psutil.NoSuchProcess:
            continue
        if any("ffmpeg" in c.name() for c in children):
            return name
    return None


def db(topo: Topology) -> psycopg.Connection[Any]:
    return psycopg.connect(**dict(topo.state.pg_admin, dbname=topo.state.database))


def statuses(topo: Topology, ids: list[str]) -> dict[str, str]:
    with db(topo) as conn:
        rows = conn.execute("SELECT id, status FROM items WHERE id = ANY(%s)", (ids,)).fetchall()
    return {str(i): str(s) for i, s in rows}


def tus_through_a_balancer(topo: Topology, tmp_path: Path) -> str:
    """A device's resumable upload through a round-robin balancer over both APIs: each has
    its own spool, the one without it forwards (``api.advertise_url``). Returns the item."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")} | topo.env()
    cred_path = tmp_path / "cam.json"
    subprocess.run(
        [str(LIUHEN), "device", "enroll", "TOPO-CAM", "--officer", "100001", "--unit", "U-T",
         "-o", str(cred_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    cred = load_credential(cred_path)
    data = EXTRA_PHOTO.read_bytes()
    manifest = manifest_for(cred, data, seq=1, file_name=EXTRA_PHOTO.name, case_ids=["TOPO-1"])
    ports = [("127.0.0.1", int(url.rsplit(":", 1)[1])) for url in topo.api_urls()]
    with cuttable(*ports) as balancer:  # tuspy opens a connection per request
        base = f"http://127.0.0.1:{balancer.port}"
        uploader = tus_client.TusClient(
            f"{base}/v1/uploads", headers={"Authorization": f"Bearer {cred.token}"}
        ).uploader(
            file_stream=io.BytesIO(data),
            chunk_size=max(1, len(data) // 4),
            metadata=metadata(cred, manifest),
            upload_checksum=True,
        )
        uploader.upload()
        doc = httpx.get(
            str(uploader.url), headers={"Authorization": f"Bearer {cred.token}"}, timeout=60
        ).json()
    assert doc["state"] == "sealed" and doc["size"] == len(data), doc
    forwarded = 0.0
    for url in topo.api_urls():
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            forwarded += sum(
                s.value for s in family.samples if s.name == "liuhen_uploads_forwarded_total"
            )
    assert forwarded >= 2, "no request reached the API without the spool"
    return str(doc["id"])


def test_topology_survives_a_dead_volume_server_and_a_killed_worker(
    topology: Topology, tmp_path: Path
) -> None:
    topo = topology
    files = batch(tmp_path)
    apis = topo.api_urls()
    kinds: dict[str, str] = {}
    made = subprocess.run(
        [
            str(LIUHEN),
            "user",
            "add",
            "topo-officer",
            "--role",
            "officer",
            "--unit",
            "U-T",
            "--json",
        ],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}, **topo.env()},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(made.stdout)["token"]
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        for n, (path, kind) in enumerate(files):
            manifest = {"case_ids": ["TOPO-1"], "file_name": path.name}
            with path.open("rb") as f:
                r = client.post(
                    f"{apis[n % len(apis)]}/v1/items",
                    data={"manifest": json.dumps(manifest)},
                    files={"file": (path.name, f)},
                )
            assert r.status_code == 201, r.text
            kinds[r.json()["id"]] = kind
    assert len(kinds) == len(files)

    deadline = time.monotonic() + 60
    while (victim := busy_worker(topo)) is None:
        assert time.monotonic() < deadline, "no worker ever transcoded"
        time.sleep(0.05)
    topo.kill(victim)  # SIGKILL to its process group: the worker and its ffmpeg
    assert topology_cli(["kill", str(topo.root), "volume-2"]) == 0  # as a person would
    time.sleep(4)  # writes fail meanwhile: jobs wait for the store
    assert topology_cli(["status", str(topo.root)]) == 1  # volume-2 is down
    assert topology_cli(["restart", str(topo.root), "volume-2"]) == 0
    assert topology_cli(["status", str(topo.root)]) == 1  # the killed worker still is
    kinds[tus_through_a_balancer(topo, tmp_path)] = "image"  # with a worker still down
    ids = list(kinds)

    deadline = time.monotonic() + 150
    while True:
        now = statuses(topo, ids)
        if all(s in {"ready", "partial", "unprocessable"} for s in now.values()):
            break
        assert time.monotonic() < deadline, f"not finished: {now}"
        time.sleep(0.5)
    assert now == dict.fromkeys(ids, "ready")

    with db(topo) as conn:
        derived = conn.execute("SELECT item_id, role FROM derivatives").fetchall()
        leaves = [
            (json.loads(data), kind)
            for data, kind in conn.execute("SELECT data, kind FROM log_leaves").fetchall()
        ]
        count, low, high = conn.execute(
            "SELECT count(*), min(idx), max(idx) FROM log_leaves"
        ).fetchone() or (0, None, None)
        size = conn.execute("SELECT size FROM log_state").fetchone()
        recovered = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE attempts > 1 AND status = 'succeeded'"
        ).fetchone()
    for item_id, kind in kinds.items():
        assert {r for i, r in derived if i == item_id} == ROLES[kind], item_id
    logged = Counter(
        (leaf["item_id"], leaf["role"]) for leaf, kind in leaves if kind == "derivative"
    )
    assert set(logged.values()) == {1}, "a derivative was logged twice"
    assert len(logged) == len(derived)
    assert (low, high, count) == (0, count - 1, size[0] if size else None), "leaf gaps"
    assert recovered is not None and recovered[0] >= 1, "the killed worker's job ran again"
    logs = "".join((topo.root / "logs" / f"{w}.log").read_text() for w in topo.workers())
    assert "requeued 1 job(s) left by a crashed worker" in logs
    # The live workers' own /metrics count the jobs they ran (the victim's died with it).
    runs = 0.0
    for name in topo.workers():
        if name != victim:
            scraped = httpx.get(f"http://127.0.0.1:{topo.state.ports[name]}/metrics").text
            runs += sum(
                s.value
                for family in text_string_to_metric_families(scraped)
                for s in family.samples
                if s.name == "liuhen_stage_duration_seconds_count"
                and s.labels == {"stage": "pipeline"}
            )
    assert runs >= 1, "no live worker's metrics showed a job"

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")} | topo.env()
    done = subprocess.run(
        [str(LIUHEN), "verify", "--all", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert (done.returncode, report["ok"], report["failures"]) == (0, True, [])
    assert report["checked"] >= len(ids)
