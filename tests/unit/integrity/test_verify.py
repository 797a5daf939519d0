"""Offline verification of a leaf against a receipt and the log's published key."""

from __future__ import annotations

import pytest

from integrity.errors import NoteError, ProofError, ReceiptError, SignatureError
from integrity.note import generate_signer_key
from integrity.receipts import Receipt, format_receipt
from integrity.verify import verify_receipt
from tests.unit.integrity import ORIGIN, SignedLog
from tests.unit.integrity import signed_log as make_signed_log


@pytest.fixture
def signed_log() -> SignedLog:
    return make_signed_log()


def _receipt_text(log: SignedLog, index: int, size: int) -> str:
    receipt = Receipt(index, log.tree.inclusion_proof(index, size), log.checkpoint_note(size))
    return format_receipt(receipt)


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 11), (4, 5), (7, 11), (10, 11)])
def test_good_receipt_verifies(signed_log: SignedLog, index: int, size: int) -> None:
    checkpoint = verify_receipt(
        leaf_data=signed_log.leaves[index],
        receipt_text=_receipt_text(signed_log, index, size),
        verifier_key=signed_log.verifier_key,
        origin=ORIGIN,
    )
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, size)
    assert checkpoint.root_hash == signed_log.tree.root(size)


def test_receipt_for_another_leaf_fails(signed_log: SignedLog) -> None:
    with pytest.raises(ProofError, match=r"root hash mismatch: expected [0-9a-f]{64}, computed"):
        verify_receipt(
            leaf_data=signed_log.leaves[4],
            receipt_text=_receipt_text(signed_log, 3, 11),
            verifier_key=signed_log.verifier_key,
        )


def test_receipt_with_another_index_fails(signed_log: SignedLog) -> None:
    text = _receipt_text(signed_log, 3, 11).replace("index 3\n", "index 2\n")
    with pytest.raises(ProofError, match="root hash mismatch"):
        verify_receipt(
            leaf_data=signed_log.leaves[3], receipt_text=text, verifier_key=signed_log.verifier_key
        )


def test_swapped_key_fails(signed_log: SignedLog) -> None:
    _, other_key = generate_signer_key(ORIGIN)
    with pytest.raises(SignatureError, match="not signed by any known key"):
        verify_receipt(
            leaf_data=signed_log.leaves[3],
            receipt_text=_receipt_text(signed_log, 3, 11),
            verifier_key=other_key,
        )


def test_tampered_checkpoint_fails(signed_log: SignedLog) -> None:
    text = _receipt_text(signed_log, 3, 11).replace(f"{ORIGIN}\n11\n", f"{ORIGIN}\n12\n")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_receipt(
            leaf_data=signed_log.leaves[3], receipt_text=text, verifier_key=signed_log.verifier_key
        )


def test_wrong_origin_fails(signed_log: SignedLog) -> None:
    with pytest.raises(ReceiptError, match=r"origin mismatch: expected 'other\.example/log'"):
        verify_receipt(
            leaf_data=signed_log.leaves[3],
            receipt_text=_receipt_text(signed_log, 3, 11),
            verifier_key=signed_log.verifier_key,
            origin="other.example/log",
        )


def test_malformed_inputs_fail(signed_log: SignedLog) -> None:
    text = _receipt_text(signed_log, 3, 11)
    with pytest.raises(ReceiptError, match="does not start with"):
        verify_receipt(leaf_data=b"", receipt_text="x" + text, verifier_key=signed_log.verifier_key)
    with pytest.raises(NoteError, match="verifier key"):
        verify_receipt(leaf_data=b"", receipt_text=text, verifier_key="not-a-key")
