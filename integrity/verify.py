"""Offline verification a reviewer can run with only the leaf data, a receipt and the log key.

Nothing here touches the network or our database (DESIGN.md, principle 4).
"""

from __future__ import annotations

from integrity.errors import ReceiptError
from integrity.merkle import leaf_hash, verify_inclusion
from integrity.note import Checkpoint, Verifier, open_note
from integrity.receipts import parse_receipt


def verify_receipt(
    *, leaf_data: bytes, receipt_text: str, verifier_key: str, origin: str | None = None
) -> Checkpoint:
    """Check that ``leaf_data`` is in the log under a checkpoint signed by ``verifier_key``.

    Returns the verified checkpoint. Raises ReceiptError (malformed receipt, wrong origin),
    NoteError / SignatureError (checkpoint not signed by the key, or malformed), or ProofError
    (the leaf is not at the receipt's index under the checkpoint's root).
    """
    receipt = parse_receipt(receipt_text)
    note = open_note(receipt.checkpoint_note, [Verifier.from_key(verifier_key)])
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise ReceiptError(
            f"checkpoint origin mismatch: expected {origin!r}, got {checkpoint.origin!r}"
        )
    verify_inclusion(
        leaf_hash=leaf_hash(leaf_data),
        index=receipt.index,
        size=checkpoint.size,
        proof=receipt.proof,
        root=checkpoint.root_hash,
    )
    return checkpoint
