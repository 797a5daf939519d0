"""Legal hold and retention on real SeaweedFS: hold and release reach the S3 legal-hold flag
of every object of every item (read back from the store), derivatives made while held are
held, an expired held item cannot be deleted (by liuhen nor by the store), an expired unheld
one is deleted by the purge, each deletion a custody event, and the log still verifies."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from api.errors import status_for
from ingest import catalog, jobs, links, retention
from ingest.errors import InvalidInput, ItemDeleted, StillHeld
from ingest.intake import SealResult, seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from ingest.verify import verify_all
from storage import keys
from storage import people as storage_people
from storage import repository as repo
from storage.errors import ObjectLocked, ObjectNotFound, StoreUnavailable
from storage.tables import Item
from tests.integration.logkit import store_calls_under_the_sequencer
from tests.integration.mediagen import small_h264

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def _objects(rt: Runtime, item_id: str) -> list[tuple[str, str]]:
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=item_id)
        return [(item.object_key, item.version_id)] + [
            (d.object_key, d.version_id) for d in repo.derivatives_of(s, item_id=item_id)
        ]


def _flags(rt: Runtime, item_id: str) -> list[bool]:
    """The legal-hold flag of each object, as the store says."""
    return [rt.store.legal_hold_on(k, v) for k, v in _objects(rt, item_id)]


def _seal(rt: Runtime, tmp: Path, *cases: str, now: datetime | None = None) -> SealResult:
    path = tmp / f"{os.urandom(4).hex()}.mp4"
    path.write_bytes(MP4_HEAD + os.urandom(1024))
    return seal_file(rt, path, Manifest(case_ids=cases), actor="cli:test", now=now)


def _custody(rt: Runtime, item_id: str) -> list[tuple[str, str | None]]:
    with rt.sessions() as s:
        return [(e.action, e.reason) for e in repo.custody_of(s, item_id=item_id)]


def test_hold_and_release_reach_every_objects_legal_hold_flag(rt: Runtime, tmp_path: Path) -> None:
    # Not one of their store calls under the sequencer: this directory's conftest checks it.
    video = small_h264(tmp_path)
    sealed = seal_file(rt, video, Manifest(case_ids=("H-1",)), actor="cli:test")
    assert _flags(rt, sealed.item_id) == [True]  # an open case holds its item at once
    assert jobs.run(rt, sealed.item_id) in ("ready", "partial")
    objects = _objects(rt, sealed.item_id)
    assert len(objects) >= 3  # the original, a proxy, thumbnails
    assert _flags(rt, sealed.item_id) == [True] * len(objects)  # derivatives made while held
    other = _seal(rt, tmp_path, "H-1", "H-2")
    plain = _seal(rt, tmp_path)
    assert _flags(rt, plain.item_id) == [False]
    links.link(rt, item_id=plain.item_id, case_id="H-3", reason="same scene", actor="cli:a")
    assert _flags(rt, plain.item_id) == [True]  # a link to an open case holds it

    doc = retention.set_case_hold(rt, case_id="H-1", held=False, reason="closed", actor="cli:a")
    assert {i["id"]: i["held"] for i in doc["items"]} == {
        sealed.item_id: False,
        other.item_id: True,  # H-2 is still open
    }
    assert _flags(rt, sealed.item_id) == [False] * len(objects)
    assert _flags(rt, other.item_id) == [True]

    retention.set_case_hold(rt, case_id="H-1", held=True, reason="reopened", actor="cli:a")
    assert _flags(rt, sealed.item_id) == [True] * len(objects)
    with rt.sessions() as s:
        item_doc = catalog.item_document(s, repo.get_item(s, item_id=sealed.item_id))
        case_doc = catalog.case_document(s, "H-1")
    assert item_doc["retention"] == {
        "category": "evidence",
        "until": None,
        "held": True,
        "held_by": ["H-1"],
        "deleted": False,
    }
    assert case_doc["held"] is True
    holds = [e for e in item_doc["custody"] if e["action"] == "legal_hold"]
    assert [(e["details"]["on"], e["actor"]) for e in holds] == [
        (False, "cli:a"),
        (True, "cli:a"),
    ]

    # Unlinking the last open case lifts the hold; the item keeps its place in the log.
    links.unlink(rt, item_id=other.item_id, case_id="H-2", reason="wrong case", actor="cli:a")
    assert _flags(rt, other.item_id) == [True]  # H-1 holds it still
    retention.set_case_hold(rt, case_id="H-1", held=False, reason="closed", actor="cli:a")
    assert _flags(rt, other.item_id) == [False]
    assert verify_all(rt, actor="cli:test").ok


def test_hold_needs_a_reason_and_a_known_case(rt: Runtime, tmp_path: Path) -> None:
    sealed = _seal(rt, tmp_path, "R-1")
    for reason in ("", "   "):
        with pytest.raises(InvalidInput, match="reason"):
            retention.set_case_hold(rt, case_id="R-1", held=False, reason=reason, actor="a")
    assert _flags(rt, sealed.item_id) == [True]  # nothing changed
    with pytest.raises(Exception, match="no case"):
        retention.set_case_hold(rt, case_id="NOPE", held=True, reason="x", actor="a")


def _aged(rt: Runtime, seconds: int) -> datetime:
    """A seal time whose retention (the profile's) ends ``seconds`` from now."""
    return datetime.now(UTC) - rt.settings.retention + timedelta(seconds=seconds)


def test_an_expired_held_item_cannot_be_deleted(rt: Runtime, tmp_path: Path) -> None:
    held = _seal(rt, tmp_path, "E-1", now=_aged(rt, 3))
    free = _seal(rt, tmp_path, now=_aged(rt, 3))
    young = _seal(rt, tmp_path)
    time.sleep(4.5)  # both retentions have now ended, in the index and in the store

    out = retention.purge(rt, reason="retention ended", actor="cli:admin")
    assert [d["id"] for d in out["deleted"]] == [free.item_id]
    kept = {k["id"]: k["reason"] for k in out["kept"]}
    assert list(kept) == [held.item_id]  # the young item is not even a candidate
    assert "evidence in case(s) E-1" in kept[held.item_id]

    with pytest.raises(StillHeld, match="E-1"):
        retention.delete_item(rt, item_id=held.item_id, reason="try", actor="cli:admin")
    # Not only liuhen refuses: the store's legal hold does, though retention has ended.
    (key, version) = _objects(rt, held.item_id)[0]
    mode, until = rt.store.retention(key, version)
    assert mode == "COMPLIANCE"
    assert until is not None and until < datetime.now(UTC)
    with pytest.raises(ObjectLocked):
        rt.store.remove_version(key, version)
    assert rt.store.size(key, version) == held.size

    # Released and unlinked (both with reasons), it is routine again, and expired: deleted.
    retention.set_case_hold(rt, case_id="E-1", held=False, reason="case closed", actor="cli:a")
    links.unlink(rt, item_id=held.item_id, case_id="E-1", reason="not evidence", actor="cli:a")
    out = retention.purge(rt, reason="retention ended", actor="cli:admin")
    assert [d["id"] for d in out["deleted"]] == [held.item_id]

    for item_id in (held.item_id, free.item_id):
        ((key, version),) = _objects(rt, item_id)
        with pytest.raises(ObjectNotFound):
            rt.store.size(key, version)
        assert _custody(rt, item_id)[-1] == ("deleted", "retention ended")
        with rt.sessions() as s:
            doc = catalog.item_document(s, repo.get_item(s, item_id=item_id))
        assert doc["status"] == "deleted"
        assert doc["retention"]["deleted"] is True
    assert _flags(rt, young.item_id) == [False]
    assert rt.store.size(*_objects(rt, young.item_id)[0]) == young.size
    # The leaves stay; the log explains the missing bytes; every chain verifies.
    report = verify_all(rt, actor="cli:test")
    assert report.ok, report.failures


def test_purge_needs_a_reason_and_a_dry_run_deletes_nothing(rt: Runtime, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="reason"):
        retention.purge(rt, reason=" ", actor="cli:admin")
    free = _seal(rt, tmp_path, now=_aged(rt, 2))
    time.sleep(3)
    out = retention.purge(rt, reason="check", actor="cli:admin", dry_run=True)
    assert out["deleted"] == [{"id": free.item_id, "objects": None}]
    assert rt.store.size(*_objects(rt, free.item_id)[0]) == free.size
    assert _custody(rt, free.item_id)[-1][0] == "sealed"


def test_a_purge_removes_objects_after_its_commit_and_lists_what_stayed(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is called outside the sequencer; a removal that fails leaves the log saying
    ``deleted`` and the bytes in place (listed), never bytes gone with nothing logged."""
    free = _seal(rt, tmp_path, now=_aged(rt, 2))
    stuck = _seal(rt, tmp_path, now=_aged(rt, 2))
    time.sleep(3)
    ((stuck_key, stuck_version),) = _objects(rt, stuck.item_id)
    real = rt.store.remove_version

    def remove_version(key: str, version_id: str) -> None:
        if key == stuck_key:
            raise StoreUnavailable("the store went away (test)")
        real(key, version_id)

    monkeypatch.setattr(rt.store, "remove_version", remove_version)
    # Watched here too: the patch above replaced the conftest's watched remove_version.
    with store_calls_under_the_sequencer(rt, monkeypatch) as calls:
        out = retention.purge(rt, reason="retention ended", actor="cli:admin")
    assert calls == []
    deleted = {d["id"]: d for d in out["deleted"]}
    assert deleted[free.item_id] == {"id": free.item_id, "objects": 1, "left": []}
    assert deleted[stuck.item_id]["objects"] == 0
    (left,) = deleted[stuck.item_id]["left"]
    assert left["object"] == f"{stuck_key}@{stuck_version}" and "went away" in left["error"]
    assert rt.store.size(stuck_key, stuck_version) == stuck.size  # nothing lost
    with pytest.raises(ObjectNotFound):
        rt.store.size(*_objects(rt, free.item_id)[0])
    for item_id in (free.item_id, stuck.item_id):
        assert _custody(rt, item_id)[-1] == ("deleted", "retention ended")
    assert verify_all(rt, actor="cli:test").ok


def test_the_bytes_of_a_deleted_item_are_refused_not_taken_for_a_duplicate(
    rt: Runtime, tmp_path: Path
) -> None:
    """The row stays after a purge, so the same bytes are the same item: answering them as a
    duplicate would hand out a receipt for an original that is gone (and a dock would erase
    the camera's copy). They are refused, nothing is linked, nothing is stored."""
    path = tmp_path / "found-again.mp4"
    path.write_bytes(MP4_HEAD + os.urandom(2048))
    gone = seal_file(rt, path, Manifest(), actor="cli:test", now=_aged(rt, 2))
    time.sleep(3)
    assert [d["id"] for d in retention.purge(rt, reason="ended", actor="cli:a")["deleted"]] == [
        gone.item_id
    ]
    before = _custody(rt, gone.item_id)
    versions = rt.store.list_versions(keys.original_key(gone.sha256))
    with pytest.raises(ItemDeleted, match="deleted when its retention ended"):
        seal_file(rt, path, Manifest(case_ids=("NEW-1",)), actor="cli:test")
    with pytest.raises(ItemDeleted):
        links.link(rt, item_id=gone.item_id, case_id="NEW-1", reason="evidence", actor="cli:o")
    with rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=gone.item_id) == []
        assert repo.get_item(s, item_id=gone.item_id).status == "deleted"
    assert _custody(rt, gone.item_id) == before  # no received_again, no link
    assert rt.store.list_versions(keys.original_key(gone.sha256)) == versions
    assert status_for(ItemDeleted("x")) == (409, "Deleted when its retention ended")
    assert verify_all(rt, actor="cli:test").ok


def test_a_link_while_a_purge_checks_the_item_waits_and_then_finds_it_deleted(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge checks what keeps the item under the sequencer, which a link takes before it
    reads the item: never an item deleted while in a case (on PostgreSQL the link used to
    commit in between: the bytes went while the case listed them)."""
    free = _seal(rt, tmp_path, now=_aged(rt, 2))
    time.sleep(3)
    real = retention._why_kept_by_index
    linker: list[threading.Thread] = []
    outcome: list[BaseException | dict[str, object]] = []

    def link() -> None:
        try:
            outcome.append(
                links.link(rt, item_id=free.item_id, case_id="R-1", reason="evid.", actor="cli:o")
            )
        except BaseException as e:
            outcome.append(e)

    calls: list[str | None] = []

    def why_kept(session: Session, item: Item, now: datetime) -> str | None:
        why = real(session, item, now)
        calls.append(why)
        if len(calls) == 2:  # the check under the sequencer: an officer links the item now
            linker.append(threading.Thread(target=link))
            linker[0].start()
            time.sleep(0.5)  # long enough for the link to reach (and wait at) the sequencer
        return why

    monkeypatch.setattr(retention, "_why_kept_by_index", why_kept)
    out = retention.delete_item(rt, item_id=free.item_id, reason="expired", actor="cli:admin")
    linker[0].join(30)
    assert out["objects"] == 1
    (result,) = outcome
    assert isinstance(result, ItemDeleted), result
    with rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=free.item_id) == []


def test_a_release_with_a_link_meanwhile_leaves_the_store_holding_what_the_index_holds(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release lifts the flag in its first round; an officer then links the item to
    another open case, which finds the recorded hold already on and calls no store. The
    release's next round must put the flag back, not only leave the recorded state alone."""
    item = _seal(rt, tmp_path, "A-1")
    real = rt.store.legal_hold
    linked: list[str] = []

    def legal_hold(key: str, version: str, on: bool) -> None:
        real(key, version, on)
        if not on and not linked:
            linked.append(key)
            links.link(rt, item_id=item.item_id, case_id="B-1", reason="same", actor="cli:o")

    monkeypatch.setattr(rt.store, "legal_hold", legal_hold)
    retention.set_case_hold(rt, case_id="A-1", held=False, reason="closed", actor="cli:admin")
    assert linked
    with rt.sessions() as s:
        doc = retention.retention_document(s, repo.get_item(s, item_id=item.item_id))
    assert doc["held"] and doc["held_by"] == ["B-1"]
    assert _flags(rt, item.item_id) == [True]


def test_holding_a_case_again_repairs_flags_a_failed_release_left_off(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that failed after lifting some flags committed nothing: the index still says
    held. Holding the case writes every flag its items want, not only those it thinks moved."""
    a = _seal(rt, tmp_path, "P-1")
    b = _seal(rt, tmp_path, "P-1")
    real = rt.store.legal_hold
    calls: list[bool] = []

    def legal_hold(key: str, version: str, on: bool) -> None:
        calls.append(on)
        if len(calls) == 2:
            raise StoreUnavailable("the store went away (test)")
        real(key, version, on)

    monkeypatch.setattr(rt.store, "legal_hold", legal_hold)
    with pytest.raises(StoreUnavailable):
        retention.set_case_hold(rt, case_id="P-1", held=False, reason="closed", actor="cli:a")
    monkeypatch.setattr(rt.store, "legal_hold", real)
    assert sorted(_flags(rt, a.item_id) + _flags(rt, b.item_id)) == [False, True]  # half done
    retention.set_case_hold(rt, case_id="P-1", held=True, reason="make sure", actor="cli:a")
    assert _flags(rt, a.item_id) + _flags(rt, b.item_id) == [True, True]
    # And a release done again lifts them all.
    retention.set_case_hold(rt, case_id="P-1", held=False, reason="closed", actor="cli:a")
    assert _flags(rt, a.item_id) + _flags(rt, b.item_id) == [False, False]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_item_sealed_into_a_case_while_it_is_being_held_ends_up_held(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hold`` reads the case's items, then commits; a seal into the case committing in
    between must not be left out of the hold (it read the case as released)."""
    _seal(rt, tmp_path, "RACE-1")
    retention.set_case_hold(rt, case_id="RACE-1", held=False, reason="closed", actor="cli:a")
    reading = repo.items_of_case
    sealed: list[SealResult] = []
    racer = threading.Thread(target=lambda: sealed.append(_seal(rt, tmp_path, "RACE-1")))
    rounds: list[int] = []

    def items_of_case(session: Session, *, case_id: str) -> list[Item]:
        found = list(reading(session, case_id=case_id))
        rounds.append(len(found))
        if len(rounds) == 2:  # the last round: the first set the store's flags, rolled back
            racer.start()
            racer.join(2)  # it commits now, unless the hold's transaction holds it off
        return found

    monkeypatch.setattr(repo, "items_of_case", items_of_case)
    retention.set_case_hold(rt, case_id="RACE-1", held=True, reason="reopened", actor="cli:a")
    racer.join(60)
    assert rounds[:2] == [1, 1]
    (item,) = sealed
    assert _flags(rt, item.item_id) == [True]
    with rt.sessions() as s:
        assert storage_people.item_hold_state(s, item_id=item.item_id)
    assert verify_all(rt, actor="test").ok
