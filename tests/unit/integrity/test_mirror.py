"""The mirror walk over in-memory checkpoints and bundles: no store, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integrity.errors import ProofError
from integrity.merkle import MerkleTree, leaf_hash
from integrity.mirror import BundleVersion, rebuild
from integrity.note import Checkpoint, Signer, Verifier, generate_signer_key, sign_note

ORIGIN = "test.example/log"
LINES = [f'{{"n":{i}}}' for i in range(7)]


def _signed(signer: Signer, size: int) -> bytes:
    tree = MerkleTree.from_leaf_hashes(leaf_hash(line.encode()) for line in LINES[:size])
    cp = Checkpoint(ORIGIN, size, tree.root())
    return sign_note(cp.to_text(), [signer]).encode()


def _bundle(first: int, last: int, data: bytes | None = None) -> BundleVersion:
    body = data if data is not None else "".join(x + "\n" for x in LINES[first : last + 1]).encode()
    return BundleVersion(first, last, f"{first}-{last}", datetime.now(UTC), lambda: body)


@pytest.fixture
def key() -> tuple[Signer, Verifier]:
    skey, vkey = generate_signer_key(ORIGIN)
    return Signer.from_key(skey), Verifier.from_key(vkey)


def test_rebuild_takes_the_bundles_the_checkpoints_vouch_for(key: tuple[Signer, Verifier]) -> None:
    signer, verifier = key
    notes = [(_signed(signer, 3), None), (_signed(signer, 7), None)]
    forged = _bundle(3, 6, b"".join(b'{"n":9}\n' for _ in range(4)))
    bundles = [_bundle(0, 2), forged, _bundle(3, 6)]
    assert rebuild(notes, bundles, verifier=verifier) == LINES


def test_rebuild_refuses_a_mirror_that_stops_short(key: tuple[Signer, Verifier]) -> None:
    signer, verifier = key
    notes = [(_signed(signer, 3), None), (_signed(signer, 7), None)]
    with pytest.raises(ProofError, match="rebuild 3 leaves, checkpoint 7"):
        rebuild(notes, [_bundle(0, 2), _bundle(3, 5)], verifier=verifier)


def test_another_keys_checkpoints_vouch_for_nothing(key: tuple[Signer, Verifier]) -> None:
    signer, verifier = key
    stranger = Signer.from_key(generate_signer_key(ORIGIN)[0])
    notes = [(_signed(stranger, 7), None)]
    assert rebuild(notes, [_bundle(0, 6)], verifier=verifier) == []
    # Unverified, two different checkpoints of one size are ambiguous.
    with pytest.raises(ProofError, match="two checkpoints of size 7"):
        rebuild(
            [
                (_signed(signer, 7), None),
                (sign_note(f"{ORIGIN}\n7\n{'A' * 43}=\n", [stranger]).encode(), None),
            ],
            [_bundle(0, 6)],
        )
