"""Helpers for the log and tamper tests: distinct evidence files, sealing, raw SQL edits."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

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


@contextlib.contextmanager
def store_calls_under_the_sequencer(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Record each object-store call made by a thread while a transaction of that same thread
    holds the log sequencer (it updated ``log_state`` and has not ended yet)."""
    holding: dict[int, int] = {}  # DB-API connection -> the thread whose transaction holds it
    calls: list[str] = []

    def on_execute(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE LOG_STATE"):
            holding[id(conn.connection.dbapi_connection)] = threading.get_ident()

    def on_end(conn: Any) -> None:
        holding.pop(id(conn.connection.dbapi_connection), None)

    def watched(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() in holding.values():
                calls.append(name)
            return method(*args, **kwargs)

        return call

    for name in dir(type(rt.store)):
        method = getattr(rt.store, name)
        if not name.startswith("_") and callable(method):
            monkeypatch.setattr(rt.store, name, watched(name, method))
    listeners: list[tuple[str, Callable[..., Any]]] = [
        ("before_cursor_execute", on_execute),
        ("commit", on_end),
        ("rollback", on_end),
    ]
    for name, fn in listeners:
        event.listen(rt.engine, name, fn)
    try:
        yield calls
    finally:
        for name, fn in listeners:
            event.remove(rt.engine, name, fn)
