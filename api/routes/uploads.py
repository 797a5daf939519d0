"""tus 1.0.0 at ``/v1/uploads``: core, creation, creation-with-upload, checksum, termination,
expiration, OPTIONS discovery and the CORS headers a browser client needs.

Every request but OPTIONS carries ``Authorization: Bearer <device token>``. ``Upload-Metadata``
carries ``manifest`` (the canonical JSON the device signed), ``signature`` (base64 text of the
Ed25519 signature) and ``filename``. When the last byte is in the upload is sealed and
``GET /v1/uploads/{id}`` answers with the item and its receipt.

Errors are RFC 9457 problems carrying the tus and CORS headers (a custom route class catches
them, so a browser can read them), and every refusal of an authenticated device is written to
``device_events`` with its code and reason.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from email.utils import format_datetime
from typing import Annotated, Any

from anyio import CapacityLimiter, fail_after, to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from api.deps import RuntimeDep
from api.errors import problem
from api.upload_forward import forward, forwarded
from ingest import metrics
from ingest.devices import authenticate_device, record_refusal
from ingest.errors import (
    BadUploadRequest,
    BodyStalled,
    Forbidden,
    IntakeRefused,
    Unauthenticated,
    UnsupportedTusVersion,
    UploadNotFound,
    WrongContentType,
)
from ingest.runtime import Runtime
from ingest.uploads import CHECKSUM_ALGORITHMS, FAILED, RECEIVING, SEALED, Uploads, UploadState
from integrity.errors import LiuhenError
from storage.tables import Device

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
OCTETS = "application/offset+octet-stream"
PROBLEM_JSON = "application/problem+json"
BUFFER = 1 << 20
"""Bytes gathered from the request before one write (+ hash) in a worker thread."""
ALLOW_HEADERS = (
    "Authorization, Content-Type, Origin, X-Requested-With, X-Request-ID, "
    "Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, "
    "Upload-Defer-Length, Upload-Concat, Upload-Checksum"
)
EXPOSE_HEADERS = (
    "Location, Tus-Version, Tus-Resumable, Tus-Max-Size, Tus-Extension, "
    "Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires"
)
METHODS = "POST, GET, HEAD, PATCH, DELETE, OPTIONS"
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class TusRoute(APIRoute):
    """Adds the tus and CORS headers to every answer and turns domain errors (also from the
    dependencies) into problems here, logging the refusals of authenticated devices."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handle(request)
            except LiuhenError as e:
                response = await _problem(request, e)
            _decorate(request, response)
            return response

        return route


router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=TusRoute)
_uploads_lock = threading.Lock()
RETRY_AFTER_S = 5
"""What a 503 (the store, the index, the upload's serving process away) asks a client to wait."""
SEALS_AT_ONCE = 8
"""Seals run in worker threads for seconds each; a limiter of their own keeps a wave of
completions from taking every thread (device auth, HEAD and PATCH writes use them too)."""


def _seals(request: Request) -> CapacityLimiter:
    """The app's seal limiter (made on first use, inside the app's event loop)."""
    limiter: CapacityLimiter | None = getattr(request.app.state, "seal_limiter", None)
    if limiter is None:
        limiter = request.app.state.seal_limiter = CapacityLimiter(SEALS_AT_ONCE)
    return limiter


async def _problem(request: Request, error: LiuhenError) -> Response:
    doc = problem(error, instance=request.url.path)
    metrics.answered(error)
    device_id = getattr(error, "device_id", None) or getattr(request.state, "device_id", None)
    refused = isinstance(error, IntakeRefused | Forbidden)  # an authenticated device, refused
    if device_id and refused and not isinstance(error, Unauthenticated):
        rt: Runtime = request.app.state.runtime
        details = {"method": request.method, "path": request.url.path, "status": doc["status"]}
        try:
            await to_thread.run_sync(
                lambda: record_refusal(
                    rt.sessions,
                    device_id=device_id,
                    code=error.code,
                    reason=str(error),
                    details=details,
                )
            )
        except LiuhenError as e:  # the refusal stands even if its record could not be written
            log.error("could not record the refusal of device %s: %s", device_id, e)
    elif isinstance(error, Unauthenticated):
        log.warning("%s %s refused: %s", request.method, request.url.path, error)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if doc["status"] == 503 else {}
    if doc["status"] >= 500:
        log.error("%s %s: %s", request.method, request.url.path, error)
    if request.method == "HEAD":
        return Response(status_code=doc["status"], headers=headers)
    return JSONResponse(doc, status_code=doc["status"], media_type=PROBLEM_JSON, headers=headers)


def _decorate(request: Request, response: Response) -> None:
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    origin = request.headers.get("origin")
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    allowed = rt.settings.intake.cors_origins if rt else []
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = origin if "*" not in allowed else "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers["Vary"] = "Origin"


def sweep_in_background(app: Any, rt: Runtime) -> Callable[[], None]:
    """Make the app's ``Uploads`` and sweep them in the background (``Uploads``); returns
    what stops it."""
    uploads = Uploads(rt)
    with _uploads_lock:
        app.state.uploads = uploads
    return uploads.sweep_in_background()


def get_uploads(request: Request, rt: RuntimeDep) -> Uploads:
    """The app's ``Uploads`` (made on first use: spool directory, running hashes)."""
    with _uploads_lock:
        uploads: Uploads | None = getattr(request.app.state, "uploads", None)
        if uploads is None or uploads.rt is not rt:
            uploads = Uploads(rt)
            request.app.state.uploads = uploads
    return uploads


def current_device(request: Request, rt: RuntimeDep) -> Device:
    """The enrolled, enabled device whose bearer token the request carries."""
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a device bearer token is required (Authorization: Bearer ...)")
    with rt.sessions() as session:
        device = authenticate_device(session, token.strip())
    request.state.device_id = device.id
    return device


UploadsDep = Annotated[Uploads, Depends(get_uploads)]
DeviceDep = Annotated[Device, Depends(current_device)]


# --- headers -----------------------------------------------------------------------------


def _check_version(request: Request) -> None:
    version = request.headers.get("tus-resumable")
    if version != TUS_VERSION:
        raise UnsupportedTusVersion(f"Tus-Resumable must be {TUS_VERSION}, got {version!r}")


def _int_header(request: Request, name: str) -> int:
    value = request.headers.get(name)
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise BadUploadRequest(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, bytes]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    if not header:
        return {}
    out: dict[str, bytes] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or not _KEY.fullmatch(parts[0]) or len(parts) > 2:
            raise BadUploadRequest(f"Upload-Metadata pair {pair.strip()[:40]!r} is malformed")
        if parts[0] in out:
            raise BadUploadRequest(f"Upload-Metadata names {parts[0]!r} twice")
        try:
            out[parts[0]] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise BadUploadRequest(f"Upload-Metadata value of {parts[0]!r} is not base64") from None
    return out


def _checksum(header: str | None) -> tuple[str, bytes] | None:
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadUploadRequest(
            f"Upload-Checksum algorithm {algorithm!r} is not one of "
            + ", ".join(CHECKSUM_ALGORITHMS)
        )
    try:
        return algorithm, base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadUploadRequest("Upload-Checksum value is not base64") from None


def _offset_headers(state: UploadState, offset: int) -> dict[str, str]:
    return {
        "Upload-Offset": str(offset),
        "Upload-Expires": format_datetime(state.expires_at, usegmt=True),
    }


async def _spooled_elsewhere(
    request: Request, uploads: Uploads, upload_id: str, device_id: str
) -> Response | None:
    """The answer of the serving process that spools this upload, when it is not this one
    (``upload_forward``); None when this process answers itself."""
    if forwarded(request):
        return None
    state = await to_thread.run_sync(lambda: uploads.get(upload_id, device_id=device_id))
    home = uploads.spooled_elsewhere(state)
    if home is None:
        return None
    idle_s = uploads.settings.body_idle_s
    body = _stream(request, idle_s) if request.method == "PATCH" else None
    answer_s = idle_s + uploads.rt.settings.log.receipt_wait_s + 60  # a seal answers last
    try:
        return await forward(request, home, here=uploads.here, body=body, answer_s=answer_s)
    except TimeoutError:  # the device's body went silent (``_stream``)
        raise BodyStalled(
            f"no byte of the body arrived for {idle_s:.0f} s; what arrived is kept: ask with "
            "HEAD and resume from there"
        ) from None
    except ClientDisconnect:
        raise BadUploadRequest("the client went away before the body ended") from None


# --- endpoints ---------------------------------------------------------------------------


@router.options("", status_code=204)
@router.options("/{upload_id}", status_code=204)
def discover(rt: RuntimeDep) -> Response:
    """tus discovery and CORS preflight (no token needed)."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(rt.settings.intake.max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": "86400",
        },
    )


@router.post("", status_code=201)
async def create(request: Request, device: DeviceDep, uploads: UploadsDep) -> Response:
    """Creation (and creation-with-upload): check the signed manifest, make the upload."""
    _check_version(request)
    await to_thread.run_sync(uploads.sweep)
    if request.headers.get("upload-defer-length"):
        raise BadUploadRequest("Upload-Defer-Length is not supported: declare Upload-Length")
    length = _int_header(request, "upload-length")
    meta = parse_metadata(request.headers.get("upload-metadata"))
    if "manifest" not in meta or "signature" not in meta:
        raise BadUploadRequest("Upload-Metadata must carry manifest and signature")
    try:
        signature = meta["signature"].decode("ascii")
    except UnicodeDecodeError:
        raise BadUploadRequest("the signature must be base64 text") from None
    state = await to_thread.run_sync(
        lambda: uploads.create(
            device, length=length, manifest_text=meta["manifest"], signature=signature
        )
    )
    headers = {"Location": f"{router.prefix}/{state.id}"}
    offset = state.offset  # above 0: made by this request before, its answer lost; resume
    has_body = request.headers.get("content-length", "0") != "0" or request.headers.get(
        "transfer-encoding"
    )
    here = uploads.spooled_elsewhere(state) is None  # made before, by another process
    if has_body and offset == 0 and state.state == RECEIVING and here:
        if request.headers.get("content-type") != OCTETS:
            raise WrongContentType(f"an upload body must be {OCTETS}")
        offset, state = await _receive(request, uploads, state.id, device.id, 0)
    headers |= _offset_headers(state, offset)
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}")
async def head(
    upload_id: str, request: Request, device: DeviceDep, uploads: UploadsDep
) -> Response:
    """Where the upload stands (the offset recorded after fsync). A complete upload whose seal
    failed is sealed first: a tus client that reads offset == length asks no more, so a 200
    here must mean sealed (a seal still failing answers 503, and the client tries again)."""
    _check_version(request)
    if (elsewhere := await _spooled_elsewhere(request, uploads, upload_id, device.id)) is not None:
        return elsewhere
    state = await to_thread.run_sync(lambda: uploads.get(upload_id, device_id=device.id))
    if state.state == RECEIVING and state.offset == state.length:
        state = await to_thread.run_sync(
            lambda: uploads.finish(upload_id, device_id=device.id), limiter=_seals(request)
        )
    headers = {"Upload-Length": str(state.length), **_offset_headers(state, state.offset)}
    if state.state == FAILED:
        return Response(status_code=410, headers=headers)
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204)
async def patch(
    upload_id: str, request: Request, device: DeviceDep, uploads: UploadsDep
) -> Response:
    """Append the body at ``Upload-Offset``; the last byte seals the upload."""
    _check_version(request)
    if request.headers.get("content-type") != OCTETS:
        raise WrongContentType(f"PATCH bodies must be {OCTETS}")
    offset = _int_header(request, "upload-offset")
    if (elsewhere := await _spooled_elsewhere(request, uploads, upload_id, device.id)) is not None:
        return elsewhere
    offset, state = await _receive(request, uploads, upload_id, device.id, offset)
    return Response(status_code=204, headers=_offset_headers(state, offset))


async def _receive(
    request: Request, uploads: Uploads, upload_id: str, device_id: str, offset: int
) -> tuple[int, UploadState]:
    checksum = _checksum(request.headers.get("upload-checksum"))
    writer = await to_thread.run_sync(
        lambda: uploads.open_writer(
            upload_id, device_id=device_id, offset=offset, checksum=checksum
        )
    )
    idle_s = uploads.settings.body_idle_s
    try:
        buffer = bytearray()
        try:
            async for chunk in _stream(request, idle_s):
                buffer += chunk
                if len(buffer) >= BUFFER:
                    data = bytes(buffer)
                    buffer.clear()
                    await to_thread.run_sync(writer.write, data)
            if buffer:
                await to_thread.run_sync(writer.write, bytes(buffer))
        except (ClientDisconnect, TimeoutError) as e:
            if buffer:  # what did arrive is kept (no checksum to hold it to)
                await to_thread.run_sync(writer.write, bytes(buffer))
            kept = await to_thread.run_sync(writer.interrupted)
            if isinstance(e, TimeoutError):
                log.warning("upload %s: no byte for %.0f s at %d; kept", upload_id, idle_s, kept)
                raise BodyStalled(
                    f"no byte of the body arrived for {idle_s:.0f} s; {kept} bytes are kept: "
                    "ask with HEAD and resume from there"
                ) from None
            log.info("upload %s: client went away at %d; kept", upload_id, kept)
            raise BadUploadRequest("the client went away before the body ended") from None
        new_offset = await to_thread.run_sync(writer.commit)
        complete = writer.complete
    finally:
        await to_thread.run_sync(writer.__exit__, None, None, None)
    state = writer.state
    if complete:
        state = await to_thread.run_sync(
            lambda: uploads.finish(upload_id, device_id=device_id), limiter=_seals(request)
        )
    return new_offset, state


async def _stream(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The request body, raising TimeoutError when no chunk comes for ``idle_s`` (uvicorn
    has no body timeout, and a socket that went silent without a FIN never ends)."""
    chunks = request.stream().__aiter__()
    while True:
        with fail_after(idle_s):
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
        yield chunk


@router.delete("/{upload_id}", status_code=204)
async def terminate(
    upload_id: str, request: Request, device: DeviceDep, uploads: UploadsDep
) -> Response:
    """Termination: drop an unfinished upload and its spool."""
    _check_version(request)
    if (elsewhere := await _spooled_elsewhere(request, uploads, upload_id, device.id)) is not None:
        return elsewhere
    await to_thread.run_sync(lambda: uploads.terminate(upload_id, device_id=device.id))
    return Response(status_code=204)


@router.get("/{upload_id}")
async def result(
    upload_id: str, request: Request, device: DeviceDep, uploads: UploadsDep
) -> Response:
    """A finished upload: the item document and its receipt (sealing it first if the last
    byte arrived but the seal did not complete, e.g. the server was killed)."""
    if (elsewhere := await _spooled_elsewhere(request, uploads, upload_id, device.id)) is not None:
        return elsewhere
    state = await to_thread.run_sync(
        lambda: uploads.finish(upload_id, device_id=device.id), limiter=_seals(request)
    )
    if state.state == SEALED:
        doc = await to_thread.run_sync(uploads.sealed_document, state)
        return JSONResponse(doc)
    if state.state == FAILED:
        error = state.error or {}
        return JSONResponse(
            {
                "type": f"urn:liuhen:problem:{error.get('code', 'upload_failed')}",
                "title": "Not accepted as evidence",
                "status": 422,
                "detail": error.get("detail", "the upload failed"),
                "code": error.get("code", "upload_failed"),
                "upload": state.id,
            },
            status_code=422,
            media_type=PROBLEM_JSON,
        )
    if state.state != RECEIVING:  # pragma: no cover - get() raises for the others
        raise UploadNotFound(f"upload {upload_id} is {state.state}")
    return JSONResponse(
        {"upload": state.id, "state": state.state, "offset": state.offset, "length": state.length}
    )
