"""Legal hold and retention on real SeaweedFS: hold and release reach the S3 legal-hold flag
of every object of every item (read back from the store), derivatives made while held are
held, an expired held item cannot be deleted (by liuhen nor by the store), an expired unheld
one is deleted by the purge, each deletion a custody event, and the log still verifies."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest import catalog, jobs, links, retention
from ingest.errors import InvalidInput, StillHeld
from ingest.intake import SealResult, seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from ingest.verify import verify_all
from storage import repository as repo
from storage.errors import ObjectLocked, ObjectNotFound, StoreUnavailable
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
