"""A case's export package (DESIGN.md, "Package"): a zipped BagIt bag that a reviewer checks
offline with ``sha256sum``, ``openssl`` and the published log key, or ``liuhen verify``.

The zip is streamed: every entry is written through as it is read (originals straight from
the store, re-hashed on the way: a changed original stops the export), hashed for the bag's
manifests as it is written, and the package itself is hashed as it leaves. Nothing is held
whole in memory; entries over 2 GiB get ZIP64 headers.

Every leaf concerning the case (each item's item leaf, derivative leaves and custody leaves)
goes in with its C2SP tlog-proof against ONE checkpoint, signed just before. The export is
itself a custody event of each item: once the package is complete, an ``export`` custody leaf
per item names the package's SHA-256 (it is logged after the package, so a later receipt,
``liuhen receipt`` or ``liuhen verify``, proves it; the package cannot hold its own hash).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import queue
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.orm import Session

from ingest import catalog, custody
from ingest.durable import fsync_dir
from ingest.errors import InvalidInput
from ingest.export_docs import report_html, verify_md
from ingest.manifest import check_case_id
from ingest.retrieve import Target, verified_stream
from ingest.runtime import Runtime
from integrity import package as bag
from integrity.leaves import KIND_CUSTODY, CustodyLeaf, ItemLeaf, parse_leaf
from storage import keys
from storage import people as store
from storage import repository as repo
from storage import verify_queries as q
from storage.db import transaction
from storage.tables import Item, LogLeaf

__all__ = ["ExportResult", "PackageStream", "export_to_file", "folder_name", "stream_export"]

EXPORT_ACTION = "export"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXT = re.compile(r"[a-z0-9]{1,8}")


@dataclass(frozen=True)
class ExportResult:
    folder: str
    """The bag's top-level folder inside the zip."""
    sha256: str
    """SHA-256 of the whole zip, as logged in each item's ``export`` custody event."""
    size: int
    items: int
    checkpoint_size: int


def folder_name(case_id: str, now: datetime) -> str:
    """``<case_id>-<time>`` made safe for any file system (``/`` and the like become ``_``)."""
    safe = _UNSAFE.sub("_", case_id).strip("._") or "case"
    return f"{safe}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class _BackgroundHash:
    """SHA-256 computed in a thread of its own (hashlib lets go of the GIL on big blocks), so
    the package's hash costs no time on the path from the store to the zip. At most
    ``depth`` blocks wait to be hashed."""

    def __init__(self, depth: int = 8) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="export-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._hash.update(block)

    def update(self, block: bytes) -> None:
        self._queue.put(block)

    def close(self) -> None:
        """Let the thread finish (idempotent; an export cut short must not leave it waiting)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()


def _read_ahead(chunks: Iterator[bytes], depth: int = 4) -> Iterator[bytes]:
    """``chunks``, read (and re-hashed) by a thread up to ``depth`` chunks ahead, so that the
    store's reads overlap the writing. Errors come out where they happened; a consumer that
    stops early stops the reader."""
    box: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bytes | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
            put((None, None))
        except BaseException as e:  # handed to the consumer, raised there
            put((None, e))

    reader = threading.Thread(target=run, name="export-read", daemon=True)
    reader.start()
    try:
        while True:
            chunk, error = box.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        reader.join(timeout=30)


class _Sink:
    """Where zipfile writes: it keeps what was written until drained and hashes all of it.
    It can tell but not seek, so zipfile streams (sizes in data descriptors)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._hash = _BackgroundHash()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stop(self) -> None:
        self._hash.close()

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class _Entry:
    """One item's part of the plan."""

    item: Item
    document: dict[str, Any]
    original: Target
    original_name: str
    derivatives: list[tuple[str, Target]]
    custody: list[str]


class PackageStream:
    """The package's bytes, in order (``for chunk in stream``); ``result`` once exhausted."""

    def __init__(
        self, rt: Runtime, *, case_id: str, actor: str, now: datetime, log_at_end: bool = True
    ) -> None:
        check_case_id(case_id, rt.settings.case_id_pattern)
        self.rt, self.case_id, self.actor, self.now = rt, case_id, actor, now
        self.log_at_end = log_at_end
        """Log the export as the stream ends (HTTP); else the caller calls ``log_export``."""
        self.folder = folder_name(case_id, now)
        self.result: ExportResult | None = None
        # Plan first (fails before a byte is sent for an unknown case or a corrupt log).
        self.signed = rt.ledger.publish()
        size = self.signed.checkpoint.size
        with rt.sessions() as session:
            repo.get_case(session, case_id=case_id)
            items = [i for i in repo.items_of_case(session, case_id=case_id) if i.log_index < size]
            self.tsr = repo.get_checkpoint(session, size=size).tsr if size else None
            # Items taken out of the case are listed too (without their bytes): a reviewer
            # must see that evidence left the case, when, by whom and why.
            unlinked = {e.item_id for e in repo.unlinks_from_case(session, case_id=case_id)}
            others = {i for i in unlinked if i is not None} - {i.id for i in items}
            ids = [i.id for i in items] + sorted(others)
            leaves = q.leaves_of_items(session, item_ids=ids, below=size)
            # Membership as the checkpoint has it: an item linked after it was signed (the
            # index is read a moment later) would come with no leaf putting it in the case.
            cases = _cases_at(leaves)
            items = [i for i in items if case_id in cases.get(i.id, set())]
            members = {i.id for i in items}
            removed = _removed(leaves, case_id, members)
            leaves = [
                leaf
                for leaf in leaves
                if leaf.item_id in members or leaf.idx in removed.get(leaf.item_id or "", ())
            ]
            self.entries = [self._entry(session, i, leaves, cases[i.id]) for i in items]
        self.removed = _removed_documents(leaves, removed, case_id)
        """The items the case held once and no longer does (``data/removed.json``)."""
        self.leaves = [(leaf.idx, leaf.data) for leaf in leaves]
        # Every proof now, against the one checkpoint: a leaf row that differs from the signed
        # log (LogCorrupt) stops the export before a byte is sent, not after the originals.
        self.proofs = {
            idx: rt.ledger.receipt_under(idx, data=data, signed=self.signed)
            for idx, data in self.leaves
        }

    def _entry(
        self, session: Session, item: Item, leaves: list[LogLeaf], cases: set[str]
    ) -> _Entry:
        original = Target(
            item.id,
            "original",
            item.object_key,
            item.version_id,
            item.sha256,
            item.size,
            item.media_type,
        )
        derivatives = []
        for d in repo.derivatives_of(session, item_id=item.id):
            name = keys.derivative_file_name(d.object_key) or f"{d.role}.bin"
            if d.log_index < self.signed.checkpoint.size:
                target = Target(
                    item.id, d.role, d.object_key, d.version_id, d.sha256, d.size, d.media_type
                )
                derivatives.append((name, target))
        return _Entry(
            item=item,
            document=_as_of(
                catalog.item_document(session, item), self.signed.checkpoint.size, cases
            ),
            original=original,
            original_name=f"{bag.ORIGINAL}.{_original_ext(item)}",
            derivatives=derivatives,
            custody=[
                leaf.data
                for leaf in leaves
                if leaf.item_id == item.id and leaf.kind == KIND_CUSTODY
            ],
        )

    def __iter__(self) -> Iterator[bytes]:
        sink = _Sink()
        try:
            yield from self._package(sink)
        finally:
            sink.stop()

    def _package(self, sink: _Sink) -> Iterator[bytes]:
        manifest: list[tuple[str, str]] = []
        tags: list[tuple[str, str]] = []
        payload_bytes = 0
        stamp = self.now.astimezone(UTC).timetuple()[:6]
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:

            def add(
                rel: str, chunks: Iterator[bytes] | bytes, size: int, sha256: str | None = None
            ) -> Iterator[bytes]:
                """Write one entry. ``sha256``: the hash ``chunks`` is checked against as it
                ends (a verified stream), so it is not computed twice."""
                nonlocal payload_bytes
                info = zipfile.ZipInfo(f"{self.folder}/{rel}", date_time=stamp)
                info.file_size = size  # decides ZIP64 before a byte is written
                info.external_attr = 0o644 << 16
                h, written = hashlib.sha256(), 0
                with zf.open(info, "w") as out:
                    for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                        out.write(chunk)
                        if sha256 is None:
                            h.update(chunk)
                        written += len(chunk)
                        yield sink.drain()
                digest = sha256 or h.hexdigest()
                if rel.startswith("data/"):
                    manifest.append((digest, rel))
                    payload_bytes += written
                else:
                    tags.append((digest, rel))
                yield sink.drain()

            def text(rel: str, body: str | bytes) -> Iterator[bytes]:
                raw = body.encode() if isinstance(body, str) else body
                return add(rel, raw, len(raw))

            for e in self.entries:
                base = f"{bag.ITEMS}/{e.item.id}"
                for name, target in [(e.original_name, e.original), *e.derivatives]:
                    stream = _read_ahead(verified_stream(self.rt, target))
                    yield from add(f"{base}/{name}", stream, target.size, target.sha256)
                doc = json.dumps(e.document, ensure_ascii=False, indent=2, sort_keys=True)
                yield from text(f"{base}/{bag.METADATA}", doc + "\n")
                yield from text(f"{base}/{bag.CUSTODY}", "".join(c + "\n" for c in e.custody))
            for idx, data in self.leaves:
                yield from text(f"{bag.LEAVES}/{idx}.json", data)
                yield from text(f"{bag.PROOFS}/{idx}.tlog-proof", self.proofs[idx])
            if self.removed:
                removed = json.dumps(self.removed, ensure_ascii=False, indent=2, sort_keys=True)
                yield from text(bag.REMOVED, removed + "\n")
            yield from text(bag.CHECKPOINT, self.signed.note)
            if self.tsr:
                yield from text(bag.TIMESTAMP, self.tsr)
            key = self.rt.ledger.key
            yield from text(bag.KEY_TXT, key.verifier_key + "\n")
            yield from text(bag.KEY_PEM, _pem(key.verifier.public_key))
            cp = self.signed.checkpoint
            yield from text(
                "data/VERIFY.md",
                verify_md(
                    case_id=self.case_id,
                    folder=self.folder,
                    checkpoint=cp,
                    verifier_key=key.verifier_key,
                    items=len(self.entries),
                    removed=len(self.removed),
                ),
            )
            yield from text(
                "data/report.html",
                report_html(
                    case_id=self.case_id,
                    exporter=self.actor,
                    at=self.now,
                    checkpoint=cp,
                    documents=[e.document for e in self.entries],
                    removed=self.removed,
                ),
            )
            yield from text(bag.BAGIT, bag.BAGIT_TEXT)
            info = [
                ("Bagging-Date", f"{self.now.astimezone(UTC):%Y-%m-%d}"),
                ("External-Identifier", self.case_id),
                ("Payload-Oxum", f"{payload_bytes}.{len(manifest)}"),
                ("Liuhen-Case", self.case_id),
                ("Liuhen-Exporter", self.actor),
                ("Liuhen-Exported-At", self.now.astimezone(UTC).isoformat()),
                ("Liuhen-Checkpoint-Size", str(self.signed.checkpoint.size)),
                ("Liuhen-Log-Origin", self.signed.checkpoint.origin),
                ("Liuhen-Log-Key", key.verifier_key),
            ]
            yield from text(bag.BAG_INFO, "".join(f"{k}: {_one_line(v)}\n" for k, v in info))
            yield from text(bag.MANIFEST, "".join(f"{h}  {p}\n" for h, p in manifest))
            tagged = "".join(f"{h}  {p}\n" for h, p in tags)
            yield from text(bag.TAG_MANIFEST, tagged)
        self.result = ExportResult(
            folder=self.folder,
            sha256=sink.hexdigest(),
            size=sink.size,
            items=len(self.entries),
            checkpoint_size=self.signed.checkpoint.size,
        )
        if self.log_at_end:
            self.log_export(self.result)  # logged before the last bytes are handed over
        yield sink.drain()

    def log_export(self, result: ExportResult) -> None:
        details = {
            "case_id": self.case_id,
            "package": f"{result.folder}.zip",
            "package_sha256": result.sha256,
            "checkpoint_size": result.checkpoint_size,
        }
        with transaction(self.rt.sessions) as session:
            # The case's own record too: a case with no items (all unlinked) leaves one.
            store.add_case_event(
                session,
                case_id=self.case_id,
                action=EXPORT_ACTION,
                actor=self.actor,
                now=datetime.now(UTC),
                details={**details, "items": [e.item.id for e in self.entries]},
            )
            for e in self.entries:
                item = repo.get_item(session, item_id=e.item.id)
                custody.record(
                    session,
                    self.rt.ledger,
                    item=item,
                    action=EXPORT_ACTION,
                    actor=self.actor,
                    now=datetime.now(UTC),
                    details=details,
                )


def stream_export(
    rt: Runtime, *, case_id: str, actor: str, now: datetime | None = None
) -> PackageStream:
    """The package of ``case_id`` as a stream of bytes (HTTP). Raises NotFound at once for
    an unknown case; a changed original stops the stream (HashMismatch)."""
    return PackageStream(rt, case_id=case_id, actor=actor, now=now or datetime.now(UTC))


def export_to_file(
    rt: Runtime, *, case_id: str, actor: str, output: Path, now: datetime | None = None
) -> ExportResult:
    """Write the package to ``output`` (atomically: nothing is left there on failure).

    The export is logged only once the whole file is on disk (flushed and synced), just
    before it takes its name: a package that failed on the way (a full disk, ``output`` a
    folder) is never logged as exported."""
    if output.is_dir():
        raise InvalidInput(f"{output} is a folder: name the package file to write")
    if not output.parent.is_dir():
        raise InvalidInput(f"the folder {output.parent} does not exist")
    stream = PackageStream(
        rt, case_id=case_id, actor=actor, now=now or datetime.now(UTC), log_at_end=False
    )
    tmp = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        with tmp.open("wb") as f:
            _copy(stream, f)
            f.flush()
            os.fsync(f.fileno())
        assert stream.result is not None  # noqa: S101 - set when the stream is exhausted
        stream.log_export(stream.result)
        tmp.replace(output)
        fsync_dir(output.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return stream.result


def _cases_at(leaves: list[LogLeaf]) -> dict[str, set[str]]:
    """Each item's cases as its leaves (in log order, below the checkpoint) put it: the item
    leaf's cases, then ``link`` / ``unlink`` custody leaves."""
    cases: dict[str, set[str]] = {}
    for row in leaves:
        leaf = parse_leaf(row.data)
        if isinstance(leaf, ItemLeaf) and row.item_id is not None:
            cases[row.item_id] = set(leaf.case_ids)
        elif isinstance(leaf, CustodyLeaf) and leaf.case_id is not None:
            now_in = cases.setdefault(leaf.item_id, set())
            if leaf.action == "link":
                now_in.add(leaf.case_id)
            elif leaf.action == "unlink":
                now_in.discard(leaf.case_id)
    return cases


def _removed(leaves: list[LogLeaf], case_id: str, members: set[str]) -> dict[str, list[int]]:
    """The items ``leaves`` put in ``case_id`` that are not in it at their end (not
    ``members``): per item, the leaves that say so (its item leaf, then each ``link`` and
    ``unlink`` of the case)."""
    out: dict[str, list[int]] = {}
    ever: set[str] = set()
    for row in leaves:
        if row.item_id is None or row.item_id in members:
            continue
        leaf = parse_leaf(row.data)
        if isinstance(leaf, ItemLeaf):
            out[row.item_id] = [row.idx]
            if case_id in leaf.case_ids:
                ever.add(row.item_id)
        elif isinstance(leaf, CustodyLeaf) and leaf.action in ("link", "unlink"):
            if leaf.case_id == case_id and row.item_id in out:
                out[row.item_id].append(row.idx)
                ever.add(row.item_id)
    return {item_id: idxs for item_id, idxs in out.items() if item_id in ever}


def _removed_documents(
    leaves: list[LogLeaf], removed: dict[str, list[int]], case_id: str
) -> list[dict[str, Any]]:
    """``data/removed.json``: per item taken out of the case, what its leaves say (each of
    them is in ``data/log/leaves`` with its proof)."""
    by_idx = {row.idx: parse_leaf(row.data) for row in leaves}
    docs = []
    for item_id, (item_idx, *event_idxs) in sorted(removed.items()):
        item = by_idx[item_idx]
        events = [(idx, by_idx[idx]) for idx in event_idxs]
        if not isinstance(item, ItemLeaf):  # _removed put the item leaf first
            raise TypeError(f"leaf {item_idx} is no item leaf")
        docs.append(
            {
                "item_id": item_id,
                "log_index": item_idx,
                "sha256": item.sha256,
                "size": item.size,
                "media_type": item.media_type,
                "original_name": item.original_name,
                "received_at": item.received_at,
                "sealed_in_case": case_id in item.case_ids,
                "events": [
                    {
                        "action": e.action,
                        "actor": e.actor,
                        "at": e.at,
                        "reason": e.reason,
                        "log_index": idx,
                    }
                    for idx, e in events
                    if isinstance(e, CustodyLeaf)
                ],
            }
        )
    return docs


def _as_of(document: dict[str, Any], size: int, cases: set[str]) -> dict[str, Any]:
    """The item document as the package's checkpoint vouches for it: custody, derivatives and
    case history below ``size``, the cases its leaves give."""

    def below(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r.get("log_index") is not None and r["log_index"] < size]

    return {
        **document,
        "case_ids": sorted(cases),
        "custody": below(document.get("custody") or []),
        "derivatives": below(document.get("derivatives") or []),
        "case_history": below(document.get("case_history") or []),
    }


def _copy(chunks: PackageStream, out: IO[bytes]) -> None:
    for chunk in chunks:
        if chunk:
            out.write(chunk)


def _original_ext(item: Item) -> str:
    suffix = PurePosixPath(item.original_name or "").suffix.lstrip(".").lower()
    if _EXT.fullmatch(suffix):
        return suffix
    guessed = (mimetypes.guess_extension(item.media_type) or "").lstrip(".")
    return guessed if _EXT.fullmatch(guessed) else "bin"


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _pem(public_key: bytes) -> bytes:
    key = Ed25519PublicKey.from_public_bytes(public_key)
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
