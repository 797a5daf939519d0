"""The batch path of the log: many leaves, one sequencer update, still dense and verifiable."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from ingest.runtime import Runtime
from integrity.leaves import canonical_json
from integrity.merkle import leaf_hash, root_from_leaf_hashes
from storage.db import transaction
from storage.tables import LogLeaf


def test_append_many_is_dense_and_signed(rt: Runtime) -> None:
    now = datetime.now(UTC)
    leaves = [{"v": 1, "kind": "custody", "n": i} for i in range(250)]
    with transaction(rt.sessions) as s:
        first = rt.ledger.append_many(
            s, [("custody", None, leaf) for leaf in leaves[:100]], now=now
        )
    with transaction(rt.sessions) as s:
        rt.ledger.append(s, kind="custody", item_id=None, build=lambda: leaves[100], now=now)
        rest = rt.ledger.append_many(s, [("custody", None, leaf) for leaf in leaves[101:]], now=now)
    assert [a.index for a in first + rest] == [*range(100), *range(101, 250)]
    signed = rt.ledger.publish()
    assert signed.checkpoint.size == 250
    with rt.sessions() as s:
        rows = list(s.scalars(select(LogLeaf).order_by(LogLeaf.idx)))
    assert [r.idx for r in rows] == list(range(250))
    assert [r.data.encode() for r in rows] == [canonical_json(leaf) for leaf in leaves]
    expected_root = root_from_leaf_hashes(leaf_hash(canonical_json(leaf)) for leaf in leaves)
    assert signed.checkpoint.root_hash == expected_root


def test_a_rolled_back_batch_gives_its_indexes_back(rt: Runtime) -> None:
    now = datetime.now(UTC)
    try:
        with transaction(rt.sessions) as s:
            rt.ledger.append_many(
                s, [("custody", None, {"v": 1, "n": i}) for i in range(10)], now=now
            )
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with transaction(rt.sessions) as s:
        again = rt.ledger.append_many(s, [("custody", None, {"v": 1, "n": 0})], now=now)
    assert again[0].index == 0


def test_batch_rows_read_back_like_single_rows(rt: Runtime) -> None:
    """The batch insert bypasses SQLAlchemy's type processing: its rows must read the same."""
    now = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
    with transaction(rt.sessions) as s:
        rt.ledger.append(s, kind="custody", item_id=None, build=lambda: {"v": 1, "n": 0}, now=now)
        rt.ledger.append_many(s, [("custody", "ITEM0000000001", {"v": 1, "n": 1})], now=now)
    with rt.sessions() as s:
        single, batch = list(s.scalars(select(LogLeaf).order_by(LogLeaf.idx)))
    assert single.created_at == batch.created_at == now
    assert batch.leaf_hash == leaf_hash(batch.data.encode())
    assert (batch.kind, batch.item_id) == ("custody", "ITEM0000000001")
