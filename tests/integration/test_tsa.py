"""RFC 3161 round trip against a throwaway TSA run by the ``openssl ts`` CLI over local HTTP."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from integrity.errors import TimestampError
from integrity.tsa import request_timestamp, verify_timestamp

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

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


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=liuhen test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.pem"


def _make_tsa(d: Path) -> Path:
    """A root CA and a TSA certificate it issues; returns the ``openssl ts`` config file."""
    _make_ca(d, "ca")
    (d / "ext.cnf").write_text(TSA_EXTENSIONS)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
        "-subj", "/CN=liuhen test TSA",
        cwd=d,
    )  # fmt: skip
    _openssl(
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
                _openssl(
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


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTSA]:
    d = tmp_path_factory.mktemp("tsa")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(_make_tsa(d), threading.Lock()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalTSA(f"http://127.0.0.1:{server.server_address[1]}/", d)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


DATA = b"liuhen.example/log\n42\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"


@pytest.fixture(scope="module")
def token(tsa: LocalTSA) -> bytes:
    return request_timestamp(tsa.url, DATA, timeout=30)


def test_stamp_verifies_and_gives_the_time(tsa: LocalTSA, token: bytes) -> None:
    stamped = verify_timestamp(token, DATA, roots=[tsa.root_pem])
    assert stamped.tzinfo is UTC
    assert abs(datetime.now(UTC) - stamped) < timedelta(minutes=5)


def test_der_root_is_accepted(tsa: LocalTSA, token: bytes) -> None:
    der = x509.load_pem_x509_certificate(tsa.root_pem).public_bytes(Encoding.DER)
    verify_timestamp(token, DATA, roots=[der])


def test_openssl_agrees(tsa: LocalTSA, token: bytes) -> None:
    (tsa.dir / "data").write_bytes(DATA)
    (tsa.dir / "token.tsr").write_bytes(token)
    _openssl("ts", "-verify", "-data", "data", "-in", "token.tsr", "-CAfile", "ca.pem", cwd=tsa.dir)


def test_stamp_over_other_data_is_rejected(tsa: LocalTSA, token: bytes) -> None:
    with pytest.raises(TimestampError, match="but the data hashes to"):
        verify_timestamp(token, DATA + b"x", roots=[tsa.root_pem])


def test_tampered_token_is_rejected(tsa: LocalTSA, token: bytes) -> None:
    tampered = bytearray(token)
    tampered[-10] ^= 0x01  # inside the SignerInfo's signature, the last field of the token
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(bytes(tampered), DATA, roots=[tsa.root_pem])


def test_untrusted_root_is_rejected(tsa: LocalTSA, token: bytes, tmp_path: Path) -> None:
    other_root = _make_ca(tmp_path, "other").read_bytes()
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(token, DATA, roots=[other_root])


def test_each_request_is_fresh(tsa: LocalTSA, token: bytes) -> None:
    assert request_timestamp(tsa.url, DATA, timeout=30) != token
