"""Helpers for the log and tamper tests: distinct evidence files, sealing, raw SQL edits."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import text

from ingest.intake import SealResult, seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from storage import repository as repo
from storage.tables import LogLeaf


def distinct_files(folder: Path, n: int) -> list[Path]:
    """``n`` small files with different bytes (so ``n`` different items)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip-{i:03d}.bin"
        path.write_bytes(b"liuhen test evidence\n" + secrets.token_bytes(200 + i))
        paths.append(path)
    return paths


def seal(rt: Runtime, path: Path, *cases: str) -> SealResult:
    return seal_file(rt, path, Manifest(case_ids=cases, file_name=path.name), actor="test")


def sql(rt: Runtime, statement: str, **params: Any) -> None:
    """Change the index behind liuhen's back, the way someone with database access could."""
    with rt.engine.begin() as conn:
        conn.execute(text(statement), params)


def leaf_rows(rt: Runtime) -> list[LogLeaf]:
    with rt.sessions() as session:
        return list(repo.leaves_between(session, start=0, stop=repo.log_size(session)))
