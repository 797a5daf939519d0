"""An upload copied to the store while it is still being received (``ingest.uploads``).

The tus spool is fsynced before its offset is acknowledged; this copies the acknowledged
bytes to the original's content address as S3 multipart parts, so the seal after the last
byte only sends the tail. Only an optimisation: when it fails or is missing (a restart), the
seal copies the spool after the last byte.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ingest.sniff import sniff
from storage.errors import ObjectStoreError
from storage.objects import ObjectStore, PartWriter, StoredObject

log = logging.getLogger(__name__)

STREAM_PART = 8 << 20
"""Bytes per part sent while the upload is received (S3 parts are at least 5 MiB)."""


class StoreStream:
    """Copies an upload's spool to its content address while it is received (S3 multipart, one
    part per ``STREAM_PART`` acknowledged bytes, hashed as sent), so the seal after the last
    byte only sends the tail. Only ever reads below the fsynced offset. An optimisation: when
    it fails or is missing (a restart), the seal copies the spool after the last byte."""

    def __init__(
        self,
        store: ObjectStore,
        spool: Path,
        *,
        upload_id: str,
        length: int,
        key: str,
        idle_s: float,
    ) -> None:
        """Stream ``length`` bytes of ``spool`` to ``key`` as they become durable; give up
        after ``idle_s`` with nothing new."""
        self.store, self.spool, self.upload_id, self.length = store, spool, upload_id, length
        self.key, self.idle_s = key, idle_s
        self._cond = threading.Condition()
        self._durable = 0
        self._abandoned = False
        self.result: StoredObject | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"stream-{upload_id}", daemon=True)
        self._thread.start()

    def advance(self, offset: int) -> None:
        """``offset`` bytes are fsynced and recorded: they may be sent."""
        with self._cond:
            self._durable = max(self._durable, offset)
            self._cond.notify()

    def abandon(self) -> None:
        """Stop, and delete what was stored: once the last byte is durable the copy may well
        be complete before it is refused (wrong bytes) or its upload is ended."""
        with self._cond:
            self._abandoned = True
            self._cond.notify()
        self._thread.join()
        if self.result is not None:
            stored, self.result = self.result, None
            try:  # never retained: nothing but a failing store keeps it
                self.store.remove_version(stored.key, stored.version_id)
            except ObjectStoreError as e:
                log.warning("upload %s: its refused copy stays, unseen: %s", self.upload_id, e)

    def wait(self) -> StoredObject | None:
        """After the last byte: the stored version, or None (then seal from the spool)."""
        self._thread.join()
        return self.result

    def _next_end(self, pos: int) -> int | None:
        """Where the next part ends, once enough is durable; None when abandoned."""
        length = self.length
        with self._cond:
            while True:
                if self._abandoned:
                    return None
                if self._durable == length:
                    return min(length, pos + STREAM_PART)
                if self._durable - pos >= STREAM_PART:
                    return pos + STREAM_PART
                if not self._cond.wait(timeout=self.idle_s):
                    return None  # idle for as long as an upload lives: give up

    def _run(self) -> None:
        writer: PartWriter | None = None
        try:
            fd = os.open(self.spool, os.O_RDONLY)
        except OSError as e:
            self.error = e
            return
        try:
            pos = 0
            while pos < self.length:
                end = self._next_end(pos)
                if end is None:
                    raise ObjectStoreError("abandoned")
                data = _pread_exactly(fd, pos, end - pos)
                if writer is None:
                    writer = PartWriter(self.store, self.key, content_type=sniff(data))
                writer.put(data)
                pos = end
            if writer is not None:
                self.result = writer.complete()
        except BaseException as e:
            self.error = e
            if writer is not None:
                writer.abort()
            if not isinstance(e, ObjectStoreError) or str(e) != "abandoned":
                log.warning("upload %s: streaming to the store stopped: %s", self.upload_id, e)
        finally:
            os.close(fd)


def _pread_exactly(fd: int, offset: int, size: int) -> bytes:
    chunks, done = [], 0
    while done < size:
        block = os.pread(fd, size - done, offset + done)
        if not block:
            raise ObjectStoreError(f"the spool ended at {offset + done}, below its offset")
        chunks.append(block)
        done += len(block)
    return b"".join(chunks)
