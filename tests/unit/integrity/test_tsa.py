"""RFC 3161 request building and input checks (the signing round trip is an integration test)."""

from __future__ import annotations

import hashlib

import pytest
from rfc3161_client import _rust

from integrity.errors import TimestampError
from integrity.tsa import build_request, request_timestamp, verify_timestamp


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


def test_only_http_urls() -> None:
    with pytest.raises(TimestampError, match="http or https"):
        request_timestamp("file:///etc/passwd", b"x")


def test_unreachable_tsa() -> None:
    with pytest.raises(TimestampError, match="failed"):
        request_timestamp("http://127.0.0.1:9/", b"x", timeout=2)
