"""Benchmark storing derivatives against concurrent seals. Prints ratios against a baseline of
the same run.

    .venv/bin/python bench/derivatives.py [--items 30] [--roles 8] [--kb 20] [--sealers 8]
                                          [--database-url URL]

A worker stores ``--roles`` derivatives of ``--kb`` KB for each of ``--items`` held items while
``--sealers`` threads seal small files. Two ways, each on a fresh index:

* ``one transaction`` (``ingest.derivative_store``): each derivative is PUT with its retention
  and legal hold, then all of the item's are indexed and logged in one transaction that makes
  no store call;
* ``per derivative`` (the baseline, how ``ingest.jobs`` stored them before): an unretained PUT,
  then a transaction per derivative that appends its leaf, inserts its row and sets the
  retention and the legal hold on the store before it commits.

Printed: items stored per second, seals per second meanwhile, and how long the worker held
the log sequencer per item (from its ``UPDATE log_state`` to its commit), then the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import home_settings, line
from ingest import derivative_store, media
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime, open_runtime
from integrity.leaves import derivative_leaf
from storage import keys, people
from storage import repository as repo
from storage.db import transaction
from storage.objects import retain_until
from storage.seaweed import EmbeddedSeaweed
from storage.tables import Derivative

RECIPE = media.Recipe(tool="bench", version="1", args=(), params={})


def per_derivative(rt: Runtime, item_id: str, parent: str, derived: list[media.Derived]) -> None:
    """The baseline: one transaction per derivative, its store calls inside."""
    for d in derived:
        stored = rt.store.put_file(keys.derivative_key(item_id, d.role, d.ext), d.path)
        now = datetime.now(UTC)
        fields = derivative_leaf(
            item_id=item_id,
            sha256=stored.sha256,
            size=stored.size,
            parent_sha256=parent,
            role=d.role,
            recipe=RECIPE.as_dict(),
        )
        with transaction(rt.sessions) as session:
            leaf = rt.ledger.append(
                session, kind="derivative", item_id=item_id, build=fields.copy, now=now
            )
            session.add(
                Derivative(
                    item_id=item_id,
                    role=d.role,
                    object_key=stored.key,
                    version_id=stored.version_id,
                    sha256=stored.sha256,
                    size=stored.size,
                    media_type=d.media_type,
                    recipe=RECIPE.as_dict(),
                    created_at=now,
                    log_index=leaf.index,
                )
            )
            session.flush()
            rt.store.retain(stored.key, stored.version_id, retain_until(rt.settings.retention))
            if people.item_hold_state(session, item_id=item_id):
                rt.store.legal_hold(stored.key, stored.version_id, True)


def one_transaction(rt: Runtime, item_id: str, parent: str, derived: list[media.Derived]) -> None:
    derivative_store.store_new(
        rt, item_id=item_id, parent_sha256=parent, have=set(), derived=derived
    )


class SequencerClock:
    """Seconds the given thread's transactions held the sequencer: from the moment its
    ``UPDATE log_state`` returned (the row locked; waiting for it is not holding it) to the end."""

    def __init__(self, rt: Runtime) -> None:
        self.thread: int | None = None
        self.held = 0.0
        self._since: dict[int, float] = {}
        event.listen(rt.engine, "after_cursor_execute", self._execute)
        event.listen(rt.engine, "commit", self._end)
        event.listen(rt.engine, "rollback", self._end)

    def _execute(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == self.thread and statement.startswith("UPDATE log_state"):
            self._since.setdefault(id(conn.connection.dbapi_connection), time.perf_counter())

    def _end(self, conn: Any) -> None:
        started = self._since.pop(id(conn.connection.dbapi_connection), None)
        if started is not None:
            self.held += time.perf_counter() - started


@contextmanager
def _database(server_url: str | None, name: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database for one way (each has its own log), dropped after."""
    if server_url is None:
        yield None
        return
    url = make_url(server_url)
    db = f"bench_derivatives_{name.replace('-', '_')}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db}"))
            conn.execute(text(f"CREATE DATABASE {db}"))
        yield url.set(database=db).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
    finally:
        admin.dispose()


def _files(folder: Path, n: int, size: int, prefix: bytes) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.bin"
        path.write_bytes(prefix + os.urandom(size))
        paths.append(path)
    return paths


def run_mode(
    rt: Runtime,
    root: Path,
    store: Callable[[Runtime, str, str, list[media.Derived]], None],
    args: argparse.Namespace,
) -> dict[str, float]:
    sources = _files(root / "items", args.items, 2_000, b"\xff\xd8\xff\xe0")
    items = [seal_file(rt, p, Manifest(case_ids=("B-1",)), actor="bench") for p in sources]
    derived = [
        media.Derived(f"thumb-{r:03d}", path, "image/jpeg", "jpg", RECIPE)
        for r, path in enumerate(_files(root / "derived", args.roles, args.kb * 1024, b"\xff\xd8"))
    ]
    (root / "seals").mkdir()
    clock = SequencerClock(rt)
    done = threading.Event()
    seals = [0]
    lock = threading.Lock()

    def sealer() -> None:
        path = root / "seals" / f"{threading.get_ident()}.jpg"
        while not done.is_set():
            path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2_000))  # new bytes: a new item
            seal_file(rt, path, Manifest(), actor="bench")
            with lock:
                seals[0] += 1

    threads = [threading.Thread(target=sealer) for _ in range(args.sealers)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the sealers at full speed before the worker starts
    clock.thread = threading.get_ident()
    with lock:
        seals_before = seals[0]
    t0 = time.perf_counter()
    for sealed in items:
        store(rt, sealed.item_id, sealed.sha256, derived)
    elapsed = time.perf_counter() - t0
    with lock:
        sealed_meanwhile = seals[0] - seals_before
    done.set()
    for t in threads:
        t.join()
    with rt.sessions() as s:
        stored = sum(len(repo.derivatives_of(s, item_id=i.item_id)) for i in items)
    assert stored == args.items * args.roles, stored
    return {
        "items/s": args.items / elapsed,
        "seals/s": sealed_meanwhile / elapsed,
        "held ms/item": clock.held / args.items * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--roles", type=int, default=8, help="derivatives per item (a video: 8)")
    ap.add_argument("--kb", type=int, default=20, help="size of each derivative")
    ap.add_argument("--sealers", type=int, default=8)
    ap.add_argument(
        "--database-url",
        help="a PostgreSQL server (a database per way is made there); default SQLite",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="liuhen-bench-derived-") as tmp:
        root = Path(tmp)
        weed = EmbeddedSeaweed(root / "seaweed")
        s3 = weed.start()
        results: dict[str, dict[str, float]] = {}
        try:
            for name, store in (
                ("per derivative", per_derivative),
                ("one transaction", one_transaction),
            ):
                slug = name.replace(" ", "-")
                with _database(args.database_url, slug) as url:
                    rt = open_runtime(home_settings(root, s3, slug, url, bucket=f"bench-{slug}"))
                    try:
                        results[name] = run_mode(rt, root / slug, store, args)
                    finally:
                        rt.close()
                for what, value in results[name].items():
                    line(f"{name}: {what}", value, "")
        finally:
            weed.release()
            weed.stop()
    new, old = results["one transaction"], results["per derivative"]
    line("items/s, one transaction / per derivative", new["items/s"] / old["items/s"], "x")
    line(
        "seals/s meanwhile, one transaction / per derivative", new["seals/s"] / old["seals/s"], "x"
    )
    line(
        "sequencer held per item, per derivative / one",
        old["held ms/item"] / new["held ms/item"],
        "x",
    )


if __name__ == "__main__":
    main()
