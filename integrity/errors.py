"""The root of every liuhen error, and the integrity package's own errors.

LiuhenError lives here because ``integrity`` is the bottom layer: every other package may
import it, and it imports nothing of ours.

    LiuhenError
     └── IntegrityError
          ├── HashMismatch          bytes do not hash to what was promised
          ├── ProofError            a Merkle inclusion / consistency proof does not verify
          ├── NoteError             a signed note or checkpoint is malformed or unsigned
          │    └── SignatureError   a known key's signature does not verify
          ├── ReceiptError          a tlog-proof receipt is malformed or proves something else
          ├── CanonicalJSONError    a value cannot be put into canonical leaf JSON
          ├── LeafFormatError       leaf data is not a leaf that ``leaves.py`` would build
          ├── PackageError          an export package cannot be read at all
          └── TimestampError        an RFC 3161 token is missing, malformed or does not verify
"""

from __future__ import annotations


class LiuhenError(Exception):
    """Root of all liuhen errors. ``code`` is a stable machine-readable name."""

    code = "liuhen_error"


class IntegrityError(LiuhenError):
    code = "integrity_error"


class HashMismatch(IntegrityError):
    code = "hash_mismatch"

    def __init__(self, what: str, *, expected: str, actual: str) -> None:
        super().__init__(f"{what}: expected SHA-256 {expected}, computed {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


class ProofError(IntegrityError):
    code = "proof_error"


class NoteError(IntegrityError):
    code = "note_error"


class SignatureError(NoteError):
    code = "signature_error"


class ReceiptError(IntegrityError):
    code = "receipt_error"


class CanonicalJSONError(IntegrityError):
    code = "canonical_json_error"


class LeafFormatError(IntegrityError):
    code = "leaf_format"


class PackageError(IntegrityError):
    code = "package_error"


class TimestampError(IntegrityError):
    code = "timestamp_error"
