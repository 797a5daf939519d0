"""The TSA client's own refusals (the round trip is tests/integration/test_tsa.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ingest.tsa_client import request_timestamp
from integrity.errors import TimestampError


def test_only_http_urls() -> None:
    with pytest.raises(TimestampError, match="http or https"):
        request_timestamp("file:///etc/passwd", b"x")


def test_unreachable_tsa() -> None:
    with pytest.raises(TimestampError, match="failed"):
        request_timestamp("http://127.0.0.1:9/", b"x", timeout=2)


@contextmanager
def answering(reply: bytes) -> Iterator[str]:
    """A server on 127.0.0.1 that reads a request and answers ``reply`` (whatever it is)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()
        server.join(5)


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP at all
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0\x82",  # a body cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunking
    ],
)
def test_a_reply_that_is_not_http_is_a_timestamp_error(reply: bytes) -> None:
    with answering(reply) as url, pytest.raises(TimestampError, match=r"^TSA http"):
        request_timestamp(url, b"x", timeout=5)
