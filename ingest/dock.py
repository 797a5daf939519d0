"""The collection station (采集站): seal every media file of a docked camera's folder.

Each file walks through phases recorded in a state file (``<home>/dock/<folder hash>.json``,
rewritten atomically and fsynced after every step), so a kill at any moment resumes where it
stopped and nothing is imported twice:

    hashed     the SHA-256 of the file as it was (size, mtime, inode recorded with it)
    sealed     the item is committed (seal_file returned); a resumed "hashed" file whose
               bytes are already an item is adopted, not sealed again
    receipt    its receipt verified against the log key and (with a receipts folder) written,
               fsynced, under ``<receipts>/<path in the folder>.receipt.json``
    erased     ``--erase``: the camera file was removed, only after a verified receipt and
               only if it is unchanged since it was hashed

A file whose size or mtime changed within ``intake.dock_stable_s`` is still being written and
is skipped for now. Device, officer and start time come from the body-camera file name when it
has them: a hint (the raw name is kept as the item's name; the pipeline ranks the file-name
time below the media's own clocks).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from ingest.timeplace import parse_capture_filename
from integrity.errors import LiuhenError
from integrity.hashing import sha256_file
from integrity.verify import verify_receipt
from storage import repository as repo
from storage.errors import Conflict

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = frozenset(
    {
        ".mp4", ".mov", ".m4v", ".avi", ".mkv", ".3gp", ".ts", ".mts", ".mpg", ".mpeg",
        ".jpg", ".jpeg", ".png", ".heic", ".heif", ".dng",
        ".wav", ".aac", ".amr", ".m4a", ".mp3", ".ogg", ".opus",
        ".nmea", ".gpx",
    }
)  # fmt: skip
PHASES = ("hashed", "sealed", "receipt", "erased")
_PARTY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


@dataclass
class DockReport:
    sealed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"sealed": self.sealed, "skipped": self.skipped, "failed": self.failed}


class DockState:
    """What has been done to which file of one folder; survives restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.files: dict[str, dict[str, Any]] = json.loads(path.read_text())["files"]
        except FileNotFoundError:
            self.files = {}

    @classmethod
    def for_folder(cls, rt: Runtime, folder: Path) -> DockState:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        directory = rt.settings.home_dir / "dock"
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / f"{digest}.json")

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump({"files": self.files}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _done(entry: dict[str, Any] | None, phase: str) -> bool:
    return entry is not None and PHASES.index(entry["phase"]) >= PHASES.index(phase)


def candidates(folder: Path) -> list[Path]:
    """Media files under ``folder`` (recursively), in name order; hidden files left out."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        out.append(path)
    return out


def import_folder(
    rt: Runtime,
    folder: Path,
    *,
    receipts: Path | None,
    erase: bool,
    actor: str,
    case_ids: tuple[str, ...] = (),
    progress: Callable[[str, int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> DockReport:
    """One pass over ``folder``: seal what is new and stable, finish what a kill interrupted."""
    state = DockState.for_folder(rt, folder)
    with _exclusive(state.path.with_suffix(".lock"), folder):
        return _import(rt, folder, state, receipts=receipts, erase=erase, actor=actor,
                       case_ids=case_ids, progress=progress, stop=stop)  # fmt: skip


@contextlib.contextmanager
def _exclusive(lock_path: Path, folder: Path) -> Iterator[None]:
    """One importer per folder (two would race on its state file)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Conflict(f"another liuhen dock is importing {folder}") from None
        yield
    finally:
        os.close(fd)


def _import(
    rt: Runtime,
    folder: Path,
    state: DockState,
    *,
    receipts: Path | None,
    erase: bool,
    actor: str,
    case_ids: tuple[str, ...],
    progress: Callable[[str, int, int], None] | None,
    stop: threading.Event | None,
) -> DockReport:
    report = DockReport()
    stable = rt.settings.intake.dock_stable_s
    files = candidates(folder)
    if receipts is not None:
        receipts.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(files, 1):
        if stop is not None and stop.is_set():
            break
        if progress:
            progress(path.name, n - 1, len(files))
        name = str(path)
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            report.skipped.append({"file": name, "reason": "not a media file"})
            continue
        if receipts is not None and receipts.resolve() in path.resolve().parents:
            continue
        try:
            outcome = _one(rt, state, folder, path, receipts=receipts, erase=erase, actor=actor,
                           case_ids=case_ids, stable_s=stable)  # fmt: skip
        except (LiuhenError, OSError) as e:
            log.warning("dock: %s failed: %s", path, e)
            report.failed.append({"file": name, "error": f"{type(e).__name__}: {e}"})
            continue
        if isinstance(outcome, str):
            report.skipped.append({"file": name, "reason": outcome})
        else:
            report.sealed.append({"file": name, **outcome})
    if progress:
        progress("", len(files), len(files))
    return report


def _one(
    rt: Runtime,
    state: DockState,
    folder: Path,
    path: Path,
    *,
    receipts: Path | None,
    erase: bool,
    actor: str,
    case_ids: tuple[str, ...],
    stable_s: float,
) -> dict[str, Any] | str:
    """Take one file as far as it goes; a dict when this run sealed or completed it, else the
    reason it was skipped."""
    key = str(path.resolve())
    entry = state.files.get(key)
    if entry is not None and entry["phase"] == "erased":
        return "already imported"  # pragma: no cover - an erased file is not listed again
    st = path.stat()
    if entry is not None and entry["identity"] != _identity(st):
        entry = None  # other bytes under the name (rewritten, or reused by the camera)
    if entry is None:
        if time.time() - st.st_mtime < stable_s:
            time.sleep(max(0.0, stable_s - (time.time() - st.st_mtime)))
            again = path.stat()
            if _identity(again) != _identity(st) or time.time() - again.st_mtime < stable_s:
                return "still being written"
            st = again
        digest, size = sha256_file(path)
        if _identity(path.stat()) != _identity(st) or size != st.st_size:
            return "still being written"
        entry = {"phase": "hashed", "identity": _identity(st), "sha256": digest}
        state.files[key] = entry
        state.save()
    finished_before = _done(entry, "receipt") and (not erase or entry["phase"] == "erased")
    if finished_before and (receipts is None or entry.get("receipt_file")):
        return "already imported"
    if entry["phase"] == "hashed":
        # A seal that a kill cut short may have committed before its phase was saved: adopt
        # that item. Bytes that reached liuhen by another path are sealed (and so logged as
        # ``received_again`` with their new case links) like any other.
        item_id = _adopt(rt, entry["sha256"]) if entry.get("sealing") else None
        if item_id is None:
            entry["sealing"] = True
            state.save()
            sealed = seal_file(rt, path, _manifest(rt, path, entry, case_ids), actor=actor)
            item_id = sealed.item_id
        entry |= {"phase": "sealed", "item_id": item_id}
        state.save()
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=entry["item_id"])
        leaf = repo.get_leaf(session, index=item.log_index).data
    receipt = rt.ledger.receipt(item.log_index)
    verify_receipt(
        leaf_data=leaf.encode(), receipt_text=receipt, verifier_key=rt.ledger.key.verifier_key
    )
    if json.loads(leaf)["sha256"] != entry["sha256"]:
        raise LiuhenError(f"{path}: the receipt is for other bytes")
    doc = {"id": item.id, "sha256": item.sha256, "receipt": receipt}
    if receipts is not None and not entry.get("receipt_file"):
        # The camera's folder structure, mirrored: two folders may hold the same file name.
        target = receipts / path.relative_to(folder).parent / f"{path.name}.receipt.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_durably(target, {**doc, "file": str(path), "log_index": item.log_index,
                                "leaf": leaf})  # fmt: skip
        entry["receipt_file"] = str(target)
    if entry["phase"] == "sealed":
        entry["phase"] = "receipt"
    state.save()
    if erase and entry["phase"] == "receipt":
        # Only the bytes that were hashed and sealed, and only now that the receipt verified.
        if _identity(path.stat()) != entry["identity"]:
            raise LiuhenError(f"{path} changed after it was sealed; not erased")
        path.unlink()
        _fsync_dir(path.parent)
        entry["phase"] = "erased"
        state.save()
    return doc


def _adopt(rt: Runtime, sha256: str) -> str | None:
    with rt.sessions() as session:
        item = repo.find_item_by_sha256(session, sha256=sha256)
        return item.id if item is not None else None


def _manifest(rt: Runtime, path: Path, entry: dict[str, Any], cases: tuple[str, ...]) -> Manifest:
    hint = parse_capture_filename(path.name)
    device = hint.device_id if hint and hint.device_id and _PARTY.match(hint.device_id) else None
    officer = hint.officer_id if hint and hint.officer_id else None
    started = hint.started_at if hint else None
    if started is not None and started.tzinfo is None:
        zone = timezone(timedelta(minutes=rt.settings.pipeline.local_utc_offset_minutes))
        started = started.replace(tzinfo=zone)
    if started is not None and started > datetime.now(UTC) + timedelta(days=1):
        started = None  # a camera clock in the future is no hint
    return Manifest(
        device_id=device,
        officer_id=officer,
        case_ids=cases,
        file_name=path.name,
        sha256=entry["sha256"],
        size=entry["identity"]["size"],
        capture_start=started,
    )


def _write_durably(target: Path, doc: dict[str, Any]) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
