"""The collection station in-process on real services: bytes that came by another path, two
folders with the same file name, one importer per folder, the file-name hints, a name the
camera reuses after an erase, a failed seal retried, names a manifest refuses, a camera clock
ahead of the station's, a receipts folder around the camera folder, the station's unit."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.dock import DockState, _exclusive, import_folder
from ingest.errors import InvalidInput
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from storage import people
from storage import repository as repo
from storage.db import transaction
from storage.errors import Conflict
from tests.integration.devicekit import clip


def _old(path: Path) -> None:
    t = time.time() - 3600
    os.utime(path, (t, t))


def test_bytes_from_another_path_are_logged_as_received_again(rt: Runtime, tmp_path: Path) -> None:
    camera = tmp_path / "cam"
    (camera / "100MEDIA").mkdir(parents=True)
    (camera / "101MEDIA").mkdir()
    data = clip(30_000)
    first = camera / "100MEDIA" / "DSJ_A1234567_20260301_080000.MP4"
    first.write_bytes(data)
    same_name = camera / "101MEDIA" / first.name
    same_name.write_bytes(clip(30_000))
    for f in (first, same_name):
        _old(f)
    pushed = tmp_path / "pushed.mp4"
    pushed.write_bytes(data)
    earlier = seal_file(rt, pushed, Manifest(file_name="pushed.mp4"), actor="test")
    receipts = tmp_path / "receipts"
    report = import_folder(rt, camera, receipts=receipts, erase=False, actor="dock:test",
                           case_ids=("CASE-9",))  # fmt: skip
    assert report.failed == [] and len(report.sealed) == 2
    by_file = {Path(s["file"]): s for s in report.sealed}
    assert by_file[first]["id"] == earlier.item_id
    with rt.sessions() as s:
        actions = [e.action for e in repo.custody_of(s, item_id=earlier.item_id)]
        assert actions[-1] == "received_again" and "link" in actions
        assert repo.case_ids_of(s, item_id=earlier.item_id) == ["CASE-9"]
        other = repo.get_item(s, item_id=by_file[same_name]["id"])
        assert (other.device_id, other.officer_id) == ("A1234567", None)
        assert other.captured_at is not None and other.captured_at.isoformat().startswith(
            "2026-03-01T00:00:00"  # 08:00 local (+08:00) from the file name
        )
    for f in (first, same_name):  # two folders, one name: two receipts
        rel = f.relative_to(camera).parent / f"{f.name}.receipt.json"
        assert json.loads((receipts / rel).read_text())["id"] == by_file[f]["id"]
    again = import_folder(rt, camera, receipts=receipts, erase=False, actor="dock:test")
    assert again.sealed == [] and {s["reason"] for s in again.skipped} == {"already imported"}


def test_one_importer_per_folder(rt: Runtime, tmp_path: Path) -> None:
    camera = tmp_path / "cam"
    camera.mkdir()
    with (
        _exclusive(DockState.path_for(rt, camera).with_suffix(".lock"), camera),
        pytest.raises(Conflict, match="another liuhen dock"),
    ):
        import_folder(rt, camera, receipts=None, erase=False, actor="dock:test")
    assert import_folder(rt, camera, receipts=None, erase=False, actor="x").sealed == []


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(4000))
    _old(path)
    return path


def test_a_name_the_camera_numbers_again_after_an_erase_is_imported(
    rt: Runtime, tmp_path: Path
) -> None:
    """Cameras number afresh after a wipe: the next IMG_0001.JPG is other bytes, not a file
    already imported (it used to be skipped for ever, and left on the card), and the first
    one's receipt stays beside the second's."""
    camera, receipts = tmp_path / "cam", tmp_path / "receipts"
    first = _photo(camera / "IMG_0001.JPG")
    one = import_folder(rt, camera, receipts=receipts, erase=True, actor="dock:test")
    assert len(one.sealed) == 1 and not first.exists()
    _photo(camera / "IMG_0001.JPG")
    two = import_folder(rt, camera, receipts=receipts, erase=True, actor="dock:test")
    assert two.failed == [] and len(two.sealed) == 1, two.as_dict()
    assert two.sealed[0]["id"] != one.sealed[0]["id"] and not first.exists()
    kept = {json.loads(p.read_text())["id"] for p in receipts.glob("*.receipt.json")}
    assert kept == {one.sealed[0]["id"], two.sealed[0]["id"]}


def test_a_seal_that_failed_is_sealed_again_with_its_cases_not_adopted(
    rt: Runtime, tmp_path: Path
) -> None:
    """The first run's seal fails (here a case ID the profile refuses) after the importer noted
    it was sealing; the bytes are already an item (a device pushed them). The retry must link
    the case and log ``received_again``, not adopt the item as it is and then erase the file."""
    camera = tmp_path / "cam"
    photo = _photo(camera / "IMG_0002.JPG")
    pushed = tmp_path / "pushed.jpg"
    pushed.write_bytes(photo.read_bytes())
    earlier = seal_file(rt, pushed, Manifest(file_name="pushed.jpg"), actor="device:D1")
    bad = import_folder(
        rt, camera, receipts=None, erase=True, actor="dock:t", case_ids=("bad id!",)
    )
    assert len(bad.failed) == 1 and photo.exists()
    good = import_folder(
        rt, camera, receipts=None, erase=True, actor="dock:t", case_ids=("CASE-7",)
    )
    assert [s["id"] for s in good.sealed] == [earlier.item_id] and not photo.exists()
    with rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=earlier.item_id) == ["CASE-7"]
        actions = [e.action for e in repo.custody_of(s, item_id=earlier.item_id)]
    assert actions[-1] == "received_again" and "link" in actions


def test_names_a_manifest_refuses_are_imported_and_reported_as_text(
    rt: Runtime, tmp_path: Path
) -> None:
    """A newline, a zero-width space, bytes that are not UTF-8 (a card mounted with another
    character set), full-width digits where the officer's number goes: each file is sealed,
    its name kept readably, and the report stays one JSON document (it used to stop the whole
    import with a traceback at the first such name)."""
    camera = tmp_path / "cam"
    names = ["a.jpg", "b\nx.jpg", "c\u200b.jpg", os.fsdecode(b"\xd6\xd0.jpg"), "z.jpg"]
    for name in names:
        _photo(camera / name)
    wide = "20260301080000_\uff11\uff12\uff13\uff14\uff15\uff16_0001.MP4"
    (camera / wide).write_bytes(clip(20_000))
    _old(camera / wide)
    report = import_folder(rt, camera, receipts=tmp_path / "r", erase=False, actor="dock:t")
    assert report.failed == [] and len(report.sealed) == len(names) + 1, report.as_dict()
    text = json.dumps(report.as_dict(), ensure_ascii=False)
    files = [x["file"] for x in json.loads(text.encode("utf-8"))["sealed"]]
    assert any(f.endswith("/\\xd6\\xd0.jpg") for f in files), files
    with rt.sessions() as s:
        kept = {repo.get_item(s, item_id=x["id"]).original_name for x in report.sealed}
        officers = {repo.get_item(s, item_id=x["id"]).officer_id for x in report.sealed}
    assert {"b<U+000A>x.jpg", "c<U+200B>.jpg", "<0xD6><0xD0>.jpg", wide} <= kept
    assert officers == {None}


def test_a_camera_clock_ahead_of_the_station_does_not_stall_the_import(
    rt: Runtime, tmp_path: Path
) -> None:
    """FAT keeps local time: a file can look an hour newer than now. The import waits one
    stability interval for it (its identity unchanged), not the hour."""
    camera = tmp_path / "cam"
    photo = _photo(camera / "IMG_0003.JPG")
    ahead = time.time() + 3600
    os.utime(photo, (ahead, ahead))
    t0 = time.monotonic()
    report = import_folder(rt, camera, receipts=None, erase=False, actor="dock:t")
    took = time.monotonic() - t0
    assert len(report.sealed) == 1, report.as_dict()
    assert rt.settings.intake.dock_stable_s <= took < rt.settings.intake.dock_stable_s + 20


def test_a_receipts_folder_around_the_camera_folder_leaves_its_files_to_import(
    rt: Runtime, tmp_path: Path
) -> None:
    station = tmp_path / "station"
    _photo(station / "cam1" / "DCIM" / "IMG_0004.JPG")
    report = import_folder(rt, station / "cam1", receipts=station, erase=False, actor="dock:t")
    assert len(report.sealed) == 1, report.as_dict()
    assert (station / "DCIM" / "IMG_0004.JPG.receipt.json").is_file()


def test_the_stations_unit_is_given_to_what_it_seals(rt: Runtime, tmp_path: Path) -> None:
    camera = tmp_path / "cam"
    plain = _photo(camera / "DCIM" / "IMG_0005.JPG")  # no device or officer in the name
    with pytest.raises(InvalidInput, match="unit '二中队' is not known here"):
        import_folder(rt, camera, receipts=None, erase=False, actor="dock:t", unit="二中队")
    assert not DockState.path_for(rt, camera).exists()  # refused before anything was hashed
    with transaction(rt.sessions) as s:
        people.set_person_unit(s, person_id="010002", unit="二中队", now=datetime.now(UTC))
    report = import_folder(rt, camera, receipts=None, erase=False, actor="dock:t",
                           case_ids=("CASE-U2",), unit="二中队")  # fmt: skip
    assert [Path(s["file"]) for s in report.sealed] == [plain], report.as_dict()
    item_id = report.sealed[0]["id"]
    with rt.sessions() as s:
        assert people.item_unit(s, item_id=item_id) == "二中队"
        assert repo.get_case(s, case_id="CASE-U2").unit == "二中队"  # an unclaimed case too
    without = import_folder(rt, tmp_path / "cam2", receipts=None, erase=False, actor="dock:t")
    assert without.sealed == []
    _photo(tmp_path / "cam2" / "IMG_0006.JPG")
    unitless = import_folder(rt, tmp_path / "cam2", receipts=None, erase=False, actor="dock:t")
    with rt.sessions() as s:
        assert people.item_unit(s, item_id=unitless.sealed[0]["id"]) is None
