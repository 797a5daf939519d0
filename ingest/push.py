"""``liuhen push``: the device side of tus intake.

For each file: hash it, sign a v1 manifest with the credential's key (``seq`` above both the
last one this client used and the last one the server accepted), create a tus upload and send
it in checksummed chunks; on a dropped connection or a 5xx, wait (exponential backoff with
jitter), ask the server where the upload stands (HEAD) and go on from there. The upload URL is
kept in a small state file beside the credential, so a killed ``liuhen push`` resumes the same
upload. When the last byte is in, the receipt is fetched and printed only after its inclusion
proof and the checkpoint signature verified against the log key in the credential.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ingest.devices import Credential
from ingest.errors import (
    DeviceRefused,
    IntakeRefused,
    IntegrityMismatch,
    SeqReplayed,
    ServerUnavailable,
)
from ingest.manifest import kept_file_name, path_text
from integrity.hashing import sha256_file
from integrity.leaves import canonical_json
from integrity.verify import verify_receipt

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
CHUNK = 16 << 20


class PushFailed(DeviceRefused):
    """The server refused the upload; carries its problem document."""

    code = "push_failed"

    def __init__(self, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.problem = problem or {}
        self.code = str(self.problem.get("code") or "push_failed")


@dataclass
class PushState:
    """The local state file: the last ``seq`` used and unfinished uploads by file."""

    path: Path
    last_seq: int = -1
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PushState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except ValueError:  # a torn file from a crash: start afresh (the server keeps seq)
            return cls(path)
        return cls(path, int(data.get("last_seq", -1)), dict(data.get("uploads", {})))

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"last_seq": self.last_seq, "uploads": self.uploads}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Retry:
    attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))  # noqa: S311


Progress = Callable[[int], None]
AHEAD = 8
"""Receipts ``push_all`` awaits at once while it goes on uploading."""


@dataclass(frozen=True)
class _Sent:
    """An upload whose every byte the server has: what fetching its receipt needs."""

    path: Path
    url: str
    key: str
    sha256: str


class Pusher:
    def __init__(
        self,
        credential: Credential,
        *,
        server: str,
        state: PushState,
        retry: Retry | None = None,
        chunk_size: int = CHUNK,
        timeout_s: float = 300.0,
    ) -> None:
        self.cred = credential
        self.base = server.rstrip("/")
        self.state = state
        self._state_lock = threading.Lock()  # receipts are fetched on threads (push_all)
        self.retry = retry or Retry()
        self.chunk_size = chunk_size
        self.client = httpx.Client(
            headers={"Authorization": f"Bearer {credential.token}", **TUS},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    def close(self) -> None:
        self.client.close()

    # --- one file ----------------------------------------------------------------------

    def push(
        self,
        path: Path,
        *,
        case_ids: list[str],
        progress: Progress | None = None,
        sha256: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``path`` and return its verified ingest document (plus ``"file"``)."""
        return self._finish(self._upload(path, case_ids=case_ids, progress=progress, sha256=sha256))

    def push_all(
        self,
        paths: Sequence[Path],
        *,
        case_ids: list[str],
        progress_for: Callable[[Path], Progress | None] | None = None,
        ahead: int = AHEAD,
    ) -> Iterator[dict[str, Any]]:
        """Push ``paths`` one after another, yielding each verified document in order.

        A receipt waits for the next checkpoint (``log.checkpoint_interval_ms``), so a file's
        receipt is fetched and verified while the next ones upload, at most ``ahead`` at a
        time: a camera docked with hundreds of photos does not wait one checkpoint for each.
        The first failure is raised once the documents before it are yielded."""
        with ThreadPoolExecutor(max(1, ahead), thread_name_prefix="receipt") as pool:
            waiting: deque[Future[dict[str, Any]]] = deque()
            try:
                for path in paths:
                    progress = progress_for(path) if progress_for else None
                    try:
                        sent = self._upload(path, case_ids=case_ids, progress=progress)
                    except Exception:
                        while waiting:  # the files before this one are sealed: say so first
                            yield waiting.popleft().result()
                        raise
                    waiting.append(pool.submit(self._finish, sent))
                    while len(waiting) >= max(1, ahead) or (waiting and waiting[0].done()):
                        yield waiting.popleft().result()
                while waiting:
                    yield waiting.popleft().result()
            finally:
                for future in waiting:  # a failure or a consumer that stopped: no more of them
                    future.cancel()

    def _upload(
        self,
        path: Path,
        *,
        case_ids: list[str],
        progress: Progress | None = None,
        sha256: str | None = None,
    ) -> _Sent:
        """Create (or resume) the tus upload of ``path`` and send every byte."""
        size = path.stat().st_size
        if size == 0:
            raise IntakeRefused(f"{path}: the file is empty")
        digest = sha256 or sha256_file(path)[0]
        key = f"{path.resolve()}|{size}|{digest}|{','.join(sorted(case_ids))}"
        with self._state_lock:
            entry = self.state.uploads.get(key)
        url = entry["url"] if entry else None
        offset = self._where(url) if url else None
        if offset is None:
            url = self._create(path, size=size, sha256=digest, case_ids=case_ids)
            with self._state_lock:
                self.state.uploads[key] = {"url": url}
                self.state.save()
            offset = 0
        assert url is not None  # noqa: S101
        if progress:
            progress(offset)
        self._send(url, path, offset=offset, size=size, progress=progress)
        return _Sent(path, url, key, digest)

    def _finish(self, sent: _Sent) -> dict[str, Any]:
        """The sealed upload's document, once its receipt verifies; the upload is forgotten."""
        doc = self._result(sent.url)
        self._verify(doc, sha256=sent.sha256)
        with self._state_lock:
            self.state.uploads.pop(sent.key, None)
            self.state.save()
        keys = ("id", "sha256", "size", "media_type", "status", "case_ids", "duplicate")
        out = {k: doc[k] for k in keys}
        out |= {"log_index": doc["log_index"], "leaf": doc["leaf"], "receipt": doc["receipt"]}
        return {**out, "upload": doc["upload"], "verified": True, "file": path_text(sent.path)}

    def _create(self, path: Path, *, size: int, sha256: str, case_ids: list[str]) -> str:
        for _ in range(3):
            me = self._call("GET", f"{self.base}/v1/devices/me")
            with self._state_lock:
                served = me.json().get("last_seq")  # 0 is a seq used, None none yet
                seq = max(self.state.last_seq, -1 if served is None else int(served)) + 1
                self.state.last_seq = seq
                self.state.save()
            manifest = {
                "v": 1,
                "device_id": self.cred.device_id,
                "officer_id": me.json()["officer_id"],
                "seq": seq,
                "device_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "file_name": kept_file_name(path.name),  # bytes that are not UTF-8, readably
                "size": size,
                "sha256": sha256,
                "case_ids": sorted(set(case_ids)),
            }
            text = canonical_json(manifest)
            meta = {
                "manifest": text,
                "signature": self.cred.sign(text).encode("ascii"),
                "filename": kept_file_name(path.name).encode("utf-8"),
            }
            header = ",".join(f"{k} {base64.b64encode(v).decode()}" for k, v in meta.items())
            try:
                r = self._call(
                    "POST",
                    f"{self.base}/v1/uploads",
                    headers={"Upload-Length": str(size), "Upload-Metadata": header},
                )
            except PushFailed as e:
                if e.code == SeqReplayed.code:
                    continue  # another push of this device took the seq: take the next
                raise
            return str(httpx.URL(self.base).join(r.headers["Location"]))
        raise PushFailed("the server kept refusing the manifest seq")

    def _where(self, url: str) -> int | None:
        """The server's offset for ``url``; None when it no longer knows the upload."""
        try:
            r = self._call("HEAD", url)
        except PushFailed:
            return None
        return int(r.headers["Upload-Offset"])

    def _send(
        self, url: str, path: Path, *, offset: int, size: int, progress: Progress | None
    ) -> None:
        attempt = 0
        with path.open("rb") as f:
            while offset < size:
                f.seek(offset)
                want = min(self.chunk_size, size - offset)
                chunk = f.read(want)
                if len(chunk) < want:  # rewritten under us (a loop recording): never loop
                    raise IntakeRefused(
                        f"{path}: the file shrank to {offset + len(chunk)} bytes while it was "
                        f"sent ({size} when the upload began); push it again once it is closed"
                    )
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                try:
                    r = self.client.patch(
                        url,
                        content=chunk,
                        headers={
                            "Content-Type": OCTETS,
                            "Upload-Offset": str(offset),
                            "Upload-Checksum": f"sha256 {checksum}",
                        },
                    )
                except httpx.TransportError as e:
                    attempt = self._backoff(attempt, e)
                    offset = self._resync(url)
                    continue
                if r.status_code == 204:
                    offset = int(r.headers["Upload-Offset"])
                    attempt = 0
                    if progress:
                        progress(offset)
                    continue
                if r.status_code >= 500 or r.status_code in {408, 409, 423, 460}:
                    # A server restart, a busy lock, a chunk damaged on the way: resync, resend.
                    attempt = self._backoff(attempt, PushFailed(r.text))
                    offset = self._resync(url)
                    continue
                raise _refused(r)

    def _resync(self, url: str) -> int:
        offset = self._where(url)
        if offset is None:
            raise PushFailed(f"the server no longer knows upload {url}")
        return offset

    def _result(self, url: str) -> dict[str, Any]:
        for attempt in range(self.retry.attempts):
            r = self._call("GET", url)
            doc: dict[str, Any] = r.json()
            if doc.get("state") == "sealed":
                return doc
            time.sleep(self.retry.delay(attempt))
        raise PushFailed(f"upload {url} was not sealed")

    def _verify(self, doc: dict[str, Any], *, sha256: str) -> None:
        """Only a receipt that proves our bytes under a checkpoint signed by the log key."""
        leaf = json.loads(doc["leaf"])
        if leaf.get("sha256") != sha256 or doc["sha256"] != sha256:
            raise IntegrityMismatch(
                f"the receipt is for {leaf.get('sha256')}, the file hashes to {sha256}"
            )
        verify_receipt(
            leaf_data=doc["leaf"].encode("utf-8"),
            receipt_text=doc["receipt"],
            verifier_key=self.cred.log_key,
        )

    # --- HTTP with retries ---------------------------------------------------------------

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                r = self.client.request(method, url, **kw)
            except httpx.TransportError as e:
                attempt = self._backoff(attempt, e)
                continue
            busy = r.status_code in {409, 423} and method in {"GET", "HEAD"}
            if r.status_code >= 500 or busy:  # busy: another request is sealing the upload
                attempt = self._backoff(attempt, PushFailed(f"{r.status_code} {r.text[:200]}"))
                continue
            if r.status_code >= 400:
                raise _refused(r)
            return r

    def _backoff(self, attempt: int, error: Exception) -> int:
        if attempt >= self.retry.attempts:
            raise ServerUnavailable(f"giving up after {attempt} retries: {error}")
        time.sleep(self.retry.delay(attempt))
        return attempt + 1


def _refused(r: httpx.Response) -> PushFailed:
    doc: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        doc = r.json()
    if not doc:
        doc = {"status": r.status_code, "code": f"http_{r.status_code}"}
    detail = doc.get("detail") or r.reason_phrase
    return PushFailed(f"{r.request.method} {r.url.path} → {r.status_code}: {detail}", doc)
