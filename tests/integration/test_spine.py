"""The spine on real services: seal → index → retrieve, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from ingest import intake
from ingest.errors import EmptyFile, IntegrityMismatch, ManifestError
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.retention import set_case_hold
from ingest.retrieve import resolve, write_to_file
from ingest.runtime import Runtime
from integrity.errors import HashMismatch
from storage import keys
from storage import people as storage_people
from storage import repository as repo
from storage.errors import IndexUnavailable, ObjectLocked
from storage.tables import CustodyEvent, Device, Item, ItemCase, LogLeaf, Person
from tests.conftest import TESTDATA

PHOTOS = sorted(
    p for p in (TESTDATA / "photos").rglob("*") if p.suffix.lower() in {".jpg", ".heic"}
)


def _count(rt: Runtime, table: type) -> int:
    with rt.sessions() as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def test_testdata_is_there() -> None:
    assert len(PHOTOS) >= 25


def test_round_trip_every_photo(rt: Runtime, tmp_path: Path) -> None:
    for photo in PHOTOS:
        sealed = seal_file(
            rt, photo, Manifest(case_ids=("A-2026-001",), file_name=photo.name), actor="test"
        )
        expected = hashlib.sha256(photo.read_bytes()).hexdigest()
        assert sealed.sha256 == expected
        assert sealed.size == photo.stat().st_size
        out = tmp_path / "out"
        write_to_file(rt, resolve(rt, sealed.item_id), out)
        assert out.read_bytes() == photo.read_bytes()
    with rt.sessions() as s:
        assert len(repo.items_of_case(s, case_id="A-2026-001")) == len(PHOTOS)
        assert repo.log_size(s) == 2 * len(PHOTOS)  # item leaf + sealed custody leaf each


def test_original_is_stored_under_content_address_with_compliance_retention(
    rt: Runtime,
) -> None:
    photo = PHOTOS[0]
    sealed = seal_file(rt, photo, Manifest(), actor="test")
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=sealed.item_id)
    assert item.object_key == keys.original_key(sealed.sha256)
    assert item.object_key.startswith(f"originals/sha256/{sealed.sha256[:2]}/{sealed.sha256[2:4]}/")
    mode, until = rt.store.retention(item.object_key, item.version_id)
    assert mode == "COMPLIANCE"
    assert until is not None and until >= item.received_at.replace(microsecond=0)
    days = (until - item.received_at).days
    assert days >= 183


def test_same_bytes_again_is_the_same_item_and_case_links_merge(rt: Runtime) -> None:
    photo = PHOTOS[1]
    first = seal_file(rt, photo, Manifest(case_ids=("A-1",)), actor="test")
    again = seal_file(rt, photo, Manifest(case_ids=("A-1", "B-2")), actor="test")
    assert again.item_id == first.item_id
    assert again.duplicate and not first.duplicate
    assert again.new_links == ["B-2"]
    assert again.case_ids == ["A-1", "B-2"]
    assert again.log_index == first.log_index and again.leaf == first.leaf
    assert _count(rt, Item) == 1
    assert _count(rt, ItemCase) == 2
    with rt.sessions() as s:
        actions = [e.action for e in repo.custody_of(s, item_id=first.item_id)]
    assert actions == ["sealed", "link", "received_again"]


def test_duplicate_caught_by_the_unique_constraint_not_a_pre_check(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two seals racing past the pre-check: the constraint decides, the loser links."""
    photo = PHOTOS[2]
    first = seal_file(rt, photo, Manifest(case_ids=("A-1",)), actor="test")
    real = intake._look

    def missed(*args: Any, **kwargs: Any) -> Any:
        return False, real(*args, **kwargs)[1]

    monkeypatch.setattr(intake, "_look", missed)
    second = seal_file(rt, photo, Manifest(case_ids=("C-3",)), actor="test")
    assert second.duplicate and second.item_id == first.item_id
    assert second.case_ids == ["A-1", "C-3"]
    assert _count(rt, Item) == 1
    with rt.sessions() as s:
        # The loser's leaf index was rolled back: the log stays dense.
        idx = [leaf.idx for leaf in s.scalars(select(LogLeaf).order_by(LogLeaf.idx))]
    assert idx == list(range(len(idx)))


def test_hash_mismatch_is_refused_and_leaves_nothing(rt: Runtime, tmp_path: Path) -> None:
    photo = PHOTOS[3]
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityMismatch, match="SHA-256 mismatch"):
        seal_file(rt, photo, Manifest(sha256=wrong), actor="test")
    assert _count(rt, Item) == 0
    assert _count(rt, LogLeaf) == 0
    # The refused upload went to the key of the hash the manifest claimed; it is gone again.
    key = keys.original_key(wrong)
    versions = list(rt.store.client.list_objects(rt.store.bucket, prefix=key, include_version=True))
    assert versions == []


def test_size_mismatch_and_empty_file_are_refused(rt: Runtime, tmp_path: Path) -> None:
    with pytest.raises(IntegrityMismatch, match="declared size"):
        seal_file(rt, PHOTOS[0], Manifest(size=5), actor="test")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFile, match="empty"):
        seal_file(rt, empty, Manifest(), actor="test")
    assert _count(rt, Item) == 0


def test_bad_case_id_is_refused(rt: Runtime) -> None:
    with pytest.raises(ManifestError, match="invalid case ID"):
        seal_file(rt, PHOTOS[0], Manifest(case_ids=("../etc",)), actor="test")
    assert _count(rt, Item) == 0


def test_failure_before_commit_leaves_no_item(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index fails inside the sealing transaction (after the leaves and the job): nothing
    is committed. A small original was put with its Object Lock, so its version stays,
    retained and unseen: no row points to it."""

    def boom(*_: object, **__: object) -> set[str]:
        raise IndexUnavailable("simulated failure before commit")

    photo = tmp_path / "new.jpg"  # bytes no other test has stored (the bucket is shared)
    photo.write_bytes(PHOTOS[4].read_bytes() + os.urandom(16))
    monkeypatch.setattr(storage_people, "held_items", boom)
    with pytest.raises(IndexUnavailable, match="simulated"):
        seal_file(rt, photo, Manifest(case_ids=("A-1",)), actor="test")
    assert _count(rt, Item) == 0
    assert _count(rt, ItemCase) == 0
    assert _count(rt, CustodyEvent) == 0
    with rt.sessions() as s:
        assert repo.log_size(s) == 0
    key = keys.original_key(hashlib.sha256(photo.read_bytes()).hexdigest())
    (version,) = rt.store.list_versions(key)
    assert rt.store.retention(key, version.version_id)[0] == "COMPLIANCE"


def test_a_small_original_is_put_with_its_retention_and_hold(rt: Runtime) -> None:
    """One PUT carries the Object Lock: the store itself says so, read back."""
    held = seal_file(rt, PHOTOS[8], Manifest(case_ids=("A-7",)), actor="test")
    loose = seal_file(rt, PHOTOS[9], Manifest(), actor="test")
    with rt.sessions() as s:
        items = [repo.get_item(s, item_id=i) for i in (held.item_id, loose.item_id)]
    for item in items:
        mode, until = rt.store.retention(item.object_key, item.version_id)
        assert (mode, until) == ("COMPLIANCE", item.retain_until.replace(tzinfo=UTC))
        with pytest.raises(ObjectLocked):
            rt.store.remove_version(item.object_key, item.version_id)
    assert rt.store.legal_hold_on(items[0].object_key, items[0].version_id)
    assert not rt.store.legal_hold_on(items[1].object_key, items[1].version_id)
    with rt.sessions() as s:
        assert storage_people.item_hold_state(s, item_id=held.item_id)
        assert not storage_people.item_hold_state(s, item_id=loose.item_id)


def test_a_hold_changed_before_the_commit_is_applied(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case is released between the lock on the PUT and the commit: the seal notices
    under the sequencer, rolls back, lifts the hold on the store, and commits."""
    seal_file(rt, PHOTOS[10], Manifest(case_ids=("R-1",)), actor="test")  # the case exists
    real = intake._look

    def then_release(*args: Any, **kwargs: Any) -> Any:
        looked = real(*args, **kwargs)
        set_case_hold(rt, case_id="R-1", held=False, reason="closed (test)", actor="admin:t")
        return looked

    monkeypatch.setattr(intake, "_look", then_release)
    sealed = seal_file(rt, PHOTOS[11], Manifest(case_ids=("R-1",)), actor="test")
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=sealed.item_id)
        assert not storage_people.item_hold_state(s, item_id=item.id)
    assert not rt.store.legal_hold_on(item.object_key, item.version_id)
    assert rt.store.retention(item.object_key, item.version_id)[0] == "COMPLIANCE"


def test_a_large_original_whose_retention_fails_is_removed(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above SMALL_FILE the bytes are streamed unretained, then retained (outside the
    transaction): a refused retention leaves no item and deletes the version."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(intake.SMALL_FILE + 1))

    def boom(*_: object) -> None:
        raise ObjectLocked("simulated retention failure")

    monkeypatch.setattr(rt.store, "retain", boom)
    with pytest.raises(ObjectLocked, match="simulated"):
        seal_file(rt, big, Manifest(case_ids=("A-1",)), actor="test")
    assert _count(rt, Item) == 0
    with rt.sessions() as s:
        assert repo.log_size(s) == 0
    key = keys.original_key(hashlib.sha256(big.read_bytes()).hexdigest())
    assert rt.store.list_versions(key) == []
    monkeypatch.undo()
    sealed = seal_file(rt, big, Manifest(case_ids=("A-1",)), actor="test")
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=sealed.item_id)
    assert rt.store.retention(item.object_key, item.version_id)[0] == "COMPLIANCE"
    assert rt.store.legal_hold_on(item.object_key, item.version_id)


def test_store_refuses_to_delete_a_sealed_original(rt: Runtime) -> None:
    sealed = seal_file(rt, PHOTOS[5], Manifest(), actor="test")
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=sealed.item_id)
    with pytest.raises(ObjectLocked):
        rt.store.remove_version(item.object_key, item.version_id)
    assert rt.store.size(item.object_key, item.version_id) == item.size


def test_overwritten_key_does_not_change_what_is_read(rt: Runtime, tmp_path: Path) -> None:
    """A put over a sealed key makes a new version; reads go by version ID."""
    photo = PHOTOS[6]
    sealed = seal_file(rt, photo, Manifest(), actor="test")
    key = keys.original_key(sealed.sha256)
    rt.store.put_bytes(key, b"forged bytes", content_type="image/jpeg")
    out = tmp_path / "out.jpg"
    write_to_file(rt, resolve(rt, sealed.item_id), out)
    assert out.read_bytes() == photo.read_bytes()


def test_get_refuses_bytes_that_do_not_match_the_index(rt: Runtime, tmp_path: Path) -> None:
    photo = PHOTOS[7]
    sealed = seal_file(rt, photo, Manifest(), actor="test")
    key = keys.original_key(sealed.sha256)
    forged = rt.store.put_bytes(key, b"forged bytes", content_type="image/jpeg")
    from storage.db import transaction

    with transaction(rt.sessions) as s:
        repo.update_item(s, item_id=sealed.item_id, version_id=forged.version_id)
    out = tmp_path / "out.jpg"
    with pytest.raises(HashMismatch, match="expected SHA-256"):
        write_to_file(rt, resolve(rt, sealed.item_id), out)
    assert not out.exists()


def test_a_new_item_is_sealed_in_a_few_statements(rt: Runtime) -> None:
    """The sealing transaction holds the sequencer from its reservation to its commit (and on
    SQLite the one write lock throughout): its statement count is what every other seal waits
    for (``storage.new_item``, ``ingest.group_commit``). A new device, officer and two cases,
    under hold and with a unit: still a few Core statements, and fewer under the sequencer."""
    engine = rt.sessions.kw["bind"]
    statements: list[str] = []
    texts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())
        texts.append(" ".join(statement.split()).lower())

    event.listen(engine, "before_cursor_execute", count)
    try:
        sealed = seal_file(
            rt,
            PHOTOS[12],
            Manifest(device_id="DEV-NEW", officer_id="OFF-NEW", case_ids=("N-1", "N-2")),
            actor="test",
            unit="U-1",
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert not sealed.duplicate
    writes = [s for s in statements if s in {"INSERT", "UPDATE", "DELETE"}]
    assert "SAVEPOINT" not in statements
    assert len(statements) <= 20, statements
    assert len(writes) <= 13, writes
    reserved = next(i for i, t in enumerate(texts) if t.startswith("update log_state"))
    under = [t.split(" (", 1)[0][:40] for t in texts[reserved:]]
    assert len(under) <= 7, under  # leaves, indexes, case units, custody, the hold check
    early = ("insert into items", "insert into item_cases", "insert into jobs", "select unnest")
    assert not any(t.startswith(early) for t in under), under  # links, jobs: before it
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=sealed.item_id)
        assert repo.case_ids_of(s, item_id=item.id) == ["N-1", "N-2"]
        assert storage_people.item_hold_state(s, item_id=item.id)  # new cases are open
        assert storage_people.item_unit(s, item_id=item.id) == "U-1"
        assert repo.get_case(s, case_id="N-2").unit == "U-1"
        (event_row,) = repo.custody_of(s, item_id=item.id)
        chained = repo.get_leaf(s, index=item.log_index).leaf_hash.hex()
        custody = repo.get_leaf(s, index=event_row.log_index)
    assert event_row.action == "sealed" and custody.idx == item.log_index + 1
    assert f'"prev":"{chained}"' in custody.data  # the first custody leaf chains to the item's
    assert rt.store.legal_hold_on(item.object_key, item.version_id)


def test_a_new_case_takes_the_devices_unit_when_the_sealer_has_none(rt: Runtime) -> None:
    """No unit handed in: the case takes the new item's unit, its device's (else officer's)."""
    seal_file(rt, PHOTOS[13], Manifest(device_id="DEV-U", officer_id="OFF-U"), actor="test")
    with rt.sessions() as s, s.begin():
        s.execute(update(Device).where(Device.id == "DEV-U").values(unit="U-DEV"))
        s.execute(update(Person).where(Person.id == "OFF-U").values(unit="U-OFF"))
    manifest = Manifest(device_id="DEV-U", officer_id="OFF-U", case_ids=("D-1",))
    seal_file(rt, PHOTOS[14], manifest, actor="test")
    seal_file(rt, PHOTOS[15], Manifest(officer_id="OFF-U", case_ids=("D-2",)), actor="test")
    with rt.sessions() as s:
        assert repo.get_case(s, case_id="D-1").unit == "U-DEV"
        assert repo.get_case(s, case_id="D-2").unit == "U-OFF"
