"""The tamper-evident log as a service: leaves in the index, the Merkle tree kept as tiles in
the index, checkpoints signed (and time-stamped) and mirrored to object storage under Object
Lock.

Two locks, never held together:

- **The sequencer** (the ``log_state`` row): every leaf takes its index from it inside the
  caller's transaction, so indexes are dense and never reused (a rolled-back seal gives its
  index back). Nothing else happens while it is held.
- **The signer** (``ingest.signing``): exactly one process at a time signs, and a second
  signer that got past the lock can only fail, never publish a checkpoint that does not
  extend the last.

A seal does not sign its own checkpoint: ``receipt`` waits (bounded) until a checkpoint covers
its leaf. One waiting thread per process takes the signer lock, waits out the rest of
``checkpoint_interval_ms`` since the latest checkpoint, and signs everything committed by then,
so seals arriving together share one checkpoint; the others wait for it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ingest import background, metrics
from ingest.errors import CheckpointPending, SignerRace
from ingest.signing import CheckpointSigner, LogCorrupt, TsaConfig
from integrity.errors import ProofError
from integrity.leaves import canonical_json
from integrity.log import LogKey, SignedCheckpoint, make_receipt
from integrity.merkle import TiledTree, leaf_hash, verify_inclusion
from integrity.receipts import Receipt, format_receipt
from storage import repository as repo
from storage.db import make_read_sessionmaker
from storage.objects import ObjectStore
from storage.tables import LogLeaf

__all__ = ["AppendedLeaf", "Ledger", "LogCorrupt"]

log = logging.getLogger(__name__)

POLL_S = 0.05
"""How often a process without the signer lock looks for the checkpoint another one signs."""
FRESH_S = 0.25
"""How long a receipt may be proved against the checkpoint a round found, without reading
the head (at least this long, or one checkpoint interval)."""


@dataclass(frozen=True)
class AppendedLeaf:
    index: int
    leaf_hash: str
    data: str


@dataclass(frozen=True)
class _Head:
    """The latest checkpoint the tiles cover, and how far the tiles go."""

    signed: SignedCheckpoint | None
    tree_size: int
    log_size: int

    def covers(self, size: int) -> bool:
        return _covers(self.signed, size)


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
        self.receipt_wait_s = receipt_wait_s
        bind = sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("the ledger needs a sessionmaker bound to an engine")
        self.reads = make_read_sessionmaker(bind)  # the ledger's reads never write
        self.signer = CheckpointSigner(
            engine=bind,
            sessions=sessions,
            reads=self.reads,
            key=key,
            origin=origin,
            retention=retention,
            tsa_config=tsa_config,
            interval=checkpoint_interval_ms / 1000,
        )
        self._proving: TiledTree | None = None  # the tree receipts are proved in (_prove)
        self._proving_lock = threading.Lock()
        self._cond = threading.Condition()
        self._busy = False  # one thread of this process reads or signs for the waiting ones
        self._known: SignedCheckpoint | None = None
        self._known_at = 0.0  # time.monotonic() of the round that found ``_known``
        self._round = 0  # rounds ended: a waiter trusts only what a later round found

    @property
    def interval(self) -> float:
        """Seconds between checkpoints at most: the signer paces on it, receipts trust a
        round's checkpoint for as long."""
        return self.signer.interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self.signer.interval = seconds

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
                tree = self._proving = TiledTree(size, self.signer.read_tiles)
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
        tree = TiledTree(size, self.signer.read_tiles)
        if tree.leaf(index) != leaf_hash(data.encode()):
            raise LogCorrupt(f"leaf row {index} differs from the signed log: run liuhen verify")
        return make_receipt(tree=tree, index=index, signed=signed)

    def consistency(self, size1: int, size2: int) -> list[str]:
        """Base64 consistency proof between two tree sizes (for auditors and monitors)."""
        signed = self.latest_checkpoint()
        size = signed.checkpoint.size if signed else 0
        if not 1 <= size1 <= size2 <= size:  # RFC 9162 has no proof from the empty tree
            raise LogCorrupt(f"need 1 <= from <= to <= {size}, got {size1}, {size2}")
        proof = TiledTree(size, self.signer.read_tiles).consistency_proof(size1, size2)
        return [base64.b64encode(h).decode() for h in proof]

    def _head(self) -> _Head:
        state = self.signer.state()
        size, tree_size, latest = state.size, state.tree_size, state.latest
        if latest is None or latest.size > tree_size:
            return _Head(None, tree_size, size)  # an index from before the tiles: sign to build
        return _Head(self.signer.open(latest), tree_size, size)

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
                    signed = self.signer.sign_round(self.store) if self.store is not None else None
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
        period = max(self.interval, 1.0)

        def step() -> None:
            try:
                head = self._head()
                if not head.covers(head.log_size) and self.store is not None:
                    self._await(head.log_size, timeout=period)
            except CheckpointPending:
                pass  # another process holds the signer lock: it signs them
            except Exception:  # keep trying: a store or database outage passes
                log.exception("background signing failed")

        return background.every(
            period, step, name="liuhen-log-signer", join_s=period + self.receipt_wait_s
        )

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


def _covers(signed: SignedCheckpoint | None, size: int) -> bool:
    return signed is not None and signed.checkpoint.size >= size
