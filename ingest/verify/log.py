"""The log side of a run: every leaf row re-hashed into a rebuilt tree and interpreted,
index rows compared with the leaves they point at, checkpoints against the tree."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from ingest.runtime import Runtime
from ingest.verify.report import CouldNotCheck, Failure, Report, make_report
from integrity.errors import IntegrityError, LeafFormatError
from integrity.leaves import CustodyLeaf, DerivativeLeaf, ItemLeaf, parse_leaf, rfc3339_utc
from integrity.merkle import MerkleTree, leaf_hash
from integrity.mirror import MirrorWalk
from integrity.note import Verifier, split_note
from storage import repository as repo
from storage.tables import CustodyEvent, Item, LogLeaf
from storage.verify_queries import LeafPointers

BATCH = 2000
"""Leaf rows (and items) read per query: memory stays flat however long the log is."""
PLACEHOLDER = bytes(32)
"""Stands in the rebuilt tree for a leaf row that is gone and has no mirrored copy."""

PointersFor = Callable[[Session, int, int], LeafPointers]


def follow_links(cases: set[str], leaf: CustodyLeaf) -> None:
    """Apply a ``link`` / ``unlink`` custody leaf (details ``{"case_id": ...}``) to ``cases``."""
    if leaf.case_id is None:
        return
    if leaf.action == "link":
        cases.add(leaf.case_id)
    elif leaf.action == "unlink":
        cases.discard(leaf.case_id)


def diff(index: Mapping[str, object], logged: Mapping[str, object]) -> str:
    """``field: index X, log Y`` for every field that differs ('' when none does)."""
    return "; ".join(
        f"{k}: index {index[k]!r}, log {logged.get(k)!r}"
        for k in index
        if index[k] != logged.get(k)
    )


def key_name(verifier: Verifier) -> str:
    return f"{verifier.name}+{verifier.key_id:08x}"


def signers(note: str) -> str:
    try:
        _, signatures = split_note(note)
    except IntegrityError:
        return "nobody (not a signed note)"
    return ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)


@dataclass
class Logged:
    """What the log says about one item."""

    sha256: str | None = None
    size: int | None = None
    media_type: str | None = None
    chain: str | None = None
    """Hex hash of the item's latest custody leaf (its item leaf before the first)."""
    cases: set[str] = field(default_factory=set)
    """Case IDs at seal, plus ``link`` and minus ``unlink`` custody leaves so far."""
    derivatives: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    """(role, sha256, size) of each derivative leaf, by leaf index."""
    leaves: list[int] = field(default_factory=list)
    deleted: bool = False
    """A ``deleted`` custody leaf (retention purge): its objects may be gone."""


@dataclass
class _Suspect:
    """A leaf row whose hash is not what something else recorded for that index."""

    owner: str | None
    found: bytes
    stored_ok: bool
    mirror_differs: bool
    expected: set[bytes]


class Audit:
    """One verification run: failures found so far and the tree rebuilt from the rows."""

    def __init__(self, rt: Runtime, *, focus: str | None) -> None:
        self.rt = rt
        self.focus = focus
        """verify_item: only this item's leaves are interpreted and only its failures kept."""
        self.failures: list[Failure] = []
        self.unchecked: list[CouldNotCheck] = []
        self.tree = MerkleTree()
        self.placeholders: list[int] = []
        """Leaf indexes whose row is gone with no mirrored copy: ``PLACEHOLDER`` in the tree."""
        self.size = 0
        self.logged: dict[str, Logged] = {}
        self.suspects: dict[int, _Suspect] = {}
        self.mirror: MerkleTree | None = None
        self.walk: MirrorWalk | None = None
        self.mirror_incomplete = False
        """Some of the mirror could not be read: what it lacks proves nothing."""
        self.other_logs = False
        """The bucket holds checkpoints the log key does not open (or of another origin):
        another log shares it, and its tiles are put at the same keys as ours."""
        self.store_down: str | None = None
        """Why the store was first found unavailable in this run, if it was."""
        self.verifier = rt.ledger.key.verifier

    def fail(self, item_id: str | None, what: str, detail: str, idx: int | None = None) -> None:
        # One item's run keeps its own failures and the log's holes (a leaf row gone, a size
        # that disagrees): every proof of the item rests on them (a deleted last custody
        # leaf shows only as such a hole).
        hole = item_id is None and what in {"log_size", "leaf_missing"}
        if self.focus is None or item_id == self.focus or hole:
            self.failures.append(Failure(item_id, what, detail, idx))

    def unavailable(
        self, item_id: str | None, key: str | None, version_id: str | None, reason: object
    ) -> None:
        """``key`` could not be read: the store is unavailable (it was retried for the
        store's ``retry_s``). Later reads of this run are not tried (see ``store_down``)."""
        if self.store_down is None:
            self.store_down = str(reason)
        if self.focus is None or item_id in (None, self.focus):
            self.unchecked.append(CouldNotCheck(item_id, key, version_id, str(reason)))

    def skipped(self, item_id: str | None, key: str | None, version_id: str | None) -> bool:
        """True (and ``key`` listed as not checked) once the store was found unavailable:
        each read would wait out the store's retries again."""
        if self.store_down is None:
            return False
        self.unavailable(item_id, key, version_id, f"not tried: {self.store_down}")
        return True

    def of(self, item_id: str) -> Logged:
        return self.logged.setdefault(item_id, Logged())

    def report(self, checked: int) -> Report:
        return make_report(self.failures, self.unchecked, checked=checked)

    # --- the leaf rows ---------------------------------------------------------------------

    def read_log(self, pointers_for: PointersFor) -> None:
        """Stream every leaf row below ``size``, rebuild the tree, interpret each leaf."""
        for start in range(0, self.size, BATCH):
            stop = min(self.size, start + BATCH)
            with self.rt.sessions() as session:
                leaves = {r.idx: r for r in repo.leaves_between(session, start=start, stop=stop)}
                rows = pointers_for(session, start, stop)
            for idx in range(start, stop):
                self._leaf(idx, leaves.get(idx), rows)

    def _leaf(self, idx: int, row: LogLeaf | None, rows: LeafPointers) -> None:
        owner = rows.owner(idx, row)
        mirrored = self.mirror.leaf(idx) if self.mirror and idx < self.mirror.size else None
        if row is None:
            self.fail(owner, "leaf_missing", f"leaf {idx} is missing from the index", idx)
            # Its WORM copy stands in, so the rest still checks against it and the roots.
            text = self.walk.line(idx) if self.walk is not None else None
            self.tree.append(mirrored or PLACEHOLDER)
            if mirrored is None:
                self.placeholders.append(idx)
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
        try:
            leaf = parse_leaf(text)
        except LeafFormatError as e:
            self.fail(owner, "leaf_format", f"leaf {idx} is not canonical leaf JSON: {e}", idx)
            return
        if row is not None:
            self._leaf_columns(idx, row, leaf, rows)
        if isinstance(leaf, ItemLeaf):
            self._item_leaf(idx, found, leaf, rows)
        elif isinstance(leaf, CustodyLeaf):
            self._custody_leaf(idx, found, leaf, rows)
        else:
            self._derivative_leaf(idx, leaf, rows)
        self._pointers_of_other_kinds(idx, leaf.kind, rows)

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

    def _leaf_columns(
        self,
        idx: int,
        row: LogLeaf,
        leaf: ItemLeaf | CustodyLeaf | DerivativeLeaf,
        rows: LeafPointers,
    ) -> None:
        """The row's ``kind`` and ``item_id`` columns against its data: exports and custody
        listings select leaves by them, so a leaf moved off its item there is a leaf hidden
        from its item's package."""
        item = rows.items.get(idx)
        owner = leaf.item_id if not isinstance(leaf, ItemLeaf) else (item.id if item else None)
        if isinstance(leaf, ItemLeaf) and item is None:
            owner = row.item_id  # reported as index_vs_leaf; the column names no one else
        diffs = diff(
            {"kind": row.kind, "item_id": row.item_id}, {"kind": leaf.kind, "item_id": owner}
        )
        if diffs:
            self.fail(
                owner or row.item_id, "leaf_row", f"leaf {idx}'s row vs its data: {diffs}", idx
            )

    def _item_leaf(self, idx: int, found: bytes, leaf: ItemLeaf, rows: LeafPointers) -> None:
        item = rows.items.get(idx)
        if item is None:
            if self.focus is None:
                self.fail(
                    None,
                    "index_vs_leaf",
                    f"leaf {idx} logs an item (SHA-256 {leaf.sha256}) that no item row points at",
                    idx,
                )
            return
        logged = self.of(item.id)
        logged.sha256, logged.size, logged.media_type = leaf.sha256, leaf.size, leaf.media_type
        logged.chain = found.hex()
        logged.cases = set(leaf.case_ids)
        logged.leaves.append(idx)
        # The pipeline may replace the sniffed media type with the probed one (kept in media).
        probed = (item.media or {}).get("media_type")
        media_type = logged.media_type if item.media_type == probed else item.media_type
        # Who, from where and when: nothing changes these on the row after the seal.
        diffs = diff(
            {
                "sha256": item.sha256,
                "size": item.size,
                "media_type": media_type,
                "device_id": item.device_id,
                "officer_id": item.officer_id,
                "received_at": rfc3339_utc(item.received_at),
                "original_name": item.original_name,
                "manifest_signature": (item.manifest or {}).get("signature"),
            },
            {
                "sha256": logged.sha256,
                "size": logged.size,
                "media_type": logged.media_type,
                "device_id": leaf.device_id,
                "officer_id": leaf.officer_id,
                "received_at": leaf.received_at,
                "original_name": leaf.original_name,
                "manifest_signature": leaf.manifest_signature,
            },
        )
        if diffs:
            self.fail(item.id, "index_vs_leaf", f"item row vs its leaf {idx}: {diffs}", idx)

    def _custody_leaf(self, idx: int, found: bytes, leaf: CustodyLeaf, rows: LeafPointers) -> None:
        item_id = leaf.item_id
        if self.focus is not None and item_id != self.focus:
            return
        logged = self.of(item_id)
        logged.leaves.append(idx)
        if logged.sha256 is not None and leaf.item_sha256 != logged.sha256:
            self.fail(
                item_id,
                "custody_chain",
                f"custody leaf {idx} ({leaf.action}) names bytes {leaf.item_sha256}, "
                f"its item leaf {logged.sha256}",
                idx,
            )
        if logged.chain is None:
            self.fail(
                item_id,
                "custody_chain",
                f"custody leaf {idx} ({leaf.action}) comes before its item's own leaf",
                idx,
            )
        elif leaf.prev != logged.chain:
            self.fail(
                item_id,
                "custody_chain",
                f"custody leaf {idx} ({leaf.action}): prev is {leaf.prev}, but the item's "
                f"previous leaf hashes to {logged.chain}",
                idx,
            )
        logged.chain = found.hex()
        logged.deleted = logged.deleted or leaf.action == "deleted"
        follow_links(logged.cases, leaf)
        self._custody_row(idx, found, leaf, rows.custody.get(idx))

    def _custody_row(
        self, idx: int, found: bytes, leaf: CustodyLeaf, event: CustodyEvent | None
    ) -> None:
        if event is None:
            self.fail(leaf.item_id, "custody_row", f"custody leaf {idx} has no custody row", idx)
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
        logged = {
            "item_id": leaf.item_id,
            "action": leaf.action,
            "actor": leaf.actor,
            "at": leaf.at,
            "reason": leaf.reason,
            "details": leaf.details,
            "leaf_hash": found.hex(),
        }
        diffs = diff(index, logged)
        if diffs:
            self.fail(leaf.item_id, "custody_row", f"custody row vs leaf {idx}: {diffs}", idx)

    def _derivative_leaf(self, idx: int, leaf: DerivativeLeaf, rows: LeafPointers) -> None:
        item_id = leaf.item_id
        if self.focus is not None and item_id != self.focus:
            return
        logged = self.of(item_id)
        logged.leaves.append(idx)
        logged.derivatives[idx] = (leaf.role, leaf.sha256, leaf.size)
        if logged.sha256 is not None and leaf.parent_sha256 != logged.sha256:
            self.fail(
                item_id,
                "derivative_vs_leaf",
                f"derivative leaf {idx} ({leaf.role}) names parent {leaf.parent_sha256}, "
                f"the item leaf says {logged.sha256}",
                idx,
            )
        row = rows.derivatives.get(idx)
        if row is None:
            self.fail(
                item_id,
                "derivative_vs_leaf",
                f"leaf {idx} logs derivative {leaf.role!r}; the index has no row for it",
                idx,
            )
            return
        diffs = diff(
            {"item_id": row.item_id, "role": row.role, "sha256": row.sha256, "size": row.size},
            {"item_id": item_id, "role": leaf.role, "sha256": leaf.sha256, "size": leaf.size},
        )
        if diffs:
            self.fail(item_id, "derivative_vs_leaf", f"derivative row vs leaf {idx}: {diffs}", idx)

    def _pointers_of_other_kinds(self, idx: int, kind: str, rows: LeafPointers) -> None:
        """Rows that point at this leaf but expect another kind of leaf there."""
        for pointer, wants, code in (
            (rows.items.get(idx), ItemLeaf.kind, "index_vs_leaf"),
            (rows.custody.get(idx), CustodyLeaf.kind, "custody_row"),
            (rows.derivatives.get(idx), DerivativeLeaf.kind, "derivative_vs_leaf"),
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
