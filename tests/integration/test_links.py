"""Case links with reasons (service and HTTP): custody ``link`` / ``unlink`` events with the
case ID, the item's case history, case units, and the log that verifies them."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from configs.settings import Settings
from ingest import catalog, links
from ingest.errors import InvalidInput, ManifestError
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from ingest.verify import verify_all
from storage import people as pstore
from storage import repository as repo
from storage.errors import NotFound
from storage.tables import Case
from tests.people import bearer, make_user

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def _seal(rt: Runtime, tmp: Path, *cases: str, unit: str | None = None) -> str:
    path = tmp / f"{os.urandom(4).hex()}.mp4"
    path.write_bytes(MP4_HEAD + os.urandom(1024))
    return seal_file(rt, path, Manifest(case_ids=cases), actor="cli:test", unit=unit).item_id


def _doc(rt: Runtime, item_id: str) -> dict[str, object]:
    with rt.sessions() as s:
        return catalog.item_document(s, repo.get_item(s, item_id=item_id))


def test_link_and_unlink_are_custody_events_and_the_item_shows_its_history(
    rt: Runtime, tmp_path: Path
) -> None:
    item_id = _seal(rt, tmp_path, "A-1")
    out = links.link(rt, item_id=item_id, case_id="B-2", reason="same incident", actor="cli:o")
    assert out == {"id": item_id, "case_id": "B-2", "changed": True, "case_ids": ["A-1", "B-2"]}
    again = links.link(rt, item_id=item_id, case_id="B-2", reason="again", actor="cli:o")
    assert again["changed"] is False
    links.unlink(rt, item_id=item_id, case_id="A-1", reason="wrong case", actor="cli:r")

    doc = _doc(rt, item_id)
    assert doc["case_ids"] == ["B-2"]
    history = doc["case_history"]
    assert isinstance(history, list)
    assert [(h["action"], h["case_id"], h["actor"], h["reason"]) for h in history] == [
        ("link", "A-1", "cli:test", "linked at intake"),
        ("link", "B-2", "cli:o", "same incident"),
        ("unlink", "A-1", "cli:r", "wrong case"),
    ]
    custody = doc["custody"]
    assert isinstance(custody, list)
    linked = [e for e in custody if e["action"] in ("link", "unlink")]
    assert [(e["action"], e["details"]) for e in linked] == [
        ("link", {"case_id": "B-2"}),
        ("unlink", {"case_id": "A-1"}),
    ]
    assert [h["log_index"] for h in history[1:]] == [e["log_index"] for e in linked]
    assert verify_all(rt, actor="cli:test").ok  # the verifier follows these very leaves


def test_a_reason_is_required_and_nothing_changes_without_one(rt: Runtime, tmp_path: Path) -> None:
    item_id = _seal(rt, tmp_path, "A-1")
    before = _doc(rt, item_id)["custody"]
    for reason in ("", "  \n"):
        with pytest.raises(InvalidInput, match="reason"):
            links.link(rt, item_id=item_id, case_id="B-2", reason=reason, actor="cli:o")
        with pytest.raises(InvalidInput, match="reason"):
            links.unlink(rt, item_id=item_id, case_id="A-1", reason=reason, actor="cli:o")
    with pytest.raises(NotFound, match="not linked"):
        links.unlink(rt, item_id=item_id, case_id="C-3", reason="x", actor="cli:o")
    with pytest.raises(NotFound):
        links.link(rt, item_id="0000NOSUCHITEM", case_id="C-3", reason="x", actor="cli:o")
    with pytest.raises(ManifestError, match="case ID"):
        links.link(rt, item_id=item_id, case_id="bad case", reason="x", actor="cli:o")
    doc = _doc(rt, item_id)
    assert doc["custody"] == before
    assert doc["case_ids"] == ["A-1"]


def test_a_case_takes_the_unit_of_its_first_linker(rt: Runtime, tmp_path: Path) -> None:
    a = _seal(rt, tmp_path, "U-CASE", unit="U-1")
    b = _seal(rt, tmp_path, unit="U-2")
    links.link(rt, item_id=b, case_id="U-CASE", reason="r", actor="cli:o", unit="U-2")
    links.link(rt, item_id=a, case_id="NEW", reason="r", actor="cli:o", unit="U-3")
    links.link(rt, item_id=b, case_id="NEW2", reason="r", actor="cli:o")
    with rt.sessions() as s:
        assert repo.get_case(s, case_id="U-CASE").unit == "U-1"  # the first, not the later
        assert repo.get_case(s, case_id="NEW").unit == "U-3"  # the linker's unit
        assert repo.get_case(s, case_id="NEW2").unit == "U-2"  # else the item's
        assert pstore.item_unit(s, item_id=b) == "U-2"
    out = links.set_case_unit(rt, case_id="NEW", unit="U-9", reason="transfer", actor="cli:a")
    assert out == {"case_id": "NEW", "unit": "U-9", "previous": "U-3"}
    with rt.sessions() as s:
        events = [(e.action, e.reason, e.details) for e in pstore.case_events(s, case_id="NEW")]
    assert events == [("unit", "transfer", {"from": "U-3", "to": "U-9"})]


def test_http_link_and_unlink(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        auth = bearer(make_user(rt, "110001", "officer", "U-1"))
        item_id = _seal(rt, tmp_path, unit="U-1")
        url = f"/v1/items/{item_id}/cases/JX/2026/7"
        r = client.put(url, json={"reason": "seen on the footage"}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["case_ids"] == ["JX/2026/7"]
        r = client.get("/v1/cases/JX/2026/7", headers=auth)  # the case took the unit U-1
        assert r.status_code == 200, r.text
        assert (r.json()["unit"], [i["id"] for i in r.json()["items"]]) == ("U-1", [item_id])
        assert client.put(url, json={}, headers=auth).status_code == 422
        assert client.put(url, json={"reason": ""}, headers=auth).status_code == 422
        assert client.delete(url, headers=auth).status_code == 422  # ?reason= missing
        r = client.delete(url, params={"reason": "duplicate case"}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["case_ids"] == []
        history = client.get(f"/v1/items/{item_id}", headers=auth).json()["case_history"]
        assert [(h["action"], h["actor"], h["reason"]) for h in history] == [
            ("link", "user:110001", "seen on the footage"),
            ("unlink", "user:110001", "duplicate case"),
        ]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("how", ["link", "the same bytes again"])
def test_a_link_to_a_case_another_seal_is_creating_waits_without_holding_the_sequencer(
    rt: Runtime, tmp_path: Path, how: str
) -> None:
    """A group commit creates its new cases before it takes the sequencer. A link to the same
    new case meanwhile (by hand, or by the same bytes arriving again) must not take the
    sequencer first and then wait for that case row: the two would wait on each other
    (PostgreSQL breaks it after a second by failing one)."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(MP4_HEAD + os.urandom(1024))
    item_id = seal_file(rt, path, Manifest(), actor="cli:test").item_id
    now = datetime.now(UTC)
    with rt.sessions() as sealing, sealing.begin():
        repo.insert_missing(sealing, Case, ["NEW-CASE-1"], now=now)  # not committed yet
        with ThreadPoolExecutor(1) as pool:
            linking: Future[object]
            if how == "link":
                linking = pool.submit(
                    links.link, rt, item_id=item_id, case_id="NEW-CASE-1", reason="r", actor="t"
                )
            else:
                again = Manifest(case_ids=("NEW-CASE-1",))
                linking = pool.submit(seal_file, rt, path, again, actor="cli:test")
            time.sleep(0.5)  # the link is now waiting for the case row
            repo.reserve_log_indexes(sealing, 0)  # what the seal takes next: the sequencer
            sealing.commit()
            linking.result(timeout=30)
    with rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=item_id) == ["NEW-CASE-1"]
    assert verify_all(rt, actor="test").ok
