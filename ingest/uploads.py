"""tus 1.0.0 uploads: the spool, the offset discipline, the running hash, sealing on the last byte.

The HTTP side is ``api/routes/uploads.py``; this module knows no HTTP.

* Bytes go to ``<home>/spool/uploads/<id>.bin``. The ``uploads.offset`` column is raised only
  after the bytes below it are fsynced, so the acknowledged offset never runs ahead of the disk.
  Bytes on disk beyond it (a writer killed between write and record) are cut off before the next
  write: the client is told the recorded offset and sends them again.
* The SHA-256 is updated as bytes arrive and kept in memory per upload, so completion needs no
  second read. Python cannot save a hash state, so after a restart the spool is re-hashed once,
  up to the recorded offset, when the upload is resumed.
* One writer per upload: an exclusive ``flock`` on the spool file (across threads and processes).
* Completion checks size and hash against the signed manifest, seals from the spool
  (``ingest.intake.seal_file``), records the item on the upload row and removes the spool.
  A seal that fails for a passing reason (store down) leaves the complete spool for a retry
  (``GET /v1/uploads/{id}`` seals it); a hash mismatch fails the upload for good.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update

from ingest import background, catalog
from ingest.devices import check_manifest
from ingest.durable import fsync_dir
from ingest.errors import (
    ChecksumMismatch,
    IntegrityMismatch,
    ItemDeleted,
    ManifestError,
    OffsetConflict,
    SeqReplayed,
    TooLarge,
    TooManyUploads,
    UploadExpired,
    UploadNotFound,
)
from ingest.intake import Vouched, seal_file, seal_stored
from ingest.runtime import Runtime
from ingest.sniff import sniff_file
from ingest.upload_stream import StoreStream
from integrity.errors import LiuhenError
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.ids import new_id
from storage.tables import Device, Upload

log = logging.getLogger(__name__)

RECEIVING, SEALED, FAILED, TERMINATED, EXPIRED = (
    "receiving",
    "sealed",
    "failed",
    "terminated",
    "expired",
)
CHECKSUM_ALGORITHMS = ("sha256", "sha1")
"""``Upload-Checksum`` algorithms (tus requires sha1; DESIGN.md asks for sha256)."""
"""Part size when streaming an upload to the store as it arrives (S3: at least 5 MiB)."""
LOCK_WAIT_S = 5.0
"""How long a request waits for another writer of the same upload (a dropped connection
whose handler is still finishing) before answering 409."""


@dataclass(frozen=True)
class UploadState:
    id: str
    device_id: str
    length: int
    offset: int
    state: str
    expires_at: datetime
    item_id: str | None
    error: dict[str, Any] | None
    served_by: str | None = None


def _lapsed(upload: Upload | UploadState, now: datetime) -> bool:
    """Untouched past its expiry with bytes still missing. A complete upload never lapses:
    every byte is in, only its seal is owed."""
    return upload.offset < upload.length and upload.expires_at <= now


def _state(row: Upload) -> UploadState:
    return UploadState(
        row.id,
        row.device_id,
        row.length,
        row.offset,
        row.state,
        row.expires_at,
        row.item_id,
        row.error,
        row.served_by,
    )


class Uploads:
    """The uploads of one server process: spool directory, running hashes, the sweep."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings.intake
        self.dir = rt.settings.uploads_dir  # made by the first upload, not by a server start
        self.here = rt.settings.api.advertise_url
        self._hashes: dict[str, tuple[int, Any]] = {}
        self._streams: dict[str, StoreStream] = {}
        self._guard = threading.Lock()
        self._last_sweep = 0.0

    def spool_path(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}.bin"

    # --- creation ----------------------------------------------------------------------

    def create(
        self,
        device: Device,
        *,
        length: int,
        manifest_text: bytes,
        signature: str,
        now: datetime | None = None,
    ) -> UploadState:
        """Check the signed manifest and the limits, consume ``seq``, make the spool file."""
        now = now or datetime.now(UTC)
        if length > self.settings.max_upload_bytes:
            raise TooLarge(
                f"Upload-Length {length} exceeds the maximum of {self.settings.max_upload_bytes}"
            )
        again = self._created_already(device.id, manifest_text, signature, length, now)
        if again is not None:
            return again
        try:
            return self._create(device, length, manifest_text, signature, now)
        except SeqReplayed:
            # The same request twice at once (a client that gave up waiting and sent it
            # again): the one that took the seq is the upload both asked for.
            again = self._created_already(device.id, manifest_text, signature, length, now)
            if again is None:
                raise
            return again

    def _create(
        self, device: Device, length: int, manifest_text: bytes, signature: str, now: datetime
    ) -> UploadState:
        upload_id = new_id()
        with transaction(self.rt.sessions) as session:
            manifest = check_manifest(
                session,
                device,
                manifest_text=manifest_text,
                signature=signature,
                case_id_pattern=self.rt.settings.case_id_pattern,
            )
            if manifest.size != length:
                raise ManifestError(
                    f"the manifest declares {manifest.size} bytes, Upload-Length is {length}"
                )
            busy = int(
                session.execute(
                    select(func.count())
                    .select_from(Upload)
                    .where(
                        Upload.device_id == device.id,
                        Upload.state == RECEIVING,
                        Upload.expires_at > now,
                    )
                ).scalar_one()
            )
            if busy >= self.settings.max_concurrent_per_device:
                raise TooManyUploads(
                    f"device {device.id} already has {busy} unfinished uploads "
                    f"(at most {self.settings.max_concurrent_per_device}); finish or "
                    "terminate one first"
                )
            offset_ms = round((now - manifest.device_time).total_seconds() * 1000)
            row = Upload(
                id=upload_id,
                device_id=device.id,
                length=length,
                offset=0,
                manifest=manifest_text.decode("utf-8"),
                signature=signature,
                public_key=device.public_key or "",
                sha256=manifest.sha256,
                device_clock_offset_ms=offset_ms,
                state=RECEIVING,
                created_at=now,
                updated_at=now,
                expires_at=now + timedelta(seconds=self.settings.upload_expiry_s),
                served_by=self.here,
            )
            session.add(row)
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.spool_path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fsync(fd)
            os.close(fd)
            fsync_dir(self.dir)
        return _state(row)

    def _created_already(
        self, device_id: str, manifest_text: bytes, signature: str, length: int, now: datetime
    ) -> UploadState | None:
        """The upload this very request made before, when its answer was lost on the way (a
        bad network): the same device, the same signed manifest, still receiving or sealed.
        Answering it again creates nothing; refusing it as a replayed ``seq`` would leave
        the first one holding one of the device's few concurrent uploads for a day."""
        with self.rt.sessions() as session:
            row = session.scalars(
                select(Upload).where(
                    Upload.device_id == device_id,
                    Upload.signature == signature,
                    Upload.state.in_((RECEIVING, SEALED)),
                )
            ).first()
            if (
                row is None
                or row.length != length
                or row.manifest != manifest_text.decode("utf-8", "replace")
                or (row.state == RECEIVING and _lapsed(row, now))
            ):
                return None
            log.info("upload %s asked for again by %s (its answer was lost)", row.id, device_id)
            return _state(row)

    # --- reading state -----------------------------------------------------------------

    def get(self, upload_id: str, *, device_id: str, now: datetime | None = None) -> UploadState:
        """The upload, if it is this device's; UploadExpired (410) once it expired."""
        now = now or datetime.now(UTC)
        with self.rt.sessions() as session:
            row = session.get(Upload, upload_id)
            if row is None or row.device_id != device_id or row.state == TERMINATED:
                raise UploadNotFound(f"no upload {upload_id} for this device")
            state = _state(row)
        if state.state == EXPIRED or (state.state == RECEIVING and _lapsed(state, now)):
            raise UploadExpired(
                f"upload {upload_id} expired at {state.expires_at.isoformat()}; start again"
            )
        return state

    def spooled_elsewhere(self, state: UploadState) -> str | None:
        """The address of the serving process whose spool holds the upload's bytes, when it
        is not this one (a load balancer sent the device's request here): the request is
        forwarded there. None when the spool is here (or in a home shared with its maker), or
        when no address was recorded. Only a receiving upload needs its spool."""
        if state.state != RECEIVING or state.served_by in (None, self.here):
            return None  # an ended upload is answered from the index, anywhere
        return None if self.spool_path(state.id).exists() else state.served_by

    # --- writing -----------------------------------------------------------------------

    def open_writer(
        self, upload_id: str, *, device_id: str, offset: int, checksum: tuple[str, bytes] | None
    ) -> Writer:
        """Lock the upload and position a writer at ``offset`` (which must be where it stands)."""
        state = self.get(upload_id, device_id=device_id)
        if state.state != RECEIVING:
            raise OffsetConflict(f"upload {upload_id} is {state.state}: it takes no more bytes")
        fd = self._open_spool(upload_id, device_id=device_id)
        try:
            _lock(fd, upload_id)
            # Re-read under the lock: another writer may just have moved the offset.
            state = self.get(upload_id, device_id=device_id)
            if offset != state.offset:
                raise OffsetConflict(
                    f"Upload-Offset {offset} is not where upload {upload_id} stands "
                    f"({state.offset}); ask with HEAD and resume from there"
                )
            os.ftruncate(fd, state.offset)  # bytes beyond the recorded offset were never acked
            running = self._running_hash(upload_id, fd, state.offset)
            if state.offset == 0:
                self._start_stream(state)
            return Writer(self, state, fd, running, checksum)
        except BaseException:
            os.close(fd)
            raise

    def _open_spool(self, upload_id: str, *, device_id: str) -> int:
        """The spool file; gone means another request just sealed or ended the upload."""
        try:
            return os.open(self.spool_path(upload_id), os.O_RDWR)
        except FileNotFoundError:
            state = self.get(upload_id, device_id=device_id)
            if state.state == RECEIVING and state.served_by:  # forwarded here by mistake
                raise OffsetConflict(
                    f"the bytes of upload {upload_id} are spooled by the serving process at "
                    f"{state.served_by}, not by this one"
                ) from None
            if state.state == RECEIVING:  # another process's spool, and no address for it
                raise OffsetConflict(
                    f"the bytes of upload {upload_id} are spooled by another serving process: "
                    "route /v1/uploads/<id> to one process, give them one home, or set "
                    "api.advertise_url on each"
                ) from None
            raise OffsetConflict(
                f"upload {upload_id} is {state.state}: it takes no more bytes"
            ) from None

    def _running_hash(self, upload_id: str, fd: int, offset: int) -> Any:
        with self._guard:
            cached = self._hashes.get(upload_id)
        if cached is not None and cached[0] == offset:
            return cached[1].copy()
        # A restart (or another process wrote last): hash what is on disk, once.
        h = hashlib.sha256()
        pos = 0
        while pos < offset:
            block = os.pread(fd, min(1 << 20, offset - pos), pos)
            if not block:
                raise IntegrityMismatch(f"spool of {upload_id} is shorter than its offset")
            h.update(block)
            pos += len(block)
        return h

    def _start_stream(self, state: UploadState) -> None:
        """Stream to the store as bytes arrive, unless the bytes are already an item (then the
        seal only links) or a stream runs already."""
        if not self.settings.stream_to_store:
            return
        with self.rt.sessions() as session:
            row = session.get(Upload, state.id)
            sha256 = row.sha256 if row else None
            if sha256 is None or repo.find_item_by_sha256(session, sha256=sha256) is not None:
                return
        with self._guard:
            if state.id not in self._streams:
                self._streams[state.id] = StoreStream(
                    self.rt.store,
                    self.spool_path(state.id),
                    upload_id=state.id,
                    length=state.length,
                    key=keys.original_key(sha256),
                    idle_s=self.settings.upload_expiry_s,
                )

    def _advance(self, upload_id: str, offset: int) -> None:
        with self._guard:
            stream = self._streams.get(upload_id)
        if stream is not None:
            stream.advance(offset)

    def _remember(self, upload_id: str, offset: int, h: Any) -> None:
        with self._guard:
            self._hashes[upload_id] = (offset, h.copy())

    def _record_offset(self, upload_id: str, offset: int) -> datetime:
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.settings.upload_expiry_s)
        with transaction(self.rt.sessions) as session:
            result = session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.state == RECEIVING)
                .values(offset=offset, updated_at=now, expires_at=expires)
            )
            if not getattr(result, "rowcount", 0):
                # Ended meanwhile (another process's sweep found it expired): this request's
                # bytes acknowledge nothing any more.
                raise UploadExpired(
                    f"upload {upload_id} ended while this request was writing; start again"
                )
        return expires

    # --- completion ----------------------------------------------------------------------

    def finish(self, upload_id: str, *, device_id: str) -> UploadState:
        """Seal a complete upload (idempotent: a sealed one is returned as it is)."""
        state = self.get(upload_id, device_id=device_id)
        if state.state != RECEIVING or state.offset != state.length:
            return state
        try:
            fd = self._open_spool(upload_id, device_id=device_id)
        except OffsetConflict:  # sealed (or failed) by another request a moment ago
            return self.get(upload_id, device_id=device_id)
        try:
            _lock(fd, upload_id)
            state = self.get(upload_id, device_id=device_id)
            if state.state != RECEIVING:
                return state
            running = self._running_hash(upload_id, fd, state.offset)
            return self._seal(upload_id, running.hexdigest())
        finally:
            os.close(fd)

    def _seal(self, upload_id: str, sha256: str) -> UploadState:
        with self.rt.sessions() as session:
            row = session.get(Upload, upload_id)
            assert row is not None  # noqa: S101 - held under the upload's lock
            text, signature, key = row.manifest, row.signature, row.public_key
            offset_ms, declared, device_id = row.device_clock_offset_ms, row.sha256, row.device_id
        from ingest.manifest import parse_device_manifest

        manifest = parse_device_manifest(
            text.encode("utf-8"), case_id_pattern=self.rt.settings.case_id_pattern
        )
        path = self.spool_path(upload_id)
        with self._guard:
            stream = self._streams.pop(upload_id, None)
        try:
            if sha256 != declared:
                if stream is not None:
                    stream.abandon()
                raise IntegrityMismatch(
                    f"SHA-256 mismatch: the manifest says {declared}, the received bytes "
                    f"hash to {sha256}"
                )
            sealed_before = self._sealed_by_this(sha256, signature)
            if sealed_before is not None:  # committed, then the process died before _close
                if stream is not None:
                    stream.abandon()
                return self._close(upload_id, state=SEALED, item_id=sealed_before)
            started = time.perf_counter()
            intake = manifest.to_intake(signature=signature)
            vouched = Vouched(text, signature, key, offset_ms)
            stored = stream.wait() if stream is not None else None
            if stored is not None:
                sealed = seal_stored(
                    self.rt,
                    stored,
                    intake,
                    media_type=sniff_file(path),
                    actor=f"device:{device_id}",
                    vouched=vouched,
                )
            else:
                sealed = seal_file(
                    self.rt, path, intake, actor=f"device:{device_id}", vouched=vouched
                )
        except (IntegrityMismatch, ItemDeleted) as e:  # final: sending it again cannot help
            self._close(upload_id, state=FAILED, error={"code": e.code, "detail": str(e)})
            raise
        log.info(
            "upload %s sealed as %s in %.3f s",
            upload_id,
            sealed.item_id,
            time.perf_counter() - started,
        )
        return self._close(upload_id, state=SEALED, item_id=sealed.item_id)

    def _sealed_by_this(self, sha256: str, signature: str) -> str | None:
        """The item this upload's own signed manifest sealed, if a seal of it committed before
        (its process killed before the upload was marked sealed): sealing again would log a
        ``received_again`` that never happened."""
        with self.rt.sessions() as session:
            item = repo.find_item_by_sha256(session, sha256=sha256)
            if item is None:
                return None
            signed = (item.manifest or {}).get("signed") or {}
            return item.id if signed.get("signature") == signature else None

    def _close(
        self,
        upload_id: str,
        *,
        state: str,
        item_id: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> UploadState:
        with transaction(self.rt.sessions) as session:
            row = session.get(Upload, upload_id)
            assert row is not None  # noqa: S101
            row.state, row.item_id, row.error = state, item_id, error
            row.updated_at = datetime.now(UTC)
            result = _state(row)
        self._release(upload_id)
        return result

    def _end_unfinished(
        self, upload_id: str, *, state: str, expired_by: datetime | None = None
    ) -> bool:
        """Terminate or expire the upload if it is still receiving, in one conditional
        update: a seal that finished meanwhile stays sealed. ``expired_by``: a sweep's time,
        and the upload ends only if it is still unfinished and expired by then, as another
        process's sweep (which holds no lock on a spool it does not have) may race a PATCH
        on the spool's own process that moved the expiry on."""
        ending = update(Upload).where(Upload.id == upload_id, Upload.state == RECEIVING)
        if expired_by is not None:
            ending = ending.where(Upload.offset < Upload.length, Upload.expires_at <= expired_by)
        with transaction(self.rt.sessions) as session:
            result = session.execute(ending.values(state=state, updated_at=datetime.now(UTC)))
            if not getattr(result, "rowcount", 0):
                return False
        self._release(upload_id)
        return True

    def _release(self, upload_id: str) -> None:
        with self._guard:
            self._hashes.pop(upload_id, None)
            stream = self._streams.pop(upload_id, None)
        if stream is not None:  # terminated or expired while streaming: drop the parts
            stream.abandon()
        with contextlib.suppress(FileNotFoundError):
            self.spool_path(upload_id).unlink()

    def sealed_document(self, state: UploadState) -> dict[str, Any]:
        """``GET /v1/uploads/{id}`` of a sealed upload: the ingest shape, the receipt, the item."""
        assert state.item_id is not None  # noqa: S101
        with self.rt.sessions() as session:
            item = repo.get_item(session, item_id=state.item_id)
            row = session.get(Upload, state.id)
            leaf = repo.get_leaf(session, index=item.log_index).data
            doc = catalog.item_document(session, item)
            signed = (item.manifest or {}).get("signed") or {}
            duplicate = row is not None and signed.get("signature") != row.signature
            case_ids = repo.case_ids_of(session, item_id=item.id)
        return {
            "upload": state.id,
            "state": state.state,
            "id": item.id,
            "sha256": item.sha256,
            "size": item.size,
            "media_type": item.media_type,
            "status": item.status,
            "case_ids": case_ids,
            "duplicate": duplicate,
            "log_index": item.log_index,
            "leaf": leaf,
            "receipt": self.rt.ledger.receipt(item.log_index),
            "item": doc,
        }

    # --- termination and expiry --------------------------------------------------------

    def terminate(self, upload_id: str, *, device_id: str) -> None:
        state = self.get(upload_id, device_id=device_id)
        if state.state != RECEIVING:
            raise OffsetConflict(f"upload {upload_id} is {state.state}; nothing to terminate")
        fd = self._open_spool(upload_id, device_id=device_id)
        try:
            _lock(fd, upload_id)
            if not self._end_unfinished(upload_id, state=TERMINATED):  # sealed while we waited
                now = self.get(upload_id, device_id=device_id).state
                raise OffsetConflict(f"upload {upload_id} is {now}; nothing to terminate")
        finally:
            os.close(fd)

    def sweep(self, *, now: datetime | None = None, force: bool = False) -> int:
        """Expire unfinished uploads past their time and free their spool (at most every
        ``sweep_interval_s`` unless ``force``). Returns how many were expired."""
        if not force and time.monotonic() - self._last_sweep < self.settings.sweep_interval_s:
            return 0
        self._last_sweep = time.monotonic()
        now = now or datetime.now(UTC)
        with self.rt.sessions() as session:
            ids = list(
                session.scalars(
                    select(Upload.id).where(
                        Upload.state == RECEIVING,
                        Upload.offset < Upload.length,
                        Upload.expires_at <= now,
                    )
                )
            )
            # Every byte in, the seal failed (store down, process killed) and the device went
            # away (a tus client whose HEAD says complete asks no more): never expired, sealed
            # again here.
            unsealed = [
                (upload_id, device)
                for upload_id, device in session.execute(
                    select(Upload.id, Upload.device_id).where(
                        Upload.state == RECEIVING,
                        Upload.offset == Upload.length,
                        Upload.updated_at
                        <= now - timedelta(seconds=self.settings.sweep_interval_s),
                    )
                )
            ]
        self._seal_again(unsealed)
        swept = 0
        for upload_id in ids:
            try:
                fd = os.open(self.spool_path(upload_id), os.O_RDWR)
            except FileNotFoundError:
                swept += self._end_unfinished(upload_id, state=EXPIRED, expired_by=now)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # being written right now: not idle, not expired
            try:
                swept += self._end_unfinished(upload_id, state=EXPIRED, expired_by=now)
            finally:
                os.close(fd)
        swept += self._sweep_orphans(now)
        if swept:
            log.info("expired %d unfinished upload(s)", swept)
        return swept

    def sweep_in_background(self) -> Callable[[], None]:
        """Sweep every ``sweep_interval_s`` (and once at start: a restart on existing data
        seals what was complete, frees what expired), not only when a device creates an
        upload; returns what stops it."""
        interval = self.settings.sweep_interval_s
        claimed = False

        def step() -> None:
            nonlocal claimed
            try:
                if not claimed:
                    self.claim_spools()
                    claimed = True
                self.sweep(force=True)
            except Exception as e:  # the index or store away: the next round tries again
                log.warning("the upload sweep failed: %s", e)

        return background.every(
            interval, step, name="liuhen-upload-sweep", first_s=min(1.0, interval)
        )

    def claim_spools(self) -> int:
        """Uploads still receiving whose spool is in this process's directory are served at
        this process's address (``api.advertise_url``), whatever address created them: a
        restart may come back under another one, and the other processes would otherwise
        forward to the old address until the uploads expire. Returns how many moved."""
        if self.here is None or not self.dir.is_dir():
            return 0
        ids = [path.stem for path in self.dir.glob("*.bin")]
        moved = 0
        with transaction(self.rt.sessions) as session:
            for start in range(0, len(ids), 500):
                result = session.execute(
                    update(Upload)
                    .where(
                        Upload.id.in_(ids[start : start + 500]),
                        Upload.state == RECEIVING,
                        or_(Upload.served_by.is_(None), Upload.served_by != self.here),
                    )
                    .values(served_by=self.here)
                )
                moved += int(getattr(result, "rowcount", 0))
        if moved:
            log.info("%d unfinished upload(s) are now served at %s", moved, self.here)
        return moved

    def _seal_again(self, uploads: list[tuple[str, str]]) -> None:
        for upload_id, device_id in uploads:
            if not self.spool_path(upload_id).exists():
                continue  # its bytes are in another server's spool: that server seals it
            try:
                state = self.finish(upload_id, device_id=device_id)
            except LiuhenError as e:  # still failing: the next sweep tries again
                log.warning("upload %s is complete but could not be sealed: %s", upload_id, e)
                continue
            log.info("upload %s, complete but left unsealed, is %s", upload_id, state.state)

    def _sweep_orphans(self, now: datetime) -> int:
        """Spool files older than the expiry that nothing can ever resume: with no upload row
        (a crash between making the file and committing the row), or with one no longer
        receiving (a crash between ending the upload and removing its spool)."""
        cutoff = now.timestamp() - self.settings.upload_expiry_s
        removed = 0
        for path in self.dir.glob("*.bin"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime > cutoff:
                    continue
                with self.rt.sessions() as session:
                    row = session.get(Upload, path.stem)
                    if row is not None and row.state == RECEIVING:
                        continue
                path.unlink()
                removed += 1
        return removed


class Writer:
    """Appends one request's bytes to a locked upload. Use as a context manager."""

    def __init__(
        self,
        uploads: Uploads,
        state: UploadState,
        fd: int,
        running: Any,
        checksum: tuple[str, bytes] | None,
    ) -> None:
        self.uploads = uploads
        self.state = state
        self.fd = fd
        self.hash = running
        self.start = state.offset
        self.offset = state.offset
        self.synced = state.offset
        self.checksum = checksum
        self.chunk_hash = hashlib.new(checksum[0]) if checksum else None
        self.start_hash = running.copy()
        self.expires_at = state.expires_at

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        """Append ``data``; with no checksum, fsync and record the offset every few MiB."""
        if self.offset + len(data) > self.state.length:
            raise TooLarge(
                f"the body runs past Upload-Length {self.state.length} "
                f"(at {self.offset + len(data)})"
            )
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.offset)
            self.offset += n
            view = view[n:]
        self.hash.update(data)
        if self.chunk_hash is not None:
            self.chunk_hash.update(data)
        elif self.offset - self.synced >= self.uploads.settings.sync_every_bytes:
            self._sync()

    def _sync(self) -> None:
        if self.offset == self.synced:
            return
        os.fsync(self.fd)  # the bytes first, then the offset that acknowledges them
        self.expires_at = self.uploads._record_offset(self.state.id, self.offset)
        self.synced = self.offset
        self.uploads._remember(self.state.id, self.offset, self.hash)
        self.uploads._advance(self.state.id, self.offset)

    def commit(self) -> int:
        """The request's body is all in: check its checksum, make it durable, record it."""
        if self.checksum is not None and self.chunk_hash is not None:
            algorithm, expected = self.checksum
            actual = self.chunk_hash.digest()
            if actual != expected:
                self.rollback()
                raise ChecksumMismatch(
                    f"Upload-Checksum {algorithm} does not match the {self.offset - self.start} "
                    f"bytes received; they were discarded"
                )
        self._sync()
        return self.offset

    def rollback(self) -> None:
        """Forget this request's bytes (a checksum mismatch)."""
        os.ftruncate(self.fd, self.start)
        self.offset = self.synced = self.start
        self.hash = self.start_hash.copy()

    def interrupted(self) -> int:
        """The client went away: keep what arrived (unless a checksum cannot be checked)."""
        if self.checksum is not None:
            self.rollback()
            return self.start
        self._sync()
        return self.offset

    @property
    def complete(self) -> bool:
        return self.offset == self.state.length


def _lock(fd: int, upload_id: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise OffsetConflict(
                    f"upload {upload_id} is being written by another request"
                ) from None
            time.sleep(0.05)
