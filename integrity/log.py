"""The log's signing side: keys, and the rule that no checkpoint is signed unless it is
consistent with the one before it (RFC 9162 §2.1.4). Persistence lives in the layers above;
this module only decides what may be signed and builds receipts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from integrity.errors import NoteError, ProofError
from integrity.merkle import EMPTY_ROOT, ProvingTree, verify_consistency
from integrity.note import Checkpoint, Signer, Verifier, generate_signer_key, open_note, sign_note
from integrity.receipts import Receipt, format_receipt


@dataclass(frozen=True)
class LogKey:
    signer: Signer
    verifier: Verifier
    verifier_key: str
    """The C2SP note verifier-key string to publish."""


def parse_key(text: str, *, name: str, where: str) -> LogKey:
    """The log key from its C2SP note signer-key text; ``where`` says where it came from."""
    try:
        signer = Signer.from_key(text.strip())
    except NoteError as e:
        raise NoteError(f"log key from {where} is not a signer key: {e}") from None
    if signer.name != name:
        raise NoteError(f"log key from {where} is for {signer.name!r}, the log origin is {name!r}")
    return LogKey(signer=signer, verifier=signer.verifier, verifier_key=signer.verifier.to_key())


def load_key(path: Path, *, name: str) -> LogKey:
    """Read the Ed25519 signer key at ``path``."""
    return parse_key(path.read_text(), name=name, where=str(path))


def create_key(path: Path, *, name: str) -> LogKey:
    """Write a new signer key to ``path`` (mode 0600). Raises FileExistsError if one is there:
    a log key is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    skey, _ = generate_signer_key(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(skey + "\n")
    return parse_key(skey, name=name, where=str(path))


def load_or_create_key(path: Path, *, name: str) -> LogKey:
    """Read the Ed25519 signer key at ``path``, creating it (mode 0600) on first start."""
    if not path.exists():
        try:
            return create_key(path, name=name)
        except FileExistsError:
            pass  # another process created it first: use theirs
    return load_key(path, name=name)


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    """Verify a signed checkpoint note with the log key and parse it."""
    return Checkpoint.parse(open_note(note, [verifier]).text)


def next_checkpoint(
    *, tree: ProvingTree, size: int, origin: str, key: LogKey, previous_note: str | None
) -> SignedCheckpoint:
    """Sign the tree head at ``size``, after proving it consistent with the previous one."""
    root = tree.root(size)
    if previous_note is not None:
        prev = open_checkpoint(previous_note, key.verifier)
        if prev.origin != origin:
            raise ProofError(f"previous checkpoint is for {prev.origin!r}, not {origin!r}")
        if size < prev.size:
            raise ProofError(f"log shrank: previous checkpoint {prev.size}, now {size}")
        if prev.size == 0:
            # RFC 9162 has no consistency proof from the empty tree; its root is fixed instead.
            if prev.root_hash != EMPTY_ROOT:
                raise ProofError("previous checkpoint of size 0 does not have the empty root")
        else:
            verify_consistency(
                size1=prev.size,
                size2=size,
                proof=tree.consistency_proof(prev.size, size),
                root1=prev.root_hash,
                root2=root,
            )
    checkpoint = Checkpoint(origin=origin, size=size, root_hash=root)
    return SignedCheckpoint(checkpoint, sign_note(checkpoint.to_text(), [key.signer]))


def make_receipt(*, tree: ProvingTree, index: int, signed: SignedCheckpoint) -> str:
    """A C2SP tlog-proof for leaf ``index`` against ``signed``."""
    proof = tree.inclusion_proof(index, signed.checkpoint.size)
    return format_receipt(Receipt(index=index, proof=proof, checkpoint_note=signed.note))
