"""Outages are not tampering: with the object store (or the database) down, ``verify``
lists what it could not read under ``could_not_check``, exits 75, and logs no failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from configs.settings import Settings
from ingest.runtime import Runtime, open_runtime
from ingest.verify import verify_all, verify_item
from storage import keys
from storage.seaweed import EmbeddedS3, EmbeddedSeaweed
from storage.tables import CustodyEvent, LogLeaf
from tests.cli import cli_env, run_cli
from tests.conftest import SettingsFactory
from tests.integration.logkit import distinct_files, seal

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
RETRY_S = 3.0
"""How long the store retries an unavailable operation (20 s by default)."""


@pytest.fixture
def private_store(tmp_path: Path) -> Iterator[tuple[EmbeddedSeaweed, EmbeddedS3]]:
    """A SeaweedFS of this test alone, so that the test can stop it."""
    server = EmbeddedSeaweed(tmp_path / "private-seaweed")
    s3 = server.start()
    yield server, s3
    server.release()
    server.stop()  # a no-op once the test stopped it


def _counts(rt: Runtime) -> tuple[int, int]:
    with rt.sessions() as session:
        leaves = session.scalar(select(func.count()).select_from(LogLeaf))
        verifies = session.scalar(
            select(func.count()).select_from(CustodyEvent).where(CustodyEvent.action == "verify")
        )
    return int(leaves or 0), int(verifies or 0)


def test_store_stopped_means_could_not_check_exit_75_and_no_failure_logged(
    make_settings: SettingsFactory,
    private_store: tuple[EmbeddedSeaweed, EmbeddedS3],
    tmp_path: Path,
) -> None:
    server, s3 = private_store
    settings: Settings = make_settings(
        s3={
            "endpoint": s3.endpoint,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "bucket": "outage",
            "retry_s": RETRY_S,
        }
    )
    rt = open_runtime(settings)
    try:
        sealed = [seal(rt, f, "C-OUT") for f in distinct_files(tmp_path / "in", 2)]
        rt.ledger.publish()
        assert verify_all(rt, actor="auditor").ok
        before = _counts(rt)

        server.stop()  # the store goes down under a running verifier
        started = time.monotonic()
        report = verify_all(rt, actor="auditor")
        # The store's retries are waited out once, not once per object (>= 6 reads here).
        assert time.monotonic() - started < 4 * RETRY_S
        assert report.failures == []
        assert (report.ok, report.checked, report.exit_status) == (False, 0, 75)
        unchecked = {(c.item_id, c.key) for c in report.could_not_check}
        for item in sealed:
            assert (item.item_id, keys.original_key(item.sha256)) in unchecked
        assert all(c.reason for c in report.could_not_check)
        assert sum(c.reason.startswith("not tried: ") for c in report.could_not_check) >= 2
        doc = report.as_dict()
        assert set(doc) == {"ok", "checked", "failures", "could_not_check"}
        assert set(doc["could_not_check"][0]) == {"item_id", "key", "version_id", "reason"}

        one = verify_item(rt, sealed[0].item_id, actor="auditor")
        assert (one.failures, one.exit_status) == ([], 75)
        assert {c.item_id for c in one.could_not_check} == {sealed[0].item_id}
        assert _counts(rt) == before  # no leaf at all, let alone a failing verify leaf

        env = cli_env(settings.home_dir, settings) | {"LIUHEN_S3__RETRY_S": str(RETRY_S)}
        for args in (("--all",), (sealed[1].item_id,)):
            run = run_cli("verify", *args, "--json", env=env, cwd=tmp_path)
            assert run.returncode == 75, str(run)
            out = run.json()
            assert (out["ok"], out["failures"]) == (False, [])
            assert out["could_not_check"], out
            assert "Traceback" not in run.stderr
        assert _counts(rt) == before
    finally:
        rt.close()


def test_database_down_means_exit_75_not_a_traceback(settings: Settings, tmp_path: Path) -> None:
    env = cli_env(settings.home_dir, settings) | {
        "LIUHEN_DATABASE__URL": "postgresql+psycopg://liuhen@127.0.0.1:9/none"
    }
    run = run_cli("verify", "--all", "--json", env=env, cwd=tmp_path)
    assert run.returncode == 75, str(run)
    out = run.json()
    assert (out["ok"], out["checked"], out["failures"]) == (False, 0, [])
    (only,) = out["could_not_check"]
    assert only["reason"].startswith("database unavailable")
    assert "Traceback" not in run.stderr
