"""RFC 3161 round trip against a throwaway TSA run by the ``openssl ts`` CLI over local HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ingest.tsa_client import request_timestamp
from integrity.errors import TimestampError
from integrity.tsa import verify_timestamp
from tests.tsa_server import LocalTSA, local_tsa, make_ca, openssl


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTSA]:
    with local_tsa(tmp_path_factory.mktemp("tsa")) as server:
        yield server


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
    openssl("ts", "-verify", "-data", "data", "-in", "token.tsr", "-CAfile", "ca.pem", cwd=tsa.dir)


def test_stamp_over_other_data_is_rejected(tsa: LocalTSA, token: bytes) -> None:
    with pytest.raises(TimestampError, match="but the data hashes to"):
        verify_timestamp(token, DATA + b"x", roots=[tsa.root_pem])


def test_tampered_token_is_rejected(tsa: LocalTSA, token: bytes) -> None:
    tampered = bytearray(token)
    tampered[-10] ^= 0x01  # inside the SignerInfo's signature, the last field of the token
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(bytes(tampered), DATA, roots=[tsa.root_pem])


def test_untrusted_root_is_rejected(tsa: LocalTSA, token: bytes, tmp_path: Path) -> None:
    other_root = make_ca(tmp_path, "other").read_bytes()
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(token, DATA, roots=[other_root])


def test_each_request_is_fresh(tsa: LocalTSA, token: bytes) -> None:
    assert request_timestamp(tsa.url, DATA, timeout=30) != token
