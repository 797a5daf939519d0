"""The tamper-evident log as a service: leaves in the index, a Merkle tree cached in memory,
checkpoints signed (and time-stamped) and mirrored to object storage under Object Lock.

One sequencer: every leaf takes its index from the ``log_state`` row inside the caller's
transaction, so indexes are dense and never reused (a rolled-back seal gives its index back).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from integrity import tsa
from integrity.errors import IntegrityError, NoteError, ProofError, TimestampError
from integrity.leaves import canonical_json
from integrity.log import LogKey, SignedCheckpoint, make_receipt, next_checkpoint, open_checkpoint
from integrity.merkle import MerkleTree, leaf_hash
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.objects import ObjectStore, retain_until
from storage.tables import Checkpoint as CheckpointRow
from storage.tables import LogLeaf

log = logging.getLogger(__name__)

SCRUB_ROWS = 2048
"""How many already-cached leaf rows each signing reads back (see ``Ledger._scrub``)."""


class LogCorrupt(IntegrityError):
    """The stored log disagrees with itself; nothing more is signed until it is looked at."""

    code = "log_corrupt"


@dataclass(frozen=True)
class AppendedLeaf:
    index: int
    leaf_hash: str
    data: str


@dataclass(frozen=True)
class TsaConfig:
    url: str
    roots: tuple[bytes, ...]
    timeout_s: float


class Ledger:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        key: LogKey,
        origin: str,
        retention: timedelta,
        tsa_config: TsaConfig | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.key = key
        self.origin = origin
        self.retention = retention
        self.tsa_config = tsa_config
        self.tree = MerkleTree()
        self._scrub_from = 0
        self._lock = threading.Lock()

    # --- appending (inside the caller's transaction) -------------------------------------

    def append(
        self,
        session: Session,
        *,
        kind: str,
        item_id: str | None,
        build: Callable[[], dict[str, Any]],
        now: datetime,
    ) -> AppendedLeaf:
        """Take the next index (locking the sequencer), then build and store the leaf.

        ``build`` runs after the lock is held, so what it reads (e.g. the previous custody
        leaf of an item) cannot change under it.
        """
        index = repo.next_log_index(session)
        data = canonical_json(build())
        digest = leaf_hash(data)
        repo.add_leaf(
            session,
            leaf=LogLeaf(
                idx=index,
                leaf_hash=digest,
                data=data.decode(),
                kind=kind,
                item_id=item_id,
                created_at=now,
            ),
        )
        return AppendedLeaf(index, digest.hex(), data.decode())

    def append_many(
        self,
        session: Session,
        entries: list[tuple[str, str | None, dict[str, Any]]],
        *,
        now: datetime,
    ) -> list[AppendedLeaf]:
        """Append several ready-built leaves ``(kind, item_id, leaf)`` with one sequencer
        update and one multi-row insert: the batch path (imports, verification runs)."""
        if not entries:
            return []
        datas = [canonical_json(leaf) for _, _, leaf in entries]
        first = repo.reserve_log_indexes(session, len(entries))
        rows = []
        appended = []
        for offset, ((kind, item_id, _), data) in enumerate(zip(entries, datas, strict=True)):
            digest = leaf_hash(data)
            decoded = data.decode()
            rows.append(
                {
                    "idx": first + offset,
                    "leaf_hash": digest,
                    "data": decoded,
                    "kind": kind,
                    "item_id": item_id,
                    "created_at": now,
                }
            )
            appended.append(AppendedLeaf(first + offset, digest.hex(), decoded))
        repo.add_leaves(session, rows=rows)
        return appended

    # --- the tree ------------------------------------------------------------------------

    def _sync(self, session: Session, size: int) -> None:
        """Extend the cached tree to ``size`` from the leaf rows, checking each row's hash."""
        if size < self.tree.size:
            raise LogCorrupt(f"the log has {size} leaves but {self.tree.size} were seen before")
        start = self.tree.size
        batch = 10_000
        while start < size:
            stop = min(size, start + batch)
            rows = repo.leaves_between(session, start=start, stop=stop)
            for expected, row in enumerate(rows, start):
                if row.idx != expected:
                    raise LogCorrupt(f"leaf {expected} is missing from the log")
                if leaf_hash(row.data.encode()) != row.leaf_hash:
                    raise LogCorrupt(f"leaf {expected}: stored hash does not match its data")
                self.tree.append(row.leaf_hash)
            if len(rows) != stop - start:
                raise LogCorrupt(f"leaves {start}..{stop - 1}: {len(rows)} rows found")
            start = stop

    def _scrub(self, session: Session) -> None:
        """Read a window of cached leaves back and refuse to go on if a row has changed.

        ``_sync`` only reads rows it has not seen, so a row edited after this process cached it
        (its hash recomputed to match) would go unnoticed, and we would keep signing over it.
        Each signing sweeps the next SCRUB_ROWS rows (all of a small log), so such an edit
        stops signing within size / SCRUB_ROWS checkpoints; ``liuhen verify --all`` reads all.
        """
        cached = self.tree.size
        start = self._scrub_from if self._scrub_from < cached else 0
        stop = min(cached, start + SCRUB_ROWS)
        rows = repo.leaves_between(session, start=start, stop=stop)
        if len(rows) != stop - start:
            raise LogCorrupt(f"leaves {start}..{stop - 1}: {len(rows)} rows found")
        for expected, row in enumerate(rows, start):
            if row.idx != expected:
                raise LogCorrupt(f"leaf {expected} is missing from the log")
            if leaf_hash(row.data.encode()) != row.leaf_hash:
                raise LogCorrupt(f"leaf {expected}: stored hash does not match its data")
            if row.leaf_hash != self.tree.leaf(expected):
                raise LogCorrupt(f"leaf {expected} changed after it was appended")
        self._scrub_from = 0 if stop == cached else stop  # next time, from the start

    def _lock_sequencer(self, session: Session) -> int:
        if session.get_bind().dialect.name == "postgresql":
            size = session.execute(
                text("SELECT size FROM log_state WHERE id = 1 FOR UPDATE")
            ).scalar_one()
            return int(size)
        return repo.log_size(session)  # SQLite: BEGIN IMMEDIATE already holds the write lock

    # --- checkpoints ---------------------------------------------------------------------

    def publish(self) -> SignedCheckpoint:
        """Sign a checkpoint for the whole log, unless the latest one already covers it."""
        with self._lock, transaction(self.sessions) as session:
            size = self._lock_sequencer(session)
            latest = repo.latest_checkpoint(session)
            if latest is not None and latest.size == size:
                self._sync(session, size)
                return SignedCheckpoint(
                    open_checkpoint(latest.note, self.key.verifier), latest.note
                )
            self._sync(session, size)
            self._scrub(session)
            try:
                signed = next_checkpoint(
                    tree=self.tree,
                    size=size,
                    origin=self.origin,
                    key=self.key,
                    previous_note=latest.note if latest else None,
                )
            except (ProofError, NoteError) as e:
                # The rows no longer extend what was signed, or the key no longer opens it.
                raise LogCorrupt(f"refusing to sign the log at size {size}: {e}") from e
            now = datetime.now(UTC)
            until = retain_until(self.retention, now=now)
            first = latest.size if latest else 0
            if size > first:
                bundle = "".join(
                    row.data + "\n" for row in repo.leaves_between(session, start=first, stop=size)
                )
                self.store.put_bytes(
                    keys.leaf_bundle_key(first, size - 1),
                    bundle.encode(),
                    content_type="application/jsonl",
                    retain_until=until,
                )
            stored = self.store.put_bytes(
                keys.checkpoint_key(size),
                signed.note.encode(),
                content_type="text/plain; charset=utf-8",
                retain_until=until,
            )
            tsr, tsa_time = self._timestamp(signed.note.encode(), size, until)
            repo.add_checkpoint(
                session,
                checkpoint=CheckpointRow(
                    size=size,
                    root_hash=signed.checkpoint.root_hash,
                    note=signed.note,
                    created_at=now,
                    object_version=stored.version_id,
                    tsr=tsr,
                    tsa_time=tsa_time,
                ),
            )
            return signed

    def _timestamp(
        self, note: bytes, size: int, until: datetime
    ) -> tuple[bytes | None, datetime | None]:
        if self.tsa_config is None:
            return None, None
        cfg = self.tsa_config
        try:
            tsr = tsa.request_timestamp(cfg.url, note, timeout=cfg.timeout_s)
            when = tsa.verify_timestamp(tsr, note, roots=list(cfg.roots))
        except TimestampError as e:
            # A checkpoint without trusted time is still a valid checkpoint; say so loudly.
            log.warning("checkpoint %d not time-stamped: %s", size, e)
            return None, None
        self.store.put_bytes(
            keys.timestamp_key(size),
            tsr,
            content_type="application/timestamp-reply",
            retain_until=until,
        )
        return tsr, when

    def latest(self) -> SignedCheckpoint:
        return self.publish()

    def receipt(self, index: int) -> str:
        """A fresh receipt for leaf ``index`` against the latest checkpoint."""
        signed = self.publish()
        if index >= signed.checkpoint.size:
            raise LogCorrupt(f"leaf {index} is beyond the log ({signed.checkpoint.size} leaves)")
        with self._lock:
            return make_receipt(tree=self.tree, index=index, signed=signed)

    def receipt_covering(self, index: int) -> str:
        """A receipt against the latest checkpoint when that already covers leaf ``index``, else
        a fresh one: devices finishing together share one signed checkpoint instead of queueing
        for one each (device intake)."""
        # Under the lock: a caller that waited for someone else's signing sees its checkpoint.
        with self._lock:
            with self.sessions() as session:
                latest = repo.latest_checkpoint(session)
            if latest is not None and latest.size > index and self.tree.size >= latest.size:
                note = latest.note
                signed = SignedCheckpoint(open_checkpoint(note, self.key.verifier), note)
                return make_receipt(tree=self.tree, index=index, signed=signed)
        return self.receipt(index)

    def consistency(self, size1: int, size2: int) -> list[str]:
        """Base64 consistency proof between two tree sizes (for auditors and monitors)."""
        signed = self.publish()
        if not 0 <= size1 <= size2 <= signed.checkpoint.size:
            raise LogCorrupt(
                f"need 0 <= from <= to <= {signed.checkpoint.size}, got {size1}, {size2}"
            )
        with self._lock:
            proof = self.tree.consistency_proof(size1, size2)
        return [base64.b64encode(h).decode() for h in proof]


def load_tsa_config(url: str | None, roots: list[Path], timeout_s: float) -> TsaConfig | None:
    if not url:
        return None
    return TsaConfig(url=url, roots=tuple(p.read_bytes() for p in roots), timeout_s=timeout_s)
