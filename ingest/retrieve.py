"""Reading evidence back out: by version ID, re-hashed on the way, and logged as custody."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingest import custody
from ingest.runtime import Runtime
from integrity.errors import HashMismatch
from integrity.hashing import check_sha256
from storage import repository as repo
from storage.db import transaction


@dataclass(frozen=True)
class Target:
    """One stored object of an item: the original or a derivative."""

    item_id: str
    role: str  # "original" or a derivative role
    key: str
    version_id: str
    sha256: str
    size: int
    media_type: str


def resolve(rt: Runtime, item_id: str, role: str | None = None) -> Target:
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        if role is None or role == "original":
            return Target(
                item.id,
                "original",
                item.object_key,
                item.version_id,
                item.sha256,
                item.size,
                item.media_type,
            )
        d = repo.get_derivative(session, item_id=item_id, role=role)
        return Target(item.id, role, d.object_key, d.version_id, d.sha256, d.size, d.media_type)


def log_read(
    rt: Runtime,
    target: Target,
    *,
    action: str,
    actor: str,
    details: dict[str, object] | None = None,
) -> None:
    """Every read is a custody event (DESIGN.md, step 5)."""
    now = datetime.now(UTC)
    with transaction(rt.sessions) as session:
        item = repo.get_item(session, item_id=target.item_id)
        custody.record(
            session,
            rt.ledger,
            item=item,
            action=action,
            actor=actor,
            now=now,
            details={"role": target.role, **(details or {})},
        )


def verified_stream(rt: Runtime, target: Target) -> Iterator[bytes]:
    """The whole object, streamed; raises HashMismatch at the end if it is not what was indexed.

    Chunks are passed on one behind: the last one is held until the hash has checked, so a
    consumer that forwards chunks as they come (HTTP) is cut short of the full length on a
    mismatch, and the receiver never holds a complete copy of changed bytes.
    """
    h = hashlib.sha256()
    size = 0
    held: bytes | None = None
    for chunk in rt.store.iter_bytes(target.key, target.version_id):
        h.update(chunk)
        size += len(chunk)
        if held is not None:
            yield held
        held = chunk
    check_sha256(
        f"item {target.item_id} {target.role} ({target.key}@{target.version_id})",
        expected=target.sha256,
        actual=h.hexdigest(),
    )
    if size != target.size:
        raise HashMismatch(
            f"item {target.item_id} {target.role}: size {size}, index says {target.size}",
            expected=target.sha256,
            actual=h.hexdigest(),
        )
    if held is not None:
        yield held


def write_to_file(rt: Runtime, target: Target, dest: Path) -> None:
    """Write the object to ``dest`` only if it verifies; otherwise leave nothing there."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        with tmp.open("wb") as f:
            for chunk in verified_stream(rt, target):
                f.write(chunk)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
