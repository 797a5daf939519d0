"""RFC 9162 §2.1 trees and proofs: the transparency-dev vectors, and the MerkleTree checked
against a naive transcription of the RFC's recursive definitions."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integrity import merkle
from integrity.errors import ProofError
from integrity.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[4] / "shared" / "testdata" / "merkle"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))
MAX_NAIVE_SIZE = 70


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in vector["proof"] or []]


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_all_vectors_are_found() -> None:
    assert len(INCLUSION) + len(CONSISTENCY) == 196


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)

    def check() -> None:
        verify_inclusion(
            leaf_hash=_b64(v["leafHash"]),
            index=v["leafIdx"],
            size=v["treeSize"],
            proof=_proof(v),
            root=_b64(v["root"]),
        )

    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = _load(path)

    def check() -> None:
        verify_consistency(
            size1=v["size1"],
            size2=v["size2"],
            proof=_proof(v),
            root1=_b64(v["root1"]),
            root2=_b64(v["root2"]),
        )

    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


# --- RFC 9162 §2.1.1-2.1.4, transcribed as literally as possible ------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """§2.1.1, over leaf hashes."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    """§2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """§2.1.4.1 SUBPROOF(m, D[n], b)."""
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


LEAVES = [hashlib.sha256(b"\x00" + i.to_bytes(2, "big")).digest() for i in range(MAX_NAIVE_SIZE)]


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    t = MerkleTree()
    for i, h in enumerate(LEAVES):
        assert t.append(h) == i
    return t


def test_hash_prefixes() -> None:
    assert leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(MAX_NAIVE_SIZE + 1))
def test_roots_match_naive(tree: MerkleTree, size: int) -> None:
    want = mth(LEAVES[:size])
    assert tree.root(size) == want
    assert root_from_leaf_hashes(LEAVES[:size]) == want
    assert MerkleTree.from_leaf_hashes(LEAVES[:size]).root() == want


@pytest.mark.parametrize("size", range(1, MAX_NAIVE_SIZE + 1))
def test_inclusion_proofs_match_naive_and_verify(tree: MerkleTree, size: int) -> None:
    root = mth(LEAVES[:size])
    for index in range(size):
        proof = tree.inclusion_proof(index, size)
        assert proof == path(index, LEAVES[:size])
        verify_inclusion(leaf_hash=LEAVES[index], index=index, size=size, proof=proof, root=root)
        other = LEAVES[(index + 1) % size]
        if other != LEAVES[index]:
            with pytest.raises(ProofError, match="root hash mismatch"):
                verify_inclusion(leaf_hash=other, index=index, size=size, proof=proof, root=root)


@pytest.mark.parametrize("size2", range(1, MAX_NAIVE_SIZE + 1))
def test_consistency_proofs_match_naive_and_verify(tree: MerkleTree, size2: int) -> None:
    root2 = mth(LEAVES[:size2])
    for size1 in range(1, size2 + 1):
        proof = tree.consistency_proof(size1, size2)
        assert proof == subproof(size1, LEAVES[:size2], True)
        root1 = mth(LEAVES[:size1])
        verify_consistency(size1=size1, size2=size2, proof=proof, root1=root1, root2=root2)
        if size1 < size2:
            with pytest.raises(ProofError, match="mismatch: expected"):
                verify_consistency(size1=size1, size2=size2, proof=proof, root1=root2, root2=root2)


def test_history_is_stable_while_the_tree_grows() -> None:
    growing = MerkleTree()
    seen: dict[int, tuple[bytes, list[bytes], list[bytes]]] = {}
    for n, h in enumerate(LEAVES, start=1):
        growing.append(h)
        seen[n] = (growing.root(), growing.inclusion_proof(n // 2), growing.consistency_proof(1))
        for old in (1, n // 3 + 1, n // 2 + 1):
            assert seen[old] == (
                growing.root(old),
                growing.inclusion_proof(old // 2, old),
                growing.consistency_proof(1, old),
            )


def test_tampered_proofs_fail(tree: MerkleTree) -> None:
    proof = tree.inclusion_proof(5, 70)
    root = tree.root(70)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    with pytest.raises(ProofError, match="root hash mismatch: expected"):
        verify_inclusion(leaf_hash=LEAVES[5], index=5, size=70, proof=bad, root=root)
    with pytest.raises(ProofError, match=f"expected {len(proof)} hashes, got {len(proof) - 1}"):
        verify_inclusion(leaf_hash=LEAVES[5], index=5, size=70, proof=proof[:-1], root=root)
    with pytest.raises(ProofError, match="has 31 bytes"):
        verify_inclusion(
            leaf_hash=LEAVES[5], index=5, size=70, proof=[proof[0][:31], *proof[1:]], root=root
        )
    with pytest.raises(ProofError, match="not inside a tree of size 70"):
        verify_inclusion(leaf_hash=LEAVES[5], index=70, size=70, proof=proof, root=root)
    cons = tree.consistency_proof(3, 70)
    with pytest.raises(ProofError, match=f"expected {len(cons)} hashes, got {len(cons) + 1}"):
        verify_consistency(
            size1=3, size2=70, proof=[*cons, cons[0]], root1=tree.root(3), root2=root
        )


def test_consistency_edge_cases(tree: MerkleTree) -> None:
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(size1=0, size2=5, proof=[], root1=EMPTY_ROOT, root2=tree.root(5))
    with pytest.raises(ProofError, match="must not exceed"):
        verify_consistency(size1=6, size2=5, proof=[], root1=tree.root(6), root2=tree.root(5))
    with pytest.raises(ProofError, match="sizes are equal"):
        verify_consistency(
            size1=5, size2=5, proof=[EMPTY_ROOT], root1=tree.root(5), root2=tree.root(5)
        )


def test_tree_rejects_bad_arguments(tree: MerkleTree) -> None:
    with pytest.raises(ValueError, match="outside the tree's history"):
        tree.root(71)
    with pytest.raises(ValueError, match="not inside a tree of size 3"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ValueError, match="no consistency proof"):
        tree.consistency_proof(0, 3)
    with pytest.raises(ValueError, match="has 20 bytes"):
        MerkleTree().append(b"x" * 20)
    assert tree.leaf(69) == LEAVES[69]
    assert tree.size == MAX_NAIVE_SIZE
    assert MerkleTree().root() == EMPTY_ROOT


def _count_node_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real: Callable[[bytes, bytes], bytes] = merkle.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        calls[0] += 1
        return real(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting)
    return calls


def test_proofs_cost_logarithmic_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 2**17 - 1  # all bits set: the worst case for ranges on the right border
    big = MerkleTree.from_leaf_hashes(
        hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)
    )
    calls = _count_node_hashes(monkeypatch)
    for size in (n, n - 1, 99_999, 65_537):
        for index in (0, size // 3, size - 1):
            calls[0] = 0
            big.inclusion_proof(index, size)
            assert calls[0] <= 2 * size.bit_length()
        calls[0] = 0
        big.consistency_proof(size // 7 + 1, size)
        assert calls[0] <= 2 * size.bit_length()
        calls[0] = 0
        big.root(size)
        assert calls[0] <= size.bit_length()
