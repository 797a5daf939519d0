"""The least any Python upload API does, as a ceiling for ``bench/scale.py``: take a photo over
HTTP, hash it, ``put_object`` it. No authorization, no index, no log, no receipt.

Two ASGI apps, each served by ``python -m uvicorn bench.relay:<app>`` (one process, as
``liuhen serve``), configured by the environment (``RELAY_ENDPOINT``, ``RELAY_ACCESS_KEY``,
``RELAY_SECRET_KEY``, ``RELAY_BUCKET``):

* ``form_app``: FastAPI taking the same form as ``POST /v1/items`` (one ``file`` part, one
  ``manifest`` part, parsed by Starlette's multipart parser), the PUT in a worker thread.
* ``raw_app``: bare ASGI taking the photo as the whole body: no framework, no form.

What a seal costs beyond these is liuhen's; what these cost beyond ``put_object`` is one more
HTTP hop in Python, which no API of this shape avoids.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from functools import cache
from typing import Any

import anyio.to_thread
import urllib3
from fastapi import FastAPI, Request
from minio import Minio
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@cache
def _store() -> tuple[Minio, str]:
    client = Minio(
        os.environ["RELAY_ENDPOINT"],
        access_key=os.environ["RELAY_ACCESS_KEY"],
        secret_key=os.environ["RELAY_SECRET_KEY"],
        secure=False,
        http_client=urllib3.PoolManager(maxsize=64),
    )
    return client, os.environ["RELAY_BUCKET"]


def _put(body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    client, bucket = _store()
    client.put_object(bucket, f"relay/{digest}", io.BytesIO(body), len(body), "image/jpeg")
    return digest


form_app = FastAPI()


@form_app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@form_app.post("/v1/items", status_code=201)
async def relay_form(request: Request) -> dict[str, Any]:
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=1)
    form = await parser.parse()
    try:
        file, manifest = form["file"], form["manifest"]
        assert isinstance(file, UploadFile) and isinstance(manifest, str)
        json.loads(manifest)
        body = await file.read()
    finally:
        await form.close()
    digest = await anyio.to_thread.run_sync(_put, body)
    return {"sha256": digest, "receipt": {}}


async def raw_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":  # the health check
        status, answer = 200, b'{"status":"ok"}'
    else:
        digest = await anyio.to_thread.run_sync(_put, b"".join(chunks))
        status, answer = 201, json.dumps({"sha256": digest, "receipt": {}}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
