"""The export package, checked offline: no database, no object store, no network.

A package is a BagIt bag (RFC 8493), zipped under one top-level folder::

    <case>-<time>/bagit.txt, bag-info.txt, manifest-sha256.txt, tagmanifest-sha256.txt
    <case>-<time>/data/items/<id>/original.<ext>, <role>.<ext>, metadata.json, custody.jsonl
    <case>-<time>/data/log/leaves/<index>.json      exact leaf data
    <case>-<time>/data/log/proofs/<index>.tlog-proof  C2SP tlog-proof against log/checkpoint
    <case>-<time>/data/log/checkpoint (+ checkpoint.tsr), log-key.txt, log-key.pem
    <case>-<time>/data/VERIFY.md, data/report.html

:func:`verify_package` checks, and names the file of each failure: both manifests (every
file's SHA-256, nothing unlisted), the checkpoint's signature (against the key the reviewer
got from the agency; the package's own key proves nothing by itself), every leaf's inclusion
proof against that one checkpoint, every original and derivative against its proven leaf,
and every item's custody chain (``prev`` links, each line a proven leaf, none left out).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from integrity.errors import IntegrityError, PackageError
from integrity.leaves import CustodyLeaf, DerivativeLeaf, ItemLeaf, Leaf, parse_leaf
from integrity.merkle import leaf_hash, verify_inclusion
from integrity.note import Checkpoint, Verifier, open_note
from integrity.receipts import parse_receipt
from integrity.tsa import token_time

__all__ = ["PackageFailure", "PackageReport", "verify_package"]

BAGIT = "bagit.txt"
BAG_INFO = "bag-info.txt"
MANIFEST = "manifest-sha256.txt"
TAG_MANIFEST = "tagmanifest-sha256.txt"
BAGIT_TEXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
ITEMS = "data/items"
LEAVES = "data/log/leaves"
REMOVED = "data/removed.json"
"""The items the case held once and no longer does: what their leaves say, no bytes."""
PROOFS = "data/log/proofs"
CHECKPOINT = "data/log/checkpoint"
TIMESTAMP = "data/log/checkpoint.tsr"
KEY_TXT = "data/log/log-key.txt"
KEY_PEM = "data/log/log-key.pem"
METADATA = "metadata.json"
CUSTODY = "custody.jsonl"
ORIGINAL = "original"
CHUNK = 1024 * 1024
SMALL_MAX = 64 * 1024 * 1024
"""The most a file that is read whole (a manifest, a leaf, a proof, metadata) may unzip to:
a forged package's entry that inflates without end is a failure, not the verifier's memory."""
UNTRUSTED_KEY = (
    "checked against the key inside the package, which proves nothing by itself (anyone can "
    "make a package with a key of their own): give --key with the log's verifier key as the "
    "agency publishes it"
)

_MANIFEST_LINE = re.compile(r"([0-9a-f]{64})  (\S.*)")
_INDEX_NAME = re.compile(r"(0|[1-9][0-9]*)\.(json|tlog-proof)")


@dataclass(frozen=True)
class PackageFailure:
    file: str
    """The file it concerns, as the bag names it (``data/log/checkpoint``)."""
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class PackageReport:
    ok: bool
    checked: int
    """Items checked."""
    files: int
    """Files whose SHA-256 was checked against the manifests."""
    failures: list[PackageFailure]
    checkpoint_size: int | None
    key: str
    """``given`` (checked against --key) or ``package`` (against its own key only)."""
    warning: str | None
    removed: int = 0
    """Items listed as taken out of the case (``data/removed.json``), each checked."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "removed": self.removed,
            "failures": [f.as_dict() for f in self.failures],
            "files": self.files,
            "checkpoint_size": self.checkpoint_size,
            "key": self.key,
            "warning": self.warning,
        }


@dataclass
class _Run:
    zf: zipfile.ZipFile
    top: str
    failures: list[PackageFailure] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    """SHA-256 of each file read, by bag path."""

    def fail(self, file: str, code: str, message: str) -> None:
        self.failures.append(PackageFailure(file, code, message))

    def names(self) -> list[str]:
        """Bag paths of every file in the zip."""
        return [i.filename[len(self.top) + 1 :] for i in self.zf.infolist() if not i.is_dir()]

    def exists(self, rel: str) -> bool:
        try:
            self.zf.getinfo(f"{self.top}/{rel}")
        except KeyError:
            return False
        return True

    def chunks(self, rel: str) -> Iterator[bytes]:
        with self.zf.open(f"{self.top}/{rel}") as f:
            while block := f.read(CHUNK):
                yield block

    def sha256(self, rel: str) -> str | None:
        """The file's SHA-256 (None, with a failure, if it cannot be read whole)."""
        if rel in self.hashes:
            return self.hashes[rel]
        h = hashlib.sha256()
        try:
            for block in self.chunks(rel):
                h.update(block)
        except KeyError:
            self.fail(rel, "missing", "listed in a manifest but not in the package")
            return None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            self.fail(rel, "file_hash", f"cannot be read whole (its bytes changed?): {e}")
            return None
        self.hashes[rel] = h.hexdigest()
        return self.hashes[rel]

    def read(self, rel: str) -> bytes | None:
        """A small file's bytes (None, with a failure, when it is absent, unreadable or larger
        than ``SMALL_MAX`` unzipped)."""
        try:
            blocks, size = [], 0
            for block in self.chunks(rel):
                size += len(block)
                if size > SMALL_MAX:
                    self.fail(rel, "too_large", f"unzips to more than {SMALL_MAX} bytes")
                    return None
                blocks.append(block)
            return b"".join(blocks)
        except KeyError:
            self.fail(rel, "missing", "the package has no such file")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            self.fail(rel, "file_hash", f"cannot be read whole (its bytes changed?): {e}")
        return None


def verify_package(path: Path, *, verifier_key: str | None = None) -> PackageReport:
    """Check an export package offline. PackageError when it is not a zip with one bag in it;
    every other problem is a failure naming its file."""
    given = Verifier.from_key(verifier_key.strip()) if verifier_key else None
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PackageError(f"{path} is not a readable zip: {e}") from None
    with zf:
        tops = {PurePosixPath(n).parts[0] for n in zf.namelist() if n.strip("/")}
        if len(tops) != 1:
            raise PackageError(f"{path}: expected one top-level folder, found {sorted(tops)}")
        run = _Run(zf, tops.pop())
        _check_names(run)
        files = _check_bag(run)
        verifier = _check_key(run, given)
        checkpoint = _check_checkpoint(run, verifier)
        proven = _check_leaves(run, checkpoint)
        items = _check_items(run, proven)
        removed = _check_removed(run, proven)
    return PackageReport(
        ok=not run.failures,
        checked=items,
        files=files,
        failures=run.failures,
        checkpoint_size=checkpoint.size if checkpoint else None,
        key="given" if given else "package",
        warning=None if given else UNTRUSTED_KEY,
        removed=removed,
    )


# --- the zip's entry names ----------------------------------------------------------------------


def _check_names(run: _Run) -> None:
    """Every entry has one plain name, its own. Otherwise what is checked need not be what a
    person opens: of two entries with one name the check reads one and an unzip may write
    the other; ``data//items/X/original.mp4`` or ``data/./items/...`` is another entry that
    unzips over the real file, and so are names that differ only in case (on case-insensitive
    disks) or in Unicode normalisation, or that use ``\\``."""
    counts = Counter(run.zf.namelist())
    by_folded: dict[str, str] = {}
    for name, count in counts.items():
        rel = name.removeprefix(f"{run.top}/")
        if count > 1:
            run.fail(rel, "duplicate_entry", f"the zip holds {count} entries of this name")
        parts = name.rstrip("/").split("/")
        if (
            "\\" in name
            or any(p in ("", ".", "..") for p in parts)
            or unicodedata.normalize("NFC", name) != name
            or any(ord(c) < 0x20 for c in name)
        ):
            run.fail(rel, "bad_name", "not a plain path: an unzip may write it elsewhere")
        other = by_folded.setdefault(unicodedata.normalize("NFC", name).casefold(), name)
        if other != name:
            run.fail(rel, "bad_name", f"the same file as {other!r} on a case-insensitive disk")
        if rel.startswith(ITEMS + "/") and not name.endswith("/") and len(parts) != 5:
            run.fail(rel, "unexpected_file", f"an item's files lie directly in {ITEMS}/<id>/")


# --- the bag: RFC 8493 manifests ---------------------------------------------------------------


def _manifest(run: _Run, name: str) -> dict[str, str]:
    data = run.read(name)
    entries: dict[str, str] = {}
    if data is None:
        return entries
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        m = _MANIFEST_LINE.fullmatch(line)
        rel = m[2] if m else ""
        parts = PurePosixPath(rel).parts
        if m is None or rel.startswith("/") or ".." in parts or rel in entries:
            run.fail(name, "manifest_format", f"line {n} is not 'SHA-256  path': {line[:80]!r}")
            continue
        entries[rel] = m[1]
    return entries


def _check_bag(run: _Run) -> int:
    if run.read(BAGIT) not in (None, BAGIT_TEXT.encode()):
        run.fail(BAGIT, "bag_declaration", f"is not {BAGIT_TEXT!r}")
    payload = _manifest(run, MANIFEST)
    tags = _manifest(run, TAG_MANIFEST)
    checked = 0
    for listing, entries in ((MANIFEST, payload), (TAG_MANIFEST, tags)):
        for rel, want in entries.items():
            got = run.sha256(rel)
            checked += 1
            if got is not None and got != want:
                run.fail(rel, "file_hash", f"SHA-256 {got}; {listing} says {want}")
    for rel in run.names():
        if rel.startswith("data/") and rel not in payload:
            run.fail(rel, "not_in_manifest", f"the payload file is not in {MANIFEST}")
        elif not rel.startswith("data/") and rel not in tags and rel != TAG_MANIFEST:
            run.fail(rel, "not_in_manifest", f"the tag file is not in {TAG_MANIFEST}")
    if MANIFEST not in tags:
        run.fail(TAG_MANIFEST, "manifest_format", f"does not list {MANIFEST}")
    info = _bag_info(run)
    oxum = f"{sum(run.zf.getinfo(f'{run.top}/{r}').file_size for r in payload if run.exists(r))}"
    if info.get("Payload-Oxum") != f"{oxum}.{len(payload)}":
        run.fail(
            BAG_INFO,
            "payload_oxum",
            f"Payload-Oxum is {info.get('Payload-Oxum')}; the payload is {oxum}.{len(payload)}",
        )
    return checked


def _bag_info(run: _Run) -> dict[str, str]:
    data = run.read(BAG_INFO) or b""
    info: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        label, sep, value = line.partition(":")
        if sep:
            info[label.strip()] = value.strip()
    return info


# --- the log: key, checkpoint, leaves and their proofs ------------------------------------------


def _check_key(run: _Run, given: Verifier | None) -> Verifier | None:
    text = run.read(KEY_TXT)
    own: Verifier | None = None
    if text is not None:
        try:
            own = Verifier.from_key(text.decode().strip())
        except (UnicodeDecodeError, IntegrityError) as e:
            run.fail(KEY_TXT, "log_key", f"is not a note verifier key: {e}")
    if given is not None and own is not None and own != given:
        run.fail(
            KEY_TXT,
            "log_key",
            f"the package's key {own.name}+{own.key_id:08x} is not the key given "
            f"({given.name}+{given.key_id:08x})",
        )
    key = given or own
    pem = run.read(KEY_PEM)
    if pem is not None and key is not None:
        try:
            public = load_pem_public_key(pem)
            raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
            if not isinstance(public, Ed25519PublicKey) or raw != key.public_key:
                run.fail(KEY_PEM, "log_key", "is not the Ed25519 key of the log key")
        except ValueError as e:
            run.fail(KEY_PEM, "log_key", f"is not a PEM public key: {e}")
    return key


def _check_checkpoint(run: _Run, verifier: Verifier | None) -> Checkpoint | None:
    note = run.read(CHECKPOINT)
    if note is None or verifier is None:
        return None
    try:
        checkpoint = Checkpoint.parse(open_note(note.decode(), [verifier]).text)
    except (UnicodeDecodeError, IntegrityError) as e:
        run.fail(CHECKPOINT, "checkpoint_signature", f"does not verify with the log key: {e}")
        return None
    info = _bag_info(run)
    if info.get("Liuhen-Checkpoint-Size") != str(checkpoint.size):
        run.fail(BAG_INFO, "checkpoint_size", f"the checkpoint has size {checkpoint.size}")
    if info.get("Liuhen-Log-Origin") != checkpoint.origin:
        run.fail(BAG_INFO, "checkpoint_origin", f"the checkpoint is for {checkpoint.origin!r}")
    if checkpoint.origin != verifier.name:  # a log's key is named after its origin
        run.fail(
            CHECKPOINT,
            "checkpoint_origin",
            f"the checkpoint is for {checkpoint.origin!r}, the key for {verifier.name!r}",
        )
    if run.exists(TIMESTAMP):
        tsr = run.read(TIMESTAMP)
        try:
            token_time(tsr or b"", note)
        except IntegrityError as e:
            run.fail(TIMESTAMP, "timestamp", f"is not a time-stamp of the checkpoint: {e}")
    return checkpoint


@dataclass(frozen=True)
class _Proven:
    index: int
    data: bytes
    leaf: Leaf | None


def _check_leaves(run: _Run, checkpoint: Checkpoint | None) -> dict[int, _Proven]:
    """Every leaf file with its proof; the leaves proven under the checkpoint, by index."""
    note = run.read(CHECKPOINT) if checkpoint else None
    proven: dict[int, _Proven] = {}
    for rel in sorted(run.names()):
        folder, _, name = rel.rpartition("/")
        m = _INDEX_NAME.fullmatch(name)
        if folder == PROOFS and (m is None or not run.exists(f"{LEAVES}/{m[1]}.json")):
            run.fail(rel, "proof_without_leaf", "no leaf file goes with this proof")
        if folder != LEAVES:
            continue
        if m is None or m[2] != "json":
            run.fail(rel, "leaf_name", "leaf files are named <index>.json")
            continue
        index, proof_rel = int(m[1]), f"{PROOFS}/{m[1]}.tlog-proof"
        data = run.read(rel)
        if data is None:
            continue
        leaf: Leaf | None = None
        try:
            leaf = parse_leaf(data)
        except IntegrityError as e:
            run.fail(rel, "leaf_format", str(e))
        if not run.exists(proof_rel):
            run.fail(rel, "proof_missing", f"no {proof_rel}")
            continue
        proof_text = run.read(proof_rel)
        if proof_text is None or checkpoint is None or note is None:
            continue
        try:
            receipt = parse_receipt(proof_text.decode())
        except (UnicodeDecodeError, IntegrityError) as e:
            run.fail(proof_rel, "proof_format", str(e))
            continue
        if receipt.index != index or receipt.checkpoint_note.encode() != note:
            run.fail(
                proof_rel,
                "proof_checkpoint",
                f"is not a proof of leaf {index} against {CHECKPOINT}",
            )
            continue
        try:
            verify_inclusion(
                leaf_hash=leaf_hash(data),
                index=index,
                size=checkpoint.size,
                proof=receipt.proof,
                root=checkpoint.root_hash,
            )
        except IntegrityError as e:
            run.fail(rel, "inclusion", f"leaf {index} is not in the checkpoint by {proof_rel}: {e}")
            continue
        proven[index] = _Proven(index, data, leaf)
    return proven


# --- the items taken out of the case -----------------------------------------------------------


_REMOVED_FIELDS = ("sha256", "size", "media_type", "original_name", "received_at")


def _check_removed(run: _Run, proven: dict[int, _Proven]) -> int:
    """Each item ``data/removed.json`` lists was put in this case and taken out, as proven
    leaves say: its item leaf, then its ``link`` / ``unlink`` custody leaves of the case, in
    log order, ending out of it; what the file says of it is what they say."""
    data = run.read(REMOVED) if run.exists(REMOVED) else None
    if data is None:
        return 0
    case = _bag_info(run).get("Liuhen-Case")
    try:
        entries = json.loads(data)
        if not isinstance(entries, list) or not all(isinstance(r, dict) for r in entries):
            raise ValueError("not a list of objects")
    except ValueError as err:
        run.fail(REMOVED, "removed_format", f"not the list of removed items: {err}")
        return 0
    folders = {PurePosixPath(rel).parts[2] for rel in run.names() if rel.startswith(ITEMS + "/")}
    for r in entries:
        item_id = r.get("item_id")
        where = f"{REMOVED} ({item_id})"
        p = proven.get(r.get("log_index")) if isinstance(r.get("log_index"), int) else None
        if p is None or not isinstance(p.leaf, ItemLeaf):
            run.fail(
                where, "removed_leaf", f"log_index {r.get('log_index')} is no proven item leaf"
            )
            continue
        item = p.leaf
        said = {k: r.get(k) for k in _REMOVED_FIELDS}
        if said != {k: getattr(item, k) for k in _REMOVED_FIELDS}:
            run.fail(where, "removed_vs_leaf", f"says {said}; item leaf {p.index} says otherwise")
        inside = case in item.case_ids
        if r.get("sealed_in_case") is not inside:
            run.fail(where, "removed_vs_leaf", f"sealed_in_case is not what leaf {p.index} says")
        last = p.index
        events = r.get("events") if isinstance(r.get("events"), list) else []
        for ev in events:
            raw = ev.get("log_index") if isinstance(ev, dict) else None
            idx = raw if isinstance(raw, int) else -1
            done = proven.get(idx)
            step = done.leaf if done is not None else None
            if (
                not isinstance(ev, dict)
                or not isinstance(step, CustodyLeaf)
                or step.item_id != item_id
                or step.item_sha256 != item.sha256
                or step.action not in ("link", "unlink")
                or step.case_id != case
                or idx <= last
            ):
                run.fail(where, "removed_event", f"leaf {raw} is no later link/unlink of it here")
                continue
            if {k: ev.get(k) for k in ("action", "actor", "at", "reason")} != {
                "action": step.action, "actor": step.actor, "at": step.at, "reason": step.reason,
            }:  # fmt: skip
                run.fail(where, "removed_vs_leaf", f"the event of leaf {idx} says otherwise")
            inside, last = step.action == "link", idx
        if inside or not events:
            run.fail(where, "removed_in_case", "its leaves here do not take it out of the case")
        listed = {ev.get("log_index") for ev in events if isinstance(ev, dict)}
        for q in proven.values():
            e = q.leaf
            if (
                isinstance(e, CustodyLeaf)
                and e.item_id == item_id
                and e.action in ("link", "unlink")
                and e.case_id == case
                and q.index not in listed
            ):
                run.fail(where, "removed_event", f"leaf {q.index} ({e.action}) is not listed")
        if item_id in folders:
            run.fail(where, "removed_in_case", f"it is also in {ITEMS}/{item_id}")
    return len(entries)


# --- the items: bytes against their leaves, custody chains ---------------------------------------


def _check_items(run: _Run, proven: dict[int, _Proven]) -> int:
    by_item: dict[str, list[str]] = {}
    for rel in run.names():
        parts = PurePosixPath(rel).parts
        if rel.startswith(ITEMS + "/") and len(parts) == 4:
            by_item.setdefault(parts[2], []).append(parts[3])
    by_hash = {leaf_hash(p.data): p for p in proven.values()}
    for item_id, names in sorted(by_item.items()):
        _check_item(run, item_id, names, proven, by_hash)
    return len(by_item)


def _check_item(
    run: _Run,
    item_id: str,
    names: list[str],
    proven: dict[int, _Proven],
    by_hash: dict[bytes, _Proven],
) -> None:
    folder = f"{ITEMS}/{item_id}"
    item = _item_leaf(run, folder, proven)
    if item is None:
        return
    index, leaf = item
    originals = [n for n in names if n.split(".")[0] == ORIGINAL]
    if len(originals) != 1:
        run.fail(folder, "original_missing", f"expected one original.<ext>, found {originals}")
    for name in originals:
        rel = f"{folder}/{name}"
        sha, size = run.sha256(rel), run.zf.getinfo(f"{run.top}/{rel}").file_size
        if sha is not None and (sha, size) != (leaf.sha256, leaf.size):
            run.fail(
                rel,
                "original_vs_leaf",
                f"SHA-256 {sha}, {size} bytes; item leaf {index} says {leaf.sha256}, {leaf.size}",
            )
    roles = set()
    for name in names:
        if name in (METADATA, CUSTODY) or name in originals:
            continue
        roles.add(name.split(".")[0])
        _check_derivative(run, f"{folder}/{name}", item_id, leaf, proven)
    for p in proven.values():
        d = p.leaf
        if isinstance(d, DerivativeLeaf) and d.item_id == item_id and d.role not in roles:
            run.fail(folder, "derivative_missing", f"leaf {p.index} logs {d.role!r}, not here")
    _check_custody(run, f"{folder}/{CUSTODY}", item_id, leaf, proven[index].data, proven, by_hash)


def _item_leaf(run: _Run, folder: str, proven: dict[int, _Proven]) -> tuple[int, ItemLeaf] | None:
    rel = f"{folder}/{METADATA}"
    data = run.read(rel)
    if data is None:
        return None
    try:
        index = json.loads(data)["log_index"]
    except (ValueError, KeyError, TypeError) as e:
        run.fail(rel, "metadata_format", f"has no log_index: {e}")
        return None
    found = proven.get(index) if isinstance(index, int) else None
    if found is None or not isinstance(found.leaf, ItemLeaf):
        run.fail(rel, "item_leaf", f"log_index {index!r} is not an item leaf proven in the package")
        return None
    return index, found.leaf


def _check_derivative(
    run: _Run, rel: str, item_id: str, item: ItemLeaf, proven: dict[int, _Proven]
) -> None:
    role = PurePosixPath(rel).name.split(".")[0]
    sha = run.sha256(rel)
    for p in proven.values():
        d = p.leaf
        if isinstance(d, DerivativeLeaf) and (d.item_id, d.role, d.sha256) == (item_id, role, sha):
            if d.parent_sha256 != item.sha256:
                run.fail(rel, "derivative_vs_leaf", f"leaf {p.index} names another original")
            return
    if sha is not None:
        run.fail(
            rel, "derivative_vs_leaf", f"no proven {role!r} leaf of {item_id} has SHA-256 {sha}"
        )


def _check_custody(
    run: _Run,
    rel: str,
    item_id: str,
    item: ItemLeaf,
    item_data: bytes,
    proven: dict[int, _Proven],
    by_hash: dict[bytes, _Proven],
) -> None:
    data = run.read(rel)
    if data is None:
        return
    lines = data.split(b"\n")
    if lines[-1] != b"":
        run.fail(rel, "custody_format", "does not end with a newline")
    chain, seen = leaf_hash(item_data), set()
    for n, line in enumerate(lines[:-1], 1):
        digest = leaf_hash(line)
        p = by_hash.get(digest)
        if p is None:
            run.fail(rel, "custody_unproven", f"line {n} is not a leaf proven in the package")
        custody = p.leaf if p is not None else None
        if custody is None:
            try:
                custody = parse_leaf(line)
            except IntegrityError as e:
                run.fail(rel, "custody_format", f"line {n}: {e}")
                chain = digest
                continue
        if not isinstance(custody, CustodyLeaf) or custody.item_id != item_id:
            run.fail(rel, "custody_format", f"line {n} is not a custody leaf of {item_id}")
        elif custody.item_sha256 != item.sha256:
            run.fail(rel, "custody_chain", f"line {n} names original {custody.item_sha256}")
        elif custody.prev != chain.hex():
            run.fail(rel, "custody_chain", f"line {n}: prev {custody.prev}, expected {chain.hex()}")
        chain = digest
        seen.add(digest)
    for p in proven.values():
        leaf = p.leaf
        if isinstance(leaf, CustodyLeaf) and leaf.item_id == item_id:
            if leaf_hash(p.data) not in seen:
                run.fail(rel, "custody_incomplete", f"leaf {p.index} of this item is not in it")
