"""Small helpers shared by the benchmarks: timing and a temporary embedded runtime."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from configs.settings import Settings
from ingest.runtime import Runtime, open_runtime
from storage.seaweed import EmbeddedS3, EmbeddedSeaweed


def timed(fn: Callable[[], object], *, repeat: int = 3) -> float:
    """Median wall time of ``repeat`` runs, in seconds."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def home_settings(
    root: Path, s3: EmbeddedS3, name: str, database_url: str | None, *, bucket: str
) -> Settings:
    """Settings of one home ``root/name`` on a running SeaweedFS: its own index (SQLite under
    it unless ``database_url``), the workers off, and the one log key of ``root``, as in any
    one deployment. A bucket holds one log: give each home its own (two homes of one key in
    one bucket are two logs under one name, and a signer refuses to fork the one published).
    """
    return Settings(
        profile="embedded",
        home=root / name,
        s3={
            "embedded": False,
            "endpoint": s3.endpoint,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "bucket": bucket,
        },
        database={"url": database_url or f"sqlite:///{root / name / 'index.sqlite3'}"},
        pipeline={"workers": 0},
        log={"key_path": root / "log.key"},
    )


@contextmanager
def bench_runtime(**overrides: object) -> Iterator[Runtime]:
    """A runtime on a private SeaweedFS and SQLite in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="liuhen-bench-") as tmp:
        root = Path(tmp)
        weed = EmbeddedSeaweed(root / "seaweed")
        s3 = weed.start()
        try:
            settings = Settings(
                profile="embedded",
                home=root / "home",
                s3={
                    "embedded": False,
                    "endpoint": s3.endpoint,
                    "access_key": s3.access_key,
                    "secret_key": s3.secret_key,
                    "bucket": "bench",
                },
                pipeline={"workers": 0},
                **overrides,  # type: ignore[arg-type]
            )
            rt = open_runtime(settings)
            try:
                yield rt
            finally:
                rt.close()
        finally:
            weed.release()
            weed.stop()


def store_process(rt: Runtime) -> Any:
    """The ``weed`` process serving ``rt``'s S3 endpoint (a psutil.Process), found by its port."""
    import psutil

    port = str(rt.settings.s3.endpoint).rsplit(":", 1)[-1].strip("/")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].endswith("weed") and f"-s3.port={port}" in cmdline:
            return proc
    raise RuntimeError(f"no weed process serves port {port}")


def cpu_of(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def line(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"{name:<44} {value:>14,.3f} {unit:<10} {note}")
