"""Load on device intake: many devices uploading over tus to ``liuhen serve`` on loopback.

    .venv/bin/python bench/intake.py [--devices 50] [--size-mb 20] [--big-mb 1024] [--photos 40]
                                     [--no-stream] [--database-url postgresql+psycopg://...]

One private SeaweedFS, one SQLite index, ``liuhen serve`` as a subprocess (workers off), and:

(a) ``--devices`` enrolled devices upload ``--size-mb`` each at once (a thread per device: POST,
    PATCH in 8 MiB checksummed chunks, GET the receipt, verify it against the log key). Printed:
    errors (goal 0), items sealed and logged, aggregate throughput, for each upload the time
    from its last byte sent to its receipt verified (p50, p99), and the server's own seal times
    (from its log; the wait for one of the server's seal slots is not in them);
(b) one device uploads the same total bytes alone: aggregate (a) / alone (b) (goal >= 0.8);
(c) one ``--big-mb`` upload: last byte → verified receipt, against a plain ``fput_object`` of
    the same file (goal <= 1.1). The seal streams the spool to the store while hashing, so (c)
    is essentially one more S3 upload plus a commit and a signed checkpoint;
(d) one device pushes ``--photos`` 100 KB photos with ``liuhen push``'s client: fetching each
    receipt while the next photos upload (``Pusher.push_all``) against one photo at a time
    (``Pusher.push``, each waiting for its checkpoint before the next is sent).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_runtime, line
from ingest import devices
from ingest.devices import Credential
from ingest.push import Pusher, PushState
from ingest.runtime import Runtime
from ingest.samples import write_large_recording
from integrity.leaves import canonical_json
from integrity.verify import verify_receipt
from storage.db import transaction
from storage.tables import Item

MIB = 1024 * 1024
CHUNK = 8 * MIB
LIUHEN = Path(sys.executable).parent / "liuhen"
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Outcome:
    ok: bool
    last_byte_to_receipt_s: float
    error: str = ""


def enroll(rt: Runtime, device_id: str) -> Credential:
    with transaction(rt.sessions) as session:
        return devices.enroll(
            session,
            device_id=device_id,
            officer_id="100001",
            unit="bench",
            model=None,
            actor="bench",
            log_key=rt.ledger.key.verifier_key,
        ).credential


def upload(base: str, cred: Credential, path: Path, sha256: str, *, seq: int) -> Outcome:
    """One tus upload; the clock for "last byte" stops when the last chunk's body was sent."""
    size = path.stat().st_size
    manifest = canonical_json(
        {
            "v": 1,
            "device_id": cred.device_id,
            "officer_id": "100001",
            "seq": seq,
            "device_time": datetime.now(UTC).isoformat(timespec="seconds"),
            "file_name": path.name,
            "size": size,
            "sha256": sha256,
            "case_ids": ["BENCH"],
        }
    )
    meta = {"manifest": manifest, "signature": cred.sign(manifest).encode()}
    header = ",".join(f"{k} {base64.b64encode(v).decode()}" for k, v in meta.items())
    auth = {**TUS, "Authorization": f"Bearer {cred.token}"}
    last_byte = 0.0
    try:
        with httpx.Client(timeout=600) as client:
            r = client.post(
                f"{base}/v1/uploads",
                headers={**auth, "Upload-Length": str(size), "Upload-Metadata": header},
            )
            r.raise_for_status()
            url = base + r.headers["location"]
            offset = 0
            with path.open("rb") as f:
                while offset < size:
                    chunk = f.read(CHUNK)
                    final = offset + len(chunk) == size
                    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()

                    def body(chunk: bytes = chunk, final: bool = final) -> Iterator[bytes]:
                        nonlocal last_byte
                        yield chunk
                        if final:
                            last_byte = time.perf_counter()

                    r = client.patch(
                        url,
                        content=body(),
                        headers={
                            **auth,
                            "Content-Type": "application/offset+octet-stream",
                            "Content-Length": str(len(chunk)),
                            "Upload-Offset": str(offset),
                            "Upload-Checksum": f"sha256 {digest}",
                        },
                    )
                    r.raise_for_status()
                    offset = int(r.headers["upload-offset"])
            doc = client.get(url, headers=auth).json()
            verify_receipt(
                leaf_data=doc["leaf"].encode(),
                receipt_text=doc["receipt"],
                verifier_key=cred.log_key,
            )
            if doc["sha256"] != sha256:
                raise ValueError("receipt for other bytes")
        return Outcome(True, time.perf_counter() - last_byte)
    except Exception as e:
        return Outcome(False, 0.0, f"{type(e).__name__}: {e}")


def make_file(path: Path, size_mb: int) -> str:
    return write_large_recording(path, size_mb)


def serve(rt: Runtime, port: int, log: Path, *, stream: bool) -> subprocess.Popen[bytes]:
    s = rt.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env |= {
        "LIUHEN_HOME": str(s.home_dir),
        "LIUHEN_DATABASE__URL": s.database_url,
        "LIUHEN_S3__EMBEDDED": "false",
        "LIUHEN_S3__ENDPOINT": s.s3.endpoint,
        "LIUHEN_S3__ACCESS_KEY": s.s3.access_key,
        "LIUHEN_S3__SECRET_KEY": s.s3.secret_key.get_secret_value(),
        "LIUHEN_S3__BUCKET": s.s3.bucket,
        "LIUHEN_PIPELINE__WORKERS": "0",
        "LIUHEN_INTAKE__MAX_CONCURRENT_PER_DEVICE": "4",
        "LIUHEN_LOG_LEVEL": "INFO",  # the server logs each seal's duration
        "LIUHEN_INTAKE__STREAM_TO_STORE": "true" if stream else "false",
    }
    proc = subprocess.Popen(
        [str(LIUHEN), "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("liuhen serve did not start")


def seal_times(log: Path) -> list[float]:
    """Each seal's duration, from the server's log lines ``upload ... sealed as ... in X s``."""
    found = re.findall(r"sealed as \w+ in ([0-9.]+) s", log.read_text(errors="replace"))
    return [float(x) for x in found]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--size-mb", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument(
        "--no-stream", action="store_true", help="Copy the spool only after the last byte."
    )
    parser.add_argument("--database-url", help="Index URL (default: SQLite in the temp home).")
    parser.add_argument("--photos", type=int, default=40, help="photos pushed by one device in (d)")
    args = parser.parse_args()
    index = {"database": {"url": args.database_url}} if args.database_url else {}
    with bench_runtime(**index) as rt, tempfile.TemporaryDirectory(prefix="liuhen-intake-") as tmp:
        root = Path(tmp)
        creds = [enroll(rt, f"BENCH-{i:03d}") for i in range(args.devices + 4)]
        files = []
        for i in range(args.devices):
            f = root / f"dev{i:03d}.mp4"
            files.append((f, make_file(f, args.size_mb)))
        port = 18470 + os.getpid() % 1000
        proc = serve(rt, port, root / "serve.log", stream=not args.no_stream)
        base = f"http://127.0.0.1:{port}"
        try:
            # (a) all devices at once
            outcomes: list[Outcome] = [Outcome(False, 0.0, "not run")] * args.devices

            def run(i: int) -> None:
                outcomes[i] = upload(base, creds[i], files[i][0], files[i][1], seq=1)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(args.devices)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            total = args.devices * args.size_mb * MIB
            errors = [o.error for o in outcomes if not o.ok]
            latencies = [o.last_byte_to_receipt_s for o in outcomes if o.ok]
            aggregate = total / wall / MIB
            print(f"(a) {args.devices} devices x {args.size_mb} MiB, concurrently")
            line("errors", len(errors), "", "goal 0")
            seals = seal_times(root / "serve.log")
            if seals:
                line("seal (server side) p50", percentile(seals, 0.5), "s")
                line("seal (server side) max", max(seals), "s")
            for e in sorted(set(errors))[:5]:
                print(f"    {e}")
            line("aggregate throughput", aggregate, "MiB/s")
            if latencies:
                line("last byte -> verified receipt p50", percentile(latencies, 0.5), "s")
                line("last byte -> verified receipt p99", percentile(latencies, 0.99), "s")
            for f, _ in files:
                f.unlink()
            # (b) the same total bytes, one upload
            alone = root / "alone.mp4"
            sha = make_file(alone, args.devices * args.size_mb)
            t0 = time.perf_counter()
            single = upload(base, creds[-2], alone, sha, seq=1)
            single_wall = time.perf_counter() - t0
            alone.unlink()
            print(f"(b) one upload of the same {args.devices * args.size_mb} MiB")
            line("errors", 0 if single.ok else 1, "", single.error)
            line("throughput alone", total / single_wall / MIB, "MiB/s")
            line("aggregate / alone", aggregate / (total / single_wall / MIB), "", "goal >= 0.8")
            # (c) one big upload against a plain fput_object
            big = root / "big.mp4"
            sha = make_file(big, args.big_mb)
            subprocess.run(["sync"], check=False)
            outcome = upload(base, creds[-1], big, sha, seq=1)
            subprocess.run(["sync"], check=False)
            t0 = time.perf_counter()
            rt.store.client.fput_object(rt.store.bucket, "bench/plain-put", str(big))
            plain = time.perf_counter() - t0
            print(f"(c) one {args.big_mb} MiB upload")
            line("errors", 0 if outcome.ok else 1, "", outcome.error)
            line("last byte -> verified receipt", outcome.last_byte_to_receipt_s, "s")
            line("plain fput_object", plain, "s")
            line(
                "receipt / fput_object",
                outcome.last_byte_to_receipt_s / plain,
                "",
                "goal <= 1.1",
            )
            # (d) many small files from one device: one at a time, then receipts fetched ahead
            print(f"(d) one device pushing {args.photos} photos of 100 KB")
            rates = {}
            for name, cred in (("one at a time", creds[-3]), ("receipts fetched ahead", creds[-4])):
                photos = []
                for i in range(args.photos):
                    photo = root / f"{cred.device_id}-{i:04d}.jpg"
                    photo.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(100_000))
                    photos.append(photo)
                state = PushState(root / f"{cred.device_id}.push-state.json")
                pusher = Pusher(cred, server=base, state=state)
                try:
                    t0 = time.perf_counter()
                    if name == "one at a time":
                        docs = [pusher.push(p, case_ids=[]) for p in photos]
                    else:
                        docs = list(pusher.push_all(photos, case_ids=[]))
                    rates[name] = len(docs) / (time.perf_counter() - t0)
                finally:
                    pusher.close()
                line(f"photos/s, {name}", rates[name], "/s", f"{len(docs)} verified receipts")
            line(
                "ahead / one at a time",
                rates["receipts fetched ahead"] / rates["one at a time"],
                "x",
            )
            with rt.sessions() as session:
                n = session.execute(select(func.count()).select_from(Item)).scalar_one()
            expected = args.devices + 2 + 2 * args.photos
            line("items sealed and logged", n, "", f"expected {expected}")
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
