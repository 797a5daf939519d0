"""C2SP signed notes with Ed25519 keys, and the tlog-checkpoint note body.

Signed notes: https://c2sp.org/signed-note (compatible with golang.org/x/mod/sumdb/note).
Checkpoints: https://c2sp.org/tlog-checkpoint.

A note is ``text`` (ending in a newline), a blank line, then one or more lines
``— <key name> base64(key ID || signature)``. Parsing is strict: anything off-format is a
NoteError; a known key whose signature does not verify is a SignatureError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from integrity.errors import NoteError, SignatureError

ALG_ED25519 = 0x01
"""Signature type byte for Ed25519 (signed-note, "Signature types")."""
ED25519_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
KEY_ID_SIZE = 4
SIGNATURE_PREFIX = "— "
"""Em dash (U+2014) and a space open every signature line."""
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
MAX_SIGNATURES = 100
"""The spec asks verifiers to accept at least 16; the Go reference stops at 100."""
CHECKPOINT_HASH_SIZE = 32

DECIMAL = re.compile(r"0|[1-9][0-9]*")
"""ASCII decimal without leading zeroes, as checkpoints and tlog-proof spell numbers."""
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")


def b64decode_strict(text: str) -> bytes:
    """Decode standard base64 (RFC 4648 §4) in its one canonical spelling, else ValueError.

    Refusing alternative spellings (missing padding, stray bits, whitespace) keeps every signed
    or proved value byte-for-byte unique.
    """
    try:
        raw = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise ValueError(f"not base64: {e}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def check_text(text: str, what: str) -> None:
    """Signed notes are UTF-8 with no ASCII control characters other than newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError(f"{what} is not valid UTF-8") from None
    for ch in text:
        if ch < " " and ch != "\n":
            raise NoteError(f"{what} contains control character U+{ord(ch):04X}")


def is_valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces or "+" (signed-note, "Format")."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key)
    return int.from_bytes(digest.digest()[:KEY_ID_SIZE], "big")


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    """Key name, as written on the line."""
    key_id: int
    """The uint32 key ID from the first four signature bytes."""
    signature: bytes
    """The signature proper, without the key ID."""

    def to_line(self) -> str:
        raw = self.key_id.to_bytes(KEY_ID_SIZE, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {_b64(raw)}\n"


@dataclass(frozen=True)
class Note:
    """A note whose text has been verified by at least one known key."""

    text: str
    """The signed text, including its final newline."""
    signatures: tuple[Signature, ...]
    """The signatures by known keys, each verified."""


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 note verifier key: ``name+hex8(key ID)+base64(0x01 || public key)``."""

    name: str
    key_id: int
    public_key: bytes
    """The 32-byte RFC 8032 public key."""

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != ED25519_KEY_SIZE:
            raise NoteError(f"Ed25519 public key has {len(self.public_key)} bytes, expected 32")
        want = key_id(self.name, self.public_key)
        if self.key_id != want:
            raise NoteError(f"key ID {self.key_id:08x} does not match the key ({want:08x})")

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        name, id_hex, key = _split_key(vkey, parts=3, what="verifier key")
        return cls(name=name, key_id=int(id_hex, 16), public_key=key)

    def to_key(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, text: str, signature: bytes) -> None:
        """Raise SignatureError unless ``signature`` is this key's signature of ``text``."""
        try:
            public = Ed25519PublicKey.from_public_bytes(self.public_key)
            public.verify(signature, text.encode("utf-8"))
        except (InvalidSignature, ValueError):
            raise SignatureError(
                f"signature by {self.name}+{self.key_id:08x} does not verify"
            ) from None


class Signer:
    """An Ed25519 note signer key: ``PRIVATE+KEY+name+hex8(key ID)+base64(0x01 || seed)``."""

    def __init__(self, name: str, seed: bytes) -> None:
        if not is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(seed) != ED25519_KEY_SIZE:
            raise NoteError(f"Ed25519 seed has {len(seed)} bytes, expected 32")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name=name, key_id=key_id(name, public), public_key=public)

    def __repr__(self) -> str:  # never print the seed
        return f"Signer({self.name}+{self.key_id:08x})"

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def key_id(self) -> int:
        return self.verifier.key_id

    @classmethod
    def from_key(cls, skey: str) -> Signer:
        if not skey.startswith(PRIVATE_KEY_PREFIX):
            raise NoteError("signer key does not start with PRIVATE+KEY+")
        rest = skey[len(PRIVATE_KEY_PREFIX) :]
        name, id_hex, seed = _split_key(rest, parts=3, what="signer key")
        signer = cls(name, seed)
        if int(id_hex, 16) != signer.key_id:
            raise NoteError(f"signer key ID {id_hex} does not match the key ({signer.key_id:08x})")
        return signer

    def sign(self, text: str) -> Signature:
        return Signature(self.name, self.key_id, self._private.sign(text.encode("utf-8")))


def _split_key(key: str, *, parts: int, what: str) -> tuple[str, str, bytes]:
    """Split ``name+hex8+base64(0x01 || key)``; base64 may itself contain "+"."""
    fields = key.split("+", parts - 1)
    if len(fields) != parts:
        raise NoteError(f"{what} is not name+keyid+key")
    name, id_hex, key64 = fields
    if not _KEY_ID_HEX.fullmatch(id_hex):
        raise NoteError(f"{what} ID {id_hex!r} is not 8 hex digits")
    try:
        raw = b64decode_strict(key64)
    except ValueError as e:
        raise NoteError(f"{what}: {e}") from None
    if not raw or raw[0] != ALG_ED25519:
        raise NoteError(f"{what} is not an Ed25519 (0x01) key")
    return name, id_hex, raw[1:]


def generate_signer_key(name: str) -> tuple[str, str]:
    """A fresh Ed25519 key pair as (signer key, verifier key) strings."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    signer = Signer(name, seed)
    skey = f"{PRIVATE_KEY_PREFIX}{name}+{signer.key_id:08x}+{_b64(bytes([ALG_ED25519]) + seed)}"
    return skey, signer.verifier.to_key()


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Sign ``text`` (which must end in a newline) with each signer, in order."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    check_text(text, "note text")
    if not signers:
        raise NoteError("a note needs at least one signer")
    if len({(s.name, s.key_id) for s in signers}) != len(signers):
        raise NoteError("the same key is given twice")
    return text + "\n" + "".join(s.sign(text).to_line() for s in signers)


def split_note(note: str) -> tuple[str, tuple[Signature, ...]]:
    """Parse a note's structure without checking any signature: (text, signature lines).

    The text ends at the last blank line (signed-note, "Format").
    """
    check_text(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("note does not end with a signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return text, tuple(_parse_signature_line(line) for line in lines)


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"not a signature line: {line[:40]!r}")
    name, sep, sig64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not sep or not is_valid_name(name):
        raise NoteError(f"signature line has an invalid key name: {line[:40]!r}")
    try:
        raw = b64decode_strict(sig64)
    except ValueError as e:
        raise NoteError(f"signature by {name}: {e}") from None
    if len(raw) <= KEY_ID_SIZE:
        raise NoteError(f"signature by {name} is too short")
    return Signature(name, int.from_bytes(raw[:KEY_ID_SIZE], "big"), raw[KEY_ID_SIZE:])


def open_note(note: str, verifiers: Sequence[Verifier]) -> Note:
    """Verify ``note`` against the known ``verifiers``; return its text and good signatures.

    Signatures by unknown keys (name and key ID not both known) are ignored. A signature by a
    known key that does not verify rejects the whole note (SignatureError), and so does a note
    without any signature by a known key.
    """
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise NoteError(f"two different verifier keys are named {v.name}+{v.key_id:08x}")
    text, signatures = split_note(note)
    verified: list[Signature] = []
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        verifier.verify(text, sig.signature)
        if sig not in verified:
            verified.append(sig)
    if not verified:
        names = ", ".join(f"{v.name}+{v.key_id:08x}" for v in known.values()) or "none"
        raise SignatureError(f"note is not signed by any known key (known: {names})")
    return Note(text=text, signatures=tuple(verified))


@dataclass(frozen=True)
class Checkpoint:
    """A transparency log tree head (https://c2sp.org/tlog-checkpoint, "Note text")."""

    origin: str
    """The log's unique identity, e.g. ``liuhen.example/log``."""
    size: int
    """The number of leaves in the tree."""
    root_hash: bytes
    """The RFC 6962 / RFC 9162 root hash of the tree at ``size``."""
    extensions: tuple[str, ...] = ()
    """Optional opaque, non-empty extension lines."""

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("checkpoint origin must be one non-empty line")
        if not 0 <= self.size < 2**64:
            raise NoteError(f"checkpoint size {self.size} is not a uint64")
        if len(self.root_hash) != CHECKPOINT_HASH_SIZE:
            raise NoteError(f"checkpoint root hash has {len(self.root_hash)} bytes, expected 32")
        for line in self.extensions:
            if not line or "\n" in line:
                raise NoteError("checkpoint extension lines must be single non-empty lines")
        check_text(self.to_text(), "checkpoint")

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text strictly; NoteError on anything off-format."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(f"checkpoint has {len(lines)} lines, expected at least 3")
        origin, size, root, *extensions = lines
        if not DECIMAL.fullmatch(size):
            raise NoteError(f"checkpoint size {size[:30]!r} is not a decimal without leading 0")
        try:
            root_hash = b64decode_strict(root)
        except ValueError as e:
            raise NoteError(f"checkpoint root hash: {e}") from None
        return cls(origin, int(size), root_hash, tuple(extensions))
