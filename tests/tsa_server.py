"""A throwaway RFC 3161 TSA for tests: a CA and TSA certificate made with the ``openssl`` CLI,
answering ``openssl ts -reply`` over HTTP on 127.0.0.1."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TSA_EXTENSIONS = """\
[tsa_cert]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

TS_CONFIG = """\
[tsa]
default_tsa = tsa_config

[tsa_config]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> Path:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=liuhen test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.pem"


def _make_tsa(d: Path) -> Path:
    """A root CA and a TSA certificate it issues; returns the ``openssl ts`` config file."""
    make_ca(d, "ca")
    (d / "ext.cnf").write_text(TSA_EXTENSIONS)
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
        "-subj", "/CN=liuhen test TSA",
        cwd=d,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "tsa.pem",
        "-extfile", "ext.cnf", "-extensions", "tsa_cert",
        cwd=d,
    )  # fmt: skip
    (d / "serial").write_text("01\n")
    config = d / "ts.cnf"
    config.write_text(TS_CONFIG.format(dir=d))
    return config


def _handler(config: Path, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class TSAHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            with lock, tempfile.TemporaryDirectory() as tmp:  # openssl ts bumps a serial file
                (Path(tmp) / "q.tsq").write_bytes(query)
                openssl(
                    "ts", "-reply", "-config", config, "-queryfile", "q.tsq", "-out", "r.tsr",
                    cwd=Path(tmp),
                )  # fmt: skip
                reply = (Path(tmp) / "r.tsr").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return TSAHandler


@dataclass(frozen=True)
class LocalTSA:
    url: str
    dir: Path

    @property
    def root_pem(self) -> bytes:
        return (self.dir / "ca.pem").read_bytes()


@contextmanager
def local_tsa(d: Path) -> Iterator[LocalTSA]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(_make_tsa(d), threading.Lock()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalTSA(f"http://127.0.0.1:{server.server_address[1]}/", d)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
