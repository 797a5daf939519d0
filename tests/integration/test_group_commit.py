"""Group commit on real services: seals that arrive while a sealing transaction runs are
committed together in the next one (one sequencer update), with the same rows, leaves and
answers as one by one; a batch that cannot commit (two seals of the same bytes) falls back to
one transaction each, so each seal still gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ingest import group_commit, intake, links
from ingest.intake import SealResult, seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime, runtime
from ingest.verify import verify_all
from storage import people
from storage import repository as repo
from storage.errors import IndexUnavailable
from tests.integration.logkit import distinct_files


def _hold_first_until_queued(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, waiting: int
) -> list[int]:
    """The first seal's transaction waits until ``waiting`` more seals queue behind it; the
    size of every sealing transaction tried is recorded (a seal alone is a batch of one)."""
    committer = group_commit.committer(rt)
    first = threading.Event()
    real_one, real_many = intake._commit_one, intake._commit_many
    batches: list[int] = []

    def one(rt_: Runtime, plan: group_commit.Plan) -> Any:
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + 60
            while len(committer._pending) < waiting and time.monotonic() < deadline:
                time.sleep(0.01)
        return real_one(rt_, plan)

    def many(rt_: Runtime, plans: list[group_commit.Plan]) -> Any:
        batches.append(len(plans))
        return real_many(rt_, plans)

    monkeypatch.setattr(intake, "_commit_one", one)
    monkeypatch.setattr(intake, "_commit_many", many)
    return batches


def _seal_at_once(rt: Runtime, jobs: list[tuple[Path, Manifest]]) -> list[SealResult]:
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [
            pool.submit(seal_file, rt, path, m, actor="test", unit="U-G") for path, m in jobs
        ]
        return [f.result() for f in futures]


def test_seals_arriving_together_share_one_transaction(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = distinct_files(tmp_path, 12)
    batches = _hold_first_until_queued(rt, monkeypatch, waiting=len(files) - 1)
    manifests = [
        Manifest(device_id=f"DEV-{i % 3}", officer_id=f"OFF-{i % 2}", case_ids=(f"G-{i % 4}",))
        for i in range(len(files))
    ]
    results = _seal_at_once(rt, list(zip(files, manifests, strict=True)))
    assert batches == [1, len(files) - 1]  # the first alone, then all the others together
    assert not any(r.duplicate for r in results)
    with rt.sessions() as s:
        assert repo.log_size(s) == 2 * len(files)
        for r, m in zip(results, manifests, strict=True):
            item = repo.get_item(s, item_id=r.item_id)
            assert item.log_index == r.log_index
            assert repo.get_leaf(s, index=r.log_index).data == r.leaf
            assert (item.device_id, item.officer_id) == (m.device_id, m.officer_id)
            assert repo.case_ids_of(s, item_id=r.item_id) == list(m.case_ids)
            (sealed,) = repo.custody_of(s, item_id=r.item_id)
            assert sealed.action == "sealed" and sealed.log_index == r.log_index + 1
            assert people.item_hold_state(s, item_id=r.item_id)  # new cases are open
            assert people.item_unit(s, item_id=r.item_id) == "U-G"
    assert all(rt.queue.job(r.item_id) is not None for r in results)  # each its pipeline job
    assert verify_all(rt, actor="test").ok


def test_a_batch_with_the_same_bytes_twice_falls_back_to_one_by_one(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = distinct_files(tmp_path, 4)
    twin = tmp_path / "twin.bin"
    twin.write_bytes(files[3].read_bytes())
    batches = _hold_first_until_queued(rt, monkeypatch, waiting=4)
    jobs = [(p, Manifest(case_ids=("T-1",))) for p in [*files, twin]]
    results = _seal_at_once(rt, jobs)
    assert batches == [1, 4, 1, 1, 1, 1]  # 4 tried together, rolled back, then one by one
    same = [r for r in results if r.sha256 == results[3].sha256]
    assert sorted(r.duplicate for r in same) == [False, True]
    assert len({r.item_id for r in same}) == 1
    with rt.sessions() as s:
        assert len({r.item_id for r in results}) == 4
        size = repo.log_size(s)
        assert [leaf.idx for leaf in repo.leaves_between(s, start=0, stop=size)] == list(
            range(size)
        )  # dense: the rolled-back batch gave its indexes back
    assert verify_all(rt, actor="test").ok


def test_an_unavailable_index_is_every_seal_of_the_batch_at_once(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The index answers "not now" to a batch (busy past its timeout, say): each of its seals
    gets that answer at once, instead of trying alone and waiting out the timeout again."""
    files = distinct_files(tmp_path, 5)
    batches = _hold_first_until_queued(rt, monkeypatch, waiting=4)
    held_many = intake._commit_many

    def busy(rt_: Runtime, plans: list[group_commit.Plan]) -> Any:
        if len(plans) > 1:
            batches.append(len(plans))
            raise IndexUnavailable("the index is busy: no write lock after 60 s (test)")
        return held_many(rt_, plans)

    monkeypatch.setattr(intake, "_commit_many", busy)
    with ThreadPoolExecutor(len(files)) as pool:
        futures = [pool.submit(seal_file, rt, p, Manifest(), actor="test") for p in files]
        outcomes = [f.exception(timeout=120) for f in futures]
    assert batches == [1, 4]  # the first alone, then the four together: none tried alone
    assert sum(o is None for o in outcomes) == 1
    assert [str(o) for o in outcomes if o is not None] == [
        "the index is busy: no write lock after 60 s (test)"
    ] * 4
    monkeypatch.undo()
    again = _seal_at_once(rt, [(p, Manifest()) for p in files])  # the devices try again
    assert sum(not r.duplicate for r in again) == 4
    assert verify_all(rt, actor="test").ok


def test_two_processes_batching_into_the_same_cases_while_others_link(
    rt: Runtime, tmp_path: Path
) -> None:
    """Two processes' batches insert their items and links before taking the sequencer, and
    settle case units and holds under it, while a third writer links items under the
    sequencer first (``links.link``): nothing deadlocks, every index is dense and real (no
    placeholder survives), and the log verifies."""
    with runtime(rt.settings) as other:
        early = seal_file(rt, distinct_files(tmp_path / "early", 1)[0], Manifest(), actor="t")
        jobs = [
            (rt if i % 2 else other, path, Manifest(case_ids=(f"S-{i % 3}", f"NEW-{i}")))
            for i, path in enumerate(distinct_files(tmp_path / "many", 24))
        ]
        with ThreadPoolExecutor(12) as pool:
            sealed = [
                pool.submit(seal_file, own, p, m, actor="t", unit="U-S") for own, p, m in jobs
            ]
            linked = [
                pool.submit(
                    links.link,
                    other,
                    item_id=early.item_id,
                    case_id=f"S-{i % 3}",
                    reason="the same stop",
                    actor="t",
                )
                for i in range(3)
            ]
            results = [f.result(timeout=120) for f in sealed]
            assert all(f.result(timeout=120)["changed"] for f in linked)
    with rt.sessions() as s:
        size = repo.log_size(s)
        assert [leaf.idx for leaf in repo.leaves_between(s, start=0, stop=size)] == list(
            range(size)
        )
        for r in results:
            item = repo.get_item(s, item_id=r.item_id)
            assert item.log_index == r.log_index >= 0
            assert repo.get_leaf(s, index=item.log_index).data == r.leaf
        assert {repo.get_case(s, case_id=f"S-{i}").unit for i in range(3)} == {"U-S"}
        assert sorted(repo.case_ids_of(s, item_id=early.item_id)) == ["S-0", "S-1", "S-2"]
    assert verify_all(rt, actor="test").ok
