"""Integrity unit tests. ``signed_log()`` is a small signed log shared by the receipt and
verification tests."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from integrity.leaves import canonical_json
from integrity.merkle import MerkleTree, leaf_hash
from integrity.note import Checkpoint, Signer, generate_signer_key, sign_note

ORIGIN = "liuhen.example/log"


@dataclass(frozen=True)
class SignedLog:
    signer: Signer
    verifier_key: str
    leaves: list[bytes]
    tree: MerkleTree

    def checkpoint_note(self, size: int) -> str:
        checkpoint = Checkpoint(ORIGIN, size, self.tree.root(size))
        return sign_note(checkpoint.to_text(), [self.signer])


@functools.cache
def signed_log() -> SignedLog:
    skey, vkey = generate_signer_key(ORIGIN)
    leaves = [canonical_json({"v": 1, "kind": "item", "n": i}) for i in range(11)]
    tree = MerkleTree.from_leaf_hashes(leaf_hash(d) for d in leaves)
    return SignedLog(Signer.from_key(skey), vkey, leaves, tree)
