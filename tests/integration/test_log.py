"""The tamper-evident log on real services: a dense sequencer under concurrent seals, signed
checkpoints and leaf bundles mirrored under Object Lock, a log that survives losing the
index, and receipts a reviewer checks offline with only the published key."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from configs.settings import Settings
from ingest import verify as audit
from ingest.intake import SealResult
from ingest.ledger import LogCorrupt
from ingest.runtime import Runtime, runtime
from ingest.verify import rebuild_leaves_from_objects, verify_all
from integrity.errors import ProofError, SignatureError
from integrity.log import open_checkpoint
from integrity.merkle import leaf_hash, root_from_leaf_hashes
from integrity.note import Verifier, generate_signer_key
from integrity.verify import verify_receipt
from storage import keys
from storage import repository as repo
from storage.errors import ObjectLocked
from storage.tables import Checkpoint, LogLeaf
from tests.cli import cli_env, run_cli
from tests.conftest import SettingsFactory
from tests.integration.logkit import distinct_files, leaf_rows, seal

CONCURRENT = 50


def _latest(rt: Runtime) -> Checkpoint:
    with rt.sessions() as session:
        latest = repo.latest_checkpoint(session)
    assert latest is not None
    return latest


def test_concurrent_seals_get_dense_indexes_and_a_log_that_verifies(
    rt: Runtime, tmp_path: Path
) -> None:
    files = distinct_files(tmp_path / "in", CONCURRENT)
    start = threading.Barrier(CONCURRENT)

    def one(path: Path) -> SealResult:
        start.wait()  # all seals race for the sequencer at once
        return seal(rt, path, "A-2026-7")

    with ThreadPoolExecutor(CONCURRENT) as pool:
        sealed = list(pool.map(one, files))

    with rt.sessions() as session:
        indexes = list(session.scalars(select(LogLeaf.idx).order_by(LogLeaf.idx)))
        size = repo.log_size(session)
    assert size == 2 * CONCURRENT  # an item leaf and a "sealed" custody leaf each
    assert indexes == list(range(size))
    assert len({s.log_index for s in sealed}) == CONCURRENT
    assert len({s.item_id for s in sealed}) == CONCURRENT

    signed = rt.ledger.publish()
    published = Verifier.from_key(rt.ledger.key.verifier_key)
    checkpoint = open_checkpoint(signed.note, published)
    assert checkpoint.size == size
    rows = leaf_rows(rt)
    assert checkpoint.root_hash == root_from_leaf_hashes(leaf_hash(r.data.encode()) for r in rows)

    seen: list[tuple[int, int]] = []
    report = verify_all(
        rt, actor="auditor", progress=lambda done, total: seen.append((done, total))
    )
    assert report.ok, report.failures
    assert report.checked == CONCURRENT
    assert seen[-1] == (CONCURRENT, CONCURRENT)
    assert report.as_dict() == {
        "ok": True,
        "checked": CONCURRENT,
        "failures": [],
        "could_not_check": [],
    }


def test_each_run_is_logged_after_checking_and_the_next_run_checks_it(rt: Runtime) -> None:
    sealed = [seal(rt, p) for p in distinct_files(rt.settings.home_dir / "in", 3)]
    rt.ledger.publish()
    first = verify_all(rt, actor="auditor")
    assert first.ok, first.failures
    with rt.sessions() as session:
        events = [repo.custody_of(session, item_id=s.item_id)[-1] for s in sealed]
        size = repo.log_size(session)
    assert size == 3 * 3  # item, sealed, verify
    for event in events:
        assert (event.action, event.actor) == ("verify", "auditor")
        assert event.details == {"scope": "all", "ok": True, "failures": [], "log_ok": True}
    # The verify events are custody leaves like any other: chained, checked next time.
    rt.ledger.publish()
    again = audit.verify_item(rt, sealed[0].item_id, actor="auditor")
    assert again.ok and again.checked == 1, again.failures
    assert verify_all(rt, actor="auditor").ok


def test_checkpoints_and_leaf_bundles_are_mirrored_under_compliance_retention(
    rt: Runtime,
) -> None:
    files = distinct_files(rt.settings.home_dir / "in", 5)
    for path in files[:3]:
        seal(rt, path)
    rt.ledger.publish()
    for path in files[3:]:
        seal(rt, path)
    rt.ledger.publish()
    soon = datetime.now(UTC) + rt.settings.retention
    with rt.sessions() as session:
        stored = list(repo.checkpoints(session))
    assert [c.size for c in stored] == [6, 10]
    for cp in stored:
        key = keys.checkpoint_key(cp.size)
        assert cp.object_version is not None
        assert rt.store.read_bytes(key, cp.object_version).decode() == cp.note
        mode, until = rt.store.retention(key, cp.object_version)
        assert mode == "COMPLIANCE"
        assert until is not None and (soon - until).total_seconds() < 3600
        with pytest.raises(ObjectLocked):
            rt.store.remove_version(key, cp.object_version)
    # The bucket is shared with other logs: find ours among the versions of each bundle key.
    rows = [r.data for r in leaf_rows(rt)]
    for first, last in [(0, 5), (6, 9)]:
        key = keys.leaf_bundle_key(first, last)
        want = "".join(line + "\n" for line in rows[first : last + 1]).encode()
        ours = [
            v.version_id
            for v in rt.store.client.list_objects(rt.store.bucket, prefix=key, include_version=True)
            if v.version_id and rt.store.read_bytes(key, v.version_id) == want
        ]
        assert ours, f"no version of {key} holds leaves {first}..{last}"
        mode, _ = rt.store.retention(key, ours[0])
        assert mode == "COMPLIANCE"


def test_leaf_bundles_rebuild_the_log_without_the_index(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = distinct_files(rt.settings.home_dir / "in", 6)
    seal(rt, files[0])
    rt.ledger.publish()
    # A publish that dies after writing its bundle and checkpoint but before its row: the
    # next publish covers the same leaves again from the last checkpoint in the index.
    seal(rt, files[1])

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("simulated crash before the checkpoint row")

    with monkeypatch.context() as m:
        m.setattr(repo, "add_checkpoint", crash)
        with pytest.raises(RuntimeError):
            rt.ledger.publish()
    for path in files[2:5]:
        seal(rt, path)
    rt.ledger.publish()
    seal(rt, files[5])  # not yet under any checkpoint

    latest = _latest(rt)
    lines = rebuild_leaves_from_objects(rt.store, verifier_key=rt.ledger.key.verifier_key)
    assert lines == [r.data for r in leaf_rows(rt)][: latest.size]
    assert root_from_leaf_hashes(leaf_hash(line.encode()) for line in lines) == latest.root_hash
    report = verify_all(rt, actor="auditor")
    assert report.ok, report.failures


@pytest.mark.parametrize("backend", ["sqlite"])
def test_rebuild_takes_only_what_the_log_key_signed(
    rt: Runtime, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Two logs in one bucket write the same keys; each key picks out its own log."""
    other_settings = make_settings(
        home=tmp_path / "other", database={"url": f"sqlite:///{tmp_path / 'other.sqlite3'}"}
    )
    files = distinct_files(tmp_path / "in", 4)
    with runtime(other_settings) as other:
        for own, path in [(rt, files[0]), (other, files[1]), (rt, files[2]), (other, files[3])]:
            seal(own, path)
            own.ledger.publish()
        for own in (rt, other):
            key = own.ledger.key.verifier_key
            lines = rebuild_leaves_from_objects(own.store, verifier_key=key)
            assert lines == [r.data for r in leaf_rows(own)]
            assert verify_all(own, actor="auditor").ok
        with pytest.raises(LogCorrupt, match="give the log key"):
            rebuild_leaves_from_objects(rt.store)
        _, stranger = generate_signer_key(rt.settings.log.origin)
        assert rebuild_leaves_from_objects(rt.store, verifier_key=stranger) == []


def _cli_settings(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    return make_settings(home=tmp_path / "cli-home")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_receipts_from_ingest_verify_offline_with_the_published_key(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = _cli_settings(make_settings, tmp_path)
    env = cli_env(settings.home_dir, settings)
    files = distinct_files(tmp_path / "in", 2)
    ingested = run_cli("ingest", *files, "--case", "A-2026-9", "--json", env=env, cwd=tmp_path)
    assert ingested.returncode == 0, ingested
    items = ingested.json()["items"]
    published = run_cli("log", "key", env=env, cwd=tmp_path)
    assert published.returncode == 0, published
    key = published.stdout.strip()

    for item in items:
        checkpoint = verify_receipt(
            leaf_data=item["leaf"].encode(),
            receipt_text=item["receipt"],
            verifier_key=key,
            origin=settings.log.origin,
        )
        assert checkpoint.size > item["log_index"]
    first, second = items
    with pytest.raises(ProofError):
        verify_receipt(
            leaf_data=second["leaf"].encode(), receipt_text=first["receipt"], verifier_key=key
        )
    _, stranger = generate_signer_key(settings.log.origin)
    with pytest.raises(SignatureError):
        verify_receipt(
            leaf_data=first["leaf"].encode(), receipt_text=first["receipt"], verifier_key=stranger
        )


def test_the_public_surface_is_what_the_cli_uses() -> None:
    assert set(audit.__all__) == {
        "CouldNotCheck",
        "Failure",
        "outage_report",
        "Report",
        "rebuild_leaves_from_objects",
        "verify_all",
        "verify_item",
    }
