"""Receipts: C2SP transparency log proofs (https://c2sp.org/tlog-proof, "Format").

    c2sp.org/tlog-proof@v1
    extra <base64>              optional, unauthenticated application data
    index <decimal>
    <base64 hash>               zero or more: the RFC 9162 inclusion proof, leaf sibling first
                                an empty line
    <the signed checkpoint note, verbatim>

Parsing checks the format only; ``integrity.verify`` checks what the receipt proves.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from integrity.errors import NoteError, ReceiptError
from integrity.merkle import HASH_SIZE
from integrity.note import DECIMAL, b64decode_strict, split_note

HEADER = "c2sp.org/tlog-proof@v1"
EXTRA_PREFIX = "extra "
INDEX_PREFIX = "index "
MAX_PROOF_HASHES = 64
"""A uint64-sized tree has at most 64 levels."""


@dataclass(frozen=True)
class Receipt:
    """An offline proof that one leaf is in the log, under a signed checkpoint."""

    index: int
    """Zero-based index of the leaf in the log."""
    proof: list[bytes]
    """The inclusion proof hashes, from the leaf's sibling up to a child of the root."""
    checkpoint_note: str
    """The log's signed checkpoint note, verbatim."""
    extra: bytes | None = None
    """Opaque extra data; not authenticated, so never trusted by itself."""

    def __post_init__(self) -> None:
        if not 0 <= self.index < 2**64:
            raise ReceiptError(f"index {self.index} is not a uint64")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise ReceiptError(f"proof has {len(self.proof)} hashes, at most 64 allowed")
        for i, h in enumerate(self.proof):
            if len(h) != HASH_SIZE:
                raise ReceiptError(f"proof hash {i} has {len(h)} bytes, expected {HASH_SIZE}")
        if self.extra is not None and not self.extra:
            raise ReceiptError("extra data is empty; use None for none")
        try:
            split_note(self.checkpoint_note)
        except NoteError as e:
            raise ReceiptError(f"checkpoint is not a signed note: {e}") from None
        # Copy so that the caller's list cannot change the receipt afterwards.
        object.__setattr__(self, "proof", list(self.proof))


def format_receipt(receipt: Receipt) -> str:
    """The tlog-proof text of ``receipt``."""
    lines = [HEADER]
    if receipt.extra is not None:
        lines.append(EXTRA_PREFIX + base64.b64encode(receipt.extra).decode("ascii"))
    lines.append(f"{INDEX_PREFIX}{receipt.index}")
    lines.extend(base64.b64encode(h).decode("ascii") for h in receipt.proof)
    return "".join(line + "\n" for line in lines) + "\n" + receipt.checkpoint_note


def parse_receipt(text: str) -> Receipt:
    """Parse tlog-proof text strictly; ReceiptError on anything malformed."""
    # Proof lines are never empty, so the first blank line ends them; the checkpoint follows.
    head, sep, checkpoint_note = text.partition("\n\n")
    if not sep:
        raise ReceiptError("receipt has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ReceiptError(f"receipt does not start with {HEADER}")
    pos, extra = 1, None
    if pos < len(lines) and lines[pos].startswith(EXTRA_PREFIX):
        extra = _decode(lines[pos][len(EXTRA_PREFIX) :], "extra data")
        pos += 1
    if pos == len(lines) or not lines[pos].startswith(INDEX_PREFIX):
        raise ReceiptError("receipt has no index line")
    index = lines[pos][len(INDEX_PREFIX) :]
    if not DECIMAL.fullmatch(index):
        raise ReceiptError(f"receipt index {index[:30]!r} is not a decimal without leading 0")
    proof = [_decode(line, f"proof line {i}") for i, line in enumerate(lines[pos + 1 :])]
    return Receipt(int(index), proof, checkpoint_note, extra)


def _decode(text: str, what: str) -> bytes:
    try:
        return b64decode_strict(text)
    except ValueError as e:
        raise ReceiptError(f"receipt {what}: {e}") from None
