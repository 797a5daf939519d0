"""Benchmark the export package and its offline verification (issue 10; not a timed test).

    .venv/bin/python bench/export.py [--size-mb 1024] [--files 4]

One private SeaweedFS, one case holding ``--files`` generated originals of ``--size-mb`` MiB
in all. Measured in the same run:

(a) ``export_to_file`` of the case, in a child process (its peak RSS is its own; the time is
    the export alone, measured inside the child), against two baselines of the same bytes:
    (b) Python's ``zipfile`` (ZIP_STORED) of the local files, and (c) the same, streaming the
    objects from the store with the plain minio client (what an export cannot avoid: a read).
(d) ``verify_package`` (offline, in a child) against (e) ``sha256sum -c`` over the unzipped
    bag's payload manifest.

Printed: ratios baseline_time / liuhen_time (goal >= 0.8, higher is better) and the peak RSS
of each liuhen child (goal < 200 MB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_runtime, cpu_of, line, store_process
from bench.ingest import child_env, watch_peak_rss
from configs.settings import Settings
from ingest.samples import write_large_recording

RSS_GOAL = 200 * 1000 * 1000
RATIO_GOAL = 0.8
CASE = "BENCH-EXPORT/1"


def run_child(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], int]:
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=out, env=env)
        peak = watch_peak_rss(proc)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with exit {proc.returncode}: {text}")
    return json.loads(text), peak


def child(mode: str, path: Path, key: str | None) -> None:
    if mode == "export":
        from configs.settings import load_settings
        from ingest.export import export_to_file
        from ingest.runtime import runtime

        with runtime(load_settings()) as rt:
            t0, cpu0 = time.perf_counter(), time.process_time()
            result = export_to_file(rt, case_id=CASE, actor="bench", output=path)
            doc = {
                "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - cpu0,  # every thread of the child
                "size": result.size,
            }
    else:
        from integrity.package import verify_package

        t0 = time.perf_counter()
        report = verify_package(path, verifier_key=key)
        doc = {"seconds": time.perf_counter() - t0, "ok": report.ok, "files": report.files}
    sys.stdout.write(json.dumps(doc) + "\n")


def plain_zip(files: list[Path], out: Path) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for f in files:
            zf.write(f, f"plain/{f.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "KEY"))
    args = ap.parse_args()
    if args.child:
        mode, path, key = args.child
        child(mode, Path(path), key)
        return

    from ingest.intake import seal_file
    from ingest.manifest import Manifest

    with bench_runtime() as rt, tempfile.TemporaryDirectory(prefix="liuhen-bench-") as tmp:
        root = Path(tmp)
        files = []
        for i in range(args.files):
            path = root / f"clip-{i}.mp4"
            sha = write_large_recording(path, args.size_mb // args.files)
            seal_file(
                rt, path, Manifest(file_name=path.name, sha256=sha, case_ids=(CASE,)), actor="b"
            )
            files.append(path)
        rt.ledger.publish()
        settings: Settings = rt.settings
        env = child_env(settings, settings.home_dir) | {
            "LIUHEN_DATABASE__URL": settings.database_url
        }
        subprocess.run(["sync"], check=True)

        t0 = time.perf_counter()
        plain_zip(files, root / "plain.zip")
        plain = time.perf_counter() - t0
        (root / "plain.zip").unlink()

        with rt.sessions() as session:
            from storage import repository as repo

            objects = [
                (i.object_key, i.version_id) for i in repo.items_of_case(session, case_id=CASE)
            ]
        t0 = time.perf_counter()
        with zipfile.ZipFile(root / "plain-s3.zip", "w", zipfile.ZIP_STORED) as zf:
            for n, (key, version) in enumerate(objects):
                with zf.open(zipfile.ZipInfo(f"plain/{n}"), "w", force_zip64=True) as out:
                    resp = rt.store.client.get_object(rt.store.bucket, key, version_id=version)
                    try:
                        for chunk in resp.stream(1024 * 1024):
                            out.write(chunk)
                    finally:
                        resp.close()
                        resp.release_conn()
        from_store = time.perf_counter() - t0
        (root / "plain-s3.zip").unlink()

        package = root / "case.zip"
        weed = store_process(rt)
        store_cpu0 = cpu_of(weed)
        exported, export_rss = run_child(["export", str(package), "-"], env)
        store_cpu = cpu_of(weed) - store_cpu0
        key = rt.ledger.key.verifier_key
        verified, verify_rss = run_child(["verify", str(package), key], env)
        assert verified["ok"], "the package does not verify"

        bag = root / "bag"
        with zipfile.ZipFile(package) as zf:
            zf.extractall(bag)
            top = zf.namelist()[0].split("/")[0]
        subprocess.run(["sync"], check=True)
        t0 = time.perf_counter()
        subprocess.run(
            ["sha256sum", "--quiet", "-c", "manifest-sha256.txt"], cwd=bag / top, check=True
        )
        sha256sum = time.perf_counter() - t0

    mib = args.size_mb
    print(f"export of {mib} MiB of originals in {args.files} files (one case)")
    line("export (liuhen, child)", exported["seconds"], "s", f"{exported['size']:,} bytes")
    line("plain zipfile of the local files", plain, "s")
    line("plain zipfile streamed from the store", from_store, "s")
    line("ratio plain_local / export", plain / exported["seconds"], "", f"goal >= {RATIO_GOAL}")
    line(
        "ratio plain_from_store / export",
        from_store / exported["seconds"],
        "",
        f"goal >= {RATIO_GOAL}",
    )
    line("export peak RSS", export_rss / 1e6, "MB", "goal < 200")
    cpu = exported["cpu_seconds"]
    line("export CPU (liuhen child)", cpu, "s", f"{mib / cpu:,.0f} MiB per CPU-second")
    line("export CPU (the store)", store_cpu, "s", f"{mib / store_cpu:,.0f} MiB per CPU-second")
    line("offline verify (liuhen, child)", verified["seconds"], "s", f"{verified['files']} files")
    line("sha256sum -c of the unzipped payload", sha256sum, "s")
    line("ratio sha256sum / verify", sha256sum / verified["seconds"], "", f"goal >= {RATIO_GOAL}")
    line("verify peak RSS", verify_rss / 1e6, "MB", "goal < 200")


if __name__ == "__main__":
    main()
