"""Benchmark sealing a big recording against a plain S3 upload of the same bytes.

    .venv/bin/python bench/ingest.py [--size-mb 1024] [--rounds 2] [--part-mb N] [--parallel N]

One private SeaweedFS and one generated file; per round, in alternating order:

(a) seal with a manifest carrying the device-computed SHA-256 (the normal device path): one
    pass that uploads and hashes;
(b) seal without a declared hash: liuhen hashes the file first (its content address), then
    uploads and hashes again;
(c) the plain minio client's ``fput_object`` of the same bytes to another key (the baseline).

Before each run the page cache's dirty pages are written out (``sync``), and one unmeasured
put warms the store up. (a) and (b) run in a child process each (a fresh index, so the bytes
are new to it), so their peak RSS is their own; the time is ``seal_file`` alone, measured
inside the child.

Printed: ``ingest/raw_put ratio`` = raw_put_time / ingest_time (goal >= 0.9, higher is
better) and the sealing process's peak RSS (goal < 200 MB). ``--part-mb``/``--parallel``
override the store's multipart settings in the children, to compare choices.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_runtime, line
from configs.settings import Settings
from ingest.samples import write_large_recording

MIB = 1024 * 1024
RSS_GOAL = 200 * 1000 * 1000
RATIO_GOAL = 0.9


def child_env(settings: Settings, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env |= {
        "LIUHEN_HOME": str(home),
        "LIUHEN_S3__EMBEDDED": "false",
        "LIUHEN_S3__ENDPOINT": settings.s3.endpoint,
        "LIUHEN_S3__ACCESS_KEY": settings.s3.access_key,
        "LIUHEN_S3__SECRET_KEY": settings.s3.secret_key.get_secret_value(),
        "LIUHEN_S3__BUCKET": settings.s3.bucket,
        "LIUHEN_PIPELINE__WORKERS": "0",
    }
    return env


def _cpu_self() -> float:
    """CPU seconds (user + system, all threads) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_weed() -> float:
    """CPU seconds the SeaweedFS server (our child) has used."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        if proc.name() == "weed":
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def run_child(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], int, float]:
    """Run this script in child mode; (its JSON answer, its peak RSS in bytes, wall seconds)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=out, env=env)
        peak = watch_peak_rss(proc)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with exit {proc.returncode}: {text}")
    return json.loads(text), peak, wall


def watch_peak_rss(proc: subprocess.Popen[bytes], every_s: float = 0.02) -> int:
    """Wait for ``proc``; return the last high-water mark of its resident set (``VmHWM``).

    Not ``ru_maxrss``, which for a child includes the parent it was forked from.
    """
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for text in status.read_text().splitlines():
                if text.startswith("VmHWM:"):
                    peak = max(peak, int(text.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(every_s)
    return peak


def child(path: Path, sha256: str | None, part_mb: int | None, parallel: int | None) -> None:
    """Seal ``path`` once in this process; print {"seconds", "cpu", "sha256", "item_id"}."""
    from configs.settings import load_settings
    from ingest.intake import seal_file
    from ingest.manifest import Manifest
    from ingest.runtime import runtime
    from storage import objects

    if part_mb is not None:
        objects.PART_SIZE = part_mb * MIB
    if parallel is not None:
        objects.PARALLEL_UPLOADS = parallel
    with runtime(load_settings()) as rt:
        manifest = Manifest(file_name=path.name, sha256=sha256)
        cpu0, t0 = _cpu_self(), time.perf_counter()
        sealed = seal_file(rt, path, manifest, actor="bench")
        seconds, cpu = time.perf_counter() - t0, _cpu_self() - cpu0
    assert not sealed.duplicate, "the child's index must be fresh"
    doc = {"seconds": seconds, "cpu": cpu, "sha256": sealed.sha256, "item_id": sealed.item_id}
    sys.stdout.write(json.dumps(doc) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the recording in MiB")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part-mb", type=int, help="override storage.objects.PART_SIZE (MiB)")
    ap.add_argument("--parallel", type=int, help="override storage.objects.PARALLEL_UPLOADS")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--sha256", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.file, args.sha256, args.part_mb, args.parallel)
        return

    overrides: list[str] = []
    if args.part_mb is not None:
        overrides += ["--part-mb", str(args.part_mb)]
    if args.parallel is not None:
        overrides += ["--parallel", str(args.parallel)]
    size = args.size_mb * MIB
    with bench_runtime() as rt, tempfile.TemporaryDirectory(prefix="liuhen-bench-") as tmp:
        root = Path(tmp)
        src = root / "DSJ_bench.mp4"
        t0 = time.perf_counter()
        expected = write_large_recording(src, args.size_mb)
        line(f"generate {args.size_mb} MiB", time.perf_counter() - t0, "s")
        from minio import Minio

        s3 = rt.settings.s3
        plain = Minio(
            s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key.get_secret_value(),
            secure=False,
        )
        times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        cpus: dict[str, list[float]] = {"a": [], "b": [], "c": []}  # client + server
        rss: dict[str, list[int]] = {"a": [], "b": []}
        runs = 0

        def seal(mode: str) -> None:
            nonlocal runs
            runs += 1
            declared = ["--sha256", expected] if mode == "a" else []
            env = child_env(rt.settings, root / f"home-{runs}")
            weed0 = _cpu_weed()
            doc, peak, wall = run_child(["--file", str(src), *declared, *overrides], env)
            weed = _cpu_weed() - weed0
            assert doc["sha256"] == expected, doc
            times[mode].append(doc["seconds"])
            cpus[mode].append(doc["cpu"] + weed)
            rss[mode].append(peak)
            line(
                f"  ({mode}) seal{' with declared SHA-256' if mode == 'a' else ', liuhen hashes'}",
                doc["seconds"],
                "s",
                f"{size / MIB / doc['seconds']:,.0f} MiB/s; CPU {doc['cpu']:.1f} s + weed "
                f"{weed:.1f} s; peak RSS {peak / 1e6:,.0f} MB; process {wall:.1f} s",
            )

        def raw(round_no: int) -> None:
            weed0, cpu0, t0 = _cpu_weed(), _cpu_self(), time.perf_counter()
            plain.fput_object(s3.bucket, f"bench/raw-{round_no}", str(src))
            seconds, cpu, weed = time.perf_counter() - t0, _cpu_self() - cpu0, _cpu_weed() - weed0
            times["c"].append(seconds)
            cpus["c"].append(cpu + weed)
            note = f"{size / MIB / seconds:,.0f} MiB/s; CPU {cpu:.1f} s + weed {weed:.1f} s"
            line("  (c) minio fput_object", seconds, "s", note)

        # Unmeasured: SeaweedFS grows the bucket's first volumes on its first big write.
        t0 = time.perf_counter()
        plain.fput_object(s3.bucket, "bench/warm-up", str(src))
        line("  warm-up put (not counted)", time.perf_counter() - t0, "s")
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}")
            order = ["a", "b", "c"] if round_no % 2 else ["c", "b", "a"]
            for mode in order:
                # Start each run with no dirty pages left over from the one before it.
                os.sync()
                if mode == "c":
                    raw(round_no)
                else:
                    seal(mode)
            # Each seal made a new version of the same content address; each put a new key.
        src.unlink()

    print("summary: ingest/raw_put ratio = raw_put_time / ingest_time (higher is better)")
    for mode, name in (("a", "declared SHA-256"), ("b", "no declared hash")):
        mean = statistics.mean(times["c"]) / statistics.mean(times[mode])
        best = min(times["c"]) / min(times[mode])
        cpu = statistics.mean(cpus["c"]) / statistics.mean(cpus[mode])
        verdict = "ok" if mean >= RATIO_GOAL else "BELOW GOAL"
        line(f"ingest/raw_put ratio, ({mode}) {name}", mean, "", f"goal >= 0.9: {verdict}")
        line("    best run against best run", best, "")
        line("    CPU seconds (client + SeaweedFS)", cpu, "", "what a saturated box would see")
        peak = max(rss[mode])
        verdict = "ok" if peak < RSS_GOAL else "ABOVE GOAL"
        note = f"goal < 200: {verdict}"
        line(f"peak RSS of the sealing process ({mode})", peak / 1e6, "MB", note)


if __name__ == "__main__":
    main()
