"""Signing checkpoints: exactly one signer at a time across processes, never holding the
sequencer.

The signer (a PostgreSQL advisory lock; on SQLite a file lock beside the database) reads the
new leaf rows in short transactions, extends the tiles, signs, mirrors the leaf bundle, full
tiles and checkpoint while it asks the TSA (all at once), and only then stores the checkpoint
and tiles in one short transaction that moves ``log_tree`` from the size it started from
(compare-and-set): a second signer, even one that got past the lock, can only fail, never
publish a checkpoint that does not extend the last. ``ingest.ledger`` decides when to sign;
this module signs.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from ingest import metrics
from ingest.errors import SignerRace
from integrity.errors import IntegrityError, NoteError, ProofError, TimestampError
from integrity.log import LogKey, SignedCheckpoint, next_checkpoint, open_checkpoint
from integrity.merkle import HASH_SIZE, TILE_WIDTH, TiledTree, TileKey, leaf_hash
from integrity.note import Checkpoint
from storage import keys
from storage import repository as repo
from storage.db import one_moment, transaction
from storage.errors import ObjectNotFound, ObjectStoreError
from storage.objects import ObjectStore, retain_until
from storage.tables import Checkpoint as CheckpointRow

log = logging.getLogger(__name__)

SCRUB_ROWS = 2048
"""At most this many already-signed leaf rows are read back per signing
(``CheckpointSigner._scrub``)."""
SCRUB_PER_LEAF = 8
"""Already-signed rows read back per new leaf signed (and at least ``SCRUB_MIN``): the sweep
costs in proportion to what arrives, at most SCRUB_ROWS per checkpoint."""
SCRUB_MIN = 256
READ_BATCH = 10_000
"""Leaf rows read per query while extending the tree."""
PUBLISHED_MAX = 64 * 1024
"""Bytes read of ``log/checkpoint`` at most (a checkpoint note is a few hundred)."""
MIRROR_AT_ONCE = 6
"""Mirror puts (and the TSA request) of one checkpoint in flight at once: the bundle, the
checkpoint, the time-stamp, a tile or two."""
_RESTORE = (
    "The index lost rows or was restored from an older backup (or another home's index signs "
    "into this bucket with this key): restore the index that published it; liuhen verify "
    "--all shows where the two differ"
)
SIGNER_LOCK_ID = 7310852
"""The PostgreSQL advisory lock of the signer (7310851 guards migrations)."""


class LogCorrupt(IntegrityError):
    """The stored log disagrees with itself; nothing more is signed until it is looked at."""

    code = "log_corrupt"


@dataclass(frozen=True)
class TsaConfig:
    url: str
    roots: tuple[bytes, ...]
    timeout_s: float


@dataclass(frozen=True)
class LogState:
    size: int
    """Leaves committed."""
    tree_size: int
    """Leaves the stored tiles cover, with ``tree_root`` their root."""
    tree_root: bytes
    latest: CheckpointRow | None
    """The newest checkpoint row."""


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


class CheckpointSigner:
    """Signs checkpoints of the log in the index, one process at a time (``lock``)."""

    def __init__(
        self,
        *,
        engine: Engine,
        sessions: sessionmaker[Session],
        reads: sessionmaker[Session],
        key: LogKey,
        origin: str,
        retention: timedelta,
        tsa_config: TsaConfig | None,
        interval: float,
    ) -> None:
        self.sessions = sessions
        self.reads = reads
        self.key = key
        self.origin = origin
        self.retention = retention
        self.tsa_config = tsa_config
        self.interval = interval
        """Seconds: at most one checkpoint per interval (``log.checkpoint_interval_ms``)."""
        self.lock = SignerLock(engine)
        self.mirror_at_once = MIRROR_AT_ONCE
        self._scrub_from = 0
        self._furthest: Checkpoint | None = None
        """The furthest checkpoint this process has seen published (or published itself)."""

    def state(self) -> LogState:
        """How far the leaves, the tiles and the checkpoints go, read in one moment (another
        process may append and sign between the three reads); a log with fewer leaves than
        were signed or tiled is corrupt."""
        with self.reads() as session:
            one_moment(session)
            size = repo.log_size(session)
            tree_size, tree_root = repo.log_tree_state(session)
            latest = repo.latest_checkpoint(session)
        signed_size = latest.size if latest else 0
        if size < max(tree_size, signed_size):
            raise LogCorrupt(
                f"the log shrank: it has {size} leaves, but checkpoint {signed_size} was "
                f"signed and the tiles cover {tree_size}"
            )
        return LogState(size, tree_size, tree_root, latest)

    def open(self, row: CheckpointRow) -> SignedCheckpoint:
        try:
            return SignedCheckpoint(open_checkpoint(row.note, self.key.verifier), row.note)
        except NoteError as e:
            raise LogCorrupt(
                f"checkpoint {row.size} in the index does not open with the log key; "
                f"refusing to sign after it or prove against it: {e}"
            ) from e

    def read_tiles(self, wanted: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        with self.reads() as session:
            return repo.read_tiles(session, keys=wanted)

    def sign_round(self, store: ObjectStore) -> SignedCheckpoint | None:
        """Take the signer lock and sign; None if another process holds it."""
        with self.lock.hold() as held:
            if not held:
                return None
            self._pace()
            return self.sign(store)

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

    def sign(self, store: ObjectStore) -> SignedCheckpoint:
        """Extend the tiles to every committed leaf, sign, mirror, stamp, then store.

        Holds the signer lock, never the sequencer: appends go on meanwhile.
        """
        state = self.state()
        size, tree_size, tree_root, latest = (
            state.size,
            state.tree_size,
            state.tree_root,
            state.latest,
        )
        signed_size = latest.size if latest else 0
        if tree_size > signed_size:
            raise LogCorrupt(f"the tiles cover {tree_size} leaves, the checkpoints {signed_size}")
        if latest is not None and size == signed_size == tree_size:
            return self.open(latest)  # nothing new since the latest checkpoint
        started = time.perf_counter()
        tree = TiledTree(tree_size, self.read_tiles)
        with ThreadPoolExecutor(2, "liuhen-published") as reading:
            # What the store says was published is read while the leaf rows are (an empty
            # log's checkpoint is never stored: no store call for it).
            published = (
                [reading.submit(self._published, store),
                 reading.submit(self._following, store, signed_size)]
                if size > 0 else None
            )  # fmt: skip
            try:
                if tree.root() != tree_root:
                    raise ProofError("the tiles give a root other than the one stored with them")
                self._scrub(tree, new=size - tree_size)
                bundle = self._extend(tree, size, bundle_from=signed_size)
            except ProofError as e:
                raise LogCorrupt(f"refusing to sign the log at size {size}: {e}") from e
            if published is not None:
                found = [c for reads in published for c in reads.result()]
                self._check_published(
                    store, found, tree, size, signed_size=signed_size, tree_size=tree_size
                )
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
        elif tiles := _full_tiles(tree):
            # The tiles of an index from before them, built again with nothing new to sign:
            # mirrored like any, for readers who fetch tiles (C2SP tlog-tiles) and not rows.
            until = retain_until(self.retention, now=now)
            put = functools.partial(store.put_bytes, retain_until=until)
            with ThreadPoolExecutor(self.mirror_at_once, "liuhen-mirror") as pool:
                puts = [pool.submit(put, key, data, content_type=kind) for key, data, kind in tiles]
                for done in puts:
                    done.result()
        with contextlib.ExitStack() as publishing:
            if row is not None:  # an empty log's checkpoint is signed for readers, never stored
                # Published while the row commits: everything it covers is stored by now, and
                # a commit that fails leaves a copy whose leaves are committed (a prefix).
                pool = publishing.enter_context(ThreadPoolExecutor(1, "liuhen-publish"))
                until = retain_until(self.retention, now=now)
                pool.submit(self._publish, store, signed, until=until)
            with transaction(self.sessions) as session:
                if not repo.advance_log_tree(
                    session,
                    old_size=tree_size,
                    new_size=size,
                    root_hash=signed.checkpoint.root_hash,
                ):
                    raise SignerRace(
                        f"another signer moved the log from {tree_size} leaves first; "
                        f"checkpoint {size} was not stored"
                    )
                repo.write_tiles(session, tiles=tree.changed())
                if row is not None:
                    repo.add_checkpoint(session, checkpoint=row)
        if row is not None:
            metrics.checkpoint_signed(size=size, seconds=time.perf_counter() - started)
            log.info("checkpoint %d signed (%d new leaves)", size, size - signed_size)
        return signed

    def _publish(self, store: ObjectStore, signed: SignedCheckpoint, *, until: datetime) -> None:
        """Put the checkpoint as ``log/checkpoint`` once everything it covers is stored: the
        published head never names what is not there yet. A failed put is no failed signing
        (the numbered copy exists); the next checkpoint publishes."""
        self._furthest = signed.checkpoint
        try:
            store.put_bytes(
                keys.PUBLISHED_CHECKPOINT,
                signed.note.encode(),
                content_type="text/plain; charset=utf-8",
                retain_until=until,
            )
        except ObjectStoreError as e:
            log.warning("checkpoint %d stored, not published to %s: %s",
                        signed.checkpoint.size, keys.PUBLISHED_CHECKPOINT, e)  # fmt: skip

    def _check_published(
        self,
        store: ObjectStore,
        found: list[Checkpoint],
        tree: TiledTree,
        size: int,
        *,
        signed_size: int,
        tree_size: int,
    ) -> None:
        """Refuse to sign what would fork a checkpoint of this log already in the store.

        An index restored from an older backup, or one that lost its newest rows, has fewer
        leaves than the log already published, or other leaves at their indexes: signing on
        would give those leaf indexes other leaves under this key, and every receipt handed
        out since would stop proving against the checkpoints to come. ``found`` is what the
        store says: ``log/checkpoint`` (the newest, put after each checkpoint's other
        objects) and the checkpoints that follow the index's latest one (``_following``);
        so does the furthest this process has seen. Each checkpoint past the index's latest
        that agrees with the index is followed in turn (a backup taken while a signer was
        between its objects and its row holds the leaves of that checkpoint, not the ones
        after it; a signer that died before its row left a dead end beside the next), until
        one does not agree or none follows. A signer that lost its lock while another signed
        past it is in a race, not on a forked index (``SignerRace``).
        """
        listed = {signed_size}
        if self._furthest is not None:
            found = [*found, self._furthest]
        while True:
            head = max(found, key=lambda c: c.size, default=None)
            if head is None:
                return
            self._furthest = head
            forked = [c for c in found if c.size <= size and self._forks(c, tree, size)]
            beyond = [c for c in found if c.size > size]
            if forked or beyond:
                break
            # Every one agrees. Each one past the index's latest not listed yet may have been
            # followed by others: a checkpoint whose row never committed (its signer died, or
            # lost its lock) is a dead end beside the one the log went on from. (The history
            # before the index's latest is the index's own: its rows.)
            todo = sorted({c.size for c in found if c.size > signed_size} - listed)
            if not todo:
                return
            listed.update(todo)
            found = [*found, *(c for start in todo for c in self._following(store, start))]
        state = self.state()
        if state.tree_size != tree_size or (
            not forked and state.size >= max(c.size for c in beyond)
        ):
            raise SignerRace(
                f"another signer moved the log from {tree_size} leaves first; "
                f"checkpoint {size} was not signed"
            )
        if forked:
            worst = max(forked, key=lambda c: c.size)
            problem = (
                f"the index's first {worst.size} leaves give another root than checkpoint "
                f"{worst.size}, published to the store"
            )
        else:
            problem = (
                f"checkpoint {max(c.size for c in beyond)} of this log was published to the "
                f"store, but the index holds {size} leaves"
            )
        raise LogCorrupt(f"{problem}: refusing to sign a fork of it. {_RESTORE}")

    @staticmethod
    def _forks(checkpoint: Checkpoint, tree: TiledTree, size: int) -> bool:
        """Whether ``checkpoint`` (of at most ``size`` leaves) has another root than the first
        leaves of ``tree``."""
        try:
            return tree.root(checkpoint.size) != checkpoint.root_hash
        except ProofError as e:
            raise LogCorrupt(f"refusing to sign the log at size {size}: {e}") from e

    def _published(self, store: ObjectStore) -> list[Checkpoint]:
        """``log/checkpoint``, if it opens with the log key: the newest checkpoint, as far as
        one read tells (a delete marker or an older copy put over it hide the newest; the
        leaf bundles do not, ``_following``)."""
        note = store.read_current(keys.PUBLISHED_CHECKPOINT, limit=PUBLISHED_MAX)
        if note is None:
            if self._furthest is None and self.state().latest is not None:
                log.warning("%s is missing from the store although checkpoints were signed",
                            keys.PUBLISHED_CHECKPOINT)  # fmt: skip
            return []
        opened = self._opened(keys.PUBLISHED_CHECKPOINT, note, size=None)
        return [] if opened is None else [opened]

    def _following(self, store: ObjectStore, start: int) -> list[Checkpoint]:
        """The stored checkpoints of this log whose leaf bundles begin at leaf ``start``.

        The next checkpoint after size ``start`` mirrored the leaf bundle
        ``log/leaves/{start}-…``; bundles and checkpoints are WORM versions, which a delete
        marker hides from a plain listing but not from a listing of versions, and a version
        put over a checkpoint does not take the one under it away. So every version of each
        such checkpoint key is read, and counts only if it holds that size. Found when the
        index lost that checkpoint, or when a signer stored the objects and died before its
        row (the index then has those leaves and the roots agree). A version listed and then
        gone is passed over with a warning; any other failure to read one stops the round
        (what cannot be read could be what the restored index lacks)."""
        sizes = {
            bounds[1] + 1
            for version in store.list_versions(keys.leaf_bundles_from(start))
            if (bounds := keys.parse_leaf_bundle_key(version.key)) and bounds[0] == start
        }
        found: list[Checkpoint] = []
        for size in sorted(sizes):
            key = keys.checkpoint_key(size)
            # The prefix also lists longer numbers and time-stamps: only this key counts.
            for version in store.list_versions(key):
                if version.key != key or version.size > PUBLISHED_MAX:
                    continue
                try:
                    note = store.read_bytes(key, version.version_id)
                except ObjectNotFound as e:  # listed, then gone: nothing to hold against
                    log.warning("%s@%s is gone; not checked: %s", key, version.version_id, e)
                    continue
                if (opened := self._opened(f"{key}@{version.version_id}", note, size)) is not None:
                    found.append(opened)
        return found

    def _opened(self, name: str, note: bytes, size: int | None) -> Checkpoint | None:
        """The checkpoint ``note`` holds if it opens with the log key, is this log's and (when
        ``size`` is given) of that size."""
        try:
            published = open_checkpoint(note.decode("utf-8"), self.key.verifier)
        except (UnicodeDecodeError, NoteError) as e:
            log.warning("%s does not open with the log key; not checked: %s", name, e)
            return None
        if published.origin != self.origin:
            log.warning("%s is for log %r, not %r; not checked",
                        name, published.origin, self.origin)  # fmt: skip
            return None
        if size is not None and published.size != size:
            log.warning("%s holds checkpoint %d; not checked", name, published.size)
            return None
        return published

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
        under Object Lock; the checkpoint row to store.

        None of them depends on another, so they go ``mirror_at_once`` at a time, the TSA
        request among them: a checkpoint costs about one store round trip (or the TSA's),
        not the sum of all, and every receipt waits for it. All have ended when this returns
        or raises; what got through before a failure is an orphan (the row is not stored).
        """
        size = signed.checkpoint.size
        until = retain_until(self.retention, now=now)
        note = signed.note.encode()
        objects = [
            (
                keys.leaf_bundle_key(first, size - 1),
                "".join(line + "\n" for line in bundle).encode(),
                "application/jsonl",
            ),
            *_full_tiles(tree),
            (keys.checkpoint_key(size), note, "text/plain; charset=utf-8"),  # last: the row's
        ]
        puts = [
            functools.partial(
                store.put_bytes, key, data, content_type=content_type, retain_until=until
            )
            for key, data, content_type in objects
        ]
        if self.mirror_at_once <= 1:
            stored = [put() for put in puts][-1]
            tsr, tsa_time = self._timestamp(store, note, size, until)
        else:
            with ThreadPoolExecutor(
                self.mirror_at_once, thread_name_prefix="liuhen-mirror"
            ) as pool:
                stamping = pool.submit(self._timestamp, store, note, size, until)
                stored = [f.result() for f in [pool.submit(put) for put in puts]][-1]
                tsr, tsa_time = stamping.result()
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


def load_tsa_config(url: str | None, roots: list[Path], timeout_s: float) -> TsaConfig | None:
    if not url:
        return None
    return TsaConfig(url=url, roots=tuple(p.read_bytes() for p in roots), timeout_s=timeout_s)


def _full_tiles(tree: TiledTree) -> list[tuple[str, bytes, str]]:
    """The tiles that filled up since ``tree`` was read, as objects to mirror."""
    return [
        (keys.tile_key(level, index), hashes, "application/octet-stream")
        for (level, index), hashes in sorted(tree.changed().items())
        if len(hashes) == TILE_WIDTH * HASH_SIZE
    ]
