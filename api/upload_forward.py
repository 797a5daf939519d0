"""A tus request forwarded to the serving process that spools the upload's bytes.

Behind a load balancer a device's next PATCH (or HEAD) may reach any ``liuhen serve``; the
bytes so far are in the spool of the process that created the upload, whose address
(``api.advertise_url``) its row records (``uploads.served_by``). That process is asked
instead, with the device's own headers (it authenticates the device again and does every
check), and its answer is passed back. The body streams through as it arrives: a 16 MiB chunk
of a 10 GB video is never held whole. A forwarded request is never forwarded again, so two
processes that disagree about an address answer 409 instead of bouncing a request between
them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import Request, Response

from ingest import metrics
from ingest.errors import UploadHomeSlow, UploadHomeUnavailable

log = logging.getLogger(__name__)

FORWARDED_BY = "x-liuhen-forwarded-by"
"""Names the process that forwarded a request (and marks it as forwarded once)."""
CONNECT_S = 5.0
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_NOT_COPIED_IN = _HOP_BY_HOP | {"x-forwarded-for"}  # extended below, sent once
_NOT_COPIED_OUT = _HOP_BY_HOP | {"date", "server", "content-encoding"}
"""The answer's own: this server adds its date and name; httpx has decoded the body."""


def forwarded(request: Request) -> bool:
    return FORWARDED_BY in request.headers


async def forward(
    request: Request,
    home: str,
    *,
    here: str | None,
    body: AsyncIterator[bytes] | None,
    answer_s: float,
) -> Response:
    """Send ``request`` to ``home`` (its body from ``body``) and return that process's answer.

    ``answer_s`` bounds the wait for each read of the answer: a PATCH's last byte is
    answered only after the seal and its receipt. An unreachable home is 503
    ``upload_home_unavailable`` (nothing changed; try again); one that took the request and
    stayed silent longer is 504 ``upload_home_slow`` (ask with HEAD)."""
    url = home + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_COPIED_IN]
    if body is not None and "content-length" in request.headers:
        headers.append(("content-length", request.headers["content-length"]))
    headers.append((FORWARDED_BY, here or "unnamed"))
    if request.client is not None:
        prior = request.headers.get("x-forwarded-for")
        address = request.client.host
        headers.append(("x-forwarded-for", f"{prior}, {address}" if prior else address))
    timeout = httpx.Timeout(answer_s, connect=CONNECT_S)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            answer = await client.request(request.method, url, headers=headers, content=body)
    except httpx.ReadTimeout:
        # The request went out whole and the home is up but silent: a last PATCH is answered
        # only after its seal, which may take longer than we wait. It is not "away".
        metrics.forwarded("timeout")
        log.warning("%s %s: its serving process %s did not answer within %.0f s",
                    request.method, request.url.path, home, answer_s)  # fmt: skip
        raise UploadHomeSlow(
            f"the serving process at {home}, which spools this upload, received the request "
            f"but did not answer within {answer_s:.0f} s; it may still be sealing it: ask "
            "with HEAD for the offset (a complete upload is sealed by it)"
        ) from None
    except httpx.TransportError as e:  # refused, reset, timed out: the home is not there
        metrics.forwarded("unreachable")
        log.warning("%s %s: its serving process %s does not answer: %s",
                    request.method, request.url.path, home, e)  # fmt: skip
        raise UploadHomeUnavailable(
            f"the bytes received so far are spooled by the serving process at {home}, which "
            f"does not answer ({type(e).__name__}); nothing is lost: try again"
        ) from None
    metrics.forwarded(str(answer.status_code))
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_COPIED_OUT}
    return Response(answer.content, status_code=answer.status_code, headers=kept)
