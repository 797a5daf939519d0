"""The S3 object store, spoken by the ``minio`` client.

One bucket with versioning and Object Lock. Writes return the version ID and the SHA-256 of
exactly the bytes sent (hashed in the same pass as the upload); reads go by version ID.
minio / urllib3 errors are translated into :mod:`storage.errors` here and nowhere else, and
classified: *absent* (404, NoSuchKey, NoSuchVersion: :class:`ObjectNotFound`) is a fact about
the bucket; *unavailable* (connection refused, timeouts, 5xx, SlowDown: :class:`StoreUnavailable`)
is a fact about the moment, retried with exponential backoff and jitter for ``retry_s``.

The store connects on first use: a command that never touches an object never starts (or
reaches) the object store.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import urllib3

from integrity.hashing import CHUNK, HashingReader
from storage.errors import ObjectLocked, ObjectNotFound, ObjectStoreError, StoreUnavailable

if TYPE_CHECKING:
    # minio is imported on first use: index-only commands never pay for it.
    from minio import Minio
    from minio.datatypes import Part
    from minio.error import MinioException

log = logging.getLogger(__name__)

MIB = 1024 * 1024
PART_SIZE = 8 * MIB
"""Multipart part size. Each part in flight is held in memory: PARALLEL_UPLOADS uploading and
one being read. bench/ingest.py, 1 GiB: 8 MiB parts peak at 137 MB RSS in the sealing process,
16 MiB parts at 178 MB (221 MB in ``liuhen ingest``) for at most 2 % more speed, within noise."""
PARALLEL_UPLOADS = 3
MAX_PARTS = 10_000
"""S3's limit on the parts of one multipart upload."""
DEFAULT_RETRY_S = 20.0
"""How long an operation keeps retrying an unavailable store before it gives up."""
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NoSuchObjectLockConfiguration"}
_UNAVAILABLE = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "ServiceUnavailableException",
    "ThrottlingException",
    "RequestTimeTooSkewed",
}
"""S3 error codes that say "not now" rather than "no" (5xx answers are unavailable too)."""
_LOCKED = {"AccessDenied", "ObjectLocked", "InvalidRequest"}
_NO_LOCK_CONFIG = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
COMPLIANCE = "COMPLIANCE"

T = TypeVar("T")


def check_bucket_name(name: str) -> None:
    """S3's rules for bucket names (3-63 lowercase letters, digits, dots, hyphens; not an IP
    address; no dot next to a dot or hyphen). ValueError names what is wrong."""
    if not _BUCKET_NAME.fullmatch(name):
        raise ValueError("3 to 63 lowercase letters, digits, '.' or '-', alphanumeric at both ends")
    if _IPV4.fullmatch(name):
        raise ValueError("must not be an IP address")
    if any(bad in name for bad in ("..", ".-", "-.")):
        raise ValueError("must not have '..', '.-' or '-.'")


@dataclass(frozen=True)
class StoredObject:
    key: str
    version_id: str
    size: int
    sha256: str
    """SHA-256 of the bytes that were sent, computed while sending them."""


@dataclass(frozen=True)
class S3Endpoint:
    """Where the store answers and with which credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool = False
    region: str | None = None


Connector = Callable[[], S3Endpoint]
"""Finds (or starts) the store; called on first use and again after it became unavailable."""


def _status(e: MinioException) -> int | None:
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(e, S3Error):
        return int(e.response.status) if e.response is not None else None
    if isinstance(e, ServerError):
        return e.status_code
    if isinstance(e, InvalidResponseError):
        code = getattr(e, "_code", None)
        return code if isinstance(code, int) else None
    return None


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn minio / urllib3 failures into storage errors that name the operation."""
    from minio.error import MinioException, S3Error

    try:
        yield
    except S3Error as e:
        status = _status(e)
        if e.code in _NOT_FOUND or (status == 404 and e.code not in _UNAVAILABLE):
            raise ObjectNotFound(f"{what}: {e.code}") from e
        if e.code in _UNAVAILABLE or (status is not None and status >= 500):
            raise StoreUnavailable(
                f"{what}: the store is unavailable ({e.code}: {e.message})"
            ) from e
        raise ObjectStoreError(f"{what}: S3 said {e.code}: {e.message}") from e
    except MinioException as e:
        status = _status(e)
        if status is not None and status >= 500:
            raise StoreUnavailable(f"{what}: the store is unavailable (HTTP {status})") from e
        raise ObjectStoreError(f"{what}: {e}") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise StoreUnavailable(f"{what}: object store unreachable: {e}") from e


def backoff_delays(retry_s: float, *, rng: random.Random | None = None) -> Iterator[float]:
    """Sleeps before each retry: exponential from BACKOFF_FIRST_S, capped at BACKOFF_MAX_S,
    with full jitter on the upper half (so that many clients do not retry in step), ending
    when the next sleep would pass ``retry_s`` in total."""
    pick = rng or random
    spent, attempt = 0.0, 0
    while True:
        ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
        delay = ceiling * pick.uniform(0.5, 1.0)
        if spent + delay > retry_s:
            return
        spent += delay
        attempt += 1
        yield delay


class ObjectStore:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None = None,
        access_key: str = "",
        secret_key: str = "",
        secure: bool = False,
        region: str | None = None,
        connect: Connector | None = None,
        prepare: Callable[[ObjectStore], None] | None = None,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        """``endpoint`` and credentials, or ``connect`` to find them on first use; ``prepare``
        runs once after each (re)connection (e.g. the bucket check)."""
        try:
            check_bucket_name(bucket)
        except ValueError as e:  # a setting, caught here rather than as a crash on first use
            raise ObjectStoreError(f"bucket name {bucket!r} is not valid for S3: {e}") from e
        if connect is None:
            if endpoint is None:
                raise ObjectStoreError("an object store needs an endpoint or a connector")
            fixed = S3Endpoint(endpoint, access_key, secret_key, secure, region)

            def connect() -> S3Endpoint:
                return fixed

        self.bucket = bucket
        self.retry_s = retry_s
        self._connect = connect
        self._prepare = prepare
        self._client: Minio | None = None
        self._lock = threading.RLock()
        self._gave_up_at: float | None = None

    @property
    def connected(self) -> bool:
        """Whether this store has been used (and so reached, or started, the server)."""
        return self._client is not None

    @property
    def client(self) -> Minio:
        """The minio client, connecting (and preparing) on first use."""
        with self._lock:
            if self._client is None:
                from minio import Minio

                where = self._connect()
                http = urllib3.PoolManager(
                    timeout=urllib3.Timeout(connect=5, read=120),
                    # One quick retry of a dropped connection; the real retrying is ours.
                    retries=urllib3.Retry(total=1, backoff_factor=0.1, status_forcelist=()),
                    maxsize=16,
                )
                self._client = Minio(
                    where.endpoint,
                    access_key=where.access_key,
                    secret_key=where.secret_key,
                    secure=where.secure,
                    region=where.region,
                    http_client=http,
                )
                if self._prepare is not None:
                    try:
                        self._prepare(self)
                    except BaseException:
                        self._client = None
                        raise
            return self._client

    def _reconnect(self) -> None:
        with self._lock:
            self._client = None

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` with its errors translated; an unavailable store is retried (backoff
        with jitter, reconnecting each time) until ``retry_s`` has passed, by the clock: a
        try that itself takes long (SeaweedFS waits 30 s for a volume to write to before it
        answers 500) uses up the budget as the sleeps do, so an operation gives up within
        ``retry_s`` plus one try.

        Once an operation has given up, the ones within the next ``retry_s`` try once and
        fail fast: a run over many objects (``verify --all``) does not wait out the budget
        for each of them while the store is down."""
        gave_up = self._gave_up_at
        recently = gave_up is not None and time.monotonic() - gave_up < self.retry_s
        delays = iter(()) if recently else backoff_delays(self.retry_s)
        began = time.monotonic()
        while True:
            try:
                with translate_errors(what):
                    result = call()
                self._gave_up_at = None
                return result
            except StoreUnavailable as e:
                delay = next(delays, None)
                if delay is None or time.monotonic() - began + delay > self.retry_s:
                    self._gave_up_at = time.monotonic()
                    raise
                log.warning("%s; retrying in %.2f s", e, delay)
                time.sleep(delay)
                self._reconnect()

    def ensure_bucket(self) -> None:
        """Create the bucket with Object Lock (which turns versioning on), or check that it has
        both: a bucket without them cannot keep evidence, and is refused."""

        from minio.error import S3Error

        def create_or_check() -> tuple[str | None, bool]:
            if not self.client.bucket_exists(self.bucket):
                with contextlib.suppress(S3Error):  # a concurrent creator won the race
                    self.client.make_bucket(self.bucket, object_lock=True)
            status = self.client.get_bucket_versioning(self.bucket).status
            try:
                self.client.get_object_lock_config(self.bucket)
            except S3Error as e:
                if e.code in {
                    "ObjectLockConfigurationNotFoundError",
                    "NoSuchObjectLockConfiguration",
                }:
                    return status, False
                raise
            return status, True

        status, locked = self._retrying(f"check bucket {self.bucket}", create_or_check)
        if status != "Enabled":
            raise ObjectStoreError(
                f"bucket {self.bucket} has versioning {status!r}; WORM needs it Enabled"
            )
        if not locked:
            raise ObjectStoreError(
                f"bucket {self.bucket} has no Object Lock; WORM needs a bucket made with it"
            )

    def put_stream(
        self,
        key: str,
        stream: IO[bytes],
        *,
        length: int = -1,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> StoredObject:
        """Upload ``stream`` while hashing it. ``length=-1`` streams in multipart parts.
        ``retain_until`` (COMPLIANCE retention) and ``legal_hold`` are set by the PUT itself:
        the version never exists without them.

        A seekable stream (a file) is sent again from its start when the store was
        unavailable; any other is sent once.
        """
        from minio.retention import Retention

        retention = Retention(COMPLIANCE, retain_until) if retain_until else None
        part_size = part_size_for(length)
        start = stream.tell() if stream.seekable() else None
        sent: list[HashingReader] = []

        def put() -> Any:
            if sent and start is not None:
                stream.seek(start)
            elif sent:
                raise StoreUnavailable(f"put {key}: the store failed mid-stream; not resendable")
            reader = HashingReader(stream)
            sent.append(reader)
            return self.client.put_object(
                self.bucket,
                key,
                _Exactly(reader, length, key),  # type: ignore[arg-type]  # minio only read()s
                length,
                content_type=content_type,
                part_size=part_size,
                num_parallel_uploads=PARALLEL_UPLOADS,
                retention=retention,
                legal_hold=legal_hold,
            )

        result = self._retrying(f"put {key}", put)
        if not result.version_id:
            raise ObjectStoreError(f"put {key}: the store returned no version ID (versioning off?)")
        reader = sent[-1]
        return StoredObject(key, result.version_id, reader.size, reader.hexdigest())

    def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> StoredObject:
        with path.open("rb") as f:
            size = path.stat().st_size
            return self.put_stream(
                key,
                f,
                length=size,
                content_type=content_type,
                retain_until=retain_until,
                legal_hold=legal_hold,
            )

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> StoredObject:
        return self.put_stream(
            key,
            io.BytesIO(data),
            length=len(data),
            content_type=content_type,
            retain_until=retain_until,
            legal_hold=legal_hold,
        )

    def retain(self, key: str, version_id: str, until: datetime) -> None:
        """Put a version under COMPLIANCE retention: nobody can delete it before ``until``."""
        from minio.retention import Retention

        self._retrying(
            f"retain {key}@{version_id}",
            lambda: self.client.set_object_retention(
                self.bucket, key, Retention(COMPLIANCE, until), version_id=version_id
            ),
        )

    def retention(self, key: str, version_id: str) -> tuple[str | None, datetime | None]:
        r = self._retrying(
            f"retention of {key}@{version_id}",
            lambda: self.client.get_object_retention(self.bucket, key, version_id=version_id),
        )
        if r is None:
            return None, None
        return r.mode, r.retain_until_date

    def remove_version(self, key: str, version_id: str) -> None:
        """Delete one version. Refused by the store while the version is under retention."""
        from minio.error import S3Error

        try:
            self._retrying(
                f"delete {key}@{version_id}",
                lambda: self.client.remove_object(self.bucket, key, version_id=version_id),
            )
        except ObjectStoreError as e:
            cause = e.__cause__
            if isinstance(cause, S3Error) and cause.code in _LOCKED:
                raise ObjectLocked(f"delete {key}@{version_id} refused: {cause.code}") from e
            raise

    def size(self, key: str, version_id: str) -> int:
        st = self._retrying(
            f"stat {key}@{version_id}",
            lambda: self.client.stat_object(self.bucket, key, version_id=version_id),
        )
        return int(st.size or 0)

    @contextlib.contextmanager
    def open(self, key: str, version_id: str, *, offset: int = 0, length: int = 0) -> Iterator[Any]:
        """A streaming response for one version (optionally a byte range); always released.
        Opening is retried while the store is unavailable; a read cut short is not."""
        resp = self._retrying(
            f"get {key}@{version_id}",
            lambda: self.client.get_object(
                self.bucket, key, offset=offset, length=length, version_id=version_id
            ),
        )
        try:
            yield resp
        finally:
            resp.close()
            resp.release_conn()

    def iter_bytes(
        self, key: str, version_id: str, *, offset: int = 0, length: int = 0, chunk: int = CHUNK
    ) -> Iterator[bytes]:
        with self.open(key, version_id, offset=offset, length=length) as resp:
            with translate_errors(f"read {key}@{version_id}"):
                yield from resp.stream(chunk)

    def read_bytes(self, key: str, version_id: str) -> bytes:
        """Small objects only (checkpoints, leaf bundles)."""
        return b"".join(self.iter_bytes(key, version_id))

    def read_current(self, key: str, *, limit: int) -> bytes | None:
        """The newest version of a small object (``log/checkpoint``), at most ``limit`` bytes
        of it, or None if it has none (never put, or a delete marker over it)."""

        def get() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return bytes(resp.read(limit))  # streamed: no more is read off the wire
            finally:
                resp.close()
                resp.release_conn()

        try:
            return self._retrying(f"get {key}", get)
        except ObjectNotFound:
            return None

    def latest_version(self, key: str) -> str:
        st = self._retrying(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
        if not st.version_id:
            raise ObjectStoreError(f"stat {key}: no version ID")
        return str(st.version_id)

    def list_versions(self, prefix: str) -> list[ObjectVersion]:
        """Every stored version (delete markers left out) of every key under ``prefix``."""

        def listing() -> list[ObjectVersion]:
            found: list[ObjectVersion] = []
            for obj in self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, include_version=True
            ):
                if obj.version_id and not obj.is_delete_marker and obj.object_name:
                    found.append(
                        ObjectVersion(
                            obj.object_name, obj.version_id, int(obj.size or 0), obj.last_modified
                        )
                    )
            return found

        return self._retrying(f"list {prefix}", listing)

    def legal_hold(self, key: str, version_id: str, on: bool) -> None:
        """Set or lift the S3 legal hold of one version. While on, the store refuses to delete
        that version even after its retention date (and independently of it)."""

        def change() -> None:
            if on:
                self.client.enable_object_legal_hold(self.bucket, key, version_id=version_id)
            else:
                self.client.disable_object_legal_hold(self.bucket, key, version_id=version_id)

        self._retrying(f"legal hold {'on' if on else 'off'} {key}@{version_id}", change)

    def legal_hold_on(self, key: str, version_id: str) -> bool:
        """Whether the version is under legal hold, as the store says."""
        from minio.error import S3Error

        def read() -> bool:
            try:
                return bool(
                    self.client.is_object_legal_hold_enabled(
                        self.bucket, key, version_id=version_id
                    )
                )
            except S3Error as e:
                if e.code == "NoSuchObjectLegalHold":
                    return False  # SeaweedFS: never set on this version
                raise

        return self._retrying(f"legal hold of {key}@{version_id}", read)


class _Exactly:
    """Reads ``length`` bytes through ``reader``. A stream that ends early (a file truncated
    while it is read) is an error of its own; minio would raise an OSError, which reads as
    an unreachable store."""

    def __init__(self, reader: HashingReader, length: int, key: str) -> None:
        self._reader, self._length, self._key = reader, length, key

    def read(self, n: int = -1) -> bytes:
        block = self._reader.read(n)
        if not block and 0 <= self._reader.size < self._length:
            raise ObjectStoreError(
                f"put {self._key}: the stream ended after {self._reader.size} "
                f"of {self._length} bytes"
            )
        return block


def part_size_for(length: int) -> int:
    """PART_SIZE, or the next whole MiB that keeps ``length`` bytes within S3's 10,000 parts
    (at PART_SIZE alone, anything over 78 GiB would be refused before a byte is sent)."""
    if length <= PART_SIZE * MAX_PARTS:
        return PART_SIZE
    per_part = -(-length // MAX_PARTS)
    return -(-per_part // MIB) * MIB


def retain_until(retention: timedelta, *, now: datetime | None = None) -> datetime:
    """End of retention counted from now; S3 wants whole seconds."""
    base = now or datetime.now(UTC)
    return (base + retention).replace(microsecond=0)


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key, as a listing gives it."""

    key: str
    version_id: str
    size: int
    modified: datetime | None


# --- an object written part by part (device intake streams a tus upload as it arrives) -------


class PartWriter:
    """One S3 multipart upload fed part by part (every part but the last at least 5 MiB),
    hashing exactly the bytes sent. ``complete`` returns the new version; ``abort`` drops it.

    minio-py has no public part-by-part API; these are the methods its own ``put_object``
    uses for multipart uploads."""

    def __init__(self, store: ObjectStore, key: str, *, content_type: str) -> None:
        self.store, self.key = store, key
        self._hash = hashlib.sha256()
        self.size = 0
        self._parts: list[Part] = []
        with translate_errors(f"start multipart {key}"):
            self.upload_id = store.client._create_multipart_upload(
                store.bucket, key, {"Content-Type": content_type}
            )

    def put(self, data: bytes) -> None:
        number = len(self._parts) + 1
        with translate_errors(f"put part {number} of {self.key}"):
            etag = self.store.client._upload_part(
                self.store.bucket, self.key, data, None, self.upload_id, number
            )
        from minio.datatypes import Part

        self._parts.append(Part(number, etag))
        self._hash.update(data)
        self.size += len(data)

    def complete(self) -> StoredObject:
        with translate_errors(f"complete multipart {self.key}"):
            result = self.store.client._complete_multipart_upload(
                self.store.bucket, self.key, self.upload_id, self._parts
            )
        if not result.version_id:
            raise ObjectStoreError(f"put {self.key}: the store returned no version ID")
        return StoredObject(self.key, result.version_id, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        with contextlib.suppress(ObjectStoreError), translate_errors(f"abort {self.key}"):
            self.store.client._abort_multipart_upload(self.store.bucket, self.key, self.upload_id)
