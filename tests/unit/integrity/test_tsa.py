"""RFC 3161 request building and input checks (the signing round trip is an integration test)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from rfc3161_client import _rust

import integrity
from integrity.errors import TimestampError
from integrity.tsa import build_request, check_reply, prepare_request, verify_timestamp


def test_build_request() -> None:
    request = _rust.parse_timestamp_request(build_request(b"checkpoint\n"))
    assert request.message_imprint.message == hashlib.sha256(b"checkpoint\n").digest()
    assert request.message_imprint.hash_algorithm.dotted_string == "2.16.840.1.101.3.4.2.1"
    assert request.cert_req is True
    assert request.nonce is not None
    assert build_request(b"x") != build_request(b"x")  # a fresh nonce each time


def test_empty_data_is_refused() -> None:
    with pytest.raises(TimestampError, match="empty data"):
        build_request(b"")


def test_malformed_response_is_refused() -> None:
    with pytest.raises(TimestampError, match="malformed time-stamp response"):
        verify_timestamp(b"\x30\x03\x02\x01\x00", b"x", roots=[])


def test_a_reply_to_another_request_is_refused() -> None:
    query = prepare_request(b"x")
    assert query.nonce == _rust.parse_timestamp_request(query.der).nonce
    with pytest.raises(TimestampError, match="malformed"):
        check_reply(b"\x30\x03\x02\x01\x00", data=b"x", query=query)
    with pytest.raises(TimestampError, match="more than"):
        check_reply(b"\x00" * (1024 * 1024 + 1), data=b"x", query=query)


def test_integrity_holds_no_http() -> None:
    """integrity/ builds and checks; the request goes out from ingest.tsa_client."""
    for path in Path(integrity.__file__).parent.glob("*.py"):
        source = path.read_text()
        for word in ("urllib", "http.client", "requests", "httpx", "socket"):
            assert f"import {word}" not in source, f"{path.name} imports {word}"
