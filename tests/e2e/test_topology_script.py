"""``scripts/topology.py`` when a start or restart goes wrong: the process that died is named,
a start cut short by SIGTERM stops what it started and drops its database, and nothing is left
for the next start to trip on (the topology at work: tests/e2e/test_topology.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from scripts.topology import ROOT, Topology
from scripts.topology import main as topology_cli

SCRIPT = ROOT / "scripts" / "topology.py"


def databases(topo_admin: dict[str, object]) -> set[str]:
    with psycopg.connect(**topo_admin, autocommit=True) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'liuhen_topology_%'"
        )
        return {str(r[0]) for r in rows}


ADMIN: dict[str, object] = {
    "host": "127.0.0.1",
    "port": 5432,
    "user": "postgres",
    "dbname": "postgres",
}


def test_a_process_that_dies_at_start_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    topo = Topology.create(tmp_path / "t", api=1, workers=1)
    topo.state.procs["master"].args = [sys.executable, "-c", "raise SystemExit(3)"]
    topo.state.save()
    began = time.monotonic()
    with pytest.raises(SystemExit, match=r"master exited; see .*master\.log"):
        topo.start()
    assert time.monotonic() - began < 30  # not the whole start timeout
    Topology(topo.root).stop()
    assert topo.state.database not in databases(ADMIN)


def test_a_restart_that_dies_says_so(tmp_path: Path) -> None:
    topo = Topology.create(tmp_path / "t", api=1, workers=1)
    try:
        topo.state.procs["worker-1"].args = [sys.executable, "-c", "raise SystemExit(3)"]
        topo.state.save()
        with pytest.raises(SystemExit, match="worker-1 exited"):
            topology_cli(["restart", str(topo.root), "worker-1"])
    finally:
        Topology(topo.root).stop()


def test_sigterm_during_start_stops_what_it_started(tmp_path: Path) -> None:
    root = tmp_path / "t"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env["PYTHONPATH"] = str(ROOT)
    starting = subprocess.Popen(
        [sys.executable, str(SCRIPT), "start", str(root), "--api", "1", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        state = root / "topology.json"
        while not (state.exists() and json.loads(state.read_text())["procs"]["master"]["pid"]):
            assert starting.poll() is None, starting.stderr.read() if starting.stderr else ""
            assert time.monotonic() < deadline, "the master was never spawned"
            time.sleep(0.1)
        starting.send_signal(signal.SIGTERM)
        assert starting.wait(60) != 0
    finally:
        if starting.poll() is None:
            starting.kill()
    stopped = json.loads((root / "topology.stopped.json").read_text())
    pids = [p["pid"] for p in stopped["procs"].values()]
    alive = []
    for pid in filter(None, pids):
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    assert alive == []
    assert stopped["database"] not in databases(ADMIN)  # made, then dropped
