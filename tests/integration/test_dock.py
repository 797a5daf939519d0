"""The collection station in-process on real services: bytes that came by another path, two
folders with the same file name, one importer per folder, the file-name hints."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ingest.dock import DockState, _exclusive, import_folder
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from storage import repository as repo
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
    state = DockState.for_folder(rt, camera)
    with (
        _exclusive(state.path.with_suffix(".lock"), camera),
        pytest.raises(Conflict, match="another liuhen dock"),
    ):
        import_folder(rt, camera, receipts=None, erase=False, actor="dock:test")
    assert import_folder(rt, camera, receipts=None, erase=False, actor="x").sealed == []
