"""The HTTP API on real services (SQLite and PostgreSQL): upload, read back, ranges, problems,
the log endpoints, and offline verification of what the API hands out."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from api.app import create_app
from configs.settings import Settings
from ingest.runtime import Runtime
from integrity.errors import HashMismatch
from integrity.merkle import leaf_hash, verify_consistency
from integrity.note import Checkpoint, Verifier, open_note
from integrity.verify import verify_receipt
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.tables import Item, ItemCase, LogLeaf
from tests.conftest import SettingsFactory
from tests.people import bearer, make_user

PROBLEM_JSON = "application/problem+json"
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


OFFICER = "officer-1"
UNIT = "U-1"


def _signed_in(c: TestClient) -> TestClient:
    """Every request of ``c`` carries the token of an officer of UNIT."""
    rt: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
    c.headers.update(bearer(make_user(rt, OFFICER, "officer", UNIT)))
    return c


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, workers=0)) as c:
        yield _signed_in(c)


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    """The app's own runtime, to look into the index behind the API."""
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def _clip(size: int = 4096) -> bytes:
    """Bytes no other test uploads (the bucket is shared), looking like an MP4."""
    return MP4_HEAD + os.urandom(size - len(MP4_HEAD))


def _upload(
    client: TestClient,
    data: bytes,
    manifest: dict[str, Any] | str | None = None,
    *,
    filename: str = "clip.mp4",
) -> Response:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest or {})
    r: Response = client.post(
        "/v1/items",
        files={"file": (filename, data, "application/octet-stream")},
        data={"manifest": text},
    )
    return r


def _assert_problem(r: Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status
    assert doc["type"] and doc["title"] and doc["detail"]
    return doc


def _count(rt: Runtime, table: type) -> int:
    with rt.sessions() as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --- upload and metadata ------------------------------------------------------------------


def test_upload_then_same_bytes_again_is_the_same_item(client: TestClient) -> None:
    data = _clip()
    sha = hashlib.sha256(data).hexdigest()
    manifest = {"device_id": "DSJ-001", "officer_id": "010203", "case_ids": ["A-1"], "sha256": sha}
    first = _upload(client, data, manifest)
    assert first.status_code == 201, first.text
    doc = first.json()
    assert doc["sha256"] == sha
    assert doc["size"] == len(data)
    assert doc["media_type"] == "video/mp4"
    assert doc["case_ids"] == ["A-1"]
    assert doc["duplicate"] is False
    assert doc["log_index"] == 0
    assert json.loads(doc["leaf"])["sha256"] == sha
    assert doc["receipt"].startswith("c2sp.org/tlog-proof@v1\n")

    again = _upload(client, data, {"case_ids": ["B-2"]}, filename="retry.mp4")
    assert again.status_code == 200, again.text
    dup = again.json()
    assert dup["id"] == doc["id"]
    assert dup["duplicate"] is True
    assert dup["case_ids"] == ["A-1", "B-2"]
    assert (dup["log_index"], dup["leaf"]) == (doc["log_index"], doc["leaf"])

    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    colleague = bearer(make_user(rt, "officer-2", "officer", UNIT))
    item = client.get(f"/v1/items/{doc['id']}", headers=colleague)
    assert item.status_code == 200
    meta = item.json()
    assert (meta["id"], meta["sha256"], meta["size"]) == (doc["id"], sha, len(data))
    assert meta["case_ids"] == ["A-1", "B-2"]
    assert meta["original_name"] == "clip.mp4"
    assert (meta["device_id"], meta["officer_id"]) == ("DSJ-001", "010203")
    assert meta["leaf"] == doc["leaf"]
    actions = [(e["action"], e["actor"]) for e in meta["custody"]]
    assert actions == [
        ("sealed", f"user:{OFFICER}"),
        ("link", f"user:{OFFICER}"),
        ("received_again", f"user:{OFFICER}"),
        ("view", "user:officer-2"),
    ]


def test_upload_response_receipt_verifies_offline(client: TestClient) -> None:
    doc = _upload(client, _clip(), {"case_ids": ["A-1"]}).json()
    vkey = client.get("/v1/log/key").text.strip()
    checkpoint = verify_receipt(
        leaf_data=doc["leaf"].encode(), receipt_text=doc["receipt"], verifier_key=vkey
    )
    assert checkpoint.size > doc["log_index"]


# --- reading bytes back -------------------------------------------------------------------


def test_original_streams_identical_bytes_with_digest_headers(client: TestClient) -> None:
    data = _clip(300_000)
    item_id = _upload(client, data).json()["id"]
    r = client.get(f"/v1/items/{item_id}/original")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert r.headers["repr-digest"] == f"sha-256=:{_b64_sha256(data)}:"
    assert r.headers["digest"] == f"SHA-256={_b64_sha256(data)}"
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "video/mp4"


SATISFIABLE = {
    # Range header: (first, last) served of a 1000-byte object
    "bytes=0-99": (0, 99),
    "bytes=100-": (100, 999),
    "bytes=-50": (950, 999),
    "bytes=990-5000": (990, 999),  # a last byte past the end is cut to the end
    "bytes=-5000": (0, 999),  # a suffix longer than the object is the whole object
    "bytes=999-999": (999, 999),
}


def test_range_requests(client: TestClient) -> None:
    data = _clip(1000)
    item_id = _upload(client, data).json()["id"]
    for header, (first, last) in SATISFIABLE.items():
        r = client.get(f"/v1/items/{item_id}/original", headers={"Range": header})
        assert r.status_code == 206, (header, r.text)
        assert r.headers["content-range"] == f"bytes {first}-{last}/1000", header
        assert r.headers["content-length"] == str(last - first + 1), header
        assert r.content == data[first : last + 1], header
        # The digest headers describe the whole representation, not the part.
        assert r.headers["repr-digest"] == f"sha-256=:{_b64_sha256(data)}:"


def test_unsatisfiable_and_ignored_ranges(client: TestClient) -> None:
    data = _clip(1000)
    item_id = _upload(client, data).json()["id"]
    url = f"/v1/items/{item_id}/original"
    for header in ("bytes=1000-", "bytes=1000-1010", "bytes=5-2", "bytes=-0"):
        r = client.get(url, headers={"Range": header})
        _assert_problem(r, 416)
        assert r.headers["content-range"] == "bytes */1000", header
    for header in ("bytes=0-1,5-9", "items=0-9", "bytes=abc"):  # not served as ranges: the body
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 200, header
        assert r.content == data


# --- cases and not found ------------------------------------------------------------------


def test_case_lists_its_items_even_with_a_slash_in_its_id(client: TestClient) -> None:
    a = _upload(client, _clip(), {"case_ids": ["JX/2026/0042"]}).json()
    b = _upload(client, _clip(), {"case_ids": ["JX/2026/0042", "JX-7"]}).json()
    _upload(client, _clip(), {"case_ids": ["JX-7"]})
    r = client.get("/v1/cases/JX/2026/0042")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["case_id"] == "JX/2026/0042"
    assert sorted(i["id"] for i in doc["items"]) == sorted([a["id"], b["id"]])
    assert len(client.get("/v1/cases/JX-7").json()["items"]) == 2


def test_unknown_item_and_case_are_404_problems(client: TestClient) -> None:
    _upload(client, _clip(), {"case_ids": ["A-1"]})
    for url in (
        "/v1/items/0000000000NOSUCHITEM",
        "/v1/items/0000000000NOSUCHITEM/original",
        "/v1/items/0000000000NOSUCHITEM/receipt",
        "/v1/items/0000000000NOSUCHITEM/derivatives/proxy",
        "/v1/cases/NO-SUCH-CASE",
        "/v1/cases/A-1/sub",
    ):
        doc = _assert_problem(client.get(url), 404)
        assert doc["code"] == "not_found", url
        assert doc["instance"] == url


def test_invalid_case_id_in_the_path_is_refused(client: TestClient) -> None:
    doc = _assert_problem(client.get("/v1/cases/has space"), 422)
    assert "invalid case ID" in doc["detail"]


# --- refusals -----------------------------------------------------------------------------

_DATA = _clip(2048)
_SHA = hashlib.sha256(_DATA).hexdigest()

BAD_MANIFESTS: dict[str, tuple[str, str]] = {
    # name: (manifest text, expected words in the problem detail)
    "garbage JSON": ("{not json", "not valid JSON"),
    "JSON array": ('["A-1"]', "JSON object"),
    "JSON string": ('"A-1"', "JSON object"),
    "case id traversal": ('{"case_ids": ["../x"]}', "invalid case ID"),
    "case id too long": (json.dumps({"case_ids": ["A" * 65]}), "invalid case ID"),
    "case id with spaces": ('{"case_ids": ["A 1"]}', "invalid case ID"),
    "case id empty": ('{"case_ids": [""]}', "invalid case ID"),
    "file_name traversal": ('{"file_name": "../clip.mp4"}', "plain name"),
    "file_name with slash": ('{"file_name": "dcim/clip.mp4"}', "plain name"),
    "file_name with NUL": ('{"file_name": "clip\\u0000.mp4"}', "control characters"),
    "file_name dot-dot": ('{"file_name": ".."}', "plain name"),
    "negative size": ('{"size": -1}', "size"),
    "zero size": ('{"size": 0}', "size"),
    "size larger than the file": (json.dumps({"size": len(_DATA) + 1}), "declared size"),
    "size smaller than the file": (json.dumps({"size": len(_DATA) - 1}), "declared size"),
    "huge declared size": (json.dumps({"size": (1 << 40) + 1}), "size"),
    "wrong sha256": (json.dumps({"sha256": hashlib.sha256(b"x").hexdigest()}), "mismatch"),
    "non-hex sha256": (json.dumps({"sha256": "z" * 64}), "hexadecimal"),
    "short sha256": (json.dumps({"sha256": _SHA[:63]}), "hexadecimal"),
    "unknown field": ('{"case_ids": [], "evil": 1}', "evil"),
    "naive device time": ('{"device_time": "2026-01-01T08:00:00"}', "UTC offset"),
    "bad device id": ('{"device_id": "../dev"}', "device_id"),
    # A lone surrogate passed the name check, then failed the leaf after the bytes were put
    # under retention: a 500 and a locked object with no row, each time.
    "file_name with a lone surrogate": ('{"file_name": "a\\ud800.mp4"}', "surrogate"),
    "nested without end": ("[" * 2000, "not valid JSON"),
    "a key given twice": ('{"case_ids": [], "case_ids": ["Z-9"]}', "twice"),
    "a signature nothing checks": ('{"signature": "Zm9yZ2Vk"}', "signature"),
}


def test_bad_manifests_are_refused_and_leave_nothing(client: TestClient, runtime: Runtime) -> None:
    wrong: list[str] = []
    store, key = runtime.store, keys.original_key(_SHA)

    def versions() -> int:  # the other backend's run may have sealed _DATA in this bucket
        return len(list(store.client.list_objects(store.bucket, prefix=key, include_version=True)))

    before = versions()
    for name, (text, words) in BAD_MANIFESTS.items():
        r = _upload(client, _DATA, text)
        if r.status_code != 422 or words not in r.json().get("detail", ""):
            wrong.append(f"{name}: {r.status_code} {r.text}")
            continue
        doc = _assert_problem(r, 422)
        assert doc["code"] in {"bad_manifest", "integrity_mismatch"}, name
    assert wrong == []
    assert _count(runtime, Item) == 0
    assert _count(runtime, ItemCase) == 0
    assert _count(runtime, LogLeaf) == 0
    assert versions() == before  # nothing stored either (a locked object would stay for years)
    # The same bytes with a good manifest are then accepted as new evidence.
    assert _upload(client, _DATA, {"sha256": _SHA, "size": len(_DATA)}).status_code == 201


def test_wrong_sha256_leaves_no_object_version(client: TestClient, runtime: Runtime) -> None:
    claimed = hashlib.sha256(os.urandom(32)).hexdigest()
    doc = _assert_problem(_upload(client, _clip(), {"sha256": claimed}), 422)
    assert doc["code"] == "integrity_mismatch"
    store = runtime.store
    key = keys.original_key(claimed)
    assert list(store.client.list_objects(store.bucket, prefix=key, include_version=True)) == []


def test_empty_file_is_refused(client: TestClient, runtime: Runtime) -> None:
    doc = _assert_problem(_upload(client, b"", {"case_ids": ["A-1"]}), 422)
    assert "empty" in doc["detail"]
    assert doc["code"] == "empty_file"
    assert _count(runtime, Item) == 0


def test_missing_parts_are_a_problem(client: TestClient) -> None:
    r = client.post("/v1/items", data={"manifest": "{}"})
    doc = _assert_problem(r, 422)
    assert "file" in doc["detail"]


HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "..", "a\\..\\..\\b.mp4", "clip\x01.mp4"]


def test_hostile_multipart_file_names_are_not_paths(client: TestClient) -> None:
    for filename in HOSTILE_NAMES:
        r = _upload(client, _clip(), {"case_ids": ["A-1"]}, filename=filename)
        assert r.status_code == 201, (filename, r.text)
        name = client.get(f"/v1/items/{r.json()['id']}").json()["original_name"]
        if name is not None:
            assert "/" not in name and "\\" not in name, (filename, name)
            assert name not in {".", ".."} and name.isprintable(), (filename, name)
    assert len(client.get("/v1/cases/A-1").json()["items"]) == len(HOSTILE_NAMES)


def test_manifest_file_name_wins_over_the_multipart_name(client: TestClient) -> None:
    r = _upload(client, _clip(), {"file_name": "DSJ_20260101.mp4"}, filename="upload.bin")
    name = client.get(f"/v1/items/{r.json()['id']}").json()["original_name"]
    assert name == "DSJ_20260101.mp4"


def test_body_over_the_endpoint_limit_is_refused(make_settings: SettingsFactory) -> None:
    settings = make_settings(api={"max_upload_mb": 1})
    with TestClient(create_app(settings, workers=0)) as c:
        _signed_in(c)
        doc = _assert_problem(_upload(c, _clip(1024 * 1024 + 1)), 413)
        assert "exceeds" in doc["detail"]
        doc = _assert_problem(_upload(c, _clip(), {"size": 2 * 1024 * 1024}), 413)
        assert "exceeds" in doc["detail"]
        rt: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
        assert _count(rt, Item) == 0
        assert list(settings.spool_dir.iterdir()) == []  # the spool is cleaned up


# --- service endpoints --------------------------------------------------------------------


def test_health_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/items",
        "/v1/items/{item_id}",
        "/v1/items/{item_id}/original",
        "/v1/items/{item_id}/receipt",
        "/v1/cases/{case_id}",
        "/v1/log/key",
        "/v1/log/checkpoint",
        "/v1/log/proof/consistency",
        "/healthz",
    ):
        assert path in spec["paths"], path


def test_log_key_checkpoint_receipt_and_consistency_verify_offline(client: TestClient) -> None:
    first = _upload(client, _clip(), {"case_ids": ["A-1"]}).json()
    vkey = client.get("/v1/log/key").text.strip()
    verifier = Verifier.from_key(vkey)

    def checkpoint() -> Checkpoint:
        r = client.get("/v1/log/checkpoint")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        return Checkpoint.parse(open_note(r.text, [verifier]).text)

    old = checkpoint()
    assert old.size == 2  # the item leaf and its "sealed" custody leaf
    second = _upload(client, _clip(), {"case_ids": ["A-1"]}).json()
    assert second["log_index"] == old.size

    r = client.get(f"/v1/items/{first['id']}/receipt")
    assert r.status_code == 200
    receipt = r.json()
    assert (receipt["id"], receipt["log_index"], receipt["leaf"]) == (
        first["id"],
        first["log_index"],
        first["leaf"],
    )
    verified = verify_receipt(
        leaf_data=receipt["leaf"].encode(), receipt_text=receipt["receipt"], verifier_key=vkey
    )
    new = checkpoint()
    assert verified == new
    assert new.size == 4

    def proof(size1: int, size2: int) -> list[bytes]:
        r = client.get("/v1/log/proof/consistency", params={"from": size1, "to": size2})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["from"], doc["to"]) == (size1, size2)
        return [base64.b64decode(h) for h in doc["proof"]]

    verify_consistency(
        size1=old.size,
        size2=new.size,
        proof=proof(old.size, new.size),
        root1=old.root_hash,
        root2=new.root_hash,
    )
    # The tree of one leaf has that leaf's hash as its root.
    root1 = leaf_hash(first["leaf"].encode())
    verify_consistency(
        size1=1, size2=new.size, proof=proof(1, new.size), root1=root1, root2=new.root_hash
    )
    verify_consistency(
        size1=new.size,
        size2=new.size,
        proof=proof(new.size, new.size),
        root1=new.root_hash,
        root2=new.root_hash,
    )


def test_consistency_proof_out_of_range_is_a_client_error(client: TestClient) -> None:
    _upload(client, _clip())  # a log of 2 leaves
    for size1, size2 in ((0, 2), (3, 2), (1, 3), (-1, 2), (0, 0)):
        r = client.get("/v1/log/proof/consistency", params={"from": size1, "to": size2})
        assert r.status_code in {400, 422}, (size1, size2, r.text)
        _assert_problem(r, r.status_code)


def test_forged_bytes_are_never_delivered_whole(client: TestClient, runtime: Runtime) -> None:
    """The original is re-hashed on the way out; a mismatch aborts the transfer before its
    last bytes, so the receiver never holds a complete copy of changed bytes."""
    data = _clip(3 * 1024 * 1024 + 5)
    item_id = _upload(client, data).json()["id"]
    forged = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]  # same size
    with runtime.sessions() as s:
        key = repo.get_item(s, item_id=item_id).object_key
    version = runtime.store.put_bytes(key, forged, content_type="video/mp4").version_id
    with transaction(runtime.sessions) as s:
        repo.update_item(s, item_id=item_id, version_id=version)
    # All of it asked for as a range (what players and download resumers send) too.
    for headers, status in (({}, 200), ({"Range": "bytes=0-"}, 206)):
        url = f"/v1/items/{item_id}/original"
        received, error = _read_until_aborted(client, url, headers=headers, status=status)
        assert error is not None, f"the forged bytes were delivered without an error: {headers}"
        assert any(isinstance(e, HashMismatch) for e in _chain(error)), repr(error)
        assert len(received) < len(data)
        assert received == forged[: len(received)]
    # A part is not a copy: it is served as stored (nothing to compare it with).
    part = client.get(f"/v1/items/{item_id}/original", headers={"Range": "bytes=0-299"})
    assert part.status_code == 206 and part.content == forged[:300]


def _read_until_aborted(
    client: TestClient, url: str, *, headers: dict[str, str] | None = None, status: int = 200
) -> tuple[bytes, BaseException | None]:
    received = bytearray()
    try:
        with client.stream("GET", url, headers=headers) as r:
            assert r.status_code == status
            for chunk in r.iter_bytes():
                received += chunk
    except Exception as e:  # the server aborting is what this looks for
        return bytes(received), e
    return bytes(received), None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def test_the_thread_pool_is_sized_for_waiting_seals(make_settings: SettingsFactory) -> None:
    """Each simple upload holds a pool thread while it waits for its checkpoint: the pool is
    ``api.threads`` (anyio's default of 40 kept the 41st concurrent upload waiting)."""
    from anyio import to_thread

    settings = make_settings(api={"threads": 123})
    with TestClient(create_app(settings, workers=0)) as c:
        assert c.portal is not None
        tokens = c.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
    assert tokens == 123


def _drive(client: TestClient, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    """POST /v1/items straight to the app, the body in ``chunks``: (status, chunks read)."""
    app = client.app
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {
                "type": "http.request",
                "body": chunks[read - 1],
                "more_body": read < len(chunks),
            }
        return {"type": "http.disconnect"}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http", "method": "POST", "path": "/v1/items", "raw_path": b"/v1/items",
        "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": "",
        "server": ("testserver", 80), "client": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip

    async def call() -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]

    assert client.portal is not None
    client.portal.call(call)
    return statuses[0], read


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[str, bytes]:
    boundary = "liuhen-test-boundary"
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def test_an_upload_is_read_only_after_its_caller_may_upload_and_only_up_to_the_limit(
    make_settings: SettingsFactory,
) -> None:
    """FastAPI read body parameters before the authorization: an anonymous body was written
    to disk whole, then refused. Now nothing of it is read; a Content-Length past the limit is
    refused before reading, and a body that grows past it is cut off."""
    settings = make_settings(api={"max_upload_mb": 1})
    with TestClient(create_app(settings, workers=0)) as c:
        rt: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
        token = bearer(make_user(rt, OFFICER, "officer", UNIT))
        kind, body = _multipart([("manifest", None, b"{}"), ("file", "big.mp4", _clip(3 << 20))])
        chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        anonymous = {"content-type": kind, "content-length": str(len(body))}
        assert _drive(c, anonymous, chunks) == (401, 0)
        assert _drive(c, {**anonymous, **token}, chunks) == (413, 0)  # declared too big
        status, read = _drive(c, {"content-type": kind, **token}, chunks)  # no length given
        assert status == 413 and read < len(chunks)  # cut off at the limit, not read to the end
        assert _count(rt, Item) == 0


def test_a_form_with_two_files_or_two_manifests_is_refused(client: TestClient) -> None:
    """The last part of a name used to win silently: one recording sent, another sealed."""
    for parts in (
        [("manifest", None, b"{}"), ("file", "one.mp4", _clip()), ("file", "two.mp4", _clip())],
        [("manifest", None, b"{}"), ("manifest", None, b'{"case_ids": ["Z-9"]}'),
         ("file", "one.mp4", _clip())],
    ):  # fmt: skip
        kind, body = _multipart(parts)
        r = client.post("/v1/items", content=body, headers={"content-type": kind})
        _assert_problem(r, 422)


def test_a_nul_character_anywhere_is_a_problem_document_not_a_500(client: TestClient) -> None:
    """PostgreSQL refuses NUL in text: in a path, a query or a reason it was a bare 500."""
    for method, url, body in (
        ("GET", "/v1/items/a%00b", None),
        ("GET", "/v1/items/a%00b/receipt", None),
        ("GET", "/v1/items?case=%00", None),
        ("GET", "/v1/items?device=x%00", None),
        ("POST", "/v1/cases/H-1/hold", {"reason": "x\u0000"}),
    ):
        r = client.request(method, url, json=body)
        assert r.status_code in {200, 403, 404, 422}, (url, r.status_code, r.text)
        if r.status_code != 200:  # SQLite takes NUL: a search then just finds nothing
            assert r.headers["content-type"].startswith(PROBLEM_JSON), (url, r.text)


def test_an_anonymous_flood_writes_a_bounded_number_of_rows_and_counts_the_rest(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each unauthenticated request wrote a row, under the write lock the seals wait for, for
    anyone who reaches the API. Now a few rows per address and window; the next row says how
    many went unrecorded (every one is still in the log file)."""
    from api import auth
    from storage import people as people_store

    monkeypatch.setattr(auth, "UNAUTHENTICATED_EVENTS", 3)
    monkeypatch.setattr(auth, "UNAUTHENTICATED_WINDOW_S", 1.0)
    anonymous = TestClient(client.app)

    def rows() -> list[dict[str, Any]]:
        with runtime.sessions() as s:
            events = people_store.case_events(s)
        return [e.details or {} for e in events if e.action == "unauthenticated"]

    before = len(rows())
    for _ in range(10):
        assert anonymous.get("/v1/items").status_code == 401
    assert len(rows()) - before == 3
    time.sleep(1.1)
    assert anonymous.get("/v1/items").status_code == 401
    assert rows()[-1]["not_recorded"] == 7
