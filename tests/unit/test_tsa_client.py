"""The TSA client's own refusals (the round trip is tests/integration/test_tsa.py)."""

from __future__ import annotations

import pytest

from ingest.tsa_client import request_timestamp
from integrity.errors import TimestampError


def test_only_http_urls() -> None:
    with pytest.raises(TimestampError, match="http or https"):
        request_timestamp("file:///etc/passwd", b"x")


def test_unreachable_tsa() -> None:
    with pytest.raises(TimestampError, match="failed"):
        request_timestamp("http://127.0.0.1:9/", b"x", timeout=2)
