"""Search over generated data on real services: every filter against a model computed here,
cursor pagination (capture-time order, ID tiebreak, nothing twice, nothing lost), and what an
officer and a reviewer must not see, page by page."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from configs.settings import Settings
from ingest import people
from ingest.errors import InvalidInput
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.people import Principal
from ingest.runtime import Runtime
from ingest.search import Filters, decode_cursor, encode_cursor, parse_bbox, search
from storage import people as people_store
from storage import repository as repo
from storage.db import transaction
from tests.people import bearer, make_user

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
UNITS = ("U-1", "U-2")
CASES = {"K-1": "U-1", "K-2": "U-1", "K-3": "U-2"}


@dataclass
class Row:
    id: str
    officer: str
    device: str
    unit: str
    cases: list[str]
    time: datetime
    lat: Decimal | None
    lon: Decimal | None
    status: str
    media_type: str


def _generate(rt: Runtime, tmp: Path, n: int = 26) -> list[Row]:
    rnd = random.Random(1234)  # deterministic data; the expectations are computed from it
    with transaction(rt.sessions) as s:
        for case_id, unit in CASES.items():
            repo.ensure_case(s, case_id=case_id, now=BASE)
            people_store.claim_case_unit(s, case_id=case_id, unit=unit)
    rows: list[Row] = []
    for i in range(n):
        unit = UNITS[i % 2]
        own_cases = [c for c, u in CASES.items() if u == unit]
        cases = rnd.sample(own_cases, k=rnd.randint(0, len(own_cases)))
        if i == 4:
            cases = ["K-3"]  # a U-1 recording put into a U-2 case: U-2 sees it too
        photo = i % 3 == 0
        path = tmp / f"f{i}.{'jpg' if photo else 'mp4'}"
        path.write_bytes((JPEG_HEAD if photo else MP4_HEAD) + os.urandom(512))
        officer, device = f"O{i % 4}", f"D{i % 5}"
        sealed = seal_file(
            rt,
            path,
            Manifest(device_id=device, officer_id=officer, case_ids=tuple(cases)),
            actor="cli:test",
            unit=unit,
        )
        # Several items share a capture time (the ID breaks the tie); some have none.
        captured = None if i % 7 == 3 else BASE + timedelta(minutes=rnd.randint(0, 8) * 30)
        lat = Decimal(f"40.{rnd.randint(0, 99):02d}") if i % 4 else None
        lon = Decimal(f"111.{rnd.randint(0, 99):02d}") if lat is not None else None
        status = rnd.choice(["ready", "partial", "sealed"])
        with transaction(rt.sessions) as s:
            repo.update_item(
                s,
                item_id=sealed.item_id,
                captured_at=captured,
                gps_lat=None if lat is None else str(lat),
                gps_lon=None if lon is None else str(lon),
                status=status,
            )
            item = repo.get_item(s, item_id=sealed.item_id)
            rows.append(
                Row(
                    id=item.id,
                    officer=officer,
                    device=device,
                    unit=unit,
                    cases=sorted(cases),
                    time=captured or item.received_at,
                    lat=lat,
                    lon=lon,
                    status=status,
                    media_type=item.media_type,
                )
            )
    return rows


@pytest.fixture
def data(rt: Runtime, tmp_path: Path) -> list[Row]:
    return _generate(rt, tmp_path)


def _walk(
    rt: Runtime, filters: Filters, *, principal: Principal | None = None, limit: int = 4
) -> list[str]:
    """Every page, following ``next``; checks no page is over ``limit`` and no ID repeats."""
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        with rt.sessions() as s:
            page = search(s, principal=principal, filters=filters, cursor=cursor, limit=limit)
        assert set(page) == {"items", "next"}
        assert len(page["items"]) <= limit
        seen += [i["id"] for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
        assert len(page["items"]) == limit  # a page before the last is full
    assert len(seen) == len(set(seen))
    return seen


def _ordered(rows: list[Row]) -> list[str]:
    return [r.id for r in sorted(rows, key=lambda r: (r.time, r.id))]


def _inside(r: Row, bbox: tuple[Decimal, Decimal, Decimal, Decimal]) -> bool:
    w, s, e, n = bbox
    return r.lat is not None and r.lon is not None and w <= r.lon <= e and s <= r.lat <= n


def test_every_filter_matches_the_model(rt: Runtime, data: list[Row]) -> None:
    assert _walk(rt, Filters()) == _ordered(data)
    start, end = BASE + timedelta(hours=1), BASE + timedelta(hours=3)
    bbox = parse_bbox("111.20,40.10,111.70,40.80")
    assert bbox is not None
    cases: list[tuple[Filters, list[Row]]] = [
        (Filters(case="K-1"), [r for r in data if "K-1" in r.cases]),
        (Filters(case="K-3"), [r for r in data if "K-3" in r.cases]),
        (Filters(officer="O1"), [r for r in data if r.officer == "O1"]),
        (Filters(device="D2"), [r for r in data if r.device == "D2"]),
        (Filters(unit="U-2"), [r for r in data if r.unit == "U-2"]),
        (Filters(start=start), [r for r in data if r.time >= start]),
        (Filters(end=end), [r for r in data if r.time < end]),
        (Filters(start=start, end=end), [r for r in data if start <= r.time < end]),
        (Filters(bbox=bbox), [r for r in data if _inside(r, bbox)]),
        (Filters(status="partial"), [r for r in data if r.status == "partial"]),
        (Filters(media_type="image/jpeg"), [r for r in data if r.media_type == "image/jpeg"]),
        (
            Filters(unit="U-1", status="ready", media_type="video/mp4"),
            [
                r
                for r in data
                if r.unit == "U-1" and r.status == "ready" and r.media_type == "video/mp4"
            ],
        ),
        (Filters(case="NO-SUCH"), []),
    ]
    for filters, expected in cases:
        for limit in (1, 3, 50):
            assert _walk(rt, filters, limit=limit) == _ordered(expected), (filters, limit)
    # The model is not trivial: the filters split the data.
    assert all(0 < len(e) < len(data) for _, e in cases[:-1])


def test_the_cursor_is_stable_when_items_arrive_meanwhile(
    rt: Runtime, data: list[Row], tmp_path: Path
) -> None:
    with rt.sessions() as s:
        first = search(s, principal=None, filters=Filters(), limit=5)
    later = tmp_path / "late.mp4"
    later.write_bytes(MP4_HEAD + os.urandom(256))
    seal_file(rt, later, Manifest(), actor="cli:test")  # received now: sorts last
    rest = []
    cursor = first["next"]
    while cursor:
        with rt.sessions() as s:
            page = search(s, principal=None, filters=Filters(), cursor=cursor, limit=5)
        rest += [i["id"] for i in page["items"]]
        cursor = page["next"]
    ids = [i["id"] for i in first["items"]] + rest
    assert ids[: len(data)] == _ordered(data)
    assert len(ids) == len(data) + 1


def test_officers_and_reviewers_see_only_theirs(rt: Runtime, data: list[Row]) -> None:
    officer = Principal(kind="user", name="110001", role="officer", unit="U-2")
    mine = [r for r in data if r.unit == "U-2" or any(CASES[c] == "U-2" for c in r.cases)]
    assert _walk(rt, Filters(), principal=officer, limit=3) == _ordered(mine)
    assert any(r.unit == "U-1" for r in mine)  # the U-1 item in the U-2 case
    assert _walk(rt, Filters(unit="U-1"), principal=officer) == _ordered(
        [r for r in mine if r.unit == "U-1"]
    )

    make_user(rt, "rev", "reviewer")
    people.grant(rt.sessions, name="rev", case_id="K-2", until=None, actor="cli:test")
    past = datetime.now(UTC) - timedelta(days=3)
    people.grant(
        rt.sessions, name="rev", case_id="K-1", until=past + timedelta(days=1), actor="t", now=past
    )
    reviewer = Principal(kind="user", name="rev", role="reviewer", unit=None)
    granted = [r for r in data if "K-2" in r.cases]
    assert granted and len(granted) < len(data)
    for limit in (1, 2, 50):
        assert _walk(rt, Filters(), principal=reviewer, limit=limit) == _ordered(granted)
    # Filters never widen what a reviewer sees: the expired case and another unit stay empty.
    only_k1 = [r for r in data if "K-1" in r.cases and "K-2" not in r.cases]
    assert only_k1
    assert _walk(rt, Filters(case="K-1"), principal=reviewer) == _ordered(
        [r for r in granted if "K-1" in r.cases]
    )
    assert _walk(rt, Filters(unit="U-2"), principal=reviewer) == []
    auditor = Principal(kind="user", name="aud", role="auditor", unit=None)
    assert _walk(rt, Filters(), principal=auditor) == []


def test_bad_arguments_are_clear_errors() -> None:
    for text in ("1,2,3", "a,b,c,d", "10,50,5,60", "0,91,1,92"):
        with pytest.raises(InvalidInput, match="bbox"):
            parse_bbox(text)
    for cursor in ("", "not-base64!", encode_cursor(BASE, "x")[:-3], "WzEsMl0"):
        with pytest.raises(InvalidInput, match="cursor"):
            decode_cursor(cursor)
    assert decode_cursor(encode_cursor(BASE, "01ABC")) == (BASE, "01ABC")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, workers=0)) as c:
        yield c


def test_http_search_pages_and_refuses_bad_input(client: TestClient, tmp_path: Path) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    data = _generate(rt, tmp_path, n=8)
    auth = bearer(make_user(rt, "110001", "officer", "U-1"))
    expected = _ordered(
        [r for r in data if r.unit == "U-1" or any(CASES[c] == "U-1" for c in r.cases)]
    )
    got: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        r = client.get("/v1/items", params=params, headers=auth)
        assert r.status_code == 200, r.text
        got += [i["id"] for i in r.json()["items"]]
        if r.json()["next"] is None:
            break
        params["cursor"] = r.json()["next"]
    assert got == expected
    since = (BASE + timedelta(hours=2)).isoformat()
    r = client.get("/v1/items", params={"from": since, "status": "ready"}, headers=auth)
    want = [i for i in expected if next(d for d in data if d.id == i).status == "ready"]
    want = [i for i in want if next(d for d in data if d.id == i).time >= BASE + timedelta(hours=2)]
    assert [i["id"] for i in r.json()["items"]] == want
    for params in ({"cursor": "garbage"}, {"bbox": "1,2"}, {"from": "yesterday"}, {"limit": 0}):
        r = client.get("/v1/items", params=params, headers=auth)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
