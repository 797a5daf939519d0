"""The S3 object store, spoken by the ``minio`` client.

One bucket with versioning and Object Lock. Writes return the version ID and the SHA-256 of
exactly the bytes sent (hashed in the same pass as the upload); reads go by version ID.
minio / urllib3 errors are translated into :mod:`storage.errors` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.datatypes import Part
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from minio.retention import Retention

from integrity.hashing import CHUNK, HashingReader
from storage.errors import ObjectLocked, ObjectNotFound, ObjectStoreError, StoreUnavailable

MIB = 1024 * 1024
PART_SIZE = 8 * MIB
"""Multipart part size. Each part in flight is held in memory: PARALLEL_UPLOADS uploading and
one being read. bench/ingest.py, 1 GiB: 8 MiB parts peak at 137 MB RSS in the sealing process,
16 MiB parts at 178 MB (221 MB in ``liuhen ingest``) for at most 2 % more speed, within noise."""
PARALLEL_UPLOADS = 3
MAX_PARTS = 10_000
"""S3's limit on the parts of one multipart upload."""
_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NoSuchObjectLockConfiguration"}
_LOCKED = {"AccessDenied", "ObjectLocked", "InvalidRequest"}


@dataclass(frozen=True)
class StoredObject:
    key: str
    version_id: str
    size: int
    sha256: str
    """SHA-256 of the bytes that were sent, computed while sending them."""


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn minio / urllib3 failures into storage errors that name the operation."""
    try:
        yield
    except S3Error as e:
        if e.code in _NOT_FOUND:
            raise ObjectNotFound(f"{what}: {e.code}") from e
        raise ObjectStoreError(f"{what}: S3 said {e.code}: {e.message}") from e
    except MinioException as e:
        raise ObjectStoreError(f"{what}: {e}") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise StoreUnavailable(f"{what}: object store unreachable: {e}") from e


class ObjectStore:
    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=120),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            maxsize=16,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as e:  # a setting, caught here rather than as a crash on first use
            raise ObjectStoreError(f"bucket name {bucket!r} is not valid for S3: {e}") from e
        self.bucket = bucket

    def ensure_bucket(self) -> None:
        """Create the bucket with Object Lock (which turns versioning on), or check it has both."""
        with translate_errors(f"create bucket {self.bucket}"):
            if not self.client.bucket_exists(self.bucket):
                with contextlib.suppress(S3Error):  # a concurrent creator won the race
                    self.client.make_bucket(self.bucket, object_lock=True)
            status = self.client.get_bucket_versioning(self.bucket).status
        if status != "Enabled":
            raise ObjectStoreError(
                f"bucket {self.bucket} has versioning {status!r}; WORM needs it Enabled"
            )

    def put_stream(
        self,
        key: str,
        stream: IO[bytes],
        *,
        length: int = -1,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
    ) -> StoredObject:
        """Upload ``stream`` while hashing it. ``length=-1`` streams in multipart parts."""
        reader = HashingReader(stream)
        retention = Retention(COMPLIANCE, retain_until) if retain_until else None
        part_size = part_size_for(length)
        with translate_errors(f"put {key}"):
            result = self.client.put_object(
                self.bucket,
                key,
                _Exactly(reader, length, key),  # type: ignore[arg-type]  # minio only read()s
                length,
                content_type=content_type,
                part_size=part_size,
                num_parallel_uploads=PARALLEL_UPLOADS,
                retention=retention,
            )
        if not result.version_id:
            raise ObjectStoreError(f"put {key}: the store returned no version ID (versioning off?)")
        return StoredObject(key, result.version_id, reader.size, reader.hexdigest())

    def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
    ) -> StoredObject:
        with path.open("rb") as f:
            size = path.stat().st_size
            return self.put_stream(
                key, f, length=size, content_type=content_type, retain_until=retain_until
            )

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, retain_until: datetime | None = None
    ) -> StoredObject:
        return self.put_stream(
            key,
            io.BytesIO(data),
            length=len(data),
            content_type=content_type,
            retain_until=retain_until,
        )

    def retain(self, key: str, version_id: str, until: datetime) -> None:
        """Put a version under COMPLIANCE retention: nobody can delete it before ``until``."""
        with translate_errors(f"retain {key}@{version_id}"):
            self.client.set_object_retention(
                self.bucket, key, Retention(COMPLIANCE, until), version_id=version_id
            )

    def retention(self, key: str, version_id: str) -> tuple[str | None, datetime | None]:
        with translate_errors(f"retention of {key}@{version_id}"):
            r = self.client.get_object_retention(self.bucket, key, version_id=version_id)
        if r is None:
            return None, None
        return r.mode, r.retain_until_date

    def remove_version(self, key: str, version_id: str) -> None:
        """Delete one version. Refused by the store while the version is under retention."""
        try:
            with translate_errors(f"delete {key}@{version_id}"):
                self.client.remove_object(self.bucket, key, version_id=version_id)
        except ObjectStoreError as e:
            cause = e.__cause__
            if isinstance(cause, S3Error) and cause.code in _LOCKED:
                raise ObjectLocked(f"delete {key}@{version_id} refused: {cause.code}") from e
            raise

    def size(self, key: str, version_id: str) -> int:
        with translate_errors(f"stat {key}@{version_id}"):
            st = self.client.stat_object(self.bucket, key, version_id=version_id)
        return int(st.size or 0)

    @contextlib.contextmanager
    def open(self, key: str, version_id: str, *, offset: int = 0, length: int = 0) -> Iterator[Any]:
        """A streaming response for one version (optionally a byte range); always released."""
        with translate_errors(f"get {key}@{version_id}"):
            resp = self.client.get_object(
                self.bucket, key, offset=offset, length=length, version_id=version_id
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

    def latest_version(self, key: str) -> str:
        with translate_errors(f"stat {key}"):
            st = self.client.stat_object(self.bucket, key)
        if not st.version_id:
            raise ObjectStoreError(f"stat {key}: no version ID")
        return st.version_id


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
