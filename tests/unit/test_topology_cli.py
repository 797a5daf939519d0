"""``scripts/topology.py`` before a topology is started and after it is stopped: a sentence
that says so, not a traceback (the topology itself: tests/e2e/test_topology.py)."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from scripts.topology import main as topology_cli


@pytest.mark.parametrize("command", [["status"], ["env"], ["stop"], ["kill", "worker-1"]])
def test_no_topology_under_the_directory(tmp_path: Path, command: list[str]) -> None:
    with pytest.raises(SystemExit, match=r"no running topology under .*: python scripts/topology"):
        topology_cli([command[0], str(tmp_path), *command[1:]])


def test_a_stopped_topology_says_it_was_stopped(tmp_path: Path) -> None:
    (tmp_path / "topology.stopped.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"\(it was stopped\)"):
        topology_cli(["status", str(tmp_path)])


def test_a_stopped_topology_is_not_started_again(tmp_path: Path) -> None:
    """Its database was dropped: its volumes would hold objects no index knows."""
    (tmp_path / "topology.stopped.json").write_text("{}")
    with pytest.raises(SystemExit, match="holds a stopped topology: remove it"):
        topology_cli(["start", str(tmp_path)])
    assert not (tmp_path / "keys").exists()


def test_two_commands_at_once_the_second_is_refused(tmp_path: Path) -> None:
    with (tmp_path / ".topology.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SystemExit, match="another topology command is running"):
            topology_cli(["start", str(tmp_path)])
    assert not (tmp_path / "topology.json").exists()


@pytest.mark.parametrize("setting", ["QUEUE__HEARTBEAT_S=1", "LIUHEN_QUEUE__HEARTBEAT_S"])
def test_a_setting_must_be_a_liuhen_variable_with_a_value(tmp_path: Path, setting: str) -> None:
    with pytest.raises(SystemExit, match="--set wants LIUHEN_NAME=value"):
        topology_cli(["start", str(tmp_path), "--set", setting])


def test_a_key_left_in_the_directory_is_refused_and_kept(tmp_path: Path) -> None:
    """A start killed outright left its key (or DIR is some home): never overwritten, and
    never removed by the start that refused it."""
    key = tmp_path / "keys" / "log.key"
    key.parent.mkdir()
    key.write_text("a signer key\n")
    with pytest.raises(SystemExit, match="exists from an earlier start"):
        topology_cli(["start", str(tmp_path)])
    assert key.read_text() == "a signer key\n"
    assert not (tmp_path / "topology.json").exists()
