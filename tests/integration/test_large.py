"""A 300 MB recording through ``liuhen ingest`` and ``liuhen get`` in constant memory.

Both run as subprocesses so that their peak resident memory is their own (``wait4`` rusage),
not the test runner's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.settings import Settings
from ingest.samples import write_large_recording
from integrity.hashing import sha256_file
from tests.cli import cli_env, run_cli

SIZE_MB = 300
PEAK_RSS_LIMIT = 200 * 1000 * 1000  # 200 MB
MIB = 1024 * 1024


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_300_mb_round_trip_in_constant_memory(settings: Settings, tmp_path: Path) -> None:
    src = tmp_path / "DSJ_big.mp4"
    out = tmp_path / "copy.mp4"
    try:
        expected = write_large_recording(src, SIZE_MB)
        env = cli_env(tmp_path / "home", settings)

        ingest = run_cli("ingest", src, "--case", "BIG-1", "--json", env=env, cwd=tmp_path)
        assert ingest.returncode == 0, str(ingest)
        (item,) = ingest.json()["items"]
        assert item["sha256"] == expected
        assert item["size"] == SIZE_MB * MIB

        get = run_cli("get", item["id"], "-o", out, env=env, cwd=tmp_path)
        assert get.returncode == 0, str(get)
        assert out.stat().st_size == SIZE_MB * MIB
        assert sha256_file(out)[0] == expected

        for run in (ingest, get):
            assert run.peak_rss < PEAK_RSS_LIMIT, (
                f"liuhen {run.args[0]} peaked at {run.peak_rss / 1e6:.0f} MB RSS"
            )
    finally:
        src.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
