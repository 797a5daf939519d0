"""The people, search, link and retention commands of the ``liuhen`` script, as DESIGN.md's
contracts describe them (one JSON document on stdout with ``--json``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from configs.settings import Settings
from tests.cli import LIUHEN, cli_env, run_cli

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@pytest.fixture
def backend() -> str:
    """SQLite only: every run costs seconds, and the services are tested on both backends."""
    return "sqlite"


def test_user_link_search_hold_and_purge_commands(settings: Settings, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", settings)

    def cli(*args: str) -> dict[str, object]:
        result = run_cli(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, str(result)
        doc: dict[str, object] = result.json()
        return doc

    officer = cli("user", "add", "110001", "--role", "officer", "--unit", "U-1", "--json")
    assert set(officer) == {"user", "role", "unit", "token"}
    assert (officer["user"], officer["role"], officer["unit"]) == ("110001", "officer", "U-1")
    proc = subprocess.run(
        [str(LIUHEN), "user", "add", "rev", "--role", "reviewer", "--password-stdin", "--json"],
        input=b"correct horse\n",
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    reviewer = json.loads(proc.stdout)
    assert (reviewer["role"], reviewer["unit"]) == ("reviewer", None)
    bad = run_cli("user", "add", "x", "--role", "king", "--json", env=env, cwd=tmp_path)
    assert bad.returncode == 3, str(bad)
    assert bad.json()["error"]["code"] == "invalid_input"

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(MP4_HEAD + os.urandom(4096))
    sealed = run_cli("ingest", str(clip), "--case", "K-1", "--json", env=env, cwd=tmp_path)
    assert sealed.returncode == 0, str(sealed)
    item_id = sealed.json()["items"][0]["id"]

    no_reason = run_cli("link", item_id, "K-2", env=env, cwd=tmp_path)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    assert cli("link", item_id, "K-2", "--reason", "same stop", "--json")["case_ids"] == [
        "K-1",
        "K-2",
    ]
    assert cli("unlink", item_id, "K-1", "--reason", "wrong case", "--json")["case_ids"] == ["K-2"]

    grant = cli(
        "user", "grant", "rev", "--case", "K-2", "--until", "2099-01-01T00:00:00Z", "--json"
    )
    assert grant == {"user": "rev", "case_id": "K-2", "until": "2099-01-01T00:00:00Z"}
    token = cli("user", "token", "rev", "--json")
    assert set(token) == {"token"} and str(token["token"]).startswith("lh_")
    users = cli("user", "list", "--json")["users"]
    assert isinstance(users, list)
    assert [(u["user"], u["tokens"], [g["case_id"] for g in u["grants"]]) for u in users] == [
        ("110001", 1, []),
        ("rev", 2, ["K-2"]),
    ]
    assert cli("user", "revoke", "rev", "--case", "K-2", "--json")["revoked"] == 1
    off = cli("user", "disable", "rev", "--reason", "left the unit", "--json")
    assert off == {"user": "rev", "disabled": True, "reason": "left the unit",
                   "tokens_revoked": 2, "web_sessions_ended": 0}  # fmt: skip
    listed = cli("user", "list", "--json")["users"]
    assert isinstance(listed, list) and [u["disabled"] for u in listed] == [False, True]
    assert cli("user", "enable", "rev", "--reason", "back", "--json")["disabled"] is False
    nobody = run_cli("user", "disable", "ghost", "--reason", "x", "--json", env=env, cwd=tmp_path)
    assert nobody.returncode == 4 and nobody.json()["error"]["code"] == "not_found", str(nobody)

    found = cli("search", "--case", "K-2", "--json")
    assert set(found) == {"items", "next"}
    assert [i["id"] for i in found["items"]] == [item_id]  # type: ignore[attr-defined]
    assert found["next"] is None
    assert cli("search", "--case", "K-1", "--json")["items"] == []
    bad_box = run_cli("search", "--bbox", "1,2", "--json", env=env, cwd=tmp_path)
    assert bad_box.returncode == 3 and "bbox" in bad_box.json()["error"]["detail"]

    item = cli("item", item_id, "--json")
    history = item["case_history"]
    assert isinstance(history, list)
    assert [(h["action"], h["case_id"], h["reason"]) for h in history] == [
        ("link", "K-1", "linked at intake"),
        ("link", "K-2", "same stop"),
        ("unlink", "K-1", "wrong case"),
    ]
    assert item["retention"] == {
        "category": "evidence",
        "until": None,
        "held": True,
        "held_by": ["K-2"],
        "deleted": False,
    }

    released = cli("release", "K-2", "--reason", "closed", "--json")
    assert (released["held"], released["items"]) == (False, [{"id": item_id, "held": False}])
    assert cli("hold", "K-2", "--reason", "appeal", "--json")["held"] is True
    listing = cli("case", "K-2", "--json")
    assert (listing["case_id"], listing["held"]) == ("K-2", True)
    purge = cli("retention", "purge", "--reason", "monthly", "--json")
    assert purge == {"deleted": [], "kept": [], "dry_run": False, "reason": "monthly"}
