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

from ingest.durable import fsync_dir
from ingest.errors import IngestError, InvalidInput
from ingest.intake import seal_file
from ingest.manifest import Manifest, kept_file_name, path_text
from ingest.retention import DELETED
from ingest.runtime import Runtime
from ingest.timeplace import parse_capture_filename
from integrity.errors import LiuhenError
from integrity.hashing import sha256_file
from integrity.verify import verify_receipt
from storage import people
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
        except (ValueError, KeyError, TypeError) as e:
            # Starting afresh would seal every file again as if it were new: a person decides.
            raise IngestError(f"the dock state {path} is unreadable ({e}): move it aside") from e

    @staticmethod
    def path_for(rt: Runtime, folder: Path) -> Path:
        digest = hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:16]
        directory = rt.settings.home_dir / "dock"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{digest}.json"

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump({"files": self.files}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


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
    unit: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> DockReport:
    """One pass over ``folder``: seal what is new and stable, finish what a kill interrupted.

    ``unit``: the station's unit, stamped on what it seals (else an item's unit comes from the
    device or officer its file name gives, and a name that gives neither leaves the item
    unitless: its unit's officers would not see it until it is linked to one of their cases).
    """
    unit = station_unit(rt, unit)
    state_path = DockState.path_for(rt, folder)
    with _exclusive(state_path.with_suffix(".lock"), folder):
        state = DockState(state_path)  # read under the lock: another run may just have saved
        return _import(rt, folder, state, receipts=receipts, erase=erase, actor=actor,
                       case_ids=case_ids, unit=unit, progress=progress, stop=stop)  # fmt: skip


def station_unit(rt: Runtime, unit: str | None) -> str | None:
    """``unit`` (else ``intake.dock_unit``), refused unless a device, officer, user or case
    belongs to it: a mistyped unit would hide every item it stamps from that unit."""
    unit = unit if unit is not None else rt.settings.intake.dock_unit
    if unit is not None:
        with rt.sessions() as session:
            if not people.unit_is_known(session, unit=unit):
                raise UnknownUnit(
                    f"unit {unit!r} is not known here: no device, officer, user or case "
                    "belongs to it (enroll one first, or check the name)"
                )
    return unit


class UnknownUnit(InvalidInput):
    """``--unit`` names no unit of this deployment."""

    code = "unknown_unit"


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
    unit: str | None,
    progress: Callable[[str, int, int], None] | None,
    stop: threading.Event | None,
) -> DockReport:
    report = DockReport()
    stable = rt.settings.intake.dock_stable_s
    files = candidates(folder)
    receipts_inside: Path | None = None
    if receipts is not None:
        try:
            receipts.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InvalidInput(f"--receipts {receipts}: not a folder that can be made ({e})") from e
        # Receipts kept inside the camera folder are not media to import; a receipts folder
        # around the camera folder holds it (and its receipts land beside it, not in it).
        inner, outer = receipts.resolve(), folder.resolve()
        receipts_inside = inner if outer in inner.parents else None
    for n, path in enumerate(files, 1):
        if stop is not None and stop.is_set():
            break
        if progress:
            progress(path.name, n - 1, len(files))
        name = path_text(path)
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            report.skipped.append({"file": name, "reason": "not a media file"})
            continue
        if receipts_inside is not None and receipts_inside in path.resolve().parents:
            continue
        try:
            outcome = _one(rt, state, folder, path, receipts=receipts, erase=erase, actor=actor,
                           case_ids=case_ids, unit=unit, stable_s=stable, stop=stop)  # fmt: skip
        except (LiuhenError, OSError, ValueError) as e:  # ValueError: a manifest it made
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
    unit: str | None,
    stable_s: float,
    stop: threading.Event | None = None,
) -> dict[str, Any] | str:
    """Take one file as far as it goes; a dict when this run sealed or completed it, else the
    reason it was skipped."""
    key = path_text(path.resolve())
    entry = state.files.get(key)
    st = path.stat()
    if entry is not None and entry["identity"] != _identity(st):
        # Other bytes under the name: rewritten, or the name reused by the camera after an
        # erase (cameras number afresh after a wipe); an erased entry is not the end of a name.
        entry = None
    if entry is not None and entry["phase"] == "erased":
        return "already imported"
    if entry is None:
        age = time.time() - st.st_mtime
        if age < stable_s:
            # A camera clock ahead of this one (FAT keeps local time) makes a file look newer
            # than now: then only an identity unchanged over the wait says it is complete.
            wait = stable_s if age < 0 else stable_s - age
            if stop is not None and stop.wait(wait):
                return "not imported: stopping"
            if stop is None:
                time.sleep(wait)
            again = path.stat()
            if _identity(again) != _identity(st) or 0 <= time.time() - again.st_mtime < stable_s:
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
        sealing = entry.get("sealing")
        item_id = _adopt(rt, entry["sha256"], path.name, actor, case_ids) if sealing else None
        if item_id is None:
            entry["sealing"] = True
            state.save()
            manifest = _manifest(rt, path, entry, case_ids)
            sealed = seal_file(rt, path, manifest, actor=actor, unit=unit)
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
        if _receipt_of_other_item(target, item.id):  # the name reused: keep both receipts
            target = target.with_name(f"{path.name}.{item.id}.receipt.json")
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
        fsync_dir(path.parent)
        entry["phase"] = "erased"
        state.save()
    return doc


def _adopt(
    rt: Runtime, sha256: str, name: str, actor: str, case_ids: tuple[str, ...]
) -> str | None:
    """The item an interrupted seal of this file committed, if one did: sealed first by this
    importer under this name, already in every case asked for. Anything else (the seal
    failed, and the bytes came by another way) is sealed again, which links the cases and
    logs ``received_again``; adopting it would leave the cases out."""
    with rt.sessions() as session:
        item = repo.find_item_by_sha256(session, sha256=sha256)
        if item is None or item.status == DELETED or item.original_name != kept_file_name(name):
            return None
        first = repo.custody_of(session, item_id=item.id)[:1]
        if not first or first[0].action != "sealed" or first[0].actor != actor:
            return None
        if not set(case_ids) <= set(repo.case_ids_of(session, item_id=item.id)):
            return None
        return item.id


def _receipt_of_other_item(target: Path, item_id: str) -> bool:
    try:
        return bool(json.loads(target.read_text()).get("id") != item_id)
    except FileNotFoundError:
        return False
    except (ValueError, AttributeError, OSError):
        return True  # not a receipt we can read: leave it as it is


def _manifest(rt: Runtime, path: Path, entry: dict[str, Any], cases: tuple[str, ...]) -> Manifest:
    hint = parse_capture_filename(path.name)
    device = (
        hint.device_id if hint and hint.device_id and _PARTY.fullmatch(hint.device_id) else None
    )
    officer = (
        hint.officer_id if hint and hint.officer_id and _PARTY.fullmatch(hint.officer_id) else None
    )
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
        file_name=kept_file_name(path.name),
        sha256=entry["sha256"],
        size=entry["identity"]["size"],
        capture_start=started,
    )


def _party(hint: str | None) -> str | None:
    return hint if hint and _PARTY.fullmatch(hint) else None


def _write_durably(target: Path, doc: dict[str, Any]) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
