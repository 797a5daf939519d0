"""Cases for the web tests: sealed items with known times, officers, devices and units, real
users (the people service, Argon2 passwords), and a web client logged in through the real
login form."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import update

from ingest import people
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from storage.db import transaction
from storage.tables import Case, Device, Person

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Clip:
    """One recording to seal: start offset from T0 and length, both in seconds."""

    officer: str
    device: str
    start_s: float
    length_s: float
    case_ids: tuple[str, ...]


def fake_mp4(tmp: Path, name: str) -> Path:
    """Bytes no other test seals (the bucket is shared), sniffed as MP4 (never probed)."""
    path = tmp / name
    path.write_bytes(MP4_HEAD + os.urandom(2048))
    return path


def seal_clips(rt: Runtime, tmp: Path, clips: Sequence[Clip]) -> list[str]:
    """Seal fake MP4s whose capture times come from the manifest; returns item IDs."""
    ids = []
    for i, c in enumerate(clips):
        start = T0 + timedelta(seconds=c.start_s)
        path = fake_mp4(tmp, f"{c.officer}-{i:03d}.mp4")
        manifest = Manifest(
            officer_id=c.officer,
            device_id=c.device,
            case_ids=c.case_ids,
            file_name=path.name,
            capture_start=start,
            capture_end=start + timedelta(seconds=c.length_s),
        )
        ids.append(seal_file(rt, path, manifest, actor="test").item_id)
    return ids


def set_units(
    rt: Runtime,
    *,
    cases: dict[str, str] | None = None,
    persons: dict[str, str] | None = None,
    devices: dict[str, str] | None = None,
) -> None:
    """Give cases, officers and devices their units (the people/devices work owns these)."""
    with transaction(rt.sessions) as session:
        for table, values in ((Case, cases), (Person, persons), (Device, devices)):
            for key, unit in (values or {}).items():
                session.execute(update(table).where(table.id == key).values(unit=unit))


USERS = (
    ("admin1", "admin", None),
    ("audit1", "auditor", None),
    ("off1", "officer", "unit-a"),
    ("off2", "officer", "unit-b"),
    ("rev1", "reviewer", None),
)


def make_web_users(rt: Runtime) -> None:
    """The users above, made as ``liuhen user add NAME --role R --password-stdin`` makes
    them, all with :data:`PASSWORD`."""
    for name, role, unit in USERS:
        people.add_user(
            rt.sessions, name=name, role=role, unit=unit, password=PASSWORD, actor="cli:test"
        )


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> Response:
    form = client.get("/login")
    r: Response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf_of(form.text)},
        follow_redirects=False,
    )
    return r


def post_form(client: TestClient, path: str, page: str, **fields: Any) -> Response:
    """POST a form with the CSRF token taken from ``page``."""
    r: Response = client.post(path, data={"csrf": csrf_of(page), **fields}, follow_redirects=False)
    return r
