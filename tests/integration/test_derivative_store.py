"""Storing derivatives on real services: each is put under its Object Lock before the one
transaction that indexes and logs all of an item's new ones, so no store call happens while
the log sequencer is held; a hold that changes meanwhile, a role another run stored first and
a store that goes away halfway are each handled without a duplicate or a lost derivative."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingest import derivative_store, jobs
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.media import Derived, Recipe
from ingest.retention import set_case_hold
from ingest.runtime import Runtime
from storage import people
from storage import repository as repo
from storage.errors import StoreUnavailable
from storage.objects import PART_SIZE
from tests.conftest import TESTDATA

PHOTOS = sorted((TESTDATA / "photos").rglob("*.jpg"))
PHOTO_ROLES = {"display", "thumb-000"}


def _derivatives(rt: Runtime, item_id: str) -> dict[str, Any]:
    with rt.sessions() as s:
        return {d.role: d for d in repo.derivatives_of(s, item_id=item_id)}


def _derivative_leaves(rt: Runtime, item_id: str) -> list[int]:
    with rt.sessions() as s:
        size = repo.log_size(s)
        rows = repo.leaves_between(s, start=0, stop=size)
        return [r.idx for r in rows if r.kind == "derivative" and r.item_id == item_id]


def _held(rt: Runtime, item_id: str) -> bool:
    with rt.sessions() as s:
        return people.item_hold_state(s, item_id=item_id)


def test_derivatives_are_locked_on_their_put_and_logged_in_one_transaction(
    rt: Runtime,
) -> None:
    # No store call under the sequencer, the point of this module: the conftest checks it.
    sealed = seal_file(rt, PHOTOS[0], Manifest(case_ids=("H-1",)), actor="test")
    assert jobs.run(rt, sealed.item_id) == "ready"
    stored = _derivatives(rt, sealed.item_id)
    assert set(stored) == PHOTO_ROLES
    leaves = _derivative_leaves(rt, sealed.item_id)
    assert leaves == list(range(leaves[0], leaves[0] + len(PHOTO_ROLES)))  # one append
    assert sorted(d.log_index for d in stored.values()) == leaves
    soon = datetime.now(UTC) + timedelta(days=150)
    for d in stored.values():
        mode, until = rt.store.retention(d.object_key, d.version_id)
        assert mode == "COMPLIANCE" and until is not None and until > soon
        assert rt.store.legal_hold_on(d.object_key, d.version_id)  # the open case holds it


def _during_first_upload(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, then: Any, *, fail_from: int | None = None
) -> list[str]:
    """Run ``then()`` right after the first derivative's PUT; with ``fail_from``, the PUTs
    from that one on find the store unreachable."""
    real = rt.store.put_file
    puts: list[str] = []

    def put_file(key: str, path: Path, **kwargs: Any) -> Any:
        puts.append(key)
        if fail_from is not None and len(puts) >= fail_from:
            raise StoreUnavailable("the store went away (test)")
        stored = real(key, path, **kwargs)
        if len(puts) == 1:
            then()
        return stored

    monkeypatch.setattr(rt.store, "put_file", put_file)
    return puts


@pytest.mark.parametrize("hold_after", [True, False])
def test_a_hold_changed_during_the_uploads_reaches_every_derivative(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, hold_after: bool
) -> None:
    """The item's hold is read before the PUTs and again under the sequencer: a hold (or a
    release) in between rolls the commit back, changes the store, and commits."""
    sealed = seal_file(rt, PHOTOS[1], Manifest(case_ids=("H-2",)), actor="test")
    if hold_after:  # released before the job starts, held again while it uploads
        set_case_hold(rt, case_id="H-2", held=False, reason="closed (test)", actor="admin:t")
    assert _held(rt, sealed.item_id) is not hold_after

    def change() -> None:
        set_case_hold(rt, case_id="H-2", held=hold_after, reason="changed (test)", actor="admin:t")

    _during_first_upload(rt, monkeypatch, change)
    assert jobs.run(rt, sealed.item_id) == "ready"
    assert _held(rt, sealed.item_id) is hold_after
    stored = _derivatives(rt, sealed.item_id)
    assert set(stored) == PHOTO_ROLES
    for d in stored.values():
        assert rt.store.legal_hold_on(d.object_key, d.version_id) is hold_after
    assert len(_derivative_leaves(rt, sealed.item_id)) == len(PHOTO_ROLES)


def test_a_role_another_run_stored_first_is_theirs(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sealed = seal_file(rt, PHOTOS[2], Manifest(), actor="test")
    theirs = tmp_path / "theirs.jpg"
    theirs.write_bytes(PHOTOS[3].read_bytes())
    recipe = Recipe(tool="test", version="1", args=(), params={})
    other = Derived("display", theirs, "image/jpeg", "jpg", recipe)
    real_put = rt.store.put_file

    def other_run() -> None:  # a second worker on the same item commits its display first
        monkeypatch.setattr(rt.store, "put_file", real_put)
        derivative_store.store_new(
            rt, item_id=sealed.item_id, parent_sha256=sealed.sha256, have=set(), derived=[other]
        )

    _during_first_upload(rt, monkeypatch, other_run)
    assert jobs.run(rt, sealed.item_id) == "ready"
    stored = _derivatives(rt, sealed.item_id)
    assert set(stored) == PHOTO_ROLES
    assert stored["display"].sha256 == hashlib.sha256(theirs.read_bytes()).hexdigest()
    leaves = _derivative_leaves(rt, sealed.item_id)
    assert sorted(leaves) == sorted(d.log_index for d in stored.values())  # ours rolled back
    with rt.sessions() as s:
        assert repo.log_size(s) == len(repo.leaves_between(s, start=0, stop=repo.log_size(s)))


def test_what_was_uploaded_before_the_store_went_away_is_kept(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed = seal_file(rt, PHOTOS[4], Manifest(), actor="test")
    puts = _during_first_upload(rt, monkeypatch, lambda: None, fail_from=2)
    with pytest.raises(StoreUnavailable):
        jobs.run(rt, sealed.item_id)
    first = _derivatives(rt, sealed.item_id)
    assert len(first) == 1 and len(puts) == 2  # the one that got through is committed
    monkeypatch.undo()
    assert jobs.run(rt, sealed.item_id) == "ready"
    stored = _derivatives(rt, sealed.item_id)
    assert set(stored) == PHOTO_ROLES
    (role,) = first
    assert stored[role].version_id == first[role].version_id  # not uploaded again
    assert len(_derivative_leaves(rt, sealed.item_id)) == len(PHOTO_ROLES)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_multipart_put_carries_its_retention_and_hold(rt: Runtime, tmp_path: Path) -> None:
    """Proxies are larger than one part: SeaweedFS must honour the lock headers on a
    multipart upload too, or a proxy would exist, for a moment, unlocked."""
    big = tmp_path / "proxy.mp4"
    big.write_bytes(os.urandom(PART_SIZE + 1024))
    until = datetime.now(UTC) + timedelta(days=1)
    stored = rt.store.put_file(
        "derived/test/proxy.mp4", big, content_type="video/mp4", retain_until=until, legal_hold=True
    )
    mode, kept_until = rt.store.retention(stored.key, stored.version_id)
    assert mode == "COMPLIANCE"
    assert kept_until is not None and abs((kept_until - until).total_seconds()) < 1
    assert rt.store.legal_hold_on(stored.key, stored.version_id)
    assert stored.size == big.stat().st_size


def test_a_derivative_committed_while_a_hold_is_applied_is_held_too(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A hold sets the store's flags outside its transaction, then commits only if the
    item's objects are still the ones it flagged: one committed in between is flagged too."""
    sealed = seal_file(rt, PHOTOS[5], Manifest(case_ids=("H-5",)), actor="test")
    set_case_hold(rt, case_id="H-5", held=False, reason="closed (test)", actor="admin:t")
    made = tmp_path / "display.jpg"
    made.write_bytes(PHOTOS[6].read_bytes())
    recipe = Recipe(tool="test", version="1", args=(), params={})
    real = rt.store.legal_hold
    flagged: list[str] = []

    def legal_hold(key: str, version_id: str, on: bool) -> None:
        if not flagged:  # a worker commits a derivative, unheld (the hold is not committed)
            derivative_store.store_new(
                rt,
                item_id=sealed.item_id,
                parent_sha256=sealed.sha256,
                have=set(),
                derived=[Derived("display", made, "image/jpeg", "jpg", recipe)],
            )
        flagged.append(key)
        real(key, version_id, on)

    monkeypatch.setattr(rt.store, "legal_hold", legal_hold)
    doc = set_case_hold(rt, case_id="H-5", held=True, reason="reopened (test)", actor="admin:t")
    assert doc["items"] == [{"id": sealed.item_id, "held": True}]
    (display,) = _derivatives(rt, sealed.item_id).values()
    assert display.object_key in flagged
    assert rt.store.legal_hold_on(display.object_key, display.version_id)
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=sealed.item_id)
    assert rt.store.legal_hold_on(item.object_key, item.version_id)
