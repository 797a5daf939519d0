"""Items: simple upload, metadata, original and derivative bytes, receipts."""

from __future__ import annotations

import base64
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api.auth import CanReadItem, CanReadReceipt, CanUpload, allowed
from api.deps import RuntimeDep
from api.ranges import parse_range
from ingest import catalog
from ingest.access import Action
from ingest.errors import InvalidInput, ManifestError, TooLarge
from ingest.intake import seal_file
from ingest.manifest import parse_manifest
from ingest.retrieve import Target, log_read, resolve, verified_stream

router = APIRouter(prefix="/v1/items", tags=["items"])


FORM_SLACK = 1024 * 1024
"""Bytes a form may hold beyond the file: the manifest part (1 MiB at most) and the framing."""


@dataclass(frozen=True)
class _Form:
    file: UploadFile
    manifest: str


async def _upload_form(
    request: Request, rt: RuntimeDep, _principal: CanUpload
) -> AsyncIterator[_Form]:
    """The multipart body, read only after the caller may upload, and never past the limit.

    FastAPI reads body parameters before any dependency runs: an anonymous 50 MB body was
    written to a temporary file, then refused with 401. So the body is no parameter: it is
    read here, after the authorization, refused at once when its Content-Length is too big and
    cut off when more arrives than the limit, with exactly one ``file`` and one ``manifest``
    part (a second of either was silently dropped)."""
    cap = rt.settings.api.max_upload_mb * 1024 * 1024 + FORM_SLACK
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"the body declares {declared} bytes; this endpoint takes {cap}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("send multipart/form-data with one 'file' part and one 'manifest' part")

    async def capped() -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > cap:
                raise TooLarge(f"the body exceeds this endpoint's {cap} bytes")
            yield chunk

    parser = MultiPartParser(request.headers, capped(), max_files=1, max_fields=1)  # type: ignore[arg-type]
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidInput(f"the form: {e.message} (one 'file', one 'manifest')") from None
    try:
        files, manifests = form.getlist("file"), form.getlist("manifest")
        if len(files) != 1 or not isinstance(files[0], UploadFile):
            raise InvalidInput("the form needs exactly one 'file' part (a file)")
        if len(manifests) != 1 or not isinstance(manifests[0], str):
            raise InvalidInput("the form needs exactly one 'manifest' part (JSON text)")
        yield _Form(files[0], manifests[0])
    finally:
        await form.close()


_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "manifest"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "manifest": {"type": "string", "description": "Manifest JSON"},
                    },
                }
            }
        },
    }
}


@router.post("", status_code=201, openapi_extra=_FORM_DOC)
def upload_item(
    rt: RuntimeDep,
    principal: CanUpload,
    response: Response,
    form: Annotated[_Form, Depends(_upload_form)],
) -> dict[str, Any]:
    """Seal one (small) file with its manifest. Big files use resumable intake."""
    file, manifest = form.file, form.manifest
    parsed = parse_manifest(manifest, case_id_pattern=rt.settings.case_id_pattern)
    if parsed.signature is not None:
        # Only a device's signed manifest (tus) carries a signature, checked against its key;
        # here nothing could check it, and the leaf would claim it for ever.
        raise ManifestError("a signature is only taken with a device's signed manifest (tus)")
    if parsed.file_name is None and file.filename:
        try:
            parsed = parse_manifest(
                {**parsed.model_dump(mode="json"), "file_name": os.path.basename(file.filename)},
                case_id_pattern=rt.settings.case_id_pattern,
            )
        except ManifestError:
            pass  # a hostile multipart file name is dropped; the manifest is what counts
    for case_id in parsed.case_ids:
        allowed(rt, principal, Action.CASE_LINK, case_id=case_id)
    limit = rt.settings.api.max_upload_mb * 1024 * 1024
    if parsed.size is not None and parsed.size > limit:
        raise TooLarge(f"declared size {parsed.size} exceeds this endpoint's {limit} bytes")
    rt.settings.spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", dir=rt.settings.spool_dir)
    try:
        with os.fdopen(fd, "wb") as spool:
            copied = _copy_limited(file, spool, limit)
        if copied > limit:
            raise TooLarge(f"body exceeds this endpoint's {limit} bytes")
        sealed = seal_file(rt, Path(name), parsed, actor=principal.actor, unit=principal.unit)
    finally:
        os.unlink(name)
    if sealed.duplicate:
        response.status_code = 200
    return sealed.document(receipt=rt.ledger.receipt(sealed.log_index))


def _copy_limited(src: UploadFile, dst: Any, limit: int) -> int:
    copied = 0
    while block := src.file.read(1024 * 1024):
        copied += len(block)
        if copied > limit:
            return copied
        dst.write(block)
    return copied


@router.get("/{item_id}")
def get_item(rt: RuntimeDep, principal: CanReadItem, item_id: str) -> dict[str, Any]:
    return catalog.view_item(rt, item_id, actor=principal.actor)


@router.get("/{item_id}/receipt")
def get_receipt(rt: RuntimeDep, _principal: CanReadReceipt, item_id: str) -> dict[str, Any]:
    """A fresh C2SP tlog-proof for the item's leaf, with the exact leaf data it proves."""
    return catalog.item_receipt(rt, item_id)


@router.get("/{item_id}/original", response_class=StreamingResponse)
def get_original(
    rt: RuntimeDep, principal: CanReadItem, request: Request, item_id: str
) -> Response:
    """The original, streamed, re-hashed on the way (a mismatch aborts the transfer)."""
    return _bytes_response(rt, principal.actor, request, resolve(rt, item_id))


@router.get("/{item_id}/derivatives/{role}", response_class=StreamingResponse)
def get_derivative(
    rt: RuntimeDep, principal: CanReadItem, request: Request, item_id: str, role: str
) -> Response:
    return _bytes_response(rt, principal.actor, request, resolve(rt, item_id, role))


def _bytes_response(rt: RuntimeDep, actor: str, request: Request, target: Target) -> Response:
    digest = base64.b64encode(bytes.fromhex(target.sha256)).decode()
    headers = {
        "ETag": f'"{target.sha256}"',
        "Repr-Digest": f"sha-256=:{digest}:",
        "Digest": f"SHA-256={digest}",
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-transform",
        "X-Content-Type-Options": "nosniff",
    }
    byte_range = parse_range(request.headers.get("range"), target.size)  # 416 when outside
    details: dict[str, object] | None = (
        {"range": request.headers.get("range")} if byte_range else None
    )
    log_read(rt, target, action="download", actor=actor, details=details)
    if byte_range is None:
        headers["Content-Length"] = str(target.size)
        return StreamingResponse(
            _primed(verified_stream(rt, target)),
            media_type=target.media_type,
            headers=headers,
        )
    first, last = byte_range
    length = last - first + 1
    headers["Content-Range"] = f"bytes {first}-{last}/{target.size}"
    headers["Content-Length"] = str(length)
    if length == target.size:  # all of it (``bytes=0-``): a complete copy is re-hashed too
        body = verified_stream(rt, target)
    else:
        body = rt.store.iter_bytes(target.key, target.version_id, offset=first, length=length)
    return StreamingResponse(
        _primed(body), status_code=206, media_type=target.media_type, headers=headers
    )


def _primed(body: Iterator[bytes]) -> Iterator[bytes]:
    """Start reading before the response starts: a store that is down (or an object that is
    gone) is then a problem response (503, 404) instead of a body cut off after a 200."""
    first = next(body, None)
    return body if first is None else itertools.chain([first], body)
