"""The log sequencer on real services: appends never wait on the signer's network calls,
concurrent seals share checkpoints, exactly one signer at a time across processes, two signers
can never store diverging checkpoints, and a process starts without reading the log."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest import signing
from ingest.errors import CheckpointPending, SignerRace
from ingest.ledger import Ledger, LogCorrupt
from ingest.runtime import Runtime, runtime
from ingest.signing import CheckpointSigner, SignerLock
from integrity.log import SignedCheckpoint
from integrity.merkle import TILE_WIDTH, MerkleTree, leaf_hash, verify_consistency
from integrity.verify import verify_receipt
from storage import keys
from storage import repository as repo
from storage.db import transaction
from storage.errors import ObjectStoreError
from tests.integration.logkit import leaf_rows, sql


def _append(rt: Runtime, n: int = 1, tag: str = "x") -> list[int]:
    now = datetime.now(UTC)
    with transaction(rt.sessions) as s:
        leaves = rt.ledger.append_many(
            s, [("custody", None, {"v": 1, "tag": tag, "n": i}) for i in range(n)], now=now
        )
    return [leaf.index for leaf in leaves]


def _checkpoint_sizes(rt: Runtime) -> list[int]:
    with rt.sessions() as session:
        return [c.size for c in repo.checkpoints(session)]


def _assert_checkpoints_extend_each_other(rt: Runtime) -> None:
    """Every stored checkpoint is the rows' root at its size, and each extends the last."""
    tree = MerkleTree.from_leaf_hashes(leaf_hash(r.data.encode()) for r in leaf_rows(rt))
    with rt.sessions() as session:
        stored = list(repo.checkpoints(session))
    for cp in stored:
        assert cp.root_hash == tree.root(cp.size), f"checkpoint {cp.size}"
    for cp in stored:
        assert cp.object_version is not None
        assert rt.store.read_bytes(keys.checkpoint_key(cp.size), cp.object_version) == (
            cp.note.encode()
        )
    for old, new in itertools.pairwise(stored):
        verify_consistency(
            size1=old.size,
            size2=new.size,
            proof=tree.consistency_proof(old.size, new.size),
            root1=old.root_hash,
            root2=new.root_hash,
        )


def test_appends_go_on_while_the_signer_waits_on_the_network(rt: Runtime) -> None:
    _append(rt, 3)
    entered, release = threading.Event(), threading.Event()
    real_put = rt.store.put_bytes

    def slow_put(key: str, data: bytes, **kw: Any) -> Any:
        if key.startswith("log/checkpoints/"):
            entered.set()
            assert release.wait(30)
        return real_put(key, data, **kw)

    rt.store.put_bytes = slow_put  # type: ignore[method-assign]
    with ThreadPoolExecutor(1) as pool:
        signing = pool.submit(rt.ledger.publish)
        assert entered.wait(30), "the signer never reached the object store"
        t0 = time.monotonic()
        more = _append(rt, 2, tag="during")  # the sequencer is free: this commits at once
        elapsed = time.monotonic() - t0
        assert rt.ledger.latest_checkpoint() is None  # nothing is stored before the puts end
        release.set()
        signed = signing.result(timeout=60)
    assert elapsed < 5, f"an append waited {elapsed:.1f} s on the signer"
    assert more == [3, 4]
    assert signed.checkpoint.size == 3
    assert rt.ledger.publish().checkpoint.size == 5


def test_concurrent_seals_share_checkpoints(rt: Runtime) -> None:
    rt.ledger.interval = 0.3
    _append(rt)
    rt.ledger.publish()
    sealers = 24
    start = threading.Barrier(sealers)

    def one(i: int) -> tuple[int, str]:
        start.wait()
        (index,) = _append(rt, tag=f"seal-{i}")
        return index, rt.ledger.receipt(index)

    with ThreadPoolExecutor(sealers) as pool:
        receipts = list(pool.map(one, range(sealers)))
    rows = {r.idx: r.data for r in leaf_rows(rt)}
    for index, receipt in receipts:
        verify_receipt(
            leaf_data=rows[index].encode(),
            receipt_text=receipt,
            verifier_key=rt.ledger.key.verifier_key,
        )
    with rt.sessions() as session:
        stored = list(repo.checkpoints(session))
    sizes = [c.size for c in stored]
    assert sizes[-1] == sealers + 1
    assert len(sizes) - 1 <= sealers // 3, f"{sealers} seals made checkpoints {sizes}"
    for old, new in itertools.pairwise(stored):  # at most one per interval
        assert (new.created_at - old.created_at).total_seconds() >= 0.9 * rt.ledger.interval
    _assert_checkpoints_extend_each_other(rt)


@pytest.fixture
def second(rt: Runtime) -> Iterator[Runtime]:
    """Another process's view of the same log: its own engine, pool and ledger."""
    with runtime(rt.settings) as other:
        yield other


def test_two_signers_racing_store_one_chain(rt: Runtime, second: Runtime) -> None:
    """Two ledgers with their own connections append and publish as fast as they can."""
    for ledger in (rt.ledger, second.ledger):
        ledger.interval = 0

    def churn(own: Runtime, tag: str) -> list[SignedCheckpoint]:
        signed = []
        for i in range(15):
            _append(own, 1 + i % 3, tag=f"{tag}-{i}")
            signed.append(own.ledger.publish())
        return signed

    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(churn, own, tag) for own, tag in ((rt, "a"), (second, "b"))]
        for result in results:
            result.result(timeout=300)
    _assert_checkpoints_extend_each_other(rt)
    final = rt.ledger.publish()
    with rt.sessions() as session:
        assert final.checkpoint.size == repo.log_size(session)
        assert repo.log_tree_state(session) == (final.checkpoint.size, final.checkpoint.root_hash)
    _assert_checkpoints_extend_each_other(rt)


def test_a_signer_that_got_past_the_lock_cannot_store_a_second_head(
    rt: Runtime, second: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the lock defeated, both sign from the same state; the compare-and-set on
    ``log_tree`` lets exactly one store its checkpoint."""
    _append(rt, 4)
    rt.ledger.publish()
    _append(rt, 3)
    _append(second, 2)

    @contextlib.contextmanager
    def always(self: SignerLock) -> Iterator[bool]:
        yield True

    monkeypatch.setattr(SignerLock, "hold", always)
    both_signed = threading.Barrier(2)
    real_mirror = CheckpointSigner._mirror

    def mirror_after_both(self: CheckpointSigner, *args: Any, **kw: Any) -> Any:
        both_signed.wait(30)
        return real_mirror(self, *args, **kw)

    monkeypatch.setattr(CheckpointSigner, "_mirror", mirror_after_both)

    def sign(own: Runtime) -> SignedCheckpoint | Exception:
        try:
            return own.ledger.signer.sign(own.store)
        except SignerRace as e:
            return e

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(sign, (rt, second)))
    races = [o for o in outcomes if isinstance(o, SignerRace)]
    assert len(races) == 1, outcomes
    assert _checkpoint_sizes(rt) == [4, 9]
    _assert_checkpoints_extend_each_other(rt)
    monkeypatch.undo()
    _append(second, 1)
    assert second.ledger.publish().checkpoint.size == 10
    _assert_checkpoints_extend_each_other(rt)


def test_the_log_state_is_read_in_one_moment(
    rt: Runtime, second: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process appends and signs between the first of the state's three reads and the
    others: on PostgreSQL each statement would see its own moment, and the leaves read before
    the new checkpoint would look like a log that shrank."""
    _append(rt, 2)
    rt.ledger.publish()
    meddled: list[str] = []

    def then_another_signs(name: str) -> Any:
        real = getattr(repo, name)

        def read(session: Any) -> Any:
            got = real(session)
            if not meddled:
                meddled.append(name)
                _append(second, 3)
                second.ledger.signer.sign(second.store)
            return got

        return read

    for name in ("log_size", "log_tree_state", "latest_checkpoint"):
        monkeypatch.setattr(repo, name, then_another_signs(name))
    state = rt.ledger.signer.state()
    monkeypatch.undo()
    assert meddled and _checkpoint_sizes(rt) == [2, 5]
    assert state.latest is not None
    assert (state.latest.size, state.tree_size, state.size) == (2, 2, 2)
    assert rt.ledger.publish().checkpoint.size == 5


def test_the_signer_lock_excludes_another_process(rt: Runtime) -> None:
    url = rt.engine.url.render_as_string(hide_password=False)
    holder = textwrap.dedent(
        f"""
        import sys, time
        from storage.db import make_engine
        from ingest.signing import SignerLock
        with SignerLock(make_engine({url!r})).hold() as held:
            print("held" if held else "busy", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with rt.ledger.signer.lock.hold() as held:
            assert not held
        rt.ledger.receipt_wait_s = 0.5
        _append(rt)
        with pytest.raises(CheckpointPending, match="ask again later"):
            rt.ledger.publish()  # the other process holds the lock and signs nothing
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
    with rt.ledger.signer.lock.hold() as held:
        assert held  # it went away with the process
    assert rt.ledger.publish().checkpoint.size == 1


def test_the_receipts_of_one_round_read_the_head_once_not_each(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 seals waiting together: one thread reads the head (or signs) for all, and receipts
    asked right after their checkpoint came out are proved against it without reading it."""
    rt.ledger.interval = 0.3
    _append(rt)
    rt.ledger.publish()
    sealers = 24
    heads = 0
    real = Ledger._head

    def counted(self: Ledger) -> Any:
        nonlocal heads
        heads += 1
        return real(self)

    monkeypatch.setattr(Ledger, "_head", counted)
    indexes = _append(rt, sealers)
    start = threading.Barrier(sealers)

    def one(index: int) -> str:
        start.wait()
        return rt.ledger.receipt(index)

    with ThreadPoolExecutor(sealers) as pool:
        receipts = list(pool.map(one, indexes))
    rt.ledger.interval = 60  # however slow this machine: the round stays fresh
    again = [rt.ledger.receipt(i) for i in indexes]  # no head read either
    rows = {r.idx: r.data for r in leaf_rows(rt)}
    for index, receipt in zip(indexes * 2, receipts + again, strict=True):
        verify_receipt(
            leaf_data=rows[index].encode(),
            receipt_text=receipt,
            verifier_key=rt.ledger.key.verifier_key,
        )
    assert 1 <= heads <= 4, f"{heads} head reads for {2 * sealers} receipts"


def test_a_new_process_reads_no_old_leaves(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening, proving and signing read the tiles and the new rows, plus the fixed scrub
    window: never the whole log."""
    size = 3 * signing.SCRUB_ROWS
    _append(rt, size)
    rt.ledger.publish()
    data = leaf_rows(rt)[size - 5].data.encode()
    read: list[tuple[int, int]] = []
    real = repo.leaf_rows_between

    def counting(session: Any, *, start: int, stop: int) -> Any:
        read.append((start, stop))
        return real(session, start=start, stop=stop)

    monkeypatch.setattr(repo, "leaf_rows_between", counting)
    with runtime(rt.settings) as fresh:
        receipt = fresh.ledger.receipt(size - 5)
        verify_receipt(
            leaf_data=data, receipt_text=receipt, verifier_key=fresh.ledger.key.verifier_key
        )
        assert fresh.ledger.publish().checkpoint.size == size
        assert read == []
        _append(fresh, 2)
        assert fresh.ledger.publish().checkpoint.size == size + 2
    # 2 new leaves: the scrub reads its smallest window, not SCRUB_ROWS
    assert sum(stop - start for start, stop in read) <= signing.SCRUB_MIN + 2


def test_full_tiles_are_mirrored(rt: Runtime) -> None:
    _append(rt, TILE_WIDTH + 10)
    rt.ledger.publish()
    with rt.sessions() as session:
        tile = repo.read_tiles(session, keys=[(0, 0)])[(0, 0)]
    key = keys.tile_key(0, 0)
    assert rt.store.read_bytes(key, rt.store.latest_version(key)) == tile
    assert tile == b"".join(bytes(r.leaf_hash) for r in leaf_rows(rt)[:TILE_WIDTH])


def test_a_checkpoints_mirror_puts_are_in_flight_together(rt: Runtime) -> None:
    """The leaf bundle, a full tile and the checkpoint go to the store at once: each put
    waits at a barrier that only all three together pass (one after another, it breaks).
    The published copy, ``log/checkpoint``, goes after them (it must not name what is not
    stored yet)."""
    _append(rt, TILE_WIDTH + 3)
    together = threading.Barrier(3, timeout=30)
    real_put = rt.store.put_bytes
    keys_put: list[str] = []

    def meeting_put(key: str, data: bytes, **kw: Any) -> Any:
        keys_put.append(key)
        if key != keys.PUBLISHED_CHECKPOINT:
            together.wait()
        return real_put(key, data, **kw)

    rt.store.put_bytes = meeting_put  # type: ignore[method-assign]
    signed = rt.ledger.publish()
    assert signed.checkpoint.size == TILE_WIDTH + 3
    assert sorted(keys_put[:3]) == sorted(
        [
            keys.leaf_bundle_key(0, TILE_WIDTH + 2),
            keys.tile_key(0, 0),
            keys.checkpoint_key(TILE_WIDTH + 3),
        ]
    )
    assert keys_put[3:] == [keys.PUBLISHED_CHECKPOINT]
    _assert_checkpoints_extend_each_other(rt)


def test_a_mirror_put_that_fails_stores_no_checkpoint(rt: Runtime) -> None:
    """One failed put among those in flight: the others end, no checkpoint row is stored,
    and the next signing covers the same leaves."""
    _append(rt, 5)
    real_put = rt.store.put_bytes

    def failing_put(key: str, data: bytes, **kw: Any) -> Any:
        if key.startswith("log/leaves/"):
            raise ObjectStoreError("the store refused the bundle")
        return real_put(key, data, **kw)

    rt.store.put_bytes = failing_put  # type: ignore[method-assign]
    with pytest.raises(ObjectStoreError, match="refused the bundle"):
        rt.ledger.signer.sign(rt.store)
    assert _checkpoint_sizes(rt) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("liuhen-mirror")]
    rt.store.put_bytes = real_put  # type: ignore[method-assign]
    assert rt.ledger.publish().checkpoint.size == 5
    _assert_checkpoints_extend_each_other(rt)


def test_an_index_only_ledger_hands_out_receipts_and_waits_bounded(rt: Runtime) -> None:
    _append(rt, 3)
    rt.ledger.publish()
    (late,) = _append(rt)
    reader = Ledger(
        sessions=rt.sessions,
        store=None,
        key=rt.ledger.key,
        origin=rt.ledger.origin,
        retention=rt.settings.retention,
        receipt_wait_s=0.4,
    )
    latest = reader.latest_checkpoint()
    assert latest is not None and latest.checkpoint.size == 3
    verify_receipt(
        leaf_data=leaf_rows(rt)[1].data.encode(),
        receipt_text=reader.receipt(1),
        verifier_key=rt.ledger.key.verifier_key,
    )
    t0 = time.monotonic()
    with pytest.raises(CheckpointPending, match="no object store"):
        reader.receipt(late)
    assert 0.3 < time.monotonic() - t0 < 5
    rt.ledger.receipt(late)  # a signer comes by
    assert reader.receipt(late)


def test_an_index_from_before_the_tiles_builds_them_once(rt: Runtime) -> None:
    _append(rt, 600)
    rt.ledger.publish()
    sql(rt, "DELETE FROM log_tiles")
    sql(rt, "UPDATE log_tree SET size = 0, root_hash = :r WHERE id = 1", r=MerkleTree().root())
    assert rt.ledger.latest_checkpoint() is None  # not provable until the tiles are back
    receipt = rt.ledger.receipt(599)
    verify_receipt(
        leaf_data=leaf_rows(rt)[599].data.encode(),
        receipt_text=receipt,
        verifier_key=rt.ledger.key.verifier_key,
    )
    assert _checkpoint_sizes(rt) == [600]  # the same checkpoint: nothing new was signed


def test_an_edited_tile_is_refused(rt: Runtime) -> None:
    _append(rt, 300)
    rt.ledger.publish()
    with rt.sessions() as session:
        tile = repo.read_tiles(session, keys=[(0, 1)])[(0, 1)]
    sql(rt, "UPDATE log_tiles SET hashes = :h WHERE level = 0 AND idx = 1", h=bytes(32) + tile[32:])
    with pytest.raises(LogCorrupt, match="do not prove leaf 257"):
        rt.ledger.receipt(257)
    _append(rt)
    with pytest.raises(LogCorrupt, match="refusing to sign"):
        rt.ledger.publish()


def test_leaves_nobody_asked_about_are_signed_in_the_background(rt: Runtime) -> None:
    _append(rt, 3)  # say, derivative leaves from a worker: no receipt is asked for them
    rt.ledger.interval = 0.1
    stop = rt.ledger.sign_in_background()
    try:
        deadline = time.monotonic() + 20
        while (latest := rt.ledger.latest_checkpoint()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert latest is not None and latest.checkpoint.size == 3
        _append(rt, 2)
        while latest.checkpoint.size < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
            latest = rt.ledger.latest_checkpoint() or latest
        assert latest.checkpoint.size == 5
    finally:
        stop()
    _append(rt)
    time.sleep(1.5)
    assert _checkpoint_sizes(rt) == [3, 5]  # stopped: nothing more is signed


def test_a_signer_overtaken_after_its_lock_was_lost_is_in_a_race_not_on_a_fork(
    rt: Runtime, settings: Any
) -> None:
    """Signer A reads the log, then (its lock's connection dropped) B signs further and
    publishes. A then finds a published checkpoint beyond its own view of the index: that is
    SignerRace (try again), not LogCorrupt (restore the index), and A stores nothing."""
    _append(rt, 5, "a")
    rt.ledger.publish()
    _append(rt, 5, "b")
    signer = rt.ledger.signer
    real_extend = signer._extend

    def extend_then_overtaken(*args: Any, **kwargs: Any) -> Any:
        bundle = real_extend(*args, **kwargs)
        _append(rt, 5, "c")
        with runtime(settings) as other:
            assert other.ledger.publish().checkpoint.size == 15
        return bundle

    signer._extend = extend_then_overtaken  # type: ignore[method-assign]
    with pytest.raises(SignerRace, match="another signer moved the log from 5 leaves first"):
        signer.sign(rt.store)
    assert _checkpoint_sizes(rt) == [5, 15]
    _assert_checkpoints_extend_each_other(rt)


def test_a_signer_overtaken_by_one_between_its_objects_and_its_row_is_in_a_race(
    rt: Runtime, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but B has stored and published checkpoint 15 and not (yet, or ever) its
    row: the tree state has not moved, the index holds those 15 leaves. A is in a race
    (SignerRace), not on a restored index (LogCorrupt); its next round signs them."""
    _append(rt, 5, "a")
    rt.ledger.publish()
    _append(rt, 5, "b")
    signer = rt.ledger.signer
    real_published = signer._published

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("B dies before its checkpoint row")

    def overtaken_then_read(store: Any) -> Any:  # A has read the index: 10 leaves
        _append(rt, 5, "c")
        with runtime(settings) as other, monkeypatch.context() as m:
            m.setattr(repo, "add_checkpoint", crash)
            with pytest.raises(RuntimeError, match="B dies"):
                other.ledger.publish()
        return real_published(store)

    signer._published = overtaken_then_read  # type: ignore[method-assign]
    with pytest.raises(SignerRace, match="another signer moved the log from 5 leaves first"):
        signer.sign(rt.store)
    signer._published = real_published  # type: ignore[method-assign]
    assert _checkpoint_sizes(rt) == [5]
    assert signer.sign(rt.store).checkpoint.size == 15
    assert _checkpoint_sizes(rt) == [5, 15]
    _assert_checkpoints_extend_each_other(rt)
