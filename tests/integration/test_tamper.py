"""Tampering behind liuhen's back, the way someone with access to the bucket, the database or
the key file could: each change is found by ``verify_all`` and named (code, item, leaf), the
items nobody touched still pass ``verify_item``, and the ledger refuses to sign over it.

The module has a bucket of its own: the signer checks the checkpoint published last to
``log/checkpoint``, which another test's log (another key) would overwrite meanwhile."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from ingest import custody, jobs, signing
from ingest.intake import SealResult
from ingest.ledger import LogCorrupt
from ingest.retrieve import log_read, resolve
from ingest.runtime import Runtime, runtime
from ingest.tile_mirror import mirror_tiles
from ingest.verify import Report, verify_all, verify_item
from ingest.verify import mirror as verify_mirror
from integrity.errors import ProofError
from integrity.leaves import canonical_json
from integrity.merkle import MerkleTree, leaf_hash
from integrity.note import generate_signer_key
from integrity.verify import verify_receipt
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.errors import IndexUnavailable
from storage.tables import ItemCase, LogLeaf
from tests.cli import cli_env, run_cli
from tests.conftest import TESTDATA, SettingsFactory
from tests.integration.logkit import distinct_files, leaf_rows, seal, sql


@pytest.fixture(scope="module")
def bucket() -> str:
    return f"t-tamper-{secrets.token_hex(4)}"


SMALL_PHOTO = TESTDATA / "photos" / "mobile" / "date-priority-test.jpg"


@dataclass(frozen=True)
class Evidence:
    """Four sealed items under two checkpoints (sizes 4 and 8)."""

    a: SealResult
    b: SealResult
    c: SealResult
    d: SealResult

    @property
    def all(self) -> list[SealResult]:
        return [self.a, self.b, self.c, self.d]


@pytest.fixture
def evidence(rt: Runtime, tmp_path: Path) -> Evidence:
    files = distinct_files(tmp_path / "in", 4)
    a, b = seal(rt, files[0], "C-1"), seal(rt, files[1], "C-2")
    rt.ledger.publish()
    c, d = seal(rt, files[2], "C-1", "C-2"), seal(rt, files[3])
    rt.ledger.publish()
    report = verify_all(rt, actor="auditor")
    assert report.ok, report.failures  # the baseline every tamper test starts from
    return Evidence(a, b, c, d)


def named(report: Report, what: str) -> set[tuple[str | None, int | None]]:
    return {(f.item_id, f.leaf_index) for f in report.failures if f.what == what}


def concerns(report: Report) -> set[tuple[str | None, str]]:
    return {(f.item_id, f.what) for f in report.failures}


def assert_untouched(rt: Runtime, *items: SealResult) -> None:
    for item in items:
        report = verify_item(rt, item.item_id, actor="auditor")
        assert report.ok, (item.item_id, report.failures)


def leaf_row(rt: Runtime, index: int) -> LogLeaf:
    with rt.sessions() as session:
        return repo.get_leaf(session, index=index)


def edited(data: str, **changes: Any) -> str:
    return canonical_json({**json.loads(data), **changes}).decode()


def write_leaf(rt: Runtime, index: int, data: str, *, rehash: bool = True) -> None:
    """Replace a leaf row's data; with ``rehash`` its stored hash too, as a careful forger
    would, so the row is consistent with itself."""
    if rehash:
        sql(
            rt,
            "UPDATE log_leaves SET data = :d, leaf_hash = :h WHERE idx = :i",
            d=data,
            h=leaf_hash(data.encode()),
            i=index,
        )
    else:
        sql(rt, "UPDATE log_leaves SET data = :d WHERE idx = :i", d=data, i=index)


# --- object storage ----------------------------------------------------------------------------


def test_original_overwritten_and_repointed_is_named(rt: Runtime, evidence: Evidence) -> None:
    a = evidence.a
    key = keys.original_key(a.sha256)
    forged = rt.store.put_bytes(key, b"forged bytes", content_type="application/octet-stream")
    sql(rt, "UPDATE items SET version_id = :v WHERE id = :i", v=forged.version_id, i=a.item_id)

    report = verify_all(rt, actor="auditor")
    assert concerns(report) == {(a.item_id, "original_hash"), (a.item_id, "original_size")}
    assert report.as_dict()["ok"] is False
    assert_untouched(rt, evidence.b, evidence.c, evidence.d)
    assert not verify_item(rt, a.item_id, actor="auditor").ok


@pytest.mark.parametrize("backend", ["sqlite"])
def test_derivative_overwritten_and_repointed_is_named(rt: Runtime, evidence: Evidence) -> None:
    photo = seal(rt, SMALL_PHOTO)
    jobs.run(rt, photo.item_id)
    rt.ledger.publish()
    with rt.sessions() as session:
        made = list(repo.derivatives_of(session, item_id=photo.item_id))
    assert made, "the pipeline made no derivative of the photo"
    assert verify_all(rt, actor="auditor").ok  # every derivative against its leaf

    target = made[0]
    forged = rt.store.put_bytes(target.object_key, b"not a thumbnail", content_type="image/jpeg")
    sql(
        rt, "UPDATE derivatives SET version_id = :v WHERE id = :i", v=forged.version_id, i=target.id
    )
    report = verify_all(rt, actor="auditor")
    assert named(report, "derivative_hash") == {(photo.item_id, target.log_index)}
    assert concerns(report) == {
        (photo.item_id, "derivative_hash"),
        (photo.item_id, "derivative_size"),
    }
    assert_untouched(rt, *evidence.all)


# --- the index ---------------------------------------------------------------------------------


def _set_sha256(rt: Runtime, item_id: str) -> None:
    sql(rt, "UPDATE items SET sha256 = :s WHERE id = :i", s="0" * 64, i=item_id)


def _grow(rt: Runtime, item_id: str) -> None:
    sql(rt, "UPDATE items SET size = size + 1 WHERE id = :i", i=item_id)


def _add_link(rt: Runtime, item_id: str) -> None:
    with rt.engine.begin() as conn:
        conn.execute(
            insert(ItemCase).values(
                item_id=item_id, case_id="C-2", linked_at=datetime.now(UTC), linked_by="intruder"
            )
        )


def _drop_link(rt: Runtime, item_id: str) -> None:
    sql(rt, "DELETE FROM item_cases WHERE item_id = :i", i=item_id)


def _move_link(rt: Runtime, item_id: str) -> None:
    sql(rt, "UPDATE item_cases SET case_id = 'C-2' WHERE item_id = :i", i=item_id)


def _custody_actor(rt: Runtime, item_id: str) -> None:
    sql(rt, "UPDATE custody_events SET actor = 'someone else' WHERE item_id = :i", i=item_id)


EDITS = {
    "sha256": (_set_sha256, "index_vs_leaf"),
    "size": (_grow, "index_vs_leaf"),
    "link-added": (_add_link, "case_links"),
    "link-removed": (_drop_link, "case_links"),
    "link-moved": (_move_link, "case_links"),
    "custody-actor": (_custody_actor, "custody_row"),
}
# All on SQLite; on PostgreSQL the two that take its own paths (a bound SQL edit, and the
# REPEATABLE READ second look at links).
ON_BOTH = {"sha256", "link-added"}


@pytest.mark.parametrize(
    ("backend", "edit"),
    [("sqlite", name) for name in EDITS] + [("postgresql", name) for name in sorted(ON_BOTH)],
)
def test_index_edits_are_named(rt: Runtime, evidence: Evidence, edit: str) -> None:
    change, code = EDITS[edit]
    a = evidence.a  # sealed with case C-1 only
    change(rt, a.item_id)
    report = verify_all(rt, actor="auditor")
    assert concerns(report) == {(a.item_id, code)}, report.failures
    assert_untouched(rt, evidence.b, evidence.c, evidence.d)


# --- the log's rows ----------------------------------------------------------------------------


def test_deleted_leaf_row_is_named(rt: Runtime, evidence: Evidence) -> None:
    b = evidence.b
    sql(rt, "DELETE FROM log_leaves WHERE idx = :i", i=b.log_index)

    report = verify_all(rt, actor="auditor")
    assert (b.item_id, b.log_index) in named(report, "leaf_missing")
    assert report.first_bad_leaf == b.log_index
    # Its copy in the mirror stands in for it, so nothing else of the log or of b fails.
    assert concerns(report) == {(b.item_id, "leaf_missing"), (None, "log_size")}
    # One item's run cannot tell whose leaf the hole held (a custody leaf of any item sealed
    # before it): it names the hole, and nothing else of the untouched items.
    for item in (evidence.a, evidence.c, evidence.d):
        one = verify_item(rt, item.item_id, actor="auditor")
        assert {(f.item_id, f.what) for f in one.failures} == {
            (None, "leaf_missing"),
            (None, "log_size"),
        }, one.failures
    with pytest.raises(LogCorrupt):
        rt.ledger.publish()  # the run's verify events are new leaves: this would sign


def test_reordered_leaf_rows_are_named(rt: Runtime, evidence: Evidence) -> None:
    b, c = evidence.b, evidence.c
    first, second = leaf_row(rt, b.log_index), leaf_row(rt, c.log_index)
    write_leaf(rt, b.log_index, second.data)
    write_leaf(rt, c.log_index, first.data)

    report = verify_all(rt, actor="auditor")
    assert named(report, "leaf_order") == {(b.item_id, b.log_index), (c.item_id, c.log_index)}
    assert report.first_bad_leaf == b.log_index
    assert "checkpoint_root" in {f.what for f in report.failures}
    assert_untouched(rt, evidence.a, evidence.d)


@pytest.mark.parametrize(("rehash", "code"), [(True, "leaf_data"), (False, "leaf_hash")])
def test_edited_leaf_is_named(rt: Runtime, evidence: Evidence, rehash: bool, code: str) -> None:
    b = evidence.b
    write_leaf(rt, b.log_index, edited(b.leaf, case_ids=[]), rehash=rehash)

    report = verify_all(rt, actor="auditor")
    assert named(report, code) == {(b.item_id, b.log_index)}
    assert report.first_bad_leaf == b.log_index
    # Both checkpoints cover it; the first says where to look. The mirror, which they vouch
    # for, still proves the second extends the first.
    roots = [f.detail for f in report.failures if f.what == "checkpoint_root"]
    assert len(roots) == 2
    assert "checkpoint 4 " in roots[0] and "differ in leaves 0..3" in roots[0]
    assert "checkpoint_consistency" not in {f.what for f in report.failures}
    assert_untouched(rt, evidence.a, evidence.c, evidence.d)


@pytest.mark.parametrize("rehash", [True, False])
def test_ledger_refuses_to_sign_after_a_leaf_row_was_edited(
    rt: Runtime, evidence: Evidence, tmp_path: Path, rehash: bool
) -> None:
    a = evidence.a
    write_leaf(rt, a.log_index, edited(a.leaf, size=1), rehash=rehash)
    more = distinct_files(tmp_path / "more", 1)[0]
    seal(rt, more)
    # This process cached the tree before the edit; a new one reads the rows as they are.
    with pytest.raises(LogCorrupt):
        rt.ledger.publish()
    with runtime(rt.settings) as fresh, pytest.raises(LogCorrupt):
        fresh.ledger.publish()
    with rt.sessions() as session:
        assert [c.size for c in repo.checkpoints(session)] == [4, 8]


def test_garbage_in_a_leaf_row_is_reported_not_raised(rt: Runtime, evidence: Evidence) -> None:
    c = evidence.c
    write_leaf(rt, c.log_index, "}{ not a leaf")
    report = verify_all(rt, actor="auditor")
    assert {(c.item_id, c.log_index)} <= named(report, "leaf_format") & named(report, "leaf_data")
    assert report.first_bad_leaf == c.log_index
    assert_untouched(rt, evidence.a, evidence.b, evidence.d)


def test_truncated_log_is_named(rt: Runtime, evidence: Evidence) -> None:
    """The last item's leaves gone and the sequencer wound back to match."""
    d = evidence.d
    with rt.sessions() as session:
        last = repo.log_size(session) - 1  # the baseline run's last verify event
    sql(rt, "DELETE FROM log_leaves WHERE idx >= :i", i=d.log_index)
    sql(rt, "UPDATE log_state SET size = :i WHERE id = 1", i=d.log_index)

    report = verify_all(rt, actor="auditor")
    assert concerns(report) == {(None, "log_size")}
    sizes = sorted(f.detail for f in report.failures)
    assert sizes == [
        f"checkpoint 8 was signed but the log has {d.log_index} leaves",
        f"the index points at leaf {last}; the log has {d.log_index}",
    ]
    with rt.sessions() as session:  # the run did not append over the lost indexes
        assert repo.log_size(session) == d.log_index
    with pytest.raises(LogCorrupt):
        rt.ledger.publish()
    with runtime(rt.settings) as fresh, pytest.raises(LogCorrupt, match="shrank"):
        fresh.ledger.publish()


def test_broken_custody_chain_is_named(rt: Runtime, evidence: Evidence) -> None:
    c = evidence.c
    for _ in range(2):  # two more custody leaves, past the latest checkpoint
        log_read(rt, resolve(rt, c.item_id), action="view", actor="officer")
    with rt.sessions() as session:
        events = list(repo.custody_of(session, item_id=c.item_id))
    k = events[-2].log_index
    forged = edited(leaf_row(rt, k).data, prev=_hash_of(evidence.a.leaf))
    write_leaf(rt, k, forged)
    sql(
        rt,
        "UPDATE custody_events SET leaf_hash = :h WHERE log_index = :k",
        h=_hash_of(forged),
        k=k,
    )

    report = verify_all(rt, actor="auditor")
    assert concerns(report) == {(c.item_id, "custody_chain")}
    assert report.first_bad_leaf == k  # and the leaf after it, which chains to the old hash
    assert named(report, "custody_chain") == {(c.item_id, k), (c.item_id, k + 1)}
    assert_untouched(rt, evidence.a, evidence.b, evidence.d)
    assert "custody_chain" in {f.what for f in verify_item(rt, c.item_id, actor="a").failures}


def _hash_of(data: str) -> str:
    return leaf_hash(data.encode()).hex()


# --- checkpoints and the key -------------------------------------------------------------------


def test_edited_checkpoint_note_is_named(rt: Runtime, evidence: Evidence) -> None:
    with rt.sessions() as session:
        latest = repo.latest_checkpoint(session)
    assert latest is not None
    origin, size, _root, rest = latest.note.split("\n", 3)
    forged = "\n".join([origin, size, "A" * 43 + "=", rest])
    sql(rt, "UPDATE checkpoints SET note = :n WHERE size = :s", n=forged, s=latest.size)

    report = verify_all(rt, actor="auditor")
    assert concerns(report) == {(None, "checkpoint_signature"), (None, "checkpoint_mirror")}
    # The mirrored copy under Object Lock still vouches for the log and every item.
    assert_untouched(rt, *evidence.all)
    seal(rt, distinct_files(rt.settings.home_dir / "more", 1)[0])
    with pytest.raises(LogCorrupt, match="refusing to sign"):
        rt.ledger.publish()


@pytest.fixture
def replaced_key(rt: Runtime, evidence: Evidence) -> Iterator[Runtime]:
    """The key file swapped for a new key, and a process that loads it."""
    skey, _ = generate_signer_key(rt.settings.log.origin)
    rt.settings.log_key_path.write_text(skey + "\n")
    with runtime(rt.settings) as swapped:
        assert swapped.ledger.key.verifier_key != rt.ledger.key.verifier_key
        yield swapped


def test_replaced_log_key_is_named(replaced_key: Runtime, evidence: Evidence) -> None:
    report = verify_all(replaced_key, actor="auditor")
    assert concerns(report) == {(None, "checkpoint_signature"), (None, "log_key")}
    assert len(named(report, "checkpoint_signature")) == 1  # both, without a leaf index
    assert sum(f.what == "checkpoint_signature" for f in report.failures) == 2
    one = verify_item(replaced_key, evidence.a.item_id, actor="auditor")
    assert concerns(one) == {(evidence.a.item_id, "checkpoint_signature")}
    seal(replaced_key, distinct_files(replaced_key.settings.home_dir / "more", 1)[0])
    with pytest.raises(LogCorrupt, match="refusing to sign"):
        replaced_key.ledger.publish()


def test_receipt_for_one_item_does_not_verify_for_another(rt: Runtime, evidence: Evidence) -> None:
    key = rt.ledger.key.verifier_key
    receipt = rt.ledger.receipt(evidence.a.log_index)
    verify_receipt(leaf_data=evidence.a.leaf.encode(), receipt_text=receipt, verifier_key=key)
    for other in (evidence.b, evidence.c, evidence.d):
        with pytest.raises(ProofError):
            verify_receipt(leaf_data=other.leaf.encode(), receipt_text=receipt, verifier_key=key)


# --- history rewritten, rows re-attributed, holes (a review's findings) ------------------------


def _rechain(rt: Runtime, item_id: str, index: int, data: str) -> None:
    """Replace an item leaf and re-chain the item's later custody leaves and custody rows, as
    a careful forger with the database (not the key) would."""
    h = leaf_hash(data.encode())
    write_leaf(rt, index, data)
    prev = h.hex()
    with rt.sessions() as s:
        later = list(repo.leaves_between(s, start=index + 1, stop=repo.log_size(s)))
    for row in later:
        obj = json.loads(row.data)
        if obj["kind"] != "custody" or obj["item_id"] != item_id:
            continue
        new = canonical_json({**obj, "prev": prev}).decode()
        write_leaf(rt, row.idx, new)
        prev = leaf_hash(new.encode()).hex()
        sql(rt, "UPDATE custody_events SET leaf_hash = :h WHERE log_index = :i", h=prev, i=row.idx)


def test_history_rewritten_after_its_checkpoint_rows_were_deleted_is_found(
    rt: Runtime, evidence: Evidence
) -> None:
    """Checkpoint rows can be deleted; their WORM copies cannot. With every row past the
    first gone, c's item leaf rewritten (its case C-2 hidden) and its chain re-linked, the
    rows alone agree with themselves: the copies no row names are checked too. Then the
    signer is wound back to the first checkpoint: it refuses to sign over the forged history
    (the checkpoint published to the store has another root at that size), and the forgery
    is still found."""
    c = evidence.c
    with rt.sessions() as s:
        first = min(cp.size for cp in repo.checkpoints(s))
    sql(rt, "DELETE FROM checkpoints WHERE size > :n", n=first)
    _rechain(rt, c.item_id, c.log_index, edited(c.leaf, case_ids=["C-1"]))
    sql(rt, "DELETE FROM item_cases WHERE item_id = :i AND case_id = 'C-2'", i=c.item_id)
    report = verify_all(rt, actor="auditor")
    assert not report.ok and report.exit_status == 1
    assert "checkpoint_root" in {f.what for f in report.failures}, report.failures

    with rt.sessions() as s:
        hashes = [bytes(r.leaf_hash) for r in repo.leaves_between(s, start=0, stop=first)]
    sql(rt, "UPDATE log_tiles SET hashes = :h WHERE level = 0 AND idx = 0", h=b"".join(hashes))
    root = MerkleTree.from_leaf_hashes(hashes).root()
    sql(rt, "UPDATE log_tree SET size = :n, root_hash = :r WHERE id = 1", n=first, r=root)
    with runtime(rt.settings) as fresh:
        # The rows give it no reason not to; the store's published checkpoint does.
        with pytest.raises(LogCorrupt, match="give another root than checkpoint"):
            fresh.ledger.publish()
        with fresh.sessions() as s:
            assert max(cp.size for cp in repo.checkpoints(s)) == first  # nothing signed
        again = verify_all(fresh, actor="auditor")
    # A delete marker over the published copy hides it from a new process (which warns), not
    # from one that saw it: the process that signed remembers how far the log went.
    rt.store.client.remove_object(rt.store.bucket, keys.PUBLISHED_CHECKPOINT)
    assert rt.store.read_current(keys.PUBLISHED_CHECKPOINT, limit=1 << 16) is None
    with pytest.raises(LogCorrupt, match="give another root than checkpoint"):
        rt.ledger.publish()
    assert not again.ok
    assert {"checkpoint_root", "checkpoint_consistency"} & {f.what for f in again.failures}


def test_who_and_when_on_an_item_row_are_checked_against_its_leaf(
    rt: Runtime, evidence: Evidence
) -> None:
    a = evidence.a
    with rt.sessions() as s:
        received = repo.get_item(s, item_id=a.item_id).received_at
    sql(
        rt,
        "UPDATE items SET received_at = :t, original_name = 'other.mp4' WHERE id = :i",
        t=received.replace(year=2020).astimezone(UTC).replace(tzinfo=None),
        i=a.item_id,
    )
    report = verify_all(rt, actor="auditor")
    (failure,) = [f for f in report.failures if f.what == "index_vs_leaf"]
    assert failure.item_id == a.item_id
    assert "received_at" in failure.detail and "original_name" in failure.detail
    assert not verify_item(rt, a.item_id, actor="auditor").ok


def test_a_leaf_row_moved_off_its_item_is_named(rt: Runtime, evidence: Evidence) -> None:
    """Exports pick an item's custody leaves by the row's item column: a download hidden that
    way would be left out of the package."""
    a = evidence.a
    log_read(rt, resolve(rt, a.item_id), action="download", actor="user:someone")
    with rt.sessions() as s:
        last = list(repo.custody_of(s, item_id=a.item_id))[-1]
    sql(rt, "UPDATE log_leaves SET item_id = NULL WHERE idx = :i", i=last.log_index)
    report = verify_all(rt, actor="auditor")
    assert (a.item_id, last.log_index) in named(report, "leaf_row")


@pytest.mark.parametrize("where", ["beyond the log", "another item's leaf"])
def test_a_derivative_row_with_no_leaf_of_its_item_fails_that_item(
    rt: Runtime, evidence: Evidence, where: str
) -> None:
    a, b = evidence.a, evidence.b
    body = b"forged proxy"
    put = rt.store.put_bytes(keys.derivative_key(a.item_id, "proxy", "mp4"), body,
                             content_type="video/mp4")  # fmt: skip
    index = 10**9 if where == "beyond the log" else b.log_index + 1
    sql(
        rt,
        "INSERT INTO derivatives (item_id, role, object_key, version_id, sha256, size, "
        "media_type, recipe, created_at, log_index) VALUES (:i, 'proxy', :k, :v, :s, :n, "
        "'video/mp4', :r, :t, :x)",
        i=a.item_id, k=put.key, v=put.version_id, s=hashlib.sha256(body).hexdigest(),
        n=len(body), r=json.dumps({}), t=datetime.now(UTC).replace(tzinfo=None), x=index,
    )  # fmt: skip
    report = verify_item(rt, a.item_id, actor="auditor")
    assert not report.ok and report.exit_status == 1, report.failures


def test_an_items_last_custody_leaf_deleted_with_its_row_fails_its_own_check(
    rt: Runtime, evidence: Evidence
) -> None:
    a = evidence.a
    log_read(rt, resolve(rt, a.item_id), action="download", actor="user:someone")
    rt.ledger.publish()
    with rt.sessions() as s:
        last = list(repo.custody_of(s, item_id=a.item_id))[-1]
    sql(rt, "DELETE FROM custody_events WHERE log_index = :i", i=last.log_index)
    sql(rt, "DELETE FROM log_leaves WHERE idx = :i", i=last.log_index)
    report = verify_item(rt, a.item_id, actor="auditor")
    assert not report.ok and report.exit_status == 1
    assert "leaf_missing" in {f.what for f in report.failures}


def test_an_outage_after_a_difference_was_found_keeps_it(
    rt: Runtime, evidence: Evidence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database going away while the run records itself: the difference already found is
    still reported (exit 1), the outage beside it; not an outage alone (75)."""
    sql(rt, "UPDATE items SET size = size + 1 WHERE id = :i", i=evidence.a.item_id)

    def locked(*_args: object, **_kw: object) -> None:
        raise IndexUnavailable("database is locked (test)")

    monkeypatch.setattr(custody, "record_many", locked)
    report = verify_all(rt, actor="auditor")
    assert report.exit_status == 1
    assert (evidence.a.item_id, "index_vs_leaf") in concerns(report)
    assert report.could_not_check and "database" in report.could_not_check[-1].reason


# --- the stored tree ---------------------------------------------------------------------------


def _many_leaves(rt: Runtime, item_id: str, n: int) -> None:
    """``n`` more custody leaves, signed: the stored tree gets full tiles and a level above."""
    now = datetime.now(UTC)
    with rt.sessions() as session, session.begin():
        item = repo.get_item(session, item_id=item_id)
        for _ in range(n):
            custody.record(session, rt.ledger, item=item, action="view", actor="t", now=now)
    rt.ledger.publish()


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        ("a hash of a full tile", "tile 0/1, hash 0 (leaves 256..256)"),
        ("a partial tile cut short", "tile 1/0 holds 1 hashes"),
        ("a tile deleted", "lacks tiles 0/2"),
        ("a tile beyond the tree", "tile 0/99 holds 1 hashes, more than a tree of"),
        ("the stored root", "the stored tree's root"),
    ],
)
def test_an_edited_stored_tree_is_named(
    rt: Runtime, evidence: Evidence, edit: str, expect: str
) -> None:
    """The tiles a process starts from and proves with, held against the re-hashed leaves."""
    _many_leaves(rt, evidence.a.item_id, 700)
    assert verify_all(rt, actor="auditor").ok
    with rt.sessions() as session:
        full = repo.read_tiles(session, keys=[(0, 1)])[(0, 1)]
    zero = bytes(32)
    if edit == "a hash of a full tile":
        sql(rt, "UPDATE log_tiles SET hashes = :h WHERE level = 0 AND idx = 1",
            h=zero + full[32:])  # fmt: skip
    elif edit == "a partial tile cut short":
        sql(rt, "UPDATE log_tiles SET hashes = :h WHERE level = 1 AND idx = 0", h=zero)
    elif edit == "a tile deleted":
        sql(rt, "DELETE FROM log_tiles WHERE level = 0 AND idx = 2")
    elif edit == "a tile beyond the tree":
        sql(rt, "INSERT INTO log_tiles (level, idx, hashes) VALUES (0, 99, :h)", h=zero)
    else:
        sql(rt, "UPDATE log_tree SET root_hash = :h WHERE id = 1", h=zero)
    report = verify_all(rt, actor="auditor")
    found = [f for f in report.failures if f.what in {"log_tile", "log_tree"}]
    assert len(found) == 1 and expect in found[0].detail, report.failures
    assert_untouched(rt, *evidence.all)  # the items' own proofs do not read the tiles


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_stored_tree_growing_during_a_run_is_not_a_difference(
    rt: Runtime, evidence: Evidence
) -> None:
    """Checkpoints signed while the run reads (its tiles grow, new ones appear): nothing to
    name, each hash is judged only where the run's own leaves reach."""
    _many_leaves(rt, evidence.a.item_id, 300)
    stop = threading.Event()

    def sign_on() -> int:
        rounds = 0
        while not stop.is_set():
            _many_leaves(rt, evidence.b.item_id, 40)
            rounds += 1
        return rounds

    with ThreadPoolExecutor(1) as pool:
        signing = pool.submit(sign_on)
        reports = [verify_all(rt, actor="auditor") for _ in range(3)]
        stop.set()
        assert signing.result(timeout=60) >= 2
    for report in reports:
        assert not [f for f in report.failures if f.what in {"log_tile", "log_tree"}]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_tiles_signed_between_the_tree_and_the_tiles_being_read_are_not_a_difference(
    rt: Runtime, evidence: Evidence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run reads the stored tree's size, then the tiles; a checkpoint committed in
    between makes tiles wider than that size allows, and new ones: the size is asked again."""
    _many_leaves(rt, evidence.a.item_id, 250)
    reading = repo.iter_tiles

    def signed_meanwhile(session: Any, **kw: Any) -> Iterator[tuple[int, int, bytes]]:
        _many_leaves(rt, evidence.b.item_id, 300)  # another connection, committed
        yield from reading(session, **kw)

    monkeypatch.setattr(repo, "iter_tiles", signed_meanwhile)
    report = verify_all(rt, actor="auditor")
    assert not [f for f in report.failures if f.what in {"log_tile", "log_tree"}], report.failures


def test_a_leaf_row_gone_without_a_mirrored_copy_is_not_blamed_on_the_tiles(
    rt: Runtime, evidence: Evidence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no copy to stand in (the mirror unreadable), the rebuilt tree holds a placeholder
    there: the stored tiles over it are not judged, and the hole is named once."""
    b = evidence.b
    sql(rt, "DELETE FROM log_leaves WHERE idx = :i", i=b.log_index)
    monkeypatch.setattr(verify_mirror, "walk_mirror", lambda *_: None)  # bundles unreadable
    report = verify_all(rt, actor="auditor")
    assert (b.item_id, b.log_index) in named(report, "leaf_missing")
    assert not [f for f in report.failures if f.what in {"log_tile", "log_tree"}], report.failures


def _leaves(rt: Runtime, n: int, tag: str) -> None:
    with transaction(rt.sessions) as s:
        rt.ledger.append_many(
            s, [("custody", None, {"v": 1, "tag": tag, "n": i}) for i in range(n)],
            now=datetime.now(UTC),
        )  # fmt: skip


class _Backup:
    """A SQLite index's backup, taken with SQLite's own backup API and put back the way an
    operator restores one (the file replaced, its -wal and -shm gone)."""

    def __init__(self, settings: Any, tmp_path: Path) -> None:
        assert settings.database.url is not None
        self.index = Path(settings.database.url.removeprefix("sqlite:///"))
        self.copy = tmp_path / "backup.sqlite3"

    def take(self) -> None:
        with sqlite3.connect(self.index) as src, sqlite3.connect(self.copy) as dst:
            src.backup(dst)

    def restore(self) -> None:
        for leftover in self.index.parent.glob(self.index.name + "-*"):  # -wal, -shm
            leftover.unlink()
        self.copy.replace(self.index)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # a backup is a file copy here
def test_an_index_restored_from_an_older_backup_is_not_signed_over(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """The index goes back to last night's backup while the store keeps today's checkpoints:
    signing on would give the leaf indexes published since other leaves under the same key
    (every receipt of the day would stop proving). The signer refuses, before and after the
    index grows past the published size again, and signs nothing."""
    settings = make_settings()
    backup = _Backup(settings, tmp_path)
    with runtime(settings) as rt:
        _leaves(rt, 5, "before the backup")
        night = rt.ledger.publish().checkpoint
    backup.take()
    with runtime(settings) as rt:
        _leaves(rt, 20, "the day")
        day = rt.ledger.publish().checkpoint
    assert day.size == night.size + 20
    backup.restore()

    with runtime(settings) as rt:
        _leaves(rt, 3, "after the restore")
        with pytest.raises(LogCorrupt, match=f"checkpoint {day.size} of this log was published"):
            rt.ledger.publish()
        _leaves(rt, 30, "past the published size")
        with pytest.raises(LogCorrupt, match=f"another root than checkpoint {day.size}"):
            rt.ledger.publish()
        with rt.sessions() as s:
            assert [cp.size for cp in repo.checkpoints(s)] == [night.size]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "hide",
    [
        "deleted",
        "the older one put back",
        "deleted with its numbered copy",
        "the older one put over both",
        "deleted, the backup taken before a checkpoint's row",
    ],
)
def test_a_restored_index_is_not_signed_over_when_the_published_copy_is_hidden(
    make_settings: SettingsFactory, tmp_path: Path, hide: str
) -> None:
    """As above, and ``log/checkpoint`` no longer says how far the log went (deleted: a delete
    marker over it; or last night's copy put over today's): a new process, which has seen
    nothing published, still finds today's checkpoint by the leaf bundle that follows the
    index's latest one: with that checkpoint's own object deleted too, or last night's note
    put over it; and when the backup already held the leaves of the next checkpoint but not
    its row (taken while a signer was at work), by following that one to the next."""
    settings = make_settings()
    backup = _Backup(settings, tmp_path)
    mid_round = hide.endswith("row")
    with runtime(settings) as rt:
        _leaves(rt, 5, "before the backup")
        night = rt.ledger.publish()
        if mid_round:
            _leaves(rt, 10, "committed, not yet signed")
    backup.take()
    with runtime(settings) as rt:
        if mid_round:
            assert rt.ledger.publish().checkpoint.size == night.checkpoint.size + 10
        _leaves(rt, 20, "the day")
        day = rt.ledger.publish().checkpoint
        store = rt.store
        older = night.note.encode()
        if hide.startswith("the older one"):
            store.put_bytes(keys.PUBLISHED_CHECKPOINT, older, content_type="text/plain")
        else:
            store.client.remove_object(store.bucket, keys.PUBLISHED_CHECKPOINT)
        if hide == "deleted with its numbered copy":
            store.client.remove_object(store.bucket, keys.checkpoint_key(day.size))
            assert store.read_current(keys.checkpoint_key(day.size), limit=1 << 16) is None
        if hide == "the older one put over both":
            store.put_bytes(keys.checkpoint_key(day.size), older, content_type="text/plain")
    backup.restore()

    with runtime(settings) as rt:
        _leaves(rt, 3, "after the restore")
        with pytest.raises(LogCorrupt, match=f"checkpoint {day.size} of this log was published"):
            rt.ledger.publish()
        with rt.sessions() as s:
            assert [cp.size for cp in repo.checkpoints(s)] == [night.checkpoint.size]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_dead_end_checkpoint_does_not_hide_the_one_the_log_went_on_from(
    make_settings: SettingsFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signer A stored checkpoint 25 (and published it) but died before its row; signer B had
    read the index at 20 leaves, signed 20, and the log went on from there (35). The index
    goes back to a backup with checkpoint 5 and those 25 leaves, and A's copy of 25 is put
    back at ``log/checkpoint``. 20 and 25 both agree with the index; 25 leads nowhere, 20
    leads to 35: followed too, and the signer refuses."""
    settings = make_settings()
    backup = _Backup(settings, tmp_path)
    with runtime(settings) as rt:
        _leaves(rt, 5, "night")
        assert rt.ledger.publish().checkpoint.size == 5
        _leaves(rt, 20, "committed, not yet signed")
    backup.take()

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("A dies before its checkpoint row")

    with runtime(settings) as a, monkeypatch.context() as m:
        m.setattr(repo, "add_checkpoint", crash)
        with pytest.raises(RuntimeError, match="A dies"):
            a.ledger.publish()
        dead_end = a.store.read_current(keys.checkpoint_key(25), limit=1 << 16)
        assert dead_end is not None
    with runtime(settings) as b, monkeypatch.context() as m:
        # B read the index when it held 20 leaves, before A's objects were there.
        m.setattr(repo, "log_size", lambda _session: 20)
        m.setattr(b.ledger.signer, "_published", lambda *_: [])
        m.setattr(b.ledger.signer, "_following", lambda *_: [])
        assert b.ledger.signer.sign(b.store).checkpoint.size == 20
    with runtime(settings) as rt:
        _leaves(rt, 10, "the day")
        assert rt.ledger.publish().checkpoint.size == 35
        rt.store.put_bytes(keys.PUBLISHED_CHECKPOINT, dead_end, content_type="text/plain")
    backup.restore()

    with runtime(settings) as rt:
        _leaves(rt, 3, "after the restore")
        with pytest.raises(LogCorrupt, match="checkpoint 35 of this log was published"):
            rt.ledger.publish()
        with rt.sessions() as s:
            assert [cp.size for cp in repo.checkpoints(s)] == [5]


def test_a_published_checkpoint_that_is_not_the_logs_is_passed_over(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes someone with write access put at ``log/checkpoint`` (no signature of the log
    key) neither stop signing nor count: the next checkpoint is published over them."""
    _leaves(rt, 4, "x")
    forged = b"liuhen.local/log\n999\nAAAA\n"
    rt.store.put_bytes(keys.PUBLISHED_CHECKPOINT, forged, content_type="text/plain")
    signed = rt.ledger.publish()
    assert signed.checkpoint.size >= 4
    assert "does not open with the log key" in caplog.text
    current = rt.store.read_current(keys.PUBLISHED_CHECKPOINT, limit=1 << 16)
    assert current == signed.note.encode()


def _viewed(rt: Runtime, n: int) -> None:
    """One item and ``n`` views of it, signed: ``n + 1`` leaves or more."""
    sealed = seal(rt, distinct_files(rt.settings.home_dir / "in", 1)[0])
    _many_leaves(rt, sealed.item_id, n)


def _own_bucket(make_settings: SettingsFactory, home: str = "home", **kw: Any) -> Any:
    """Settings on a bucket no other test's log writes tiles to (or ``kw['bucket']``)."""
    bucket = kw.pop("bucket", None) or f"t-tiles-{secrets.token_hex(4)}"
    return make_settings(home=make_settings().home.parent / home, s3={"bucket": bucket}, **kw)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "edit,expect",
    [
        ("other bytes put over it", "the current version, what a reader fetches, is not"),
        ("deleted", "hidden by a delete marker (1 version(s) of leaves 0..255 under it)"),
        ("never mirrored", "not mirrored (leaves 0..255, a full tile of the latest checkpoint)"),
    ],
)
def test_a_mirrored_tile_readers_cannot_prove_with_is_named(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, edit: str, expect: str
) -> None:
    """A reader who fetches tiles (C2SP tlog-tiles) proves with ``log/tile/…``, not the
    index's rows: a tile there that is not the leaves, or not there, is named."""
    with runtime(_own_bucket(make_settings)) as rt:
        with monkeypatch.context() as m:
            if edit == "never mirrored":  # as signed before tiles were mirrored
                m.setattr(signing, "_full_tiles", lambda _tree: [])
            _viewed(rt, 300)
        key = keys.tile_key(0, 0)
        if edit != "never mirrored":
            assert verify_all(rt, actor="auditor").ok
        if edit == "other bytes put over it":
            rt.store.put_bytes(key, bytes(32 * 256), content_type="application/octet-stream")
        elif edit == "deleted":
            rt.store.client.remove_object(rt.store.bucket, key)
        report = verify_all(rt, actor="auditor")
        found = [f for f in report.failures if f.what == "tile_mirror"]
        assert [f.detail.split(": ", 1)[0] for f in found] == [key], report.failures
        assert expect in found[0].detail
        assert [f.what for f in report.failures] == ["tile_mirror"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_tiles_built_again_for_an_older_index_are_mirrored(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index signed before full tiles were mirrored, its tiles then built again (nothing
    new to sign): the built tiles go to the store too, and the mirror is whole."""
    with runtime(_own_bucket(make_settings)) as rt:
        with monkeypatch.context() as m:
            m.setattr(signing, "_full_tiles", lambda _tree: [])
            _viewed(rt, 599)
        with rt.sessions() as s:
            signed = [cp.size for cp in repo.checkpoints(s)]
        tiles = [keys.tile_key(0, 0), keys.tile_key(0, 1)]
        assert [rt.store.read_current(k, limit=1 << 14) for k in tiles] == [None, None]
        sql(rt, "DELETE FROM log_tiles")
        sql(rt, "UPDATE log_tree SET size = 0, root_hash = :r WHERE id = 1", r=MerkleTree().root())
        rt.ledger.receipt(599)  # builds the tiles from the leaf rows again
        with rt.sessions() as s:
            assert [cp.size for cp in repo.checkpoints(s)] == signed  # nothing new was signed
            stored = repo.read_tiles(s, keys=[(0, 0), (0, 1)])
        assert [rt.store.read_current(k, limit=1 << 14) for k in tiles] == [
            stored[(0, 0)],
            stored[(0, 1)],
        ]
        report = verify_all(rt, actor="auditor")
        assert report.ok, report.failures


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_another_logs_tiles_at_the_same_keys_are_not_a_difference(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Two logs (two keys) in one bucket put their tiles at the same keys; each finds its own
    among the versions, told from tampering by the other log's checkpoints beside them."""
    shared = f"t-tiles-{secrets.token_hex(4)}"
    dbs = {name: tmp_path / f"{name}.sqlite3" for name in ("first", "second")}
    homes = [
        _own_bucket(make_settings, name, bucket=shared, database={"url": f"sqlite:///{db}"})
        for name, db in dbs.items()
    ]
    for settings in homes:
        with runtime(settings) as rt:
            _viewed(rt, 300)
    for settings in homes:
        with runtime(settings) as rt:
            report = verify_all(rt, actor="auditor")
            assert report.ok, report.failures


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_mirrored_tiles_named_by_verify_are_put_again_from_the_leaf_rows(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """``liuhen log mirror-tiles``: the tiles ``verify --all`` names (one overwritten, one
    deleted) get a new current version with the leaf rows' hashes; a second run puts none."""
    settings = _own_bucket(make_settings)
    with runtime(settings) as rt:
        _viewed(rt, 520)
        zero, one = keys.tile_key(0, 0), keys.tile_key(0, 1)
        rt.store.put_bytes(zero, bytes(32 * 256), content_type="application/octet-stream")
        rt.store.client.remove_object(rt.store.bucket, one)
        named = [f.detail.split(":")[0] for f in verify_all(rt, actor="auditor").failures]
        assert named == [zero, one]
    env = cli_env(settings.home, settings)
    ran = run_cli("log", "mirror-tiles", "--json", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran
    assert ran.json()["put"] == [zero, one]
    again = run_cli("log", "mirror-tiles", env=env, cwd=tmp_path)
    assert again.returncode == 0, again
    assert again.stdout.endswith("full tile(s) of checkpoint " + str(ran.json()["checkpoint"])
                                 + ": 0 put again\n")  # fmt: skip
    with runtime(settings) as rt:
        report = verify_all(rt, actor="auditor")
        assert report.ok, report.failures
        with rt.sessions() as s:
            stored = repo.read_tiles(s, keys=[(0, 0)])[(0, 0)]
        assert rt.store.read_current(zero, limit=1 << 14) == stored


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_tile_is_put_from_leaf_rows_that_are_not_the_checkpoints(
    make_settings: SettingsFactory,
) -> None:
    """A leaf row edited behind liuhen's back: the rows no longer give the signed root, and
    nothing is published from them."""
    with runtime(_own_bucket(make_settings)) as rt:
        _viewed(rt, 300)
        key = keys.tile_key(0, 0)
        rt.store.put_bytes(key, bytes(32 * 256), content_type="application/octet-stream")
        row = leaf_rows(rt)[7]
        edited = row.data.replace('"view"', '"edit"')
        sql(rt, "UPDATE log_leaves SET data = :d, leaf_hash = :h WHERE idx = 7",
            d=edited, h=leaf_hash(edited.encode()))  # fmt: skip
        with pytest.raises(LogCorrupt, match="do not give the root of checkpoint"):
            mirror_tiles(rt)
        sql(rt, "UPDATE log_leaves SET leaf_hash = :h WHERE idx = 7", h=bytes(32))
        with pytest.raises(LogCorrupt, match="leaf 7 is not its data's hash"):
            mirror_tiles(rt)
        assert rt.store.read_current(key, limit=1 << 14) == bytes(32 * 256)
