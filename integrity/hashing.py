"""Streaming SHA-256: the one hashing helper. Nothing here holds a whole file in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, BinaryIO

from integrity.errors import HashMismatch

CHUNK = 1024 * 1024


def sha256_stream(stream: IO[bytes], *, chunk: int = CHUNK) -> tuple[str, int]:
    """Hash a stream to its end; return (hex digest, byte count)."""
    h = hashlib.sha256()
    size = 0
    while block := stream.read(chunk):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return sha256_stream(f)


def check_sha256(what: str, *, expected: str, actual: str) -> None:
    """Raise HashMismatch naming ``what`` unless the digests agree."""
    if expected.lower() != actual.lower():
        raise HashMismatch(what, expected=expected.lower(), actual=actual.lower())


class HashingReader:
    """A read-only file-like wrapper that hashes and counts what passes through it.

    Lets one pass over the bytes both upload them and compute their digest.
    """

    def __init__(self, raw: BinaryIO | IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        block = self._raw.read(n)
        self._hash.update(block)
        self.size += len(block)
        return block

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
