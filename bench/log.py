"""Benchmark the tamper-evident log. Prints figures and ratios against baselines measured in
the same run (absolute times on shared machines mean little).

    .venv/bin/python bench/log.py [--leaves 20000] [--tree 1000000] [--objects 40]

1. Leaves appended per second (goal >= 20,000/s), beside the raw SHA-256 rate over the same
   leaf bytes: in memory (canonical JSON + RFC 9162 leaf hash + tree append), and through the
   index (sequencer row + leaf rows on SQLite), one leaf per transaction and in batches.
2. Inclusion and consistency proof generation + verification at 1,000,000 leaves (goal < 1 ms).
3. ``verify --all`` throughput against a plain S3 GET + hashlib pass over the same objects
   (goal >= 0.8).
4. ``verify --all`` of a log of ``--tile-leaves`` leaves with its mirrored full tiles checked
   against the same run without that check: what reading every ``log/tile/…`` costs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_runtime, line
from integrity.leaves import canonical_json, custody_leaf
from integrity.merkle import (
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from storage.db import transaction


def _leaf_dict(i: int) -> dict[str, Any]:
    return custody_leaf(
        item_id=f"01M8FAYGCRPK862MQB0SW{i:05d}",
        item_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        action="view",
        actor="officer:110123",
        at=datetime(2026, 11, 27, 8, 0, i % 60, tzinfo=UTC),
        reason="review of a disputed enforcement action",
        prev=hashlib.sha256(str(i - 1).encode()).hexdigest(),
        details={"role": "original"},
    )


def bench_append(n: int) -> None:
    dicts = [_leaf_dict(i) for i in range(n)]
    datas = [canonical_json(d) for d in dicts]
    size = statistics.mean(len(d) for d in datas)

    t0 = time.perf_counter()
    for data in datas:
        hashlib.sha256(b"\x00" + data).digest()
    raw = n / (time.perf_counter() - t0)
    line("raw SHA-256 of the same leaves", raw, "leaves/s", f"(mean leaf {size:.0f} B)")

    tree = MerkleTree()
    t0 = time.perf_counter()
    for d in dicts:
        tree.append(leaf_hash(canonical_json(d)))
    mem = n / (time.perf_counter() - t0)
    line("append in memory (JSON+hash+tree)", mem, "leaves/s", f"ratio to raw {mem / raw:.3f}")

    with bench_runtime() as rt:
        ledger = rt.ledger
        now = datetime.now(UTC)
        k = min(n, 2000)
        t0 = time.perf_counter()
        for leaf in dicts[:k]:
            with transaction(rt.sessions) as s:
                ledger.append(s, kind="custody", item_id=None, build=partial(dict, leaf), now=now)
        single = k / (time.perf_counter() - t0)
        line(
            "append via index, 1 leaf/transaction", single, "leaves/s", f"ratio {single / raw:.3f}"
        )

        batch = 1000
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            with transaction(rt.sessions) as s:
                ledger.append_many(
                    s, [("custody", None, d) for d in dicts[start : start + batch]], now=now
                )
        many = n / (time.perf_counter() - t0)
        line(
            f"append via index, {batch} leaves/transaction",
            many,
            "leaves/s",
            f"ratio {many / raw:.3f}  goal >= 20,000/s",
        )
        t0 = time.perf_counter()
        signed = ledger.publish()
        line(
            "sign checkpoint over all of them",
            time.perf_counter() - t0,
            "s",
            f"(tree size {signed.checkpoint.size})",
        )


def bench_proofs(size: int, samples: int = 2000) -> None:
    t0 = time.perf_counter()
    tree = MerkleTree.from_leaf_hashes(os.urandom(32) for _ in range(size))
    line(f"build tree of {size:,} leaves", time.perf_counter() - t0, "s")
    root = tree.root()
    rng = random.Random(7)
    gen, ver = [], []
    for _ in range(samples):
        i = rng.randrange(size)
        t0 = time.perf_counter()
        proof = tree.inclusion_proof(i, size)
        t1 = time.perf_counter()
        verify_inclusion(leaf_hash=tree.leaf(i), index=i, size=size, proof=proof, root=root)
        gen.append(t1 - t0)
        ver.append(time.perf_counter() - t1)
    line("inclusion proof: generate (median)", statistics.median(gen) * 1e3, "ms", "goal < 1 ms")
    line("inclusion proof: verify (median)", statistics.median(ver) * 1e3, "ms")
    gen, ver = [], []
    for _ in range(samples):
        m = rng.randrange(1, size)
        root1 = tree.root(m)
        t0 = time.perf_counter()
        proof = tree.consistency_proof(m, size)
        t1 = time.perf_counter()
        verify_consistency(size1=m, size2=size, proof=proof, root1=root1, root2=root)
        gen.append(t1 - t0)
        ver.append(time.perf_counter() - t1)
    line("consistency proof: generate (median)", statistics.median(gen) * 1e3, "ms", "goal < 1 ms")
    line("consistency proof: verify (median)", statistics.median(ver) * 1e3, "ms")


def bench_verify(objects: int, mib: int) -> None:
    from ingest.intake import seal_file
    from ingest.manifest import Manifest
    from ingest.verify import verify_all

    with bench_runtime() as rt, tempfile.TemporaryDirectory() as tmp:
        block = os.urandom(1024 * 1024)
        for i in range(objects):
            path = Path(tmp) / f"clip-{i}.bin"
            with path.open("wb") as f:
                f.write(i.to_bytes(8, "big"))
                for _ in range(mib):
                    f.write(block)
            seal_file(rt, path, Manifest(case_ids=("BENCH-1",)), actor="bench")
            path.unlink()
        rt.ledger.publish()
        with rt.sessions() as s:
            from storage.tables import Item

            rows = [(i.object_key, i.version_id) for i in s.query(Item).all()]
        total = objects * mib

        def raw_pass() -> None:
            for key, version in rows:
                h = hashlib.sha256()
                for chunk in rt.store.iter_bytes(key, version):
                    h.update(chunk)

        for round_ in range(2):  # alternate order: the machine is shared and noisy
            if round_ % 2 == 0:
                t_raw = _time(raw_pass)
                t_ver = _time(lambda: verify_all(rt, actor="bench"))
            else:
                t_ver = _time(lambda: verify_all(rt, actor="bench"))
                t_raw = _time(raw_pass)
            line(f"S3 GET + hashlib ({objects} x {mib} MiB)", total / t_raw, "MiB/s")
            line(
                "liuhen verify --all",
                total / t_ver,
                "MiB/s",
                f"ratio {t_raw / t_ver:.3f}  goal >= 0.8",
            )


def bench_verify_tiles(leaves: int) -> None:
    from ingest.verify import tiles, verify_all

    with bench_runtime() as rt:
        now = datetime.now(UTC)
        for start in range(0, leaves, 1000):
            batch = [_leaf_dict(i) for i in range(start, min(start + 1000, leaves))]
            with transaction(rt.sessions) as s:
                rt.ledger.append_many(s, [("custody", None, d) for d in batch], now=now)
        rt.ledger.publish()
        checked = tiles.check_mirrored_tiles
        runs: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(4):  # alternate: the machine is shared and noisy
            with_tiles = round_ % 2 == 0
            tiles.check_mirrored_tiles = checked if with_tiles else (lambda *_: None)
            try:
                runs[with_tiles].append(_time(lambda: verify_all(rt, actor="bench")))
            finally:
                tiles.check_mirrored_tiles = checked
        full = (leaves // 256) + (leaves // 65536)
        on, off = statistics.median(runs[True]), statistics.median(runs[False])
        line(f"verify --all, {leaves:,} leaves, tiles not read", off, "s")
        line(
            f"verify --all, {leaves:,} leaves, {full} mirrored tiles read",
            on,
            "s",
            f"ratio {on / off:.3f}",
        )


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--leaves", type=int, default=20000)
    ap.add_argument("--tree", type=int, default=1_000_000)
    ap.add_argument("--objects", type=int, default=40)
    ap.add_argument("--mib", type=int, default=8, help="size of each object for verify")
    ap.add_argument("--tile-leaves", type=int, default=100_000, help="log size for part 4")
    ap.add_argument("--only-tiles", action="store_true", help="part 4 alone")
    args = ap.parse_args()
    if not args.only_tiles:
        bench_append(args.leaves)
        bench_proofs(args.tree)
        bench_verify(args.objects, args.mib)
    bench_verify_tiles(args.tile_leaves)


if __name__ == "__main__":
    main()
