"""``liuhen verify``: check what liuhen holds against its own tamper-evident log.

The log is the reference. What the index says about an item (the SHA-256 and size of its
bytes, its case links, its custody events, its derivatives) must be what the log says; the
log must be what its signed checkpoints say; and the copies mirrored into object storage under
Object Lock (checkpoints, leaf bundles) must agree with both. Nothing cached is trusted: every
run rebuilds the Merkle tree from the leaf rows, hashing their data again.

A run reports, it never stops at the first problem. Each ``Failure`` has a stable code, the
item it concerns (None for the log as a whole) and, for a leaf, its index. Then the run is
itself logged: every item it checked gets a ``verify`` custody event with the result.

Cost: both runs stream every leaf row (a tree needs them all) in batches, keeping a few
dozen bytes per leaf and a small record per item; ``verify_all`` also reads every stored
object once and the leaf bundles once. An item's media type may differ from its leaf when
the pipeline's probe replaced the sniffed one (the probed type is kept in ``items.media``).

Codes (``Failure.what``):
    leaf_missing, leaf_hash      a leaf row is absent / its stored hash is not its data's
    leaf_order                   a leaf row holds the leaf logged at another index
    leaf_data                    a leaf row differs from the copy the checkpoints vouch for
    leaf_format                  a leaf row is not a canonical JSON leaf
    log_size                     log_state, the leaf rows and the checkpoints disagree
    leaf_mirror                  the leaf bundles in object storage do not rebuild the log
    checkpoint_signature         a checkpoint does not verify with the log key
    log_key                      the log key verifies none of the checkpoints (key replaced?)
    checkpoint_origin, checkpoint_root, checkpoint_consistency, checkpoint_mirror
    original_missing, original_hash, original_size     the stored bytes vs the item leaf
    index_vs_leaf                an item row differs from its item leaf
    case_links                   links not explained by the item leaf and link/unlink leaves
    custody_chain, custody_row   a broken ``prev`` chain / a custody row unlike its leaf
    derivative_missing, derivative_hash, derivative_size, derivative_vs_leaf
    leaf_inclusion               (one item) a leaf is not provably in the latest checkpoint
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from ingest import custody
from ingest.ledger import LogCorrupt
from ingest.runtime import Runtime
from integrity.errors import CanonicalJSONError, IntegrityError
from integrity.leaves import (
    KIND_CUSTODY,
    KIND_DERIVATIVE,
    KIND_ITEM,
    LEAF_VERSION,
    canonical_json,
    rfc3339_utc,
)
from integrity.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from integrity.note import Checkpoint, Verifier, open_note, split_note
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.errors import ObjectStoreError, StoreUnavailable
from storage.objects import ObjectStore, translate_errors
from storage.tables import Checkpoint as CheckpointRow
from storage.tables import CustodyEvent, Derivative, Item, ItemCase, LogLeaf, LogState

__all__ = [
    "Failure",
    "Report",
    "rebuild_leaves_from_objects",
    "verify_all",
    "verify_item",
]

log = logging.getLogger(__name__)

BATCH = 2000
"""Leaf rows (and items) read per query: memory stays flat however long the log is."""
EVENTS_PER_TRANSACTION = 200
PLACEHOLDER = bytes(32)
"""Stands in the rebuilt tree for a leaf row that is gone and has no mirrored copy."""
LEAF_CODES = frozenset(
    {"leaf_missing", "leaf_hash", "leaf_order", "leaf_data", "leaf_format", "custody_chain"}
)
"""Failures that mean a leaf itself is wrong (``Report.first_bad_leaf``)."""

# Folders of the mirror, from the one place that knows object keys.
_LEAVES_PREFIX = keys.leaf_bundle_key(0, 0).rpartition("/")[0] + "/"
_CHECKPOINTS_PREFIX = keys.checkpoint_key(0).rpartition("/")[0] + "/"
_BUNDLE_NAME = re.compile(r"([0-9]+)-([0-9]+)\.jsonl")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Failure:
    """One thing that does not check."""

    item_id: str | None
    """The item it concerns; None when it concerns the log as a whole."""
    what: str
    """A stable code (see the module docstring)."""
    detail: str
    """What was expected and what was found."""
    leaf_index: int | None = None
    """The log leaf it concerns, when there is one."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "what": self.what,
            "detail": self.detail,
            "leaf_index": self.leaf_index,
        }


@dataclass(frozen=True)
class Report:
    """The outcome of one verification run (``liuhen verify --json``)."""

    ok: bool
    """True only when nothing failed."""
    checked: int
    """How many items were checked."""
    failures: list[Failure]
    """Log failures by leaf index first, then in the order found."""

    @property
    def first_bad_leaf(self) -> int | None:
        """The lowest index of a leaf that is itself wrong, if any."""
        bad = [f.leaf_index for f in self.failures if f.what in LEAF_CODES]
        return min((i for i in bad if i is not None), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "failures": [f.as_dict() for f in self.failures],
        }


# --- reading leaf data ---------------------------------------------------------------------


def _parse_leaf(data: str) -> dict[str, Any] | None:
    """The leaf as a dict if it is canonical leaf JSON of a known kind, else None."""
    try:
        obj = json.loads(data)
        if canonical_json(obj) != data.encode():
            return None
    except (ValueError, CanonicalJSONError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("v") != LEAF_VERSION:
        return None
    if obj.get("kind") not in {KIND_ITEM, KIND_DERIVATIVE, KIND_CUSTODY}:
        return None
    return obj


def _str(leaf: Mapping[str, Any], key: str) -> str | None:
    value = leaf.get(key)
    return value if isinstance(value, str) else None


def _int(leaf: Mapping[str, Any], key: str) -> int | None:
    value = leaf.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _follow_links(cases: set[str], custody: Mapping[str, Any]) -> None:
    """Apply a ``link`` / ``unlink`` custody leaf (details ``{"case_id": ...}``) to ``cases``."""
    details = custody.get("details")
    case_id = details.get("case_id") if isinstance(details, dict) else None
    if not isinstance(case_id, str):
        return
    if custody.get("action") == "link":
        cases.add(case_id)
    elif custody.get("action") == "unlink":
        cases.discard(case_id)


def _diff(index: Mapping[str, object], logged: Mapping[str, object]) -> str:
    """``field: index X, log Y`` for every field that differs ('' when none does)."""
    return "; ".join(
        f"{k}: index {index[k]!r}, log {logged.get(k)!r}"
        for k in index
        if index[k] != logged.get(k)
    )


# --- what the log says, gathered in log order ----------------------------------------------


@dataclass
class _Logged:
    """What the log says about one item."""

    sha256: str | None = None
    size: int | None = None
    media_type: str | None = None
    chain: str | None = None
    """Hex hash of the item's latest custody leaf (its item leaf before the first)."""
    cases: set[str] = field(default_factory=set)
    """Case IDs at seal, plus ``link`` and minus ``unlink`` custody leaves so far."""
    derivatives: dict[int, tuple[str | None, str | None, int | None]] = field(default_factory=dict)
    """(role, sha256, size) of each derivative leaf, by leaf index."""
    leaves: list[int] = field(default_factory=list)
    deleted: bool = False
    """A ``deleted`` custody leaf (retention purge): its objects may be gone."""


@dataclass
class _Rows:
    """Index rows that point at leaves, by the leaf index they point at."""

    items: dict[int, Item] = field(default_factory=dict)
    custody: dict[int, CustodyEvent] = field(default_factory=dict)
    derivatives: dict[int, Derivative] = field(default_factory=dict)

    def owner(self, idx: int, row: LogLeaf | None) -> str | None:
        """The item a leaf index belongs to, by the rows that point at it."""
        if idx in self.items:
            return self.items[idx].id
        for pointer in (self.custody.get(idx), self.derivatives.get(idx)):
            if pointer is not None:
                return pointer.item_id
        return row.item_id if row is not None else None


@dataclass
class _Suspect:
    """A leaf row whose hash is not what something else recorded for that index."""

    owner: str | None
    found: bytes
    stored_ok: bool
    mirror_differs: bool
    expected: set[bytes]


@dataclass(frozen=True)
class _Signed:
    """A checkpoint that verified with the log key, and when it was made."""

    checkpoint: Checkpoint
    made: datetime | None


class _Audit:
    """One verification run: failures found so far and the tree rebuilt from the rows."""

    def __init__(self, rt: Runtime, *, focus: str | None) -> None:
        self.rt = rt
        self.focus = focus
        """verify_item: only this item's leaves are interpreted and only its failures kept."""
        self.failures: list[Failure] = []
        self.tree = MerkleTree()
        self.size = 0
        self.logged: dict[str, _Logged] = {}
        self.suspects: dict[int, _Suspect] = {}
        self.mirror: MerkleTree | None = None
        self.walk: _MirrorWalk | None = None
        self.verifier = rt.ledger.key.verifier

    def fail(self, item_id: str | None, what: str, detail: str, idx: int | None = None) -> None:
        if self.focus is None or item_id == self.focus:
            self.failures.append(Failure(item_id, what, detail, idx))

    def of(self, item_id: str) -> _Logged:
        return self.logged.setdefault(item_id, _Logged())

    def report(self, checked: int) -> Report:
        # Stable sort: the log's failures by index first, the rest as found.
        failures = sorted(self.failures, key=lambda f: (f.leaf_index is None, f.leaf_index or 0))
        return Report(ok=not failures, checked=checked, failures=failures)

    # --- the leaf rows ---------------------------------------------------------------------

    def read_log(self, rows_for: Callable[[Session, int, int], _Rows]) -> None:
        """Stream every leaf row below ``size``, rebuild the tree, interpret each leaf."""
        for start in range(0, self.size, BATCH):
            stop = min(self.size, start + BATCH)
            with self.rt.sessions() as session:
                leaves = {r.idx: r for r in repo.leaves_between(session, start=start, stop=stop)}
                rows = rows_for(session, start, stop)
            for idx in range(start, stop):
                self._leaf(idx, leaves.get(idx), rows)

    def _leaf(self, idx: int, row: LogLeaf | None, rows: _Rows) -> None:
        owner = rows.owner(idx, row)
        mirrored = self.mirror.leaf(idx) if self.mirror and idx < self.mirror.size else None
        if row is None:
            self.fail(owner, "leaf_missing", f"leaf {idx} is missing from the index", idx)
            # Its WORM copy stands in, so the rest still checks against it and the roots.
            text = self.walk.line(idx) if self.walk is not None else None
            self.tree.append(mirrored or PLACEHOLDER)
            if text is None:
                return
            found = leaf_hash(text.encode())
        else:
            text = row.data
            found = leaf_hash(text.encode())
            self.tree.append(found)
            self._suspect(idx, owner, row, found, mirrored, rows.custody.get(idx))
        if self.focus is not None and idx not in rows.items and self.focus not in text:
            return  # another item's leaf: it only counts for the tree
        data = _parse_leaf(text)
        if data is None:
            self.fail(owner, "leaf_format", f"leaf {idx} is not canonical leaf JSON", idx)
            return
        kind = data["kind"]
        if kind == KIND_ITEM:
            self._item_leaf(idx, found, data, rows)
        elif kind == KIND_CUSTODY:
            self._custody_leaf(idx, found, data, rows)
        else:
            self._derivative_leaf(idx, data, rows)
        self._pointers_of_other_kinds(idx, kind, rows)

    def _suspect(
        self,
        idx: int,
        owner: str | None,
        row: LogLeaf,
        found: bytes,
        mirrored: bytes | None,
        event: CustodyEvent | None,
    ) -> None:
        """Remember a row whose hash is not what its stored hash, the mirror or its custody
        row recorded; once every row is read these tell a moved leaf from an edited one."""
        expected = {bytes(row.leaf_hash)}
        if mirrored is not None:
            expected.add(mirrored)
        if event is not None:
            try:
                expected.add(bytes.fromhex(event.leaf_hash))
            except ValueError:
                pass  # reported as custody_row
        expected.discard(found)
        if expected:
            self.suspects[idx] = _Suspect(
                owner, found, row.leaf_hash == found, mirrored not in (None, found), expected
            )

    def _item_leaf(self, idx: int, found: bytes, data: dict[str, Any], rows: _Rows) -> None:
        item = rows.items.get(idx)
        if item is None:
            if self.focus is None:
                self.fail(
                    None,
                    "index_vs_leaf",
                    f"leaf {idx} logs an item (SHA-256 {_str(data, 'sha256')}) "
                    "that no item row points at",
                    idx,
                )
            return
        logged = self.of(item.id)
        logged.sha256, logged.size = _str(data, "sha256"), _int(data, "size")
        logged.media_type = _str(data, "media_type")
        logged.chain = found.hex()
        cases = data.get("case_ids")
        logged.cases = (
            {c for c in cases if isinstance(c, str)} if isinstance(cases, list) else set()
        )
        logged.leaves.append(idx)
        # The pipeline may replace the sniffed media type with the probed one (kept in media).
        probed = (item.media or {}).get("media_type")
        media_type = logged.media_type if item.media_type == probed else item.media_type
        diffs = _diff(
            {"sha256": item.sha256, "size": item.size, "media_type": media_type},
            {"sha256": logged.sha256, "size": logged.size, "media_type": logged.media_type},
        )
        if diffs:
            self.fail(item.id, "index_vs_leaf", f"item row vs its leaf {idx}: {diffs}", idx)

    def _custody_leaf(self, idx: int, found: bytes, data: dict[str, Any], rows: _Rows) -> None:
        item_id = _str(data, "item_id")
        if item_id is None:
            self.fail(rows.owner(idx, None), "leaf_format", f"custody leaf {idx} has no item", idx)
            return
        if self.focus is not None and item_id != self.focus:
            return
        logged = self.of(item_id)
        logged.leaves.append(idx)
        action, prev = _str(data, "action"), data.get("prev")
        if logged.chain is None:
            self.fail(
                item_id,
                "custody_chain",
                f"custody leaf {idx} ({action}) comes before its item's own leaf",
                idx,
            )
        elif prev != logged.chain:
            self.fail(
                item_id,
                "custody_chain",
                f"custody leaf {idx} ({action}): prev is {prev}, but the item's previous leaf "
                f"hashes to {logged.chain}",
                idx,
            )
        logged.chain = found.hex()
        logged.deleted = logged.deleted or action == "deleted"
        _follow_links(logged.cases, data)
        self._custody_row(idx, item_id, found, data, rows.custody.get(idx))

    def _custody_row(
        self,
        idx: int,
        item_id: str,
        found: bytes,
        data: dict[str, Any],
        event: CustodyEvent | None,
    ) -> None:
        if event is None:
            self.fail(item_id, "custody_row", f"custody leaf {idx} has no custody row", idx)
            return
        index = {
            "item_id": event.item_id,
            "action": event.action,
            "actor": event.actor,
            "at": rfc3339_utc(event.at),
            "reason": event.reason,
            "details": event.details,
            "leaf_hash": event.leaf_hash,
        }
        diffs = _diff(index, {**data, "leaf_hash": found.hex()})
        if diffs:
            self.fail(item_id, "custody_row", f"custody row vs leaf {idx}: {diffs}", idx)

    def _derivative_leaf(self, idx: int, data: dict[str, Any], rows: _Rows) -> None:
        item_id = _str(data, "item_id")
        if item_id is None:
            self.fail(rows.owner(idx, None), "leaf_format", f"derivative leaf {idx}: no item", idx)
            return
        if self.focus is not None and item_id != self.focus:
            return
        logged = self.of(item_id)
        logged.leaves.append(idx)
        role, sha, size = _str(data, "role"), _str(data, "sha256"), _int(data, "size")
        logged.derivatives[idx] = (role, sha, size)
        if logged.sha256 is not None and data.get("parent_sha256") != logged.sha256:
            self.fail(
                item_id,
                "derivative_vs_leaf",
                f"derivative leaf {idx} ({role}) names parent {data.get('parent_sha256')}, "
                f"the item leaf says {logged.sha256}",
                idx,
            )
        row = rows.derivatives.get(idx)
        if row is None:
            self.fail(
                item_id,
                "derivative_vs_leaf",
                f"leaf {idx} logs derivative {role!r}; the index has no row for it",
                idx,
            )
            return
        diffs = _diff(
            {"item_id": row.item_id, "role": row.role, "sha256": row.sha256, "size": row.size},
            {"item_id": item_id, "role": role, "sha256": sha, "size": size},
        )
        if diffs:
            self.fail(item_id, "derivative_vs_leaf", f"derivative row vs leaf {idx}: {diffs}", idx)

    def _pointers_of_other_kinds(self, idx: int, kind: str, rows: _Rows) -> None:
        """Rows that point at this leaf but expect another kind of leaf there."""
        for pointer, wants, code in (
            (rows.items.get(idx), KIND_ITEM, "index_vs_leaf"),
            (rows.custody.get(idx), KIND_CUSTODY, "custody_row"),
            (rows.derivatives.get(idx), KIND_DERIVATIVE, "derivative_vs_leaf"),
        ):
            if pointer is not None and kind != wants:
                item_id = pointer.id if isinstance(pointer, Item) else pointer.item_id
                self.fail(
                    item_id,
                    code,
                    f"the index expects {wants} leaf at {idx}, the log has a {kind} leaf",
                    idx,
                )

    def name_bad_leaves(self) -> None:
        """Tell moved leaves from edited ones among the suspects, naming each index."""
        belongs: dict[bytes, int] = {}
        for idx, s in self.suspects.items():
            for h in s.expected:
                belongs.setdefault(h, idx)
        for idx, s in sorted(self.suspects.items()):
            home = belongs.get(s.found)
            if home is not None and home != idx:
                what, detail = "leaf_order", f"leaf {idx} holds the leaf logged at index {home}"
            elif not s.stored_ok:
                what, detail = "leaf_hash", f"leaf {idx}: its stored hash is not its data's"
            elif s.mirror_differs:
                what = "leaf_data"
                detail = f"leaf {idx} differs from its copy that the signed checkpoints vouch for"
            else:
                continue  # only its custody row disagrees: reported as custody_row
            self.fail(s.owner, what, detail, idx)

    # --- checkpoints -----------------------------------------------------------------------

    def open_checkpoint(self, note: str) -> Checkpoint | str:
        """The checkpoint if ``note`` verifies with the log key, else why not."""
        try:
            return Checkpoint.parse(open_note(note, [self.verifier]).text)
        except IntegrityError as e:
            return f"{e} (signed by {_signers(note)}; the log key is {_key_name(self.verifier)})"

    def signed_checkpoints(self, rows: Sequence[CheckpointRow]) -> list[_Signed]:
        """Each checkpoint row's note, or its mirrored copy if the row's note is bad."""
        signed: list[_Signed] = []
        verified = 0
        for row in rows:
            opened = self.open_checkpoint(row.note)
            if isinstance(opened, str):
                self.fail(None, "checkpoint_signature", f"checkpoint {row.size}: {opened}")
            mirrored = self._mirrored_note(row)
            if isinstance(opened, str) and mirrored is not None:
                opened = self.open_checkpoint(mirrored)  # the WORM copy may still be good
            if isinstance(opened, str):
                continue
            verified += 1
            if opened.origin != self.rt.settings.log.origin:
                self.fail(
                    None,
                    "checkpoint_origin",
                    f"checkpoint {row.size} is for {opened.origin!r}, "
                    f"the log is {self.rt.settings.log.origin!r}",
                )
                continue
            diffs = _diff(
                {"size": row.size, "root": row.root_hash.hex()},
                {"size": opened.size, "root": opened.root_hash.hex()},
            )
            if diffs:
                self.fail(None, "checkpoint_root", f"checkpoint row vs its signed note: {diffs}")
            signed.append(_Signed(opened, row.created_at))
        if rows and not verified:
            self.fail(
                None,
                "log_key",
                f"the log key {_key_name(self.verifier)} verifies none of the {len(rows)} "
                f"checkpoints; they are signed by {_signers(rows[-1].note)}",
            )
        return signed

    def _mirrored_note(self, row: CheckpointRow) -> str | None:
        """The pinned copy in object storage; a checkpoint_mirror failure unless equal."""
        key = keys.checkpoint_key(row.size)
        if not row.object_version:
            self.fail(None, "checkpoint_mirror", f"checkpoint {row.size} was never mirrored")
            return None
        try:
            note = self.rt.store.read_bytes(key, row.object_version).decode()
        except StoreUnavailable:
            raise
        except (ObjectStoreError, UnicodeDecodeError) as e:
            self.fail(None, "checkpoint_mirror", f"{key}@{row.object_version}: {e}")
            return None
        if note != row.note:
            self.fail(
                None,
                "checkpoint_mirror",
                f"{key}@{row.object_version} differs from checkpoint {row.size} in the index",
            )
        return note

    def check_checkpoints(self, signed: Sequence[_Signed]) -> None:
        """Each signed root against the rebuilt tree, each one consistent with the one before."""
        previous: Checkpoint | None = None
        previous_ok = True
        for s in signed:
            cp = s.checkpoint
            if cp.size > self.size:
                continue  # signed after this run read the log size: checked at the end
            computed = self.tree.root(cp.size)
            root_ok = computed == cp.root_hash
            if not root_ok:
                where = ""
                if previous_ok:
                    since = previous.size if previous is not None else 0
                    where = f"; the rows differ in leaves {since}..{cp.size - 1}"
                self.fail(
                    None,
                    "checkpoint_root",
                    f"checkpoint {cp.size} signs root {cp.root_hash.hex()}, "
                    f"the leaf rows give {computed.hex()}{where}",
                )
            mirrored = self.mirror is not None and self.mirror.size >= cp.size
            # Past a bad root the rows prove nothing more; the mirror may still.
            if previous is not None and previous.size > 0 and (previous_ok or mirrored):
                problem = self._inconsistent(previous, cp)
                if problem:
                    self.fail(
                        None,
                        "checkpoint_consistency",
                        f"checkpoint {cp.size} does not extend checkpoint {previous.size}: "
                        f"{problem}",
                    )
            previous, previous_ok = cp, root_ok

    def _inconsistent(self, old: Checkpoint, new: Checkpoint) -> str | None:
        """Why no proof from our trees shows ``new`` extends ``old`` (None if one does)."""
        problem = "no tree holds both"
        for tree in (self.tree, self.mirror):
            if tree is None or tree.size < new.size:
                continue
            try:
                verify_consistency(
                    size1=old.size,
                    size2=new.size,
                    proof=tree.consistency_proof(old.size, new.size),
                    root1=old.root_hash,
                    root2=new.root_hash,
                )
            except IntegrityError as e:
                problem = str(e)
            else:
                return None
        return problem

    def walk_mirror(self, signed: Sequence[_Signed]) -> None:
        """Rebuild what the leaf bundles hold, as far as the signed checkpoints vouch for."""
        walk = _MirrorWalk(self.rt.store, {s.checkpoint.size: s for s in signed})
        walk.run()
        self.walk, self.mirror = walk, walk.tree
        covered = [s.checkpoint.size for s in signed if s.checkpoint.size <= self.size]
        if covered and walk.tree.size < max(covered):
            self.fail(
                None,
                "leaf_mirror",
                f"the leaf bundles rebuild {walk.tree.size} leaves but checkpoint "
                f"{max(covered)} was signed: no {_LEAVES_PREFIX}{walk.tree.size}-<last>.jsonl "
                "gives a root that a checkpoint signed",
            )

    # --- one item's bytes and links --------------------------------------------------------

    def check_original(self, item: Item) -> None:
        logged = self.logged.get(item.id)
        if logged is not None and logged.deleted:
            return  # deleted at the end of its retention, and logged as such
        where = f"original {item.object_key}@{item.version_id}"
        got = _hash_object(self.rt.store, item.object_key, item.version_id)
        if isinstance(got, str):
            self.fail(item.id, "original_missing", f"{where}: {got}")
            return
        digest, size = got
        # Against the log when its leaf could be read; index_vs_leaf covers index vs log.
        if logged is not None and logged.sha256 is not None:
            ref_sha, ref_size, ref = logged.sha256, logged.size, "its item leaf"
        else:
            ref_sha, ref_size, ref = item.sha256, item.size, "the index"
        if digest != ref_sha:
            self.fail(item.id, "original_hash", f"{where} hashes to {digest}; {ref} says {ref_sha}")
        if size != ref_size:
            self.fail(item.id, "original_size", f"{where} has {size} bytes; {ref} says {ref_size}")

    def check_derivatives(self, item_id: str, rows: Iterable[Derivative]) -> None:
        logged = self.logged.get(item_id) or _Logged()
        if logged.deleted:
            return
        for d in rows:
            if d.log_index >= self.size:
                continue  # made after this run read the log size
            where = f"derivative {d.role} {d.object_key}@{d.version_id}"
            _, ref_sha, ref_size = logged.derivatives.get(d.log_index, (None, d.sha256, d.size))
            got = _hash_object(self.rt.store, d.object_key, d.version_id)
            if isinstance(got, str):
                self.fail(item_id, "derivative_missing", f"{where}: {got}", d.log_index)
                continue
            digest, size = got
            if digest != ref_sha:
                self.fail(
                    item_id,
                    "derivative_hash",
                    f"{where} hashes to {digest}; its leaf {d.log_index} says {ref_sha}",
                    d.log_index,
                )
            if size != ref_size:
                self.fail(
                    item_id,
                    "derivative_size",
                    f"{where} has {size} bytes; its leaf {d.log_index} says {ref_size}",
                    d.log_index,
                )

    def check_links(self, item_id: str, links: Iterable[str]) -> None:
        """The index's links must be the seal's cases plus link and minus unlink leaves."""
        logged = self.logged.get(item_id) or _Logged()
        if set(links) == logged.cases:
            return
        # A link (row and leaf in one transaction) may have come after the log was read:
        # look again at both in one snapshot, with the leaves appended since.
        with _snapshot(self.rt) as conn:
            now_linked = set(
                conn.scalars(select(ItemCase.case_id).where(ItemCase.item_id == item_id))
            )
            later = conn.scalars(
                select(LogLeaf.data)
                .where(LogLeaf.item_id == item_id, LogLeaf.idx >= self.size)
                .order_by(LogLeaf.idx)
            ).all()
        explained = set(logged.cases)
        for data in later:
            leaf = _parse_leaf(data)
            if leaf is not None and leaf["kind"] == KIND_CUSTODY:
                _follow_links(explained, leaf)
        if now_linked != explained:
            self.fail(
                item_id,
                "case_links",
                f"linked to {sorted(now_linked)}; the log explains {sorted(explained)} "
                f"(unexplained: {sorted(now_linked - explained)}, "
                f"missing: {sorted(explained - now_linked)})",
            )

    def check_inclusion(self, item_id: str, latest: _Signed | None) -> None:
        """Each of the item's leaves below the latest checkpoint is provably under its root.

        A proof is a proof wherever its hashes come from: if the rows give none (another
        item's leaf row was tampered with), the mirrored bundles may.
        """
        if latest is None:
            return
        cp = latest.checkpoint
        leaves = sorted(set((self.logged.get(item_id) or _Logged()).leaves))
        for idx in (i for i in leaves if i < min(cp.size, self.size)):
            found = self.tree.leaf(idx)
            if cp.size <= self.tree.size and _proves(self.tree, idx, found, cp):
                continue
            if self.mirror is None:
                self.walk_mirror(self.signed_checkpoints(_checkpoint_rows(self.rt)))
            if self.mirror is not None and _proves(self.mirror, idx, found, cp):
                continue
            self.fail(
                item_id,
                "leaf_inclusion",
                f"leaf {idx} of item {item_id} is not in checkpoint {cp.size}",
                idx,
            )


def _proves(tree: MerkleTree, idx: int, found: bytes, cp: Checkpoint) -> bool:
    if tree.size < cp.size:
        return False
    try:
        verify_inclusion(
            leaf_hash=found,
            index=idx,
            size=cp.size,
            proof=tree.inclusion_proof(idx, cp.size),
            root=cp.root_hash,
        )
    except IntegrityError:
        return False
    return True


def _key_name(verifier: Verifier) -> str:
    return f"{verifier.name}+{verifier.key_id:08x}"


def _signers(note: str) -> str:
    try:
        _, signatures = split_note(note)
    except IntegrityError:
        return "nobody (not a signed note)"
    return ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)


def _hash_object(store: ObjectStore, key: str, version_id: str) -> tuple[str, int] | str:
    """(SHA-256, size) of one stored version, streamed; or why it could not be read."""
    h = hashlib.sha256()
    size = 0
    try:
        for chunk in store.iter_bytes(key, version_id):
            h.update(chunk)
            size += len(chunk)
    except StoreUnavailable:
        raise  # not evidence of anything: this run cannot check, so it does not report
    except ObjectStoreError as e:
        return str(e)
    return h.hexdigest(), size


@contextmanager
def _snapshot(rt: Runtime) -> Iterator[Connection]:
    """A read that sees one moment (SQLite transactions are already serialised here)."""
    with rt.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _checkpoint_rows(rt: Runtime) -> list[CheckpointRow]:
    with rt.sessions() as session:
        return list(repo.checkpoints(session))


# --- the mirror: leaf bundles in object storage ----------------------------------------------


@dataclass(frozen=True)
class _Version:
    key: str
    version_id: str
    modified: datetime | None


def _versions(store: ObjectStore, prefix: str) -> dict[str, list[_Version]]:
    """Every version of every object under ``prefix``, by key."""
    found: dict[str, list[_Version]] = {}
    with translate_errors(f"list {prefix}"):
        for obj in store.client.list_objects(
            store.bucket, prefix=prefix, recursive=True, include_version=True
        ):
            if obj.version_id and not obj.is_delete_marker and obj.object_name:
                v = _Version(obj.object_name, obj.version_id, obj.last_modified)
                found.setdefault(v.key, []).append(v)
    return found


def _bundle_span(key: str) -> tuple[int, int] | None:
    """(first, last) of a leaf bundle key, if ``key`` is one (as ``keys`` spells them)."""
    m = _BUNDLE_NAME.fullmatch(key.removeprefix(_LEAVES_PREFIX))
    if m is None:
        return None
    first, last = int(m[1]), int(m[2])
    return (first, last) if keys.leaf_bundle_key(first, last) == key else None


class _MirrorWalk:
    """Rebuild the log from its leaf bundles, taking only what signed checkpoints vouch for.

    A bundle ``first-last`` is taken if, appended to what was rebuilt so far, it gives the root
    that a checkpoint of size last+1 signed; other versions of the key (bytes someone put over
    it, another log's) are passed over. From each position the furthest checkpoint is tried
    first, so a bundle left by a publish that failed after writing it is stepped over.
    """

    def __init__(
        self, store: ObjectStore, signed: Mapping[int, _Signed], *, keep_lines: bool = False
    ) -> None:
        self.store = store
        self.signed = signed
        self.keep_lines = keep_lines
        self.tree = MerkleTree()
        self.lines: list[str] = []
        self.taken: list[tuple[int, int, _Version]] = []
        """(first index, end, version) of each bundle taken, in order."""
        self._cached: tuple[int, list[str]] = (-1, [])

    def run(self) -> None:
        starting: dict[int, list[tuple[int, list[_Version]]]] = {}
        for key, versions in _versions(self.store, _LEAVES_PREFIX).items():
            span = _bundle_span(key)
            if span is not None:
                starting.setdefault(span[0], []).append((span[1] + 1, versions))
        while True:
            options = sorted(starting.get(self.tree.size, []), key=lambda o: -o[0])
            for end, versions in options:
                if end in self.signed and self._take(versions, self.signed[end]):
                    break
            else:
                return

    def _take(self, candidates: list[_Version], signed: _Signed) -> bool:
        made = signed.made or datetime.now(UTC)

        def distance(v: _Version) -> float:
            # The bundle was written just before its checkpoint: try the closest first.
            return abs((v.modified - made).total_seconds()) if v.modified else float("inf")

        at, want = self.tree.size, signed.checkpoint
        for v in sorted(candidates, key=distance):
            lines = self._lines(v, want.size - at)
            if lines is None:
                continue
            for line in lines:
                self.tree.append(leaf_hash(line.encode()))
            if self.tree.root() == want.root_hash:
                self.taken.append((at, want.size, v))
                if self.keep_lines:
                    self.lines += lines
                return True
            self.tree = MerkleTree.from_leaf_hashes(self.tree.leaf(i) for i in range(at))
        return False

    def line(self, idx: int) -> str | None:
        """Leaf ``idx`` as the bundles taken hold it (reads its bundle again, once)."""
        if not 0 <= idx < self.tree.size:
            return None
        at, end, v = self.taken[bisect.bisect_right([t[0] for t in self.taken], idx) - 1]
        if self._cached[0] != at:
            self._cached = (at, self._lines(v, end - at) or [])
        lines = self._cached[1]
        return lines[idx - at] if idx - at < len(lines) else None

    def _lines(self, v: _Version, count: int) -> list[str] | None:
        try:
            text = self.store.read_bytes(v.key, v.version_id).decode()
        except StoreUnavailable:
            raise
        except (ObjectStoreError, UnicodeDecodeError) as e:
            log.warning("leaf bundle %s@%s unreadable: %s", v.key, v.version_id, e)
            return None
        lines = text.split("\n")
        if lines[-1] != "" or len(lines) - 1 != count:
            return None
        return lines[:-1]


def rebuild_leaves_from_objects(
    store: ObjectStore, *, verifier_key: str | None = None, origin: str | None = None
) -> list[str]:
    """The log's leaf data, in order, from object storage alone (the index lost).

    Checkpoints come from ``log/checkpoints/`` and vouch for the leaf bundles. With
    ``verifier_key`` (the published log key) only checkpoints it signed count; without it
    they are taken unverified, and a bucket holding two different checkpoints of one size is
    refused as ambiguous. Raises LogCorrupt when the bundles do not reach the latest
    checkpoint.
    """
    verifier = Verifier.from_key(verifier_key) if verifier_key else None
    signed: dict[int, _Signed] = {}
    for versions in _versions(store, _CHECKPOINTS_PREFIX).values():
        for v in versions:
            cp = _read_checkpoint(store, v, verifier)
            if cp is None or (origin is not None and cp.origin != origin):
                continue
            other = signed.get(cp.size)
            if other is not None and other.checkpoint.root_hash != cp.root_hash:
                who = "the log key" if verifier else "unverified notes (give the log key)"
                raise LogCorrupt(f"two checkpoints of size {cp.size} by {who} differ")
            signed[cp.size] = _Signed(cp, v.modified)
    walk = _MirrorWalk(store, signed, keep_lines=True)
    walk.run()
    latest = max(signed, default=0)
    if walk.tree.size < latest:
        raise LogCorrupt(
            f"the leaf bundles rebuild {walk.tree.size} leaves, checkpoint {latest} was signed"
        )
    return walk.lines


def _read_checkpoint(
    store: ObjectStore, v: _Version, verifier: Verifier | None
) -> Checkpoint | None:
    """The checkpoint in one stored version, or None (a time-stamp, garbage, another key)."""
    try:
        note = store.read_bytes(v.key, v.version_id).decode()
        text = open_note(note, [verifier]).text if verifier else split_note(note)[0]
        return Checkpoint.parse(text)
    except StoreUnavailable:
        raise
    except (ObjectStoreError, UnicodeDecodeError, IntegrityError):
        return None


# --- the runs --------------------------------------------------------------------------------


def _rows_in(session: Session, start: int, stop: int) -> _Rows:
    """Every index row that points at a leaf in [start, stop)."""

    def where(column: Any) -> Any:
        return (column >= start) & (column < stop)

    return _Rows(
        items={i.log_index: i for i in session.scalars(select(Item).where(where(Item.log_index)))},
        custody={
            e.log_index: e
            for e in session.scalars(select(CustodyEvent).where(where(CustodyEvent.log_index)))
        },
        derivatives={
            d.log_index: d
            for d in session.scalars(select(Derivative).where(where(Derivative.log_index)))
        },
    )


def _item_batches(rt: Runtime, below: int) -> Iterator[tuple[list[Item], dict[str, list[str]]]]:
    """Items logged below ``below``, a batch at a time, with the case IDs each is linked to."""
    after = ""
    while True:
        with rt.sessions() as session:
            items = list(
                session.scalars(
                    select(Item)
                    .where(Item.id > after, Item.log_index < below)
                    .order_by(Item.id)
                    .limit(BATCH)
                )
            )
            links: dict[str, list[str]] = {i.id: [] for i in items}
            for item_id, case_id in session.execute(
                select(ItemCase.item_id, ItemCase.case_id).where(ItemCase.item_id.in_(list(links)))
            ):
                links[item_id].append(case_id)
        if not items:
            return
        yield items, links
        after = items[-1].id


def _derivatives_of(rt: Runtime, item_ids: list[str]) -> dict[str, list[Derivative]]:
    found: dict[str, list[Derivative]] = {i: [] for i in item_ids}
    with rt.sessions() as session:
        for d in session.scalars(select(Derivative).where(Derivative.item_id.in_(item_ids))):
            found[d.item_id].append(d)
    return found


def _check_end(audit: _Audit, signed: Sequence[_Signed]) -> bool:
    """log_state against the rows, and nothing (checkpoint or index row) beyond the log's end.
    True when the end of the log can be trusted, so this run may append to it.

    Read in one statement, so a seal committing meanwhile cannot make them disagree; an index
    row pointing past the end is a truncated log even where no checkpoint covered it.
    """

    def top(column: Any) -> Any:
        return select(func.max(column)).scalar_subquery()

    with audit.rt.sessions() as session:
        size, rows, last, *pointers = session.execute(
            select(
                select(LogState.size).where(LogState.id == 1).scalar_subquery(),
                select(func.count()).select_from(LogLeaf).scalar_subquery(),
                top(LogLeaf.idx),
                top(Item.log_index),
                top(CustodyEvent.log_index),
                top(Derivative.log_index),
            )
        ).one()
    problems = []
    if rows != size or (last is not None and last != size - 1):
        problems.append(f"log_state says {size} leaves; {rows} rows, last {last}")
    beyond = max((p for p in pointers if p is not None), default=-1)
    if beyond >= size:
        problems.append(f"the index points at leaf {beyond}; the log has {size}")
    problems += [
        f"checkpoint {s.checkpoint.size} was signed but the log has {size} leaves"
        for s in signed
        if s.checkpoint.size > size
    ]
    for problem in problems:
        audit.fail(None, "log_size", problem)
    return not problems


def verify_all(rt: Runtime, *, actor: str, progress: Progress | None = None) -> Report:
    """Check everything: every leaf, checkpoint and mirrored copy, every item's bytes (by
    version ID), custody chain, case links and derivatives. Then log a ``verify`` custody
    event per item checked. ``progress(done, total)`` is called as items are re-hashed."""
    audit = _Audit(rt, focus=None)
    with rt.sessions() as session:
        audit.size = repo.log_size(session)
        total = int(
            session.execute(
                select(func.count()).select_from(Item).where(Item.log_index < audit.size)
            ).scalar_one()
        )
    signed = audit.signed_checkpoints(_checkpoint_rows(rt))
    audit.walk_mirror(signed)
    audit.read_log(_rows_in)
    audit.name_bad_leaves()
    audit.check_checkpoints(signed)
    done = 0
    checked: list[str] = []
    for items, links in _item_batches(rt, audit.size):
        derivatives = _derivatives_of(rt, [i.id for i in items])
        for item in items:
            audit.check_original(item)
            audit.check_derivatives(item.id, derivatives[item.id])
            audit.check_links(item.id, links[item.id])
            checked.append(item.id)
            done += 1
            if progress is not None:
                progress(done, total)
    appendable = _check_end(audit, signed)
    report = audit.report(len(checked))
    _record(rt, report, checked, actor=actor, scope="all", appendable=appendable)
    return report


def verify_item(rt: Runtime, item_id: str, *, actor: str) -> Report:
    """Check one item: its original and derivatives, custody chain, case links, and that its
    leaves are in the latest checkpoint. Then log a ``verify`` custody event for it.

    Raises storage NotFound for an unknown item.
    """
    audit = _Audit(rt, focus=item_id)
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        audit.size = repo.log_size(session)
        derivatives = list(repo.derivatives_of(session, item_id=item_id))
        rows = _Rows(
            items={item.log_index: item},
            custody={e.log_index: e for e in repo.custody_of(session, item_id=item_id)},
            derivatives={d.log_index: d for d in derivatives},
        )
        links = repo.case_ids_of(session, item_id=item_id)
        latest_row = repo.latest_checkpoint(session)
    audit.read_log(lambda _session, _start, _stop: rows)
    audit.name_bad_leaves()
    audit.check_original(item)
    audit.check_derivatives(item_id, derivatives)
    audit.check_links(item_id, links)
    latest = _latest_signed(audit, latest_row, item_id)
    audit.check_inclusion(item_id, latest)
    appendable = _check_end(audit, [latest] if latest else [])
    report = audit.report(1)
    _record(rt, report, [item_id], actor=actor, scope="item", appendable=appendable)
    return report


def _latest_signed(audit: _Audit, row: CheckpointRow | None, item_id: str) -> _Signed | None:
    """The latest checkpoint, from the index or else its mirrored copy, if either verifies."""
    if row is None:
        return None
    opened = audit.open_checkpoint(row.note)
    if isinstance(opened, str):
        pinned = _pinned_note(audit.rt.store, row)
        if pinned is not None and not isinstance(mirrored := audit.open_checkpoint(pinned), str):
            opened = mirrored
    if isinstance(opened, str):
        audit.fail(
            item_id,
            "checkpoint_signature",
            f"cannot prove inclusion: the latest checkpoint ({row.size}) does not verify: {opened}",
        )
        return None
    return _Signed(opened, row.created_at)


def _pinned_note(store: ObjectStore, row: CheckpointRow) -> str | None:
    if not row.object_version:
        return None
    try:
        return store.read_bytes(keys.checkpoint_key(row.size), row.object_version).decode()
    except StoreUnavailable:
        raise
    except (ObjectStoreError, UnicodeDecodeError):
        return None


def _record(
    rt: Runtime,
    report: Report,
    item_ids: list[str],
    *,
    actor: str,
    scope: str,
    appendable: bool,
) -> None:
    """Log the run as a ``verify`` custody event per item, after the checking (so the run
    checked the state it found). One savepoint each: an item whose event cannot be built
    leaves no half-taken index behind, and the others are still logged.

    Not when the end of the log is in doubt (truncated, say): new leaves would take indexes
    that a signed checkpoint may already cover, writing over the history being reported.
    """
    if not appendable:
        log.warning("the end of the log is in doubt: this verification run is not logged")
        return
    log_ok = not any(f.item_id is None for f in report.failures)
    now = datetime.now(UTC)
    extra = {"log_ok": log_ok} if scope == "all" else {}
    codes: dict[str, set[str]] = {}
    for f in report.failures:
        if f.item_id is not None:
            codes.setdefault(f.item_id, set()).add(f.what)

    def details(item: Item) -> dict[str, Any]:
        found = sorted(codes.get(item.id, ()))
        return {"scope": scope, "ok": not found, "failures": found, **extra}

    for start in range(0, len(item_ids), EVENTS_PER_TRANSACTION):
        chunk = item_ids[start : start + EVENTS_PER_TRANSACTION]
        with transaction(rt.sessions) as session:
            items = list(session.scalars(select(Item).where(Item.id.in_(chunk))))
            skipped = custody.record_many(
                session,
                rt.ledger,
                items=items,
                action="verify",
                actor=actor,
                now=now,
                details=details,
            )
        for item_id in skipped:
            log.warning(
                "verify event for item %s not logged: its row is no longer a valid leaf", item_id
            )
