"""Benchmark the log sequencer. Prints figures and ratios against baselines of the same run.

    .venv/bin/python bench/sequencer.py [--leaves 1000000] [--sealers 16] [--seals 160]
                                        [--interval-ms 100] [--database-url URL]
                                        [--rounds 15] [--leaves-per-checkpoint 300]
                                        [--skip-start] [--skip-seals] [--skip-mirror]

1. Process start with a big log vs a 1-leaf log (goal <= 1.2): a fresh ``python`` process
   opens the runtime (index migrated, object store, key), hands out a receipt for the last
   leaf, appends one leaf and signs a checkpoint over it: what a restarted ``liuhen serve``
   does before its first seal is answered. Wall time of the child, median of 3.
2. Seals per second with N concurrent sealers (real ``seal_file`` of small files: S3 put,
   index transaction, then the receipt): receipts sharing checkpoints (one signer, at most one
   checkpoint per ``--interval-ms``) vs one checkpoint per seal (each sealer signs its own
   under a lock) and, on PostgreSQL, vs one per seal with the sequencer row locked while
   signing (what ``Ledger.publish`` did before this sequencer).
3. One checkpoint's wall time with its mirror puts (leaf bundle, full tiles, checkpoint) and
   TSA request in flight together vs one after another (``CheckpointSigner.mirror_at_once``
   = 1, the old way), interleaved, median of ``--rounds``: ``--leaves-per-checkpoint`` new
   leaves each, without a TSA and with a local one (``openssl ts`` behind HTTP, the tests'
   ``tests/tsa_server.py``). Every receipt waits for a checkpoint, so this is latency a
   device sees; against a remote store and TSA the round trips it saves are longer. Also
   against signing without the published copy (``log/checkpoint`` read before signing, with
   a listing of the leaf bundles that follow the index's latest checkpoint: the store reads
   that stop a signer on a restored index from forking the log; and ``log/checkpoint`` put
   while the row commits).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import home_settings, line
from configs.settings import Settings
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime, open_runtime
from ingest.signing import MIRROR_AT_ONCE
from integrity.leaves import custody_leaf
from storage import repository as repo
from storage.db import transaction
from storage.seaweed import EmbeddedS3, EmbeddedSeaweed

BATCH = 10_000

CHILD = textwrap.dedent(
    """
    import sys, time
    t0 = time.perf_counter()
    from datetime import UTC, datetime
    from configs.settings import Settings
    from ingest.runtime import open_runtime
    from storage import repository as repo
    from storage.db import transaction
    rt = open_runtime(Settings())  # from the LIUHEN_* environment
    t1 = time.perf_counter()
    with rt.sessions() as s:
        last = repo.log_size(s) - 1
    rt.ledger.receipt(last)
    t2 = time.perf_counter()
    with transaction(rt.sessions) as s:
        rt.ledger.append(s, kind="custody", item_id=None,
                         build=lambda: {"v": 1, "kind": "custody", "n": last},
                         now=datetime.now(UTC))
    rt.ledger.interval = 0
    size = rt.ledger.publish().checkpoint.size
    t3 = time.perf_counter()
    rt.close()
    print(f"{time.perf_counter() - t0:.4f} {t1 - t0:.4f} {t2 - t1:.4f} {t3 - t2:.4f} {size}")
    """
)


def _fill(rt: Runtime, n: int) -> None:
    now = datetime.now(UTC)
    base = custody_leaf(
        item_id="01M8FAYGCRPK862MQB0SW00000",
        item_sha256=hashlib.sha256(b"0").hexdigest(),
        action="view",
        actor="officer:110123",
        at=now,
        reason="review of a disputed enforcement action",
        prev=None,
        details={"role": "original"},
    )
    for start in range(0, n, BATCH):
        entries: list[tuple[str, str | None, dict[str, Any]]] = [
            ("custody", None, {**base, "reason": f"review {i}"})
            for i in range(start, min(n, start + BATCH))
        ]
        with transaction(rt.sessions) as s:
            rt.ledger.append_many(s, entries, now=now)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    return env | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "LIUHEN_HOME": str(settings.home_dir),
        "LIUHEN_DATABASE__URL": settings.database_url,
        "LIUHEN_S3__EMBEDDED": "false",
        "LIUHEN_S3__ENDPOINT": settings.s3.endpoint,
        "LIUHEN_S3__ACCESS_KEY": settings.s3.access_key,
        "LIUHEN_S3__SECRET_KEY": settings.s3.secret_key.get_secret_value(),
        "LIUHEN_S3__BUCKET": settings.s3.bucket,
        "LIUHEN_LOG__KEY_PATH": str(settings.log_key_path),
    }


def _start_once(settings: Settings) -> list[float]:
    """Wall time of a fresh process, and its parts: imports + open, receipt, append + sign."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=_env(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(x) for x in out.stdout.split()[:4]]


def bench_start(
    root: Path, s3: EmbeddedS3, leaves: int, database_url: str | None, repeat: int = 5
) -> None:
    if database_url:
        raise SystemExit("the start benchmark makes its own SQLite indexes; drop --database-url")
    small = home_settings(root, s3, "small", None, bucket="bench-seq-small")
    big = home_settings(root, s3, "big", None, bucket="bench-seq-big")
    for settings, n in ((small, 1), (big, leaves)):
        rt = open_runtime(settings)
        try:
            t0 = time.perf_counter()
            _fill(rt, n)
            filled = time.perf_counter() - t0
            t0 = time.perf_counter()
            rt.ledger.publish()
            signed = time.perf_counter() - t0
        finally:
            rt.close()
        line(
            f"build a log of {n:,} leaves", filled, "s", f"first checkpoint + tiles {signed:.1f} s"
        )
    runs: dict[str, list[list[float]]] = {"small": [], "big": []}
    for _ in range(repeat):  # interleaved, so that a busy machine hits both alike
        runs["small"].append(_start_once(small))
        runs["big"].append(_start_once(big))
    parts = {k: [statistics.median(r[i] for r in v) for i in range(4)] for k, v in runs.items()}
    for name, n in (("small", 1), ("big", leaves)):
        total, opened, receipt, sign = parts[name]
        note = f"open {opened:.3f}, receipt {receipt:.3f}, append+sign {sign:.3f}"
        line(f"process start, {n:,}-leaf log", total, "s", note)
    ratio = parts["big"][0] / parts["small"][0]
    line("start ratio big / 1-leaf", ratio, "", "goal <= 1.2")
    work = (parts["big"][2] + parts["big"][3]) / (parts["small"][2] + parts["small"][3])
    line("  receipt + sign alone, big / 1-leaf", work, "", "(without imports and open)")


def _seal_all(rt: Runtime, files: list[Path], sealers: int, *, mode: str) -> float:
    lock = threading.Lock()

    def one(path: Path) -> None:
        sealed = seal_file(rt, path, Manifest(file_name=path.name), actor="bench")
        if mode == "per-seal":
            with lock:  # each seal signs a checkpoint of its own, one at a time
                rt.ledger.signer.sign_round(rt.store)
        elif mode == "held":
            # As before this sequencer: the sequencer row stays locked while signing, so
            # every seal's append waits for the object store puts.
            with lock, rt.engine.connect() as conn:
                conn.execute(text("SELECT size FROM log_state WHERE id = 1 FOR UPDATE"))
                rt.ledger.signer.sign_round(rt.store)
                conn.commit()
        rt.ledger.receipt(sealed.log_index)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(sealers) as pool:
        list(pool.map(one, files))
    return len(files) / (time.perf_counter() - t0)


def bench_seals(
    root: Path, s3: EmbeddedS3, sealers: int, seals: int, interval_ms: int, database_url: str | None
) -> None:
    results = {}
    # "held" locks the sequencer row across signing: PostgreSQL only (on SQLite every
    # transaction takes the one write lock, so the signer's own reads would wait on it).
    modes = ["held", "per-seal", "shared"] if database_url else ["per-seal", "shared"]
    for mode in modes:
        folder = root / f"files-{mode}"
        folder.mkdir()
        files = []
        for i in range(seals):
            path = folder / f"photo-{i:04d}.jpg"
            path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(20_000))
            files.append(path)
        rt = open_runtime(
            home_settings(root, s3, f"seals-{mode}", database_url, bucket=f"bench-seq-{mode}")
        )
        try:
            rt.ledger.interval = interval_ms / 1000 if mode == "shared" else 0
            with rt.sessions() as s:
                before = len(repo.checkpoints(s))
            rate = _seal_all(rt, files, sealers, mode=mode)
            with rt.sessions() as s:
                made = len(repo.checkpoints(s)) - before
        finally:
            rt.close()
        results[mode] = rate
        line(f"{sealers} sealers, checkpoints {mode}", rate, "seals/s", f"{made} checkpoints")
    line("shared / per-seal", results["shared"] / results["per-seal"], "x")
    if "held" in results:
        line("shared / per-seal with the sequencer held", results["shared"] / results["held"], "x")


def bench_mirror(root: Path, s3: EmbeddedS3, rounds: int, per_checkpoint: int) -> None:
    from tests.tsa_server import local_tsa

    (root / "tsa").mkdir()
    with local_tsa(root / "tsa") as tsa:
        for label, log_settings in (
            ("no TSA", {}),
            ("local TSA", {"tsa_url": tsa.url, "tsa_roots": [tsa.dir / "ca.pem"]}),
        ):
            settings = home_settings(
                root,
                s3,
                f"mirror-{len(log_settings)}",
                None,
                bucket=f"bench-seq-m{len(log_settings)}",
            )
            settings = settings.model_copy(
                update={"log": settings.log.model_copy(update=log_settings)}
            )
            rt = open_runtime(settings)
            try:
                rt.ledger.interval = 0
                signer = rt.ledger.signer
                published, following = signer._published, signer._following
                publish = signer._publish
                times: dict[str, list[float]] = {"apart": [], "together": [], "unchecked": []}
                for _ in range(rounds):  # interleaved, so that a busy machine hits all alike
                    for kind in times:
                        _fill(rt, per_checkpoint)
                        signer.mirror_at_once = 1 if kind == "apart" else MIRROR_AT_ONCE
                        # The baseline of the published copy: signing without reading it
                        # first and without putting it after.
                        off = kind == "unchecked"
                        signer._published = (  # type: ignore[method-assign]
                            (lambda *_, **__: []) if off else published
                        )
                        signer._following = (  # type: ignore[method-assign]
                            (lambda *_, **__: []) if off else following
                        )
                        signer._publish = (  # type: ignore[method-assign]
                            (lambda *_, **__: None) if off else publish
                        )
                        t0 = time.perf_counter()
                        rt.ledger.publish()
                        times[kind].append(time.perf_counter() - t0)
                with rt.sessions() as session:
                    stamped = sum(cp.tsr is not None for cp in repo.checkpoints(session))
            finally:
                rt.close()
            together, apart, unchecked = (
                statistics.median(times[k]) for k in ("together", "apart", "unchecked")
            )
            note = f"{per_checkpoint} new leaves each, {stamped} time-stamped"
            line(f"checkpoint, {label}, puts one after another", apart * 1000, "ms", note)
            line(f"checkpoint, {label}, {MIRROR_AT_ONCE} at once", together * 1000, "ms")
            line(f"  {label}: at once / one after another", together / apart, "x")
            line(f"checkpoint, {label}, no published copy", unchecked * 1000, "ms")
            line(f"  {label}: read, checked, put / none of it", together / unchecked, "x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--sealers", type=int, default=16)
    ap.add_argument("--seals", type=int, default=160)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--database-url", help="PostgreSQL for the seal benchmark (default SQLite)")
    ap.add_argument("--skip-start", action="store_true")
    ap.add_argument("--skip-seals", action="store_true")
    ap.add_argument("--rounds", type=int, default=15, help="checkpoints of each kind (part 3)")
    ap.add_argument("--leaves-per-checkpoint", type=int, default=300)
    ap.add_argument("--skip-mirror", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="liuhen-bench-seq-") as tmp:
        root = Path(tmp)
        weed = EmbeddedSeaweed(root / "seaweed")
        s3 = weed.start()
        try:
            if not args.skip_seals:
                bench_seals(root, s3, args.sealers, args.seals, args.interval_ms, args.database_url)
            if not args.skip_mirror:
                bench_mirror(root, s3, args.rounds, args.leaves_per_checkpoint)
            if not args.skip_start:
                bench_start(root, s3, args.leaves, None)
        finally:
            weed.release()
            weed.stop()  # its directory goes with the temporary one


if __name__ == "__main__":
    main()
