"""C2SP tlog-proof receipts: exact text, round trip and strict parsing."""

from __future__ import annotations

import base64

import pytest

from integrity.errors import ReceiptError
from integrity.receipts import HEADER, Receipt, format_receipt, parse_receipt
from tests.unit.integrity import SignedLog
from tests.unit.integrity import signed_log as make_signed_log


@pytest.fixture
def signed_log() -> SignedLog:
    return make_signed_log()


def _receipt(log: SignedLog, index: int, extra: bytes | None = None) -> Receipt:
    size = log.tree.size
    return Receipt(index, log.tree.inclusion_proof(index, size), log.checkpoint_note(size), extra)


def test_format_matches_the_spec_layout(signed_log: SignedLog) -> None:
    receipt = _receipt(signed_log, 3, extra=b"hi")
    text = format_receipt(receipt)
    lines = text.split("\n")
    assert lines[:3] == [HEADER, "extra aGk=", "index 3"]
    proof_lines = lines[3 : 3 + len(receipt.proof)]
    assert [base64.b64decode(x) for x in proof_lines] == receipt.proof
    assert lines[3 + len(receipt.proof)] == ""
    assert text.endswith("\n\n" + receipt.checkpoint_note)


@pytest.mark.parametrize("extra", [None, b"\x00opaque\xff"])
@pytest.mark.parametrize("index", [0, 5, 10])
def test_round_trip(signed_log: SignedLog, index: int, extra: bytes | None) -> None:
    receipt = _receipt(signed_log, index, extra)
    assert parse_receipt(format_receipt(receipt)) == receipt


def test_single_leaf_receipt_has_no_proof_lines(signed_log: SignedLog) -> None:
    receipt = Receipt(0, [], signed_log.checkpoint_note(1))
    text = format_receipt(receipt)
    assert text.startswith(f"{HEADER}\nindex 0\n\n")
    assert parse_receipt(text) == receipt


def test_receipt_copies_the_proof(signed_log: SignedLog) -> None:
    proof = signed_log.tree.inclusion_proof(1, 11)
    receipt = Receipt(1, proof, signed_log.checkpoint_note(11))
    proof.clear()
    assert len(receipt.proof) == 4


def _replace_line(text: str, number: int, line: str | None) -> str:
    lines = text.split("\n")
    if line is None:
        del lines[number]
    else:
        lines[number] = line
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: _replace_line(t, 0, "c2sp.org/tlog-proof@v2"), "does not start with"),
        (lambda t: _replace_line(t, 1, "index 03"), "leading 0"),
        (lambda t: _replace_line(t, 1, "index -3"), "not a decimal"),
        (lambda t: _replace_line(t, 1, "index  3"), "not a decimal"),
        (lambda t: _replace_line(t, 1, "index 3 "), "not a decimal"),
        (lambda t: _replace_line(t, 1, f"index {2**64}"), "not a uint64"),
        (lambda t: _replace_line(t, 1, "Index 3"), "no index line"),
        (lambda t: _replace_line(t, 1, None), "no index line"),
        (lambda t: _replace_line(t, 1, "extra !!!!"), "extra data"),
        (lambda t: _replace_line(t, 2, "AAAA"), "proof hash 0 has 3 bytes"),
        (lambda t: _replace_line(t, 2, "not base64"), "proof line 0"),
        (lambda t: _replace_line(t, 2, t.split("\n")[2].rstrip("=")), "proof line 0"),
        (lambda t: t.replace(f"{HEADER}\n", f"{HEADER}\nextra \n"), "extra data is empty"),
        (lambda t: t.split("\n\n")[0], "no blank line"),
        (lambda t: t[:-1], "checkpoint is not a signed note"),
        (lambda t: t.replace("— ", "-- "), "checkpoint is not a signed note"),
        (lambda t: t.replace("\n", "\r\n"), "no blank line"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_malformed_receipts(signed_log: SignedLog, edit: object, message: str) -> None:
    text = format_receipt(_receipt(signed_log, 3))
    assert callable(edit)
    with pytest.raises(ReceiptError, match=message):
        parse_receipt(edit(text))


def test_too_many_proof_hashes(signed_log: SignedLog) -> None:
    with pytest.raises(ReceiptError, match="65 hashes"):
        Receipt(0, [bytes(32)] * 65, signed_log.checkpoint_note(1))
