"""What ``liuhen ingest`` does after sealing: link a sidecar GPS track, optionally wait."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest import custody
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from ingest.worker import wait_for
from storage import repository as repo
from storage.db import transaction


def link_track(rt: Runtime, item_ids: list[str], track_item_id: str, *, actor: str) -> None:
    """Point items at the track item recorded alongside them (a custody fact, logged)."""
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
            repo.enqueue_job(session, item_id=item_id, now=now)


def after_ingest(
    rt: Runtime,
    results: list[dict[str, Any]],
    *,
    track: Path | None,
    wait: bool,
    actor: str,
    manifest: Manifest | None = None,
) -> None:
    item_ids = [r["id"] for r in results]
    if track is not None:
        base = manifest or Manifest()
        sealed = seal_file(
            rt,
            track,
            base.model_copy(update={"file_name": track.name, "sha256": None, "size": None}),
            actor=actor,
        )
        link_track(rt, item_ids, sealed.item_id, actor=actor)
        item_ids.append(sealed.item_id)
    if wait:
        wait_for(rt, item_ids)
        with rt.sessions() as session:
            for r in results:
                r["status"] = repo.get_item(session, item_id=r["id"]).status
