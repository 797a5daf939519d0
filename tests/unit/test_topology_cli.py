"""``scripts/topology.py`` before a topology is started and after it is stopped: a sentence
that says so, not a traceback (the topology itself: tests/e2e/test_topology.py)."""

from __future__ import annotations

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
