"""What ``liuhen ingest`` does after sealing: link a sidecar GPS track, optionally wait."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest import custody
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from storage import repository as repo
from storage.db import transaction


def link_track(rt: Runtime, item_ids: list[str], track_item_id: str, *, actor: str) -> None:
    """Point items at the track item recorded alongside them (a custody fact, logged), and
    queue their pipeline again so time and place take the track into account."""
    now = datetime.now(UTC)
    with transaction(rt.sessions) as session:
        for item_id in item_ids:
            if item_id == track_item_id:
                continue
            item = repo.get_item(session, item_id=item_id)
            repo.update_item(session, item_id=item_id, track_item_id=track_item_id)
            custody.record(
                session,
                rt.ledger,
                item=item,
                action="link_track",
                actor=actor,
                now=now,
                details={"track_item_id": track_item_id},
            )
            rt.queue.defer(session, item_id)


def track_manifest(
    rt: Runtime, item_ids: list[str], track: Path, manifest: Manifest | None
) -> Manifest:
    """The manifest of a sidecar track: the party and cases of the items it accompanies.

    From ``manifest`` when given, else from the items: the cases every one of them is linked
    to, and the device and officer when they all agree. What describes the media file itself
    (hash, size, capture times, the device's signature over its manifest) is not carried over.
    """
    if manifest is not None:
        device_id, officer_id = manifest.device_id, manifest.officer_id
        case_ids, device_time = set(manifest.case_ids), manifest.device_time
    else:
        with rt.sessions() as session:
            items = [repo.get_item(session, item_id=i) for i in item_ids]
            cases = [set(repo.case_ids_of(session, item_id=i)) for i in item_ids]
        devices = {i.device_id for i in items}
        officers = {i.officer_id for i in items}
        device_id = devices.pop() if len(devices) == 1 else None
        officer_id = officers.pop() if len(officers) == 1 else None
        case_ids = set.intersection(*cases) if cases else set()
        device_time = None
    return Manifest(  # validated: the file name is data from the caller
        device_id=device_id,
        officer_id=officer_id,
        case_ids=tuple(sorted(case_ids)),
        file_name=track.name,
        device_time=device_time,
    )


def after_ingest(
    rt: Runtime,
    results: list[dict[str, Any]],
    *,
    track: Path | None,
    wait: bool,
    actor: str,
    manifest: Manifest | None = None,
) -> None:
    """Seal and link ``track`` (if any), then with ``wait`` run the pipeline until the items
    (and the track) are done and put each item's final ``status`` into ``results``."""
    item_ids = [r["id"] for r in results]
    if track is not None:
        sealed = seal_file(rt, track, track_manifest(rt, item_ids, track, manifest), actor=actor)
        link_track(rt, item_ids, sealed.item_id, actor=actor)
        item_ids.append(sealed.item_id)
    if wait:
        rt.queue.wait_for(item_ids)
        with rt.sessions() as session:
            for r in results:
                r["status"] = repo.get_item(session, item_id=r["id"]).status
