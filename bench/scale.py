"""Scale benchmarks (issue 12), the queue's part: what the queue itself costs, and how fast a
killed worker's job runs again.

    .venv/bin/python bench/scale.py [--jobs 2000] [--workers 4] [--private-pg]

* **Queue overhead**: ``--jobs`` no-op jobs deferred in one transaction, then claimed and
  finished by ``--workers`` worker threads of one process (``Queue.run_worker``), for both
  runners: SQLite (``ingest.queue.sqlite``) and procrastinate on PostgreSQL (the server at
  127.0.0.1:5432, a throwaway database; with ``--private-pg`` also a private PostgreSQL from
  the ``pgserver`` wheel, the embedded alternative, with its start time). Goal >= 500 jobs/s.
* **Killed worker**: a worker process takes a job that never ends and is killed (SIGKILL);
  a worker in this process picks it up. Printed in heartbeats (``queue.heartbeat_s`` = 1 s,
  ``stalled_s`` = 2 s here; the defaults are 5 s / 10 s). Goal <= 3 heartbeats.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from sqlalchemy import insert

from bench.common import line
from configs.settings import Settings
from ingest.queue import JobRun, JobState, Outcome, Queue, open_queue
from storage.db import make_engine, make_sessionmaker, migrate, transaction
from storage.tables import Item

PG: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
OVERHEAD_GOAL = 500.0
PICKUP_GOAL = 3.0
HEARTBEAT_S, STALLED_S = 1.0, 2.0


def settings(url: str, home: Path) -> Settings:
    return Settings(
        profile="embedded",
        home=home,
        database={"url": url},
        s3={"embedded": False},
        pipeline={"workers": 1},
        queue={"heartbeat_s": HEARTBEAT_S, "stalled_s": STALLED_S, "poll_s": 0.2},
    )


@contextmanager
def pg_database(admin: dict[str, Any], base: str) -> Iterator[str]:
    name = f"liuhen_bench_{secrets.token_hex(4)}"
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def noop(_run: JobRun) -> Outcome:
    return Outcome.DONE


def forever(_run: JobRun) -> Outcome:
    time.sleep(3600)
    return Outcome.DONE


def seed(url: str, home: Path, count: int, *, defer: bool = True) -> tuple[Queue, list[str]]:
    """A migrated index with ``count`` bare item rows (and their jobs, deferred in one go)."""
    engine = make_engine(url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    ids = [f"B{secrets.token_hex(8)}" for _ in range(count)]
    rows = [
        {
            "id": i, "sha256": secrets.token_hex(32), "size": 1, "media_type": "x/bench",
            "object_key": i, "version_id": "v", "retain_until": now, "status": "sealed",
            "problems": [], "received_at": now, "manifest": {}, "log_index": n,
        }
        for n, i in enumerate(ids)
    ]  # fmt: skip
    queue = open_queue(settings(url, home), engine, sessions, noop)
    with transaction(sessions) as session:
        session.execute(insert(Item), rows)
    if defer:
        defer_all(queue, ids)
    return queue, ids


def defer_all(queue: Queue, ids: list[str]) -> None:
    sessions = queue.sessions  # type: ignore[attr-defined]
    with transaction(sessions) as session:
        for i in ids:
            queue.defer(session, i)
    if sessions.kw["bind"].dialect.name == "postgresql":
        # What autovacuum does soon after such a burst (revision 0005 makes it eager): the
        # planner's row counts for the burst, without which fetches degrade to O(pending).
        with sessions.kw["bind"].connect() as conn:
            conn.exec_driver_sql("ANALYZE procrastinate_jobs")


def worker_process(url: str, home: Path, handler: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    args = [sys.executable, __file__, "--worker", url, "--handler", handler, "--home", str(home)]
    return subprocess.Popen(args, env=env)


def overhead(name: str, url: str, home: Path, jobs: int, workers: int, *, procs: bool) -> float:
    """Workers up and idle first; then ``jobs`` jobs deferred in one transaction; the clock
    runs from that commit until none is left."""
    queue, ids = seed(url, home, jobs, defer=False)
    stop = threading.Event()
    children: list[subprocess.Popen[bytes]] = []
    runner = None
    if procs:
        children = [worker_process(url, home, "noop") for _ in range(workers)]
        time.sleep(8)  # interpreters start and register
    else:
        kwargs = {"concurrency": workers, "stop": stop}
        runner = threading.Thread(target=queue.run_worker, kwargs=kwargs)
        runner.start()
        time.sleep(2)
    cpu0 = cpu_seconds(children, url)
    defer_all(queue, ids)
    t0 = time.perf_counter()
    while queue.depth():
        time.sleep(0.25)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(children, url) - cpu0
    stop.set()
    if runner is not None:
        runner.join()
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(60)
    rate = jobs / elapsed
    verdict = "ok" if rate >= OVERHEAD_GOAL else "BELOW GOAL"
    how = f"{workers} processes" if procs else f"1 process, {workers} threads"
    line(
        f"queue overhead, {name}",
        rate,
        "jobs/s",
        f"{jobs} jobs, {how}; goal >= {OVERHEAD_GOAL:.0f} ({verdict})",
    )
    per_job = cpu / jobs
    cores = os.cpu_count() or 1
    line(
        "  CPU per job (workers + database)",
        per_job * 1000,
        "ms",
        f"=> {cores} idle cores: {cores / per_job:,.0f} jobs/s",
    )
    return rate


def cpu_seconds(children: list[subprocess.Popen[bytes]], url: str) -> float:
    """CPU used so far by the workers (this process, or the child processes) and by the
    PostgreSQL backends serving this benchmark's database."""
    import psutil

    total = 0.0
    procs = [psutil.Process(c.pid) for c in children] if children else [psutil.Process()]
    for proc in procs:
        t = proc.cpu_times()
        total += t.user + t.system
    if url.startswith("postgresql"):
        dbname = url.rsplit("/", 1)[1].split("?")[0]
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if cmd.startswith("postgres:") and f" {dbname} " in f"{cmd} ":
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = proc.cpu_times()
                    total += t.user + t.system
    return total


def pickup(name: str, url: str, home: Path) -> float:
    """Seconds from SIGKILL of the worker holding a job to that job done by another."""
    queue, (item_id,) = seed(url, home, 1)
    victim = worker_process(url, home, "forever")
    deadline = time.monotonic() + 60
    while (job := queue.job(item_id)) is None or job.state is not JobState.RUNNING:
        assert time.monotonic() < deadline, "the victim never took the job"
        time.sleep(0.02)
    stop = threading.Event()
    rescuer = threading.Thread(target=queue.run_worker, kwargs={"concurrency": 1, "stop": stop})
    rescuer.start()
    time.sleep(HEARTBEAT_S * 1.5)  # the rescuer is up and beating; the victim holds the job
    victim.send_signal(signal.SIGKILL)
    t0 = time.perf_counter()
    victim.wait()
    while (job := queue.job(item_id)) is None or job.state is not JobState.DONE:
        assert time.perf_counter() - t0 < 60, "the job was never picked up again"
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    rescuer.join()
    beats = elapsed / HEARTBEAT_S
    verdict = "ok" if beats <= PICKUP_GOAL else "ABOVE GOAL"
    line(
        f"killed worker's job done again, {name}",
        beats,
        "heartbeats",
        f"{elapsed:.2f} s; goal <= {PICKUP_GOAL:.0f} ({verdict})",
    )
    return beats


def work(url: str, home: Path, handler: str) -> None:
    """A worker process: no-op jobs, or jobs that never end (to be killed holding one)."""
    engine = make_engine(url)
    queue = open_queue(
        settings(url, home),
        engine,
        make_sessionmaker(engine),
        noop if handler == "noop" else forever,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    queue.run_worker(concurrency=1, stop=stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--private-pg", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--handler", default="noop", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work(args.worker, args.home, args.handler)
        return
    base = f"postgresql+psycopg://postgres@{PG['host']}:{PG['port']}"
    with tempfile.TemporaryDirectory(prefix="liuhen-bench-") as tmp:
        root = Path(tmp)
        n, w = args.jobs, args.workers
        for procs in (False, True):
            overhead(
                "SQLite runner", f"sqlite:///{root / f'o{procs}.sqlite3'}", root, n, w, procs=procs
            )
            with pg_database(PG, base) as url:
                overhead("procrastinate, PostgreSQL", url, root, n, w, procs=procs)
        pickup("SQLite runner", f"sqlite:///{root / 'p.sqlite3'}", root)
        with pg_database(PG, base) as url:
            pickup("procrastinate, PostgreSQL", url, root)
        if args.private_pg:
            import pgserver  # the embedded alternative: a private PostgreSQL per home

            t0 = time.perf_counter()
            server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
            line(
                "private PostgreSQL (pgserver) start",
                time.perf_counter() - t0,
                "s",
                "first start, initdb included",
            )
            try:
                uri = server.get_uri()
                host = uri.split("host=")[1]
                admin = {"host": host, "user": "postgres", "dbname": "postgres"}
                private = f"postgresql+psycopg://postgres@/{{}}?host={host}"
                with pg_database(admin, "") as url:
                    dbname = url.rsplit("/", 1)[1]
                    overhead(
                        "procrastinate, private PostgreSQL",
                        private.format(dbname),
                        root,
                        n,
                        w,
                        procs=False,
                    )
                rss = _rss_of_postgres(root / "pgdata")
                line("private PostgreSQL resident memory", rss / 1e6, "MB", "all its processes")
            finally:
                server.cleanup()


def _rss_of_postgres(data_dir: Path) -> int:
    import psutil

    total = 0
    for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] and "postgres" in proc.info["name"] and str(data_dir) in cmd:
            total += proc.info["memory_info"].rss
    return total


if __name__ == "__main__":
    main()
