"""Scale benchmarks (issue 12): sealing through the API against plain ``put_object``, what
the queue itself costs, and how fast a killed worker's job runs again.

    .venv/bin/python bench/scale.py [--photos 1000] [--clients 50] [--serve 1] [--api-postgres]
                                    [--checkpoint-ms MS] [--threads N] [--skip-api]
                                    [--jobs 2000] [--workers 4] [--private-pg] [--skip-queue]

* **API sealing** (skip with ``--skip-api``): a real ``liuhen serve`` subprocess on a free
  loopback port, on a private SeaweedFS and SQLite in a temporary directory
  (``pipeline.workers`` = 0, so no transcoding competes), an officer's bearer token from
  ``liuhen user add``. ``--photos`` distinct ~100 KB JPEG-like files are posted to
  ``POST /v1/items`` by ``--clients`` concurrent clients (threads, one httpx client each); a
  photo counts only on 201 with a receipt. The baseline, in the same run: as many threads
  doing minio ``put_object`` of the same bytes (new keys) to the same SeaweedFS and bucket.
  Printed: photos/s of each, their ratio (goal >= 0.7), errors, p50/p99 latency, and the CPU
  time ``liuhen serve`` spent per sealed photo. Between the two, the same clients hammer a
  bare relay (``bench/relay.py``: one uvicorn process that parses the same form, hashes and
  PUTs, nothing else; then one taking the raw body): what one more HTTP hop through Python
  costs on this machine, the ceiling of any upload API of this shape here.
  ``--checkpoint-ms`` sets the server's ``log.checkpoint_interval_ms`` and ``--threads`` its
  ``api.threads`` (default: its own);
  ``--serve N`` starts N serving processes on the one index (clients spread evenly over
  them), ``--api-postgres`` puts that index in a throwaway PostgreSQL database (the server at
  127.0.0.1:5432) instead of SQLite. Also printed: the CPU the store and this process (the
  clients) used meanwhile, to show what the machine had left.

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
import io
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
from storage.seaweed import EmbeddedS3, EmbeddedSeaweed, pick_ports
from storage.tables import Item

PG: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
OVERHEAD_GOAL = 500.0
PICKUP_GOAL = 3.0
HEARTBEAT_S, STALLED_S = 1.0, 2.0
SEAL_GOAL = 0.7
PHOTO_BYTES = 100 * 1024
BUCKET = "bench"


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
            conn.commit()  # statistics are transactional: a rolled-back ANALYZE never happened


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


# --- API sealing vs plain put_object ---------------------------------------------------------


def photos(count: int) -> list[bytes]:
    """``count`` distinct ~100 KB JPEG-like files (a JPEG/JFIF start, then random bytes)."""
    return [b"\xff\xd8\xff\xe0" + os.urandom(PHOTO_BYTES - 4) for _ in range(count)]


@dataclass(frozen=True)
class Run:
    done: int
    errors: int
    elapsed: float
    latencies: list[float]
    first_error: str | None

    @property
    def rate(self) -> float:
        return self.done / self.elapsed

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]


def hammer(count: int, clients: int, make: Callable[[], Callable[[int], None]]) -> Run:
    """``count`` calls spread over ``clients`` threads; ``make()`` runs once in each thread and
    returns its call (which raises to count an error). The clock runs from when every thread is
    ready until the last call returns."""
    lock = threading.Lock()
    next_index = iter(range(count))
    latencies: list[float] = []
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        try:
            call = make()
        except BaseException:
            ready.abort()  # the others (and the caller) get BrokenBarrierError, not a hang
            raise
        ready.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                call(i)
            except Exception as e:  # counted and reported, not hidden
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            took = time.perf_counter() - t0
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return Run(len(latencies), len(errors), elapsed, latencies, errors[0] if errors else None)


def serve_env(root: Path, s3: EmbeddedS3, tuned: dict[str, str], db_url: str) -> dict[str, str]:
    """The environment of ``liuhen`` subprocesses: this run's home, index and store, and the
    settings the options tune (``tuned``: environment names to values)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")} | tuned
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env | {
        "LIUHEN_HOME": str(root / "home"),
        "LIUHEN_DATABASE__URL": db_url,
        "LIUHEN_S3__EMBEDDED": "false",
        "LIUHEN_S3__ENDPOINT": s3.endpoint,
        "LIUHEN_S3__ACCESS_KEY": s3.access_key,
        "LIUHEN_S3__SECRET_KEY": s3.secret_key,
        "LIUHEN_S3__BUCKET": BUCKET,
        "LIUHEN_PIPELINE__WORKERS": "0",
    }


@contextmanager
def liuhen_serve(
    root: Path, s3: EmbeddedS3, tuned: dict[str, str], db_url: str, processes: int
) -> Iterator[tuple[list[str], str, list[int]]]:
    """``processes`` ``liuhen serve`` subprocesses on one index and an officer's token:
    yields (base URLs, token, PIDs)."""
    liuhen = Path(sys.executable).parent / "liuhen"
    env = serve_env(root, s3, tuned, db_url)
    officer = ["user", "add", "bench-officer", "--role", "officer", "--unit", "U-B", "--json"]
    add = subprocess.run(
        [str(liuhen), *officer],
        env=env, cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if add.returncode != 0:
        raise RuntimeError(f"liuhen user add failed ({add.returncode}): {add.stderr[-2000:]}")
    token = str(json.loads(add.stdout)["token"])
    with contextlib.ExitStack() as stack:
        serve = [str(liuhen), "serve", "--host", "127.0.0.1", "--port"]
        served = [
            stack.enter_context(_serving([*serve, str(port)], env, root, port, f"serve-{n}"))
            for n, port in enumerate(pick_ports(processes))
        ]
        yield [base for base, _ in served], token, [pid for _, pid in served]


@contextmanager
def _serving(
    command: list[str], env: dict[str, str], root: Path, port: int, name: str
) -> Iterator[tuple[str, int]]:
    """``command`` serving HTTP on ``port`` until the block ends: yields (base URL, PID) once
    its ``/healthz`` answers."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    log_path = root / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            command, env=env, cwd=root, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} never answered: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            yield base, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def api_seal(
    root: Path, count: int, clients: int, tuned: dict[str, str], db_url: str, processes: int
) -> float:
    """Photos/s sealed through the API over photos/s of plain ``put_object``, same run."""
    import httpx
    import psutil
    import urllib3
    from minio import Minio

    data = photos(count)
    weed = EmbeddedSeaweed(root / "seaweed")
    s3 = weed.start()
    try:
        # serve makes the Object Lock bucket the baseline writes to as well
        with liuhen_serve(root, s3, tuned, db_url, processes) as (bases, token, pids):
            timeout = urllib3.Timeout(connect=5, read=120)
            http = urllib3.PoolManager(maxsize=clients, timeout=timeout)
            store = Minio(
                s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                secure=False, http_client=http,
            )  # fmt: skip
            run_id = secrets.token_hex(4)

            def put_maker() -> Callable[[int], None]:
                def put(i: int) -> None:
                    body = data[i]
                    key = f"baseline/{run_id}/{i}.jpg"
                    store.put_object(BUCKET, key, io.BytesIO(body), len(body), "image/jpeg")

                return put

            clients_made: list[httpx.Client] = []
            lock = threading.Lock()

            def seal_maker() -> Callable[[int], None]:
                with lock:  # clients spread evenly over the serving processes
                    base = bases[len(clients_made) % len(bases)]
                    client = httpx.Client(
                        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
                    )
                    clients_made.append(client)

                def seal(i: int) -> None:
                    name = f"photo-{run_id}-{i:06d}.jpg"
                    manifest = json.dumps({"case_ids": ["BENCH-1"], "file_name": name})
                    r = client.post(
                        "/v1/items",
                        files={"file": (name, data[i], "image/jpeg")},
                        data={"manifest": manifest},
                    )
                    if r.status_code != 201:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                    if "receipt" not in r.json():
                        raise RuntimeError(f"201 without a receipt: {r.text[:300]}")

                return seal

            plain = hammer(count, clients, put_maker)
            relays = {
                app: _relay(root, s3, app, data, clients, run_id) for app in ("form_app", "raw_app")
            }
            try:
                servers = [psutil.Process(pid) for pid in pids]
                others = {"store": psutil.Process(weed.status().pid), "clients": psutil.Process()}
                cpu0 = _cpu(servers)
                others0 = {name: _cpu([p]) for name, p in others.items()}
                sealed = hammer(count, clients, seal_maker)
                serve_cpu = _cpu(servers) - cpu0
                others_cpu = {name: _cpu([p]) - others0[name] for name, p in others.items()}
                stages = _stages(bases)
            finally:
                for c in clients_made:
                    c.close()
    finally:
        weed.release()
        weed.stop()
    runs: list[tuple[str, Run, float | None]] = [("put_object (baseline)", plain, None)]
    runs += [(f"bare relay, {RELAYS[app]}", run, cpu) for app, (run, cpu) in relays.items()]
    for name, run, cpu in [*runs, ("sealed through the API", sealed, serve_cpu)]:
        its_cpu = "" if cpu is None else f"; {cpu / max(run.done, 1) * 1000:.2f} ms of its CPU each"
        line(
            f"{name}, {clients} clients",
            run.rate,
            "photos/s",
            f"{run.done}/{count} of 100 KB, {run.errors} errors; "
            f"p50 {run.percentile(50) * 1000:.0f} ms, p99 {run.percentile(99) * 1000:.0f} ms"
            + its_cpu,
        )
        if run.first_error:
            print(f"  first error: {run.first_error}")
    per_photo = serve_cpu / max(sealed.done, 1)
    index = "PostgreSQL" if db_url.startswith("postgresql") else "SQLite"
    line(
        "  CPU of liuhen serve per sealed photo",
        per_photo * 1000,
        "ms",
        f"{serve_cpu / sealed.elapsed:.2f} cores busy while sealing "
        f"({processes} process{'es' if processes > 1 else ''}, {index}); meanwhile "
        + ", ".join(f"{k} {v / sealed.elapsed:.2f}" for k, v in others_cpu.items())
        + " cores",
    )
    line(
        "  where a seal's time went (mean of all)",
        stages.get("seal", 0) * 1000,
        "ms",
        ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in stages.items() if k != "seal"),
    )
    ratio = sealed.rate / plain.rate
    verdict = "ok" if ratio >= SEAL_GOAL and not sealed.errors else "BELOW GOAL"
    line("  API seal / put_object", ratio, "x", f"goal >= {SEAL_GOAL} ({verdict})")
    form_relay = relays["form_app"][0].rate
    for app, (run, _cpu_s) in relays.items():
        line(
            f"  bare relay ({RELAYS[app]}) / put_object",
            run.rate / plain.rate,
            "x",
            "the ceiling of one Python process that only parses, hashes and PUTs",
        )
    line("  API seal / bare relay (FastAPI form)", sealed.rate / form_relay, "x", "")
    return ratio


RELAYS = {"form_app": "FastAPI form", "raw_app": "raw ASGI body"}


def _relay(
    root: Path, s3: EmbeddedS3, app: str, data: list[bytes], clients: int, run_id: str
) -> tuple[Run, float]:
    """The ceiling of any Python upload API here: ``bench/relay.py``'s ``app`` (parse, hash,
    PUT; nothing else) in one uvicorn process, hammered like the API. (run, its CPU seconds)"""
    import httpx
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")} | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "RELAY_ENDPOINT": s3.endpoint,
        "RELAY_ACCESS_KEY": s3.access_key,
        "RELAY_SECRET_KEY": s3.secret_key,
        "RELAY_BUCKET": BUCKET,
    }
    (port,) = pick_ports(1)
    uvicorn = [sys.executable, "-m", "uvicorn", f"bench.relay:{app}", "--port", str(port)]
    quiet = ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    made: list[httpx.Client] = []
    with _serving(uvicorn + quiet, env, root, port, app) as (base, pid):

        def relay_maker() -> Callable[[int], None]:
            client = httpx.Client(base_url=base, timeout=120)
            made.append(client)

            def send(i: int) -> None:
                if app == "raw_app":
                    r = client.post("/v1/items", content=data[i])
                else:
                    manifest = json.dumps({"case_ids": ["BENCH-1"], "file_name": f"{i}.jpg"})
                    files = {"file": (f"photo-{run_id}-{i:06d}.jpg", data[i], "image/jpeg")}
                    r = client.post("/v1/items", files=files, data={"manifest": manifest})
                if r.status_code != 201:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")

            return send

        proc = psutil.Process(pid)
        cpu0 = _cpu([proc])
        try:
            run = hammer(len(data), clients, relay_maker)
        finally:
            for client in made:
                client.close()
        return run, _cpu([proc]) - cpu0


def _stages(bases: list[str]) -> dict[str, float]:
    """Mean seconds per stage of the serving processes (``liuhen_stage_duration_seconds``
    from their ``/metrics``): the seal, its transaction, the receipt's wait, a checkpoint."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for base in bases:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            if family.name != "liuhen_stage_duration_seconds":
                continue
            for sample in family.samples:
                stage = sample.labels.get("stage", "")
                if sample.name.endswith("_sum"):
                    sums[stage] = sums.get(stage, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    counts[stage] = counts.get(stage, 0.0) + sample.value
    wanted = ("seal", "seal_transaction", "receipt_wait", "checkpoint")
    return {k: sums[k] / counts[k] for k in wanted if counts.get(k)}


def _cpu(procs: list[Any]) -> float:
    """User + system CPU seconds of ``procs`` so far."""
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in procs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--private-pg", action="store_true")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--checkpoint-ms", type=int)
    parser.add_argument("--threads", type=int, help="the server's api.threads (default: its own)")
    parser.add_argument("--serve", type=int, default=1, help="liuhen serve processes")
    parser.add_argument("--api-postgres", action="store_true", help="index on PostgreSQL")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-queue", action="store_true")
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
        if not args.skip_api:
            with contextlib.ExitStack() as stack:
                api = root / "api"
                api.mkdir()
                db_url = (
                    stack.enter_context(pg_database(PG, base))
                    if args.api_postgres
                    else f"sqlite:///{api / 'api.sqlite3'}"
                )
                tuned = {
                    name: str(value)
                    for name, value in (
                        ("LIUHEN_LOG__CHECKPOINT_INTERVAL_MS", args.checkpoint_ms),
                        ("LIUHEN_API__THREADS", args.threads),
                    )
                    if value is not None
                }
                api_seal(api, args.photos, args.clients, tuned, db_url, args.serve)
        if args.skip_queue:
            return
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
