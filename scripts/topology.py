"""A production topology on one machine, every part its own process, all on loopback:

    SeaweedFS  one master, two volume servers (replication 001: every write on both), a filer,
               an S3 gateway with an identities file (never anonymous; Object Lock works)
    PostgreSQL a throwaway database on a running server (default 127.0.0.1:5432)
    liuhen     N ``liuhen serve`` (API only) and M ``liuhen worker`` processes (each with
               its ``/metrics`` on its port), production profile
               (``configs/production.toml``), generated secrets and log key

Usage (state, data and logs under DIR)::

    python scripts/topology.py start DIR [--api 2] [--workers 3] [--set LIUHEN_X=value ...]
    python scripts/topology.py status DIR [--json]
    python scripts/topology.py env DIR        # export lines: run liuhen against it
    python scripts/topology.py stop DIR       # kill everything, drop the database

``tests/e2e/test_topology.py`` drives it with faults (``kill`` / ``restart`` one process).
The caller's own ``LIUHEN_*`` variables are not handed to the processes (a shell that ran
``env`` of another topology would mix two deployments): ``--set`` gives them settings.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ROOT / "configs" / "production.toml"
BUCKET = "liuhen-evidence"
ORIGIN = "topology.liuhen.test/log"
START_TIMEOUT_S = 90.0
RESTART_SETTLE_S = 3.0  # a restarted process without a port must stay up this long


@dataclass
class Proc:
    name: str
    args: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    """Added to the liuhen environment (liuhen processes only)."""
    liuhen: bool = False
    pid: int | None = None


@dataclass
class State:
    root: str
    ports: dict[str, int]
    access_key: str
    secret_key: str
    database: str
    database_url: str
    pg_admin: dict[str, Any]
    procs: dict[str, Proc]
    settings: dict[str, str]

    def save(self) -> None:
        path = Path(self.root) / "topology.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, root: Path) -> State:
        doc = json.loads((root / "topology.json").read_text())
        doc["procs"] = {k: Proc(**v) for k, v in doc["procs"].items()}
        return cls(**doc)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # our child: a zombie is dead
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    from storage.seaweed import pick_ports  # also checks port + 10000 (gRPC) is free

    return pick_ports(n)


class Topology:
    """Start, inspect, break and stop the processes of one topology under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.state = State.load(self.root)

    # --- making one ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        api: int = 2,
        workers: int = 3,
        pg_host: str = "127.0.0.1",
        pg_port: int = 5432,
        settings: dict[str, str] | None = None,
    ) -> Topology:
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        if (root / "topology.json").exists():
            raise SystemExit(f"{root} already holds a topology: stop it first")
        if (root / "topology.stopped.json").exists():
            # Its database was dropped: its volumes hold objects no index knows. Not reused.
            raise SystemExit(f"{root} holds a stopped topology: remove it or use another DIR")
        names = ["master", "volume-1", "volume-2", "filer", "s3"]
        names += [f"api-{i}" for i in range(1, api + 1)]
        names += [f"worker-{i}" for i in range(1, workers + 1)]  # their /metrics
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        access, secret = "liuhen-" + secrets.token_hex(4), secrets.token_urlsafe(32)
        (root / "identities.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "liuhen",
                            "credentials": [{"accessKey": access, "secretKey": secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        (root / "identities.json").chmod(0o600)
        database = f"liuhen_topology_{secrets.token_hex(4)}"
        admin: dict[str, Any] = {
            "host": pg_host,
            "port": pg_port,
            "user": "postgres",
            "dbname": "postgres",
        }
        procs = _seaweed_procs(root, ports) + _liuhen_procs(root, ports, api, workers)
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        key, made_key = root / "keys" / "log.key", False
        try:
            _write_log_key(key)  # refuses an existing key, which is then not ours to remove
            made_key = True
            state = State(
                root=str(root),
                ports=ports,
                access_key=access,
                secret_key=secret,
                database=database,
                database_url=f"postgresql+psycopg://postgres@{pg_host}:{pg_port}/{database}",
                pg_admin=admin,
                procs={p.name: p for p in procs},
                settings=dict(settings or {}),
            )
            state.save()
        except BaseException:  # nothing half made is left: a second start can go ahead
            _drop_database(admin, database)
            if made_key:
                key.unlink(missing_ok=True)
            raise
        return cls(root)

    def env(self) -> dict[str, str]:
        """What a liuhen process of this deployment gets (besides the caller's environment)."""
        s = self.state
        return {
            "LIUHEN_CONFIG": str(PRODUCTION),
            "LIUHEN_DATABASE__URL": s.database_url,
            "LIUHEN_S3__ENDPOINT": f"127.0.0.1:{s.ports['s3']}",
            "LIUHEN_S3__SECURE": "false",  # loopback; production TLS terminates elsewhere
            "LIUHEN_S3__ACCESS_KEY": s.access_key,
            "LIUHEN_S3__SECRET_KEY": s.secret_key,
            "LIUHEN_S3__BUCKET": BUCKET,
            "LIUHEN_LOG__ORIGIN": ORIGIN,
            "LIUHEN_LOG__KEY_PATH": str(self.root / "keys" / "log.key"),
            "LIUHEN_HOME": str(self.root / "homes" / "cli"),
            **s.settings,
        }

    def _spawn(self, proc: Proc) -> None:
        (self.root / "logs").mkdir(exist_ok=True)
        log = (self.root / "logs" / f"{proc.name}.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
        if proc.liuhen:
            env.update(self.env())
            env.update(proc.env)
            env.setdefault("PYTHONPATH", str(ROOT))
        Path(proc.cwd).mkdir(parents=True, exist_ok=True)
        child = subprocess.Popen(
            proc.args,
            cwd=proc.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this script; stopped by ``stop``
        )
        log.close()
        proc.pid = child.pid
        self.state.save()

    def start(self) -> None:
        procs = self.state.procs
        self._spawn(procs["master"])
        self._wait_listening("master")
        for name in ("volume-1", "volume-2"):
            self._spawn(procs[name])
        for name in ("volume-1", "volume-2"):
            self._wait_listening(name)
        self._spawn(procs["filer"])
        self._wait_listening("filer")
        self._spawn(procs["s3"])
        self.wait_store()
        for proc in procs.values():
            if proc.liuhen:
                self._spawn(proc)
        self.wait_liuhen()

    def wait_store(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until a canary object round-trips through the gateway (both replicas written)."""
        from storage.objects import ObjectStore

        store = ObjectStore(
            endpoint=f"127.0.0.1:{self.state.ports['s3']}",
            access_key=self.state.access_key,
            secret_key=self.state.secret_key,
            bucket="liuhen-canary",
            secure=False,
        )
        deadline = time.monotonic() + timeout_s
        error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if not store.client.bucket_exists("liuhen-canary"):
                    store.client.make_bucket("liuhen-canary")
                data = secrets.token_bytes(64)
                store.client.put_object("liuhen-canary", "canary", io.BytesIO(data), len(data))
                got = store.client.get_object("liuhen-canary", "canary")
                try:
                    if got.read() == data:
                        return
                finally:
                    got.close()
                    got.release_conn()
            except Exception as e:  # not up yet
                error = e
            time.sleep(0.5)
        raise SystemExit(f"the S3 gateway did not serve a canary in {timeout_s:.0f} s: {error}")

    def wait_liuhen(self, timeout_s: float = START_TIMEOUT_S) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        pending = {n for n, p in self.state.procs.items() if p.liuhen}
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                proc = self.state.procs[name]
                if not _alive(proc.pid):
                    raise SystemExit(f"{name} exited; see {self.root / 'logs' / name}.log")
                if name.startswith("api-"):
                    with contextlib.suppress(OSError):
                        url = f"http://127.0.0.1:{self.state.ports[name]}/healthz"
                        with urllib.request.urlopen(url, timeout=2) as r:
                            if r.status == 200:
                                pending.discard(name)
            workers = {n for n in pending if n.startswith("worker-")}
            if workers and self._live_workers() >= len(self.workers()):
                pending -= workers
            time.sleep(0.3)
        if pending:
            raise SystemExit(f"not ready after {timeout_s:.0f} s: {', '.join(sorted(pending))}")

    def _live_workers(self) -> int:
        with contextlib.suppress(psycopg.Error), self._db() as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_workers"
                " WHERE last_heartbeat > now() - interval '30 seconds'"
            ).fetchone()
            return int(row[0]) if row else 0
        return 0

    def _db(self) -> psycopg.Connection[Any]:
        admin = dict(self.state.pg_admin, dbname=self.state.database)
        return psycopg.connect(**admin, autocommit=True)

    # --- looking and breaking --------------------------------------------------------------

    def workers(self) -> list[str]:
        return [n for n in self.state.procs if n.startswith("worker-")]

    def api_urls(self) -> list[str]:
        return [
            f"http://127.0.0.1:{self.state.ports[n]}"
            for n in self.state.procs
            if n.startswith("api-")
        ]

    def status(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "database": self.state.database,
            "s3": f"127.0.0.1:{self.state.ports['s3']}",
            "api": self.api_urls(),
            "processes": {
                n: {"pid": p.pid, "running": _alive(p.pid), "port": self.state.ports.get(n)}
                for n, p in self.state.procs.items()
            },
        }

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.state.procs[name]
        if proc.pid and _alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 30
            while _alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)

    def restart(self, name: str) -> None:
        """Start ``name`` again on its ports and data (after a crash or ``kill``); it must
        listen on its port (or, without one, stay up for a few seconds)."""
        self.kill(name)
        self._spawn(self.state.procs[name])
        if name in self.state.ports:
            self._wait_listening(name)
            return
        deadline = time.monotonic() + RESTART_SETTLE_S
        while time.monotonic() < deadline:
            self._check_alive(name)
            time.sleep(0.2)

    def _check_alive(self, name: str) -> None:
        if not _alive(self.state.procs[name].pid):
            raise SystemExit(f"{name} exited; see {self.root / 'logs' / name}.log")

    def _wait_listening(self, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
        import socket

        port = self.state.ports[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive(name)  # one that died is named, not waited for
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise SystemExit(f"{name} did not listen on {port} within {timeout_s:.0f} s")

    def stop(self) -> None:
        # The edges first (nothing new arrives), the store last.
        order = [n for n, p in self.state.procs.items() if p.liuhen]
        order += ["s3", "filer", "volume-1", "volume-2", "master"]
        for name in order:
            self.kill(name, signal.SIGTERM if name.startswith("worker-") else signal.SIGKILL)
            self.kill(name)
        _drop_database(self.state.pg_admin, self.state.database)
        (self.root / "topology.json").rename(self.root / "topology.stopped.json")


def _drop_database(admin: dict[str, Any], database: str) -> None:
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@contextlib.contextmanager
def _only_one(root: Path) -> Iterator[None]:
    """One command that changes the topology under ``root`` at a time (two ``start`` at once
    would each make a database and a set of processes on the same directories)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".topology.lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another topology command is running on {root}") from None
        yield


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a ``timeout`` or a supervisor) unwinds like Ctrl-C, so a start cut short
    stops what it started instead of leaving it running."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _weed() -> str:
    from storage.seaweed import weed_binary

    return weed_binary()


def _seaweed_procs(root: Path, ports: dict[str, int]) -> list[Proc]:
    weed, ip = _weed(), ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    master = f"127.0.0.1:{ports['master']}"
    procs = [
        Proc(
            "master",
            [weed, "master", *ip, f"-port={ports['master']}", f"-mdir={root / 'master'}",
             "-defaultReplication=001", "-volumeSizeLimitMB=256", "-metricsPort=0"],
            str(root / "master"),
        ),
    ]  # fmt: skip
    for name in ("volume-1", "volume-2"):
        procs.append(
            Proc(
                name,
                [weed, "volume", *ip, f"-port={ports[name]}", f"-dir={root / name}",
                 f"-mserver={master}", "-dataCenter=dc1", "-rack=rack1", "-max=100",
                 "-preStopSeconds=0", "-metricsPort=0"],
                str(root / name),
            )
        )  # fmt: skip
    procs.append(
        Proc(
            "filer",
            [weed, "filer", *ip, f"-port={ports['filer']}", f"-master={master}",
             "-defaultReplicaPlacement=001", f"-defaultStoreDir={root / 'filer'}",
             "-metricsPort=0"],
            str(root / "filer"),
        )
    )  # fmt: skip
    procs.append(
        Proc(
            "s3",
            [weed, "s3", "-ip.bind=127.0.0.1", f"-port={ports['s3']}",
             f"-filer=127.0.0.1:{ports['filer']}", f"-config={root / 'identities.json'}",
             "-port.iceberg=0", "-port.lance=0", "-metricsPort=0"],
            str(root / "s3"),
        )
    )  # fmt: skip
    return procs


def _liuhen_procs(root: Path, ports: dict[str, int], api: int, workers: int) -> list[Proc]:
    exe = str(Path(sys.executable).parent / "liuhen")
    procs = []
    for i in range(1, api + 1):
        name = f"api-{i}"
        procs.append(
            Proc(
                name,
                [exe, "serve", "--host", "127.0.0.1", "--port", str(ports[name])],
                str(root / "homes" / name),
                {
                    "LIUHEN_HOME": str(root / "homes" / name),
                    "LIUHEN_PIPELINE__WORKERS": "0",
                    # Each spools its own tus uploads; the others forward to it.
                    "LIUHEN_API__ADVERTISE_URL": f"http://127.0.0.1:{ports[name]}",
                },
                liuhen=True,
            )
        )
    for i in range(1, workers + 1):
        name = f"worker-{i}"
        procs.append(
            Proc(
                name,
                [exe, "worker", "--threads", "1", "--metrics-port", str(ports[name])],
                str(root / "homes" / name),
                {"LIUHEN_HOME": str(root / "homes" / name)},
                liuhen=True,
            )
        )
    return procs


def _write_log_key(path: Path) -> None:
    """One signer key for every process of the deployment, made here, before any starts."""
    from integrity.note import generate_signer_key

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    skey, _ = generate_signer_key(ORIGIN)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # a start killed outright (SIGKILL) left it: never overwritten
        raise SystemExit(f"{path} exists from an earlier start: remove the directory") from None
    with os.fdopen(fd, "w") as f:
        f.write(skey + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="create and start a topology under DIR")
    start.add_argument("dir", type=Path)
    start.add_argument("--api", type=int, default=2)
    start.add_argument("--workers", type=int, default=3)
    start.add_argument("--pg-host", default="127.0.0.1")
    start.add_argument("--pg-port", type=int, default=5432)
    start.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="LIUHEN_X=VALUE",
        help="a setting for every liuhen process (e.g. LIUHEN_QUEUE__HEARTBEAT_S=1); repeatable",
    )
    for name in ("status", "env", "stop"):
        p = sub.add_parser(name)
        p.add_argument("dir", type=Path)
        if name == "status":
            p.add_argument("--json", action="store_true")
    for name, what in (
        ("kill", "SIGKILL one process (volume-1, worker-2, api-1, ...): a fault, by hand"),
        ("restart", "start one process again on its ports and data"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("dir", type=Path)
        p.add_argument("process")
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.command == "start":
        settings = dict(_setting(s) for s in args.set)
        with _only_one(args.dir), _terminate_as_interrupt():
            topo = Topology.create(
                args.dir,
                api=args.api,
                workers=args.workers,
                pg_host=args.pg_host,
                pg_port=args.pg_port,
                settings=settings,
            )
            try:
                topo.start()
            except BaseException:
                Topology(topo.root).stop()  # as saved: every process spawned so far
                raise
        out.write(json.dumps(topo.status(), indent=2) + "\n")
        return 0
    if not (args.dir / "topology.json").exists():
        stopped = (args.dir / "topology.stopped.json").exists()
        raise SystemExit(
            f"no running topology under {args.dir}{' (it was stopped)' if stopped else ''}: "
            f"python scripts/topology.py start {args.dir}"
        )
    topo = Topology(args.dir)
    if args.command == "status":
        doc = topo.status()
        if args.json:
            out.write(json.dumps(doc, indent=2) + "\n")
        else:
            for name, p in doc["processes"].items():
                state = "running" if p["running"] else "stopped"
                out.write(f"{name:<10} {state:<8} pid {p['pid']}  port {p['port'] or '-'}\n")
        return 0 if all(p["running"] for p in doc["processes"].values()) else 1
    if args.command == "env":
        for key, value in topo.env().items():
            out.write(f"export {key}={shlex.quote(value)}\n")
        return 0
    with _only_one(args.dir):
        topo = Topology(args.dir)  # again: what a command that held the lock saved
        if args.command in ("kill", "restart"):
            if args.process not in topo.state.procs:
                names = ", ".join(topo.state.procs)
                raise SystemExit(f"no process {args.process!r} in this topology (one of: {names})")
            if args.command == "kill":
                topo.kill(args.process)
            else:
                topo.restart(args.process)
            return 0
        topo.stop()
    return 0


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("LIUHEN_"):
        raise SystemExit(f"--set wants LIUHEN_NAME=value, not {text!r}")
    return key, value


if __name__ == "__main__":
    sys.exit(main())
