"""The tamper-evident log as a service: leaves in the index, the Merkle tree kept as tiles in
the index, checkpoints signed (and time-stamped) and mirrored to object storage under Object
Lock.

Two locks, never held together:

- **The sequencer** (the ``log_state`` row): every leaf takes its index from it inside the
  caller's transaction, so indexes are dense and never reused (a rolled-back seal gives its
  index back). Nothing else happens while it is held.
- **The signer** (a PostgreSQL advisory lock; on SQLite a file lock beside the database):
  exactly one process at a time signs. It reads the new leaf rows in short transactions,
  extends the tiles, signs, mirrors the leaf bundle, full tiles and checkpoint, asks the TSA,
  and only then stores the checkpoint and tiles in one short transaction that moves
  ``log_tree`` from the size it started from (compare-and-set): a second signer, even one that
  got past the lock, can only fail, never publish a checkpoint that does not extend the last.

A seal does not sign its own checkpoint: ``receipt`` waits (bounded) until a checkpoint covers
its leaf. One waiting thread per process takes the signer lock, waits out the rest of
``checkpoint_interval_ms`` since the latest checkpoint, and signs everything committed by then,
so seals arriving together share one checkpoint; the others wait for it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from ingest import metrics
from ingest.errors import CheckpointPending, SignerRace
from integrity.errors import IntegrityError, NoteError, ProofError, TimestampError
from integrity.leaves import canonical_json
from integrity.log import LogKey, SignedCheckpoint, make_receipt, next_checkpoint, open_checkpoint
from integrity.merkle import TILE_WIDTH, TiledTree, TileKey, leaf_hash, verify_inclusion
from integrity.receipts import Receipt, format_receipt
from storage import keys
from storage import repository as repo
from storage.db import make_read_sessionmaker, transaction
from storage.objects import ObjectStore, retain_until
from storage.tables import Checkpoint as CheckpointRow
from storage.tables import LogLeaf

log = logging.getLogger(__name__)

SCRUB_ROWS = 2048
"""At most this many already-signed leaf rows are read back per signing (``Ledger._scrub``)."""
SCRUB_PER_LEAF = 8
"""Already-signed rows read back per new leaf signed (and at least ``SCRUB_MIN``): the sweep
costs in proportion to what arrives, at most SCRUB_ROWS per checkpoint."""
SCRUB_MIN = 256
READ_BATCH = 10_000
"""Leaf rows read per query while extending the tree."""
POLL_S = 0.05
"""How often a process without the signer lock looks for the checkpoint another one signs."""
FRESH_S = 0.25
"""How long a receipt may be proved against the checkpoint a round found, without reading
the head (at least this long, or one checkpoint interval)."""
SIGNER_LOCK_ID = 7310852
"""The PostgreSQL advisory lock of the signer (7310851 guards migrations)."""


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


@dataclass(frozen=True)
class _Head:
    """The latest checkpoint the tiles cover, and how far the tiles go."""

    signed: SignedCheckpoint | None
    tree_size: int
    log_size: int

    def covers(self, size: int) -> bool:
        return _covers(self.signed, size)


class SignerLock:
    """Exactly one signer across processes: a session-level PostgreSQL advisory lock on its
    own connection, or on SQLite an exclusive ``flock`` on ``<database>.signer.lock``. Both go
    away with the process that holds them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self.path = Path(database + ".signer.lock") if database and database != ":memory:" else None
        self._memory = threading.Lock()  # an in-memory SQLite database: one process anyway

    @contextlib.contextmanager
    def hold(self) -> Iterator[bool]:
        """Try to take the lock without waiting; yields whether it was taken."""
        if self.engine.dialect.name == "postgresql":
            with self._advisory() as held:
                yield held
        elif self.path is not None:
            with self._flock(self.path) as held:
                yield held
        else:
            held = self._memory.acquire(blocking=False)
            try:
                yield held
            finally:
                if held:
                    self._memory.release()

    @contextlib.contextmanager
    def _advisory(self) -> Iterator[bool]:
        conn = self.engine.connect()
        try:
            held = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": SIGNER_LOCK_ID}
                ).scalar_one()
            )
            conn.commit()  # the lock is the session's: no transaction stays open meanwhile
            try:
                yield held
            finally:
                if held:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SIGNER_LOCK_ID})
                    conn.commit()
        except BaseException:
            conn.invalidate()  # never return a connection that may still hold the lock
            raise
        finally:
            conn.close()

    @contextlib.contextmanager
    def _flock(self, path: Path) -> Iterator[bool]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class Ledger:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        store: ObjectStore | None,
        key: LogKey,
        origin: str,
        retention: timedelta,
        tsa_config: TsaConfig | None = None,
        checkpoint_interval_ms: int = 250,
        receipt_wait_s: float = 30.0,
    ) -> None:
        """``store`` None: a process that only reads the index (receipts against existing
        checkpoints); it waits for another process to sign instead of signing."""
        self.sessions = sessions
        self.store = store
        self.key = key
        self.origin = origin
        self.retention = retention
        self.tsa_config = tsa_config
        self.interval = checkpoint_interval_ms / 1000
        self.receipt_wait_s = receipt_wait_s
        bind = sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("the ledger needs a sessionmaker bound to an engine")
        self.signer_lock = SignerLock(bind)
        self.reads = make_read_sessionmaker(bind)  # the ledger's reads never write
        self._scrub_from = 0
        self._proving: TiledTree | None = None  # the tree receipts are proved in (_prove)
        self._proving_lock = threading.Lock()
        self._cond = threading.Condition()
        self._busy = False  # one thread of this process reads or signs for the waiting ones
        self._known: SignedCheckpoint | None = None
        self._known_at = 0.0  # time.monotonic() of the round that found ``_known``
        self._round = 0  # rounds ended: a waiter trusts only what a later round found

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
        entries: Sequence[tuple[str, str | None, dict[str, Any]]],
        *,
        now: datetime,
    ) -> list[AppendedLeaf]:
        """Append several ready-built leaves ``(kind, item_id, leaf)`` with one sequencer
        update and one multi-row insert (a seal's two leaves, imports, verification runs)."""
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

    # --- reading (the index only) --------------------------------------------------------

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The newest checkpoint the stored tree covers, from the index; signs nothing."""
        return self._head().signed

    def receipt(self, index: int) -> str:
        """A receipt for leaf ``index`` against the latest checkpoint, once one covers it
        (waiting up to ``receipt_wait_s`` for the next checkpoint if none does yet); within
        an interval of this process's last round, against the checkpoint that round found."""
        fresh = self._fresh(index + 1)
        if fresh is not None:
            # The tiles under it may be gone (an index rebuilt meanwhile): then as below.
            with contextlib.suppress(ProofError, LogCorrupt):
                return self._prove(index, fresh)
        # One thread reads the head (or signs) for all that wait: not one read per receipt.
        with metrics.timed("receipt_wait"):
            signed = self._await(index + 1)
        return self._prove(index, signed)

    def _prove(self, index: int, signed: SignedCheckpoint) -> str:
        size = signed.checkpoint.size
        # The seals one checkpoint covers share one tree of its size: its tiles are read and
        # its subtree hashes computed once, not once per receipt. A tree of a signed size
        # never changes, and every proof is still checked against the signed root.
        with self._proving_lock:
            tree = self._proving
            if tree is None or tree.size != size:
                tree = self._proving = TiledTree(size, self._read_tiles)
            try:
                proof = tree.inclusion_proof(index, size)
                leaf = tree.leaf(index)
            except ProofError:
                self._proving = None  # the tiles may have been rebuilt meanwhile: read again
                raise
        try:  # the tiles are the index's word: check the proof before handing it out
            verify_inclusion(
                leaf_hash=leaf,
                index=index,
                size=size,
                proof=proof,
                root=signed.checkpoint.root_hash,
            )
        except ProofError as e:
            with self._proving_lock:
                self._proving = None
            raise LogCorrupt(f"the stored tiles do not prove leaf {index}: {e}") from e
        return format_receipt(Receipt(index=index, proof=proof, checkpoint_note=signed.note))

    def receipt_under(self, index: int, *, data: str, signed: SignedCheckpoint) -> str:
        """A receipt for leaf ``index`` against one already signed checkpoint (an export holds
        all its proofs against one), once ``data`` is checked to be the leaf signed there."""
        size = signed.checkpoint.size
        if not 0 <= index < size:
            raise LogCorrupt(f"leaf {index} is not under checkpoint {size}")
        tree = TiledTree(size, self._read_tiles)
        if tree.leaf(index) != leaf_hash(data.encode()):
            raise LogCorrupt(f"leaf row {index} differs from the signed log: run liuhen verify")
        return make_receipt(tree=tree, index=index, signed=signed)

    def consistency(self, size1: int, size2: int) -> list[str]:
        """Base64 consistency proof between two tree sizes (for auditors and monitors)."""
        signed = self.latest_checkpoint()
        size = signed.checkpoint.size if signed else 0
        if not 1 <= size1 <= size2 <= size:  # RFC 9162 has no proof from the empty tree
            raise LogCorrupt(f"need 1 <= from <= to <= {size}, got {size1}, {size2}")
        proof = TiledTree(size, self._read_tiles).consistency_proof(size1, size2)
        return [base64.b64encode(h).decode() for h in proof]

    def _head(self) -> _Head:
        with self.reads() as session:
            size = repo.log_size(session)
            tree_size, _ = repo.log_tree_state(session)
            latest = repo.latest_checkpoint(session)
        signed_size = latest.size if latest else 0
        if size < max(tree_size, signed_size):
            raise LogCorrupt(
                f"the log shrank: it has {size} leaves, but checkpoint {signed_size} was "
                f"signed and the tiles cover {tree_size}"
            )
        if latest is None or latest.size > tree_size:
            return _Head(None, tree_size, size)  # an index from before the tiles: sign to build
        return _Head(self._open(latest), tree_size, size)

    def _open(self, row: CheckpointRow) -> SignedCheckpoint:
        try:
            return SignedCheckpoint(open_checkpoint(row.note, self.key.verifier), row.note)
        except NoteError as e:
            raise LogCorrupt(
                f"checkpoint {row.size} in the index does not open with the log key; "
                f"refusing to sign after it or prove against it: {e}"
            ) from e

    def _read_tiles(self, wanted: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        with self.reads() as session:
            return repo.read_tiles(session, keys=wanted)

    # --- checkpoints ---------------------------------------------------------------------

    def publish(self) -> SignedCheckpoint:
        """A checkpoint covering every leaf committed so far: the latest one if it does, else
        the next one signed (by this process or another)."""
        head = self._head()
        if head.signed is not None and head.covers(head.log_size):
            return head.signed
        return self._await(head.log_size, timeout=max(self.receipt_wait_s, 2 * self.interval))

    def _await(self, size: int, *, timeout: float | None = None) -> SignedCheckpoint:
        """Return a checkpoint of at least ``size`` leaves, signing one if this process can.

        One thread per process at a time reads the head or signs; the others wait on it. A
        thread that cannot take the signer lock looks again every POLL_S.
        """
        deadline = time.monotonic() + (self.receipt_wait_s if timeout is None else timeout)
        while True:
            with self._cond:
                entered = self._round
                while self._busy and not self._answered(entered, size):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._pending(size)
                    self._cond.wait(remaining)
                if self._known is not None and self._answered(entered, size):
                    return self._known
                self._busy = True
            found: SignedCheckpoint | None = None
            try:
                head = self._head()
                found = head.signed
                if not head.covers(size):
                    signed = self._sign_round(self.store) if self.store is not None else None
                    if signed is None:
                        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
                    else:
                        found = signed
            except SignerRace as e:
                log.warning("%s; looking again", e)
            finally:
                with self._cond:
                    self._known, self._known_at = found, time.monotonic()
                    self._busy = False
                    self._round += 1
                    self._cond.notify_all()
            if found is not None and _covers(found, size):
                return found
            if time.monotonic() >= deadline:
                raise self._pending(size)

    def sign_in_background(self) -> Callable[[], None]:
        """Start a thread that signs leaves nobody asked a receipt for (derivatives, custody)
        within about one interval (at least once a second); returns the function that stops
        it. Every process may run one: the signer lock lets one of them sign at a time."""
        stop = threading.Event()
        period = max(self.interval, 1.0)

        def run() -> None:
            while not stop.wait(period):
                try:
                    head = self._head()
                    if not head.covers(head.log_size) and self.store is not None:
                        self._await(head.log_size, timeout=period)
                except CheckpointPending:
                    pass  # another process holds the signer lock: it signs them
                except Exception:  # keep trying: a store or database outage passes
                    log.exception("background signing failed")

        thread = threading.Thread(target=run, name="liuhen-log-signer", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=period + self.receipt_wait_s)

        return halt

    def _fresh(self, size: int) -> SignedCheckpoint | None:
        """The checkpoint this process's last round found, if it covers ``size`` leaves and
        that round ended less than an interval ago: many receipts of one round (the seals it
        covered) are proved against it without each reading the head again."""
        with self._cond:
            known, at = self._known, self._known_at
        fresh = time.monotonic() - at < max(self.interval, FRESH_S)
        return known if fresh and _covers(known, size) else None

    def _answered(self, entered: int, size: int) -> bool:
        """Whether a round that ended after round ``entered`` found a covering checkpoint."""
        return self._round > entered and _covers(self._known, size)

    def _pending(self, size: int) -> CheckpointPending:
        why = "" if self.store is not None else " (this process has no object store to sign)"
        return CheckpointPending(
            f"no checkpoint covers {size} leaves after {self.receipt_wait_s:g} s{why}; "
            "the leaves are committed: ask again later"
        )

    def _sign_round(self, store: ObjectStore) -> SignedCheckpoint | None:
        """Take the signer lock and sign; None if another process holds it."""
        with self.signer_lock.hold() as held:
            if not held:
                return None
            self._pace()
            return self._sign(store)

    def _pace(self) -> None:
        """Wait out the rest of the interval since the latest checkpoint: at most one
        checkpoint per interval, and the seals arriving meanwhile join the next one."""
        if self.interval <= 0:
            return
        with self.reads() as session:
            latest = repo.latest_checkpoint(session)
        if latest is None:
            return
        age = (datetime.now(UTC) - latest.created_at).total_seconds()
        if age < self.interval:
            time.sleep(min(self.interval, self.interval - age))

    def _sign(self, store: ObjectStore) -> SignedCheckpoint:
        """Extend the tiles to every committed leaf, sign, mirror, stamp, then store.

        Holds the signer lock, never the sequencer: appends go on meanwhile.
        """
        with self.reads() as session:
            size = repo.log_size(session)
            tree_size, tree_root = repo.log_tree_state(session)
            latest = repo.latest_checkpoint(session)
        signed_size = latest.size if latest else 0
        if size < max(tree_size, signed_size):
            raise LogCorrupt(
                f"the log shrank: it has {size} leaves, but checkpoint {signed_size} was "
                f"signed and the tiles cover {tree_size}"
            )
        if tree_size > signed_size:
            raise LogCorrupt(f"the tiles cover {tree_size} leaves, the checkpoints {signed_size}")
        if latest is not None and size == signed_size == tree_size:
            return self._open(latest)  # nothing new since the latest checkpoint
        started = time.perf_counter()
        tree = TiledTree(tree_size, self._read_tiles)
        try:
            if tree.root() != tree_root:
                raise ProofError("the tiles give a root other than the one stored with them")
            self._scrub(tree, new=size - tree_size)
            bundle = self._extend(tree, size, bundle_from=signed_size)
        except ProofError as e:
            raise LogCorrupt(f"refusing to sign the log at size {size}: {e}") from e
        try:
            signed = next_checkpoint(
                tree=tree,
                size=size,
                origin=self.origin,
                key=self.key,
                previous_note=latest.note if latest else None,
            )
        except (ProofError, NoteError) as e:
            # The rows no longer extend what was signed, or the key no longer opens it.
            raise LogCorrupt(f"refusing to sign the log at size {size}: {e}") from e
        now = datetime.now(UTC)
        row: CheckpointRow | None = None
        if size > signed_size:
            row = self._mirror(store, signed, tree, bundle, first=signed_size, now=now)
        with transaction(self.sessions) as session:
            if not repo.advance_log_tree(
                session, old_size=tree_size, new_size=size, root_hash=signed.checkpoint.root_hash
            ):
                raise SignerRace(
                    f"another signer moved the log from {tree_size} leaves first; "
                    f"checkpoint {size} was not stored"
                )
            repo.write_tiles(session, tiles=tree.changed())
            if row is not None:
                repo.add_checkpoint(session, checkpoint=row)
        metrics.checkpoint_signed(size=size, seconds=time.perf_counter() - started)
        log.info("checkpoint %d signed (%d new leaves)", size, size - signed_size)
        return signed

    def _extend(self, tree: TiledTree, size: int, *, bundle_from: int) -> list[str]:
        """Append leaf rows tree.size..size to ``tree``, checking each row's hash; return the
        data of the rows from ``bundle_from`` on (the next leaf bundle)."""
        bundle: list[str] = []
        start = tree.size
        while start < size:
            stop = min(size, start + READ_BATCH)
            with self.reads() as session:
                rows = repo.leaf_rows_between(session, start=start, stop=stop)
            hashes = []
            for expected, (idx, digest, data) in enumerate(rows, start):
                if idx != expected:
                    raise LogCorrupt(f"leaf {expected} is missing from the log")
                if leaf_hash(data.encode()) != digest:
                    raise LogCorrupt(f"leaf {expected}: stored hash does not match its data")
                hashes.append(digest)
                if expected >= bundle_from:
                    bundle.append(data)
            if len(rows) != stop - start:
                raise LogCorrupt(f"leaves {start}..{stop - 1}: {len(rows)} rows found")
            tree.append_many(hashes)
            start = stop
        return bundle

    def _scrub(self, tree: TiledTree, *, new: int) -> None:
        """Read a window of signed leaves back and refuse to go on if a row has changed.

        Signing reads only new rows, so a row edited after it was signed (its hash recomputed
        to match) would go unnoticed, and we would keep signing over it. Each signing of
        ``new`` leaves sweeps the next SCRUB_PER_LEAF × ``new`` rows (SCRUB_MIN to SCRUB_ROWS;
        all of a small log) against the tiles, so such an edit stops signing before the log
        grows by another size / SCRUB_PER_LEAF leaves, or within size / SCRUB_MIN
        checkpoints; ``liuhen verify --all`` reads all.
        """
        signed = tree.size
        start = self._scrub_from if self._scrub_from < signed else 0
        window = min(SCRUB_ROWS, max(SCRUB_MIN, SCRUB_PER_LEAF * new))
        stop = min(signed, start + window)
        with self.reads() as session:
            rows = repo.leaf_rows_between(session, start=start, stop=stop)
        if len(rows) != stop - start:
            raise LogCorrupt(f"leaves {start}..{stop - 1}: {len(rows)} rows found")
        signed_hashes = tree.leaves(start, stop)
        for expected, (idx, digest, data) in enumerate(rows, start):
            if idx != expected:
                raise LogCorrupt(f"leaf {expected} is missing from the log")
            if leaf_hash(data.encode()) != digest:
                raise LogCorrupt(f"leaf {expected}: stored hash does not match its data")
            if digest != signed_hashes[expected - start]:
                raise LogCorrupt(f"leaf {expected} changed after it was signed")
        self._scrub_from = 0 if stop == signed else stop  # next time, from the start

    def _mirror(
        self,
        store: ObjectStore,
        signed: SignedCheckpoint,
        tree: TiledTree,
        bundle: list[str],
        *,
        first: int,
        now: datetime,
    ) -> CheckpointRow:
        """Put the leaf bundle, the tiles that filled up, the checkpoint and its time-stamp
        under Object Lock; the checkpoint row to store."""
        size = signed.checkpoint.size
        until = retain_until(self.retention, now=now)
        store.put_bytes(
            keys.leaf_bundle_key(first, size - 1),
            "".join(line + "\n" for line in bundle).encode(),
            content_type="application/jsonl",
            retain_until=until,
        )
        for (level, index), hashes in sorted(tree.changed().items()):
            if len(hashes) == TILE_WIDTH * 32:
                store.put_bytes(
                    keys.tile_key(level, index),
                    hashes,
                    content_type="application/octet-stream",
                    retain_until=until,
                )
        stored = store.put_bytes(
            keys.checkpoint_key(size),
            signed.note.encode(),
            content_type="text/plain; charset=utf-8",
            retain_until=until,
        )
        tsr, tsa_time = self._timestamp(store, signed.note.encode(), size, until)
        return CheckpointRow(
            size=size,
            root_hash=signed.checkpoint.root_hash,
            note=signed.note,
            created_at=now,
            object_version=stored.version_id,
            tsr=tsr,
            tsa_time=tsa_time,
        )

    def _timestamp(
        self, store: ObjectStore, note: bytes, size: int, until: datetime
    ) -> tuple[bytes | None, datetime | None]:
        if self.tsa_config is None:
            return None, None
        # rfc3161-client is imported only where a TSA is configured (it costs every command).
        from ingest.tsa_client import request_timestamp
        from integrity import tsa

        cfg = self.tsa_config
        try:
            tsr = request_timestamp(cfg.url, note, timeout=cfg.timeout_s)
            when = tsa.verify_timestamp(tsr, note, roots=list(cfg.roots))
        except TimestampError as e:
            # A checkpoint without trusted time is still a valid checkpoint; say so loudly.
            log.warning("checkpoint %d not time-stamped: %s", size, e)
            return None, None
        store.put_bytes(
            keys.timestamp_key(size),
            tsr,
            content_type="application/timestamp-reply",
            retain_until=until,
        )
        return tsr, when


def _covers(signed: SignedCheckpoint | None, size: int) -> bool:
    return signed is not None and signed.checkpoint.size >= size


def load_tsa_config(url: str | None, roots: list[Path], timeout_s: float) -> TsaConfig | None:
    if not url:
        return None
    return TsaConfig(url=url, roots=tuple(p.read_bytes() for p in roots), timeout_s=timeout_s)
