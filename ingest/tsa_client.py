"""The HTTP side of trusted time: send an RFC 3161 request to a TSA (§3.4, HTTP POST) and
hand the reply to ``integrity.tsa`` to check. ``integrity/`` stays free of network code."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request

from integrity.errors import TimestampError
from integrity.tsa import (
    MAX_RESPONSE_BYTES,
    QUERY_CONTENT_TYPE,
    REPLY_CONTENT_TYPE,
    check_reply,
    prepare_request,
)

DEFAULT_TIMEOUT = 10.0


def request_timestamp(url: str, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Ask the TSA at ``url`` to time-stamp ``data``; return the DER TimeStampResp.

    Checks that it is granted, answers our nonce and covers our data; it does not check who
    signed it (that is ``integrity.tsa.verify_timestamp``).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise TimestampError(f"TSA URL must be http or https: {url!r}")
    query = prepare_request(data)
    http_request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=query.der,
        headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as reply:  # noqa: S310
            tsr: bytes = reply.read(MAX_RESPONSE_BYTES + 1)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        # HTTPException: a reply that is not HTTP (a bad status line, a body cut short)
        raise TimestampError(f"TSA {url} failed: {e}") from None
    try:
        check_reply(tsr, data=data, query=query)
    except TimestampError as e:
        raise TimestampError(f"TSA {url}: {e}") from None
    return tsr
