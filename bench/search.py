"""Search pages at a region's scale: an index filled directly with rows (no pipeline), the
pages officers, reviewers and the CLI ask for timed through ``ingest.search.search``, then the
same pages again without the search indexes of migration 0008, in the same run (the ratio is
what the indexes buy; absolute times on a shared machine mean little).

    python bench/search.py [--items 200000] [--database-url postgresql+psycopg://...]

With ``--database-url`` the database must be empty (it is migrated here); without it a
temporary SQLite file is used.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import timed
from ingest.people import Principal
from ingest.search import Filters, search
from storage.db import make_engine, make_sessionmaker, migrate
from storage.tables import (
    Case,
    CaseGrant,
    Device,
    Item,
    ItemCase,
    ItemUnit,
    Person,
    User,
)

UNITS, OFFICERS, CASES = 50, 2000, 20_000
YEAR = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = ("video/mp4",) * 6 + ("image/jpeg",) * 3 + ("audio/mp4",)
INDEXES = ("ix_items_time_id", "ix_cases_unit")


def fill(engine: Engine, items: int, rng: random.Random) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Person),
            [
                {"id": f"P{i:05d}", "unit": f"U-{i % UNITS}", "created_at": now}
                for i in range(OFFICERS)
            ],
        )
        conn.execute(
            insert(Device),
            [
                {"id": f"D{i:05d}", "unit": f"U-{i % UNITS}", "created_at": now}
                for i in range(OFFICERS)
            ],
        )
        conn.execute(
            insert(Case),
            [
                {"id": f"C-{i:05d}", "unit": f"U-{i % UNITS}", "created_at": now}
                for i in range(CASES)
            ],
        )
        conn.execute(
            insert(User),
            [
                {"name": "officer-7", "role": "officer", "unit": "U-7", "created_at": now,
                 "created_by": "bench"},
                {"name": "reviewer-1", "role": "reviewer", "unit": None, "created_at": now,
                 "created_by": "bench"},
            ],
        )  # fmt: skip
        conn.execute(
            insert(CaseGrant),
            [
                {"user_name": "reviewer-1", "case_id": f"C-{i * 997 % CASES:05d}",
                 "granted_at": now, "granted_by": "bench", "until": now + timedelta(days=30)}
                for i in range(20)
            ],
        )  # fmt: skip
        batch: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        units: list[dict[str, Any]] = []
        for i in range(items):
            officer = rng.randrange(OFFICERS)
            received = YEAR + timedelta(seconds=rng.randrange(365 * 86400))
            captured = received - timedelta(minutes=rng.randrange(600))
            item_id = f"01BENCH{i:019d}"
            batch.append(
                {
                    "id": item_id,
                    "sha256": f"{i:064x}",
                    "size": 1000,
                    "media_type": rng.choice(KINDS),
                    "object_key": f"originals/{i}",
                    "version_id": "v",
                    "retain_until": received + timedelta(days=183),
                    "device_id": f"D{officer:05d}",
                    "officer_id": f"P{officer:05d}",
                    "status": "ready",
                    "problems": [],
                    "received_at": received,
                    "captured_at": None if i % 10 == 0 else captured,
                    "gps_lat": f"{30 + rng.random():.6f}",
                    "gps_lon": f"{120 + rng.random():.6f}",
                    "manifest": {"file_name": f"clip-{i}.mp4", "pad": "x" * 600},
                    "log_index": i,
                }
            )
            units.append({"item_id": item_id, "unit": f"U-{officer % UNITS}"})
            if i % 3 == 0:
                links.append(
                    {"item_id": item_id, "case_id": f"C-{rng.randrange(CASES):05d}",
                     "linked_at": received, "linked_by": "bench"}
                )  # fmt: skip
            if len(batch) == 10_000:
                _flush(conn, batch, links, units)
        _flush(conn, batch, links, units)


def _flush(conn: Any, batch: list[Any], links: list[Any], units: list[Any]) -> None:
    for table, rows in ((Item, batch), (ItemCase, links), (ItemUnit, units)):
        if rows:
            conn.execute(insert(table), rows)
            rows.clear()


def pages(engine: Engine) -> dict[str, Callable[[], dict[str, Any]]]:
    sessions = make_sessionmaker(engine)
    officer = Principal(kind="user", name="officer-7", role="officer", unit="U-7")
    reviewer = Principal(kind="user", name="reviewer-1", role="reviewer", unit=None)
    day = datetime(2026, 6, 1, tzinfo=UTC)

    def page(principal: Principal | None, filters: Filters, *, deep: bool = False) -> Any:
        def run() -> dict[str, Any]:
            with sessions() as s:
                doc = search(s, principal=principal, filters=filters, limit=50)
                if deep:  # the 20th page: a cursor in the middle of the table
                    for _ in range(19):
                        doc = search(
                            s, principal=principal, filters=filters, cursor=doc["next"], limit=50
                        )
                return doc

        return run

    return {
        "all, first page (CLI)": page(None, Filters()),
        "all, 20th page": page(None, Filters(), deep=True),
        "one day": page(None, Filters(start=day, end=day + timedelta(days=1))),
        "videos": page(None, Filters(media_type="video")),
        "one case": page(None, Filters(case="C-00042")),
        "officer's view": page(officer, Filters()),
        "officer, one day": page(officer, Filters(start=day, end=day + timedelta(days=1))),
        "reviewer's view": page(reviewer, Filters()),
    }


def count_queries(engine: Engine, run: Callable[[], object]) -> int:
    seen = [0]

    def count(*_a: object) -> None:
        seen[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return seen[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'index.sqlite3'}"
        engine = make_engine(url)
        migrate(engine)
        t0 = time.perf_counter()
        fill(engine, args.items, random.Random(7))
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        print(f"{engine.dialect.name}: {args.items:,} items in {time.perf_counter() - t0:.0f} s")
        queries = pages(engine)
        officer_view = queries["officer's view"]
        print(f"queries for an officer's page of 50: {count_queries(engine, officer_view)}")
        with_ix = {name: timed(run, repeat=args.repeat) for name, run in queries.items()}
        with engine.begin() as conn:
            for name in INDEXES:
                conn.execute(text(f"DROP INDEX {name}"))
            conn.execute(text("ANALYZE"))
        without = {name: timed(run, repeat=args.repeat) for name, run in queries.items()}
        print(f"{'page':<24} {'indexed ms':>11} {'without ms':>11} {'ratio':>7}")
        for name in queries:
            a, b = with_ix[name] * 1000, without[name] * 1000
            print(f"{name:<24} {a:>11.1f} {b:>11.1f} {b / a:>6.1f}x")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
