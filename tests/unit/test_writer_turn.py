"""SQLite writers of one process take turns per database file, whatever engine they use."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine

from storage.db import make_engine, writer_turn
from storage.errors import IndexUnavailable


def test_engines_on_one_file_share_the_turn(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    durable, quick = make_engine(url), make_engine(url, durable=False)
    other = make_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    got: dict[str, bool] = {}

    def try_turn(name: str, engine: Engine) -> None:
        # Another thread of this process: it must wait while the first holds the file's turn.
        got[name] = True
        try:
            with writer_turn(engine, timeout_s=0.2):
                pass
        except IndexUnavailable:
            got[name] = False

    with writer_turn(durable):
        for name, engine in (("same file", quick), ("other file", other)):
            t = threading.Thread(target=try_turn, args=(name, engine))
            t.start()
            t.join()
    assert got == {"same file": False, "other file": True}
    for engine in (durable, quick, other):
        engine.dispose()


def test_the_quick_engine_does_not_wait_for_the_disk(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    levels = {}
    for name, engine in (("durable", make_engine(url)), ("quick", make_engine(url, durable=False))):
        with engine.connect() as conn:
            levels[name] = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        engine.dispose()
    assert levels == {"durable": 2, "quick": 1}  # FULL, NORMAL
