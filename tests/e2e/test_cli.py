"""The ``liuhen`` console script, run as a subprocess the way DESIGN.md's contracts describe it.

Every run starts a Python process (~2-3 s), so each test makes few runs and checks much.
The index is SQLite (the API tests cover PostgreSQL); the store is the session's SeaweedFS,
except in the embedded-default test, where liuhen starts its own.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from configs.settings import Settings
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from integrity.note import Checkpoint, Verifier, open_note
from integrity.verify import verify_receipt
from storage import repository as repo
from storage.db import transaction
from tests.cli import CliResult, cli_env, run_cli
from tests.conftest import TESTDATA

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
PHOTO = TESTDATA / "photos" / "gps" / "DSCN0010.jpg"
ITEM_KEYS = {
    "id",
    "sha256",
    "size",
    "media_type",
    "status",
    "problems",
    "case_ids",
    "captured_at",
    "captured_at_source",
    "received_at",
    "gps",
    "derivatives",
    "custody",
    "log_index",
}
INGEST_KEYS = {"id", "sha256", "size", "status", "case_ids", "log_index", "leaf", "receipt"}


@pytest.fixture
def backend() -> str:
    """SQLite only: the CLI is the same code on either index, and every run costs seconds."""
    return "sqlite"


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "home", settings)


def _liuhen(*args: str | Path, env: dict[str, str], cwd: Path, ok: bool = True) -> CliResult:
    result = run_cli(*args, env=env, cwd=cwd)
    if ok:
        assert result.returncode == 0, str(result)
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clip(path: Path, size: int = 50_000) -> Path:
    path.write_bytes(MP4_HEAD + hashlib.sha256(str(path).encode()).digest() * (size // 32))
    return path


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = _liuhen("--help", env=cli_env(tmp_path / "home"), cwd=tmp_path)
    for command in ("ingest", "item", "case", "get", "receipt", "log", "serve", "worker"):
        assert command in result.stdout, command
    assert result.stderr == ""
    assert not (tmp_path / "home").exists()  # --help opens nothing


def test_ingest_item_case_get_receipt_and_log(env: dict[str, str], tmp_path: Path) -> None:
    clip = _clip(tmp_path / "DSJ_0001.mp4")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO.read_bytes())
    ingested = _liuhen(
        "ingest",
        clip,
        photo,
        "--case",
        "JX-2026-7",
        "--case",
        "A/2026/001",
        "--device",
        "DSJ-0042",
        "--officer",
        "010203",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    items = ingested.json()["items"]
    assert len(items) == 2
    for entry, path, media_type in zip(
        items, (clip, photo), ("video/mp4", "image/jpeg"), strict=True
    ):
        assert INGEST_KEYS <= entry.keys()
        assert entry["sha256"] == _sha256(path)
        assert entry["size"] == path.stat().st_size
        assert entry["media_type"] == media_type
        assert entry["status"] == "sealed"
        assert entry["case_ids"] == ["A/2026/001", "JX-2026-7"]
        leaf = json.loads(entry["leaf"])
        assert (leaf["kind"], leaf["sha256"]) == ("item", entry["sha256"])
    assert "sealed" in ingested.stderr  # progress goes to stderr, never into the JSON

    vkey = _liuhen("log", "key", env=env, cwd=tmp_path).stdout.strip()
    for entry in items:
        verify_receipt(
            leaf_data=entry["leaf"].encode(), receipt_text=entry["receipt"], verifier_key=vkey
        )

    clip_id = items[0]["id"]
    item = _liuhen("item", clip_id, "--json", env=env, cwd=tmp_path).json()
    assert ITEM_KEYS <= item.keys()
    assert (item["id"], item["sha256"], item["size"]) == (
        clip_id,
        items[0]["sha256"],
        items[0]["size"],
    )
    assert item["log_index"] == items[0]["log_index"]
    assert item["case_ids"] == ["A/2026/001", "JX-2026-7"]
    assert item["problems"] == [] and item["derivatives"] == []
    assert item["gps"] is None
    assert item["received_at"].endswith("Z")
    assert [e["action"] for e in item["custody"]] == ["sealed", "view"]

    case = _liuhen("case", "A/2026/001", "--json", env=env, cwd=tmp_path).json()
    assert set(case) >= {"case_id", "items"}
    assert case["case_id"] == "A/2026/001"
    assert sorted(i["id"] for i in case["items"]) == sorted(e["id"] for e in items)

    out = tmp_path / "out" / "copy.mp4"
    out.parent.mkdir()
    _liuhen("get", clip_id, "-o", out, env=env, cwd=tmp_path)
    assert out.read_bytes() == clip.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.mp4"]

    receipt = _liuhen("receipt", clip_id, env=env, cwd=tmp_path).stdout
    fresh = verify_receipt(
        leaf_data=items[0]["leaf"].encode(), receipt_text=receipt, verifier_key=vkey
    )
    note = _liuhen("log", "checkpoint", env=env, cwd=tmp_path).stdout
    latest = Checkpoint.parse(open_note(note, [Verifier.from_key(vkey)]).text)
    # The item view and the download were logged as custody after the ingest's receipts.
    assert latest.size >= fresh.size > items[1]["log_index"] + 1
    # --cover signs one over every leaf logged so far, which is then the latest.
    covered = _liuhen("log", "checkpoint", "--cover", env=env, cwd=tmp_path).stdout
    cover = Checkpoint.parse(open_note(covered, [Verifier.from_key(vkey)]).text)
    db = Path(env["LIUHEN_DATABASE__URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM log_leaves").fetchone() == (cover.size,)
    assert cover.size >= latest.size
    assert _liuhen("log", "checkpoint", env=env, cwd=tmp_path).stdout == covered


def test_get_refuses_forged_bytes_and_leaves_no_file(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    clip = _clip(tmp_path / "clip.mp4")
    sealed = seal_file(rt, clip, Manifest(file_name=clip.name), actor="test")
    with rt.sessions() as session:
        key = repo.get_item(session, item_id=sealed.item_id).object_key
    forged = rt.store.put_bytes(key, b"forged " + clip.read_bytes()[7:], content_type="video/mp4")
    with transaction(rt.sessions) as session:
        repo.update_item(session, item_id=sealed.item_id, version_id=forged.version_id)

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _liuhen(
        "get", sealed.item_id, "-o", out_dir / "x.mp4", "--json", env=env, cwd=tmp_path, ok=False
    )
    assert result.returncode == 5, str(result)
    error = result.json()["error"]
    assert error["code"] == "hash_mismatch"
    assert sealed.sha256 in error["detail"]
    assert list(out_dir.iterdir()) == []  # neither the file nor a partial one


def test_errors_print_one_json_document_and_exit_non_zero(
    env: dict[str, str], tmp_path: Path
) -> None:
    unknown = _liuhen("item", "0000000000NOSUCHITEM", "--json", env=env, cwd=tmp_path, ok=False)
    assert unknown.returncode == 4, str(unknown)
    error = unknown.json()["error"]
    assert (error["status"], error["code"]) == (404, "not_found")
    assert "0000000000NOSUCHITEM" in error["detail"]

    folder = _liuhen("ingest", tmp_path, "--json", env=env, cwd=tmp_path, ok=False)
    assert folder.returncode == 3 and "a folder" in folder.json()["error"]["detail"]
    missing = _liuhen("ingest", tmp_path / "nope.mp4", "--json", env=env, cwd=tmp_path, ok=False)
    assert missing.returncode == 3, str(missing)
    assert "no such file" in missing.json()["error"]["detail"]

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    refused = _liuhen("ingest", empty, "--case", "A-1", "--json", env=env, cwd=tmp_path, ok=False)
    assert refused.returncode == 3, str(refused)
    assert refused.json()["error"]["code"] == "empty_file"
    assert "empty" in refused.json()["error"]["detail"]

    # What the operating system refuses is an error document too, not a traceback.
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    on_file = _liuhen("log", "key", "--json", env={**env, "LIUHEN_HOME": str(a_file)},
                      cwd=tmp_path, ok=False)  # fmt: skip
    assert on_file.returncode == 1 and "Traceback" not in on_file.stderr, str(on_file)
    assert on_file.json()["error"]["code"] == "os_error"
    into_folder = _liuhen("get", "0000000000NOSUCHITEM", "-o", tmp_path, "--json", env=env,
                          cwd=tmp_path, ok=False)  # fmt: skip
    assert into_folder.returncode == 3 and "folder" in into_folder.json()["error"]["detail"]
    noisy = _liuhen("item", "0000000000NOSUCHITEM", env={**env, "LIUHEN_LOG_LEVEL": "loud"},
                    cwd=tmp_path, ok=False)  # fmt: skip
    assert noisy.returncode == 4 and "Traceback" not in noisy.stderr, str(noisy)

    db = Path(env["LIUHEN_DATABASE__URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM cases").fetchone() == (0,)
