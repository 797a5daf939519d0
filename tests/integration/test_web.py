"""The web pages on real services through the app (no browser): login, sessions, CSRF, rate
limits, who may see what, the case page's gaps and overlaps, search, supervision and its CSV.

The browser test (tests/e2e/test_browser.py) plays media; here every case uses items sealed
with manifest times, so no pipeline needs to run.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from configs.settings import Settings
from ingest.runtime import Runtime
from storage import repository as repo
from tests.conftest import SettingsFactory
from tests.webdata import (
    PASSWORD,
    Clip,
    csrf_of,
    directory,
    login,
    post_form,
    seal_clips,
    set_units,
)

CASE = "C-2026/0301"
# Officer p1: 0-60 s, 70-130 s (a 10 s pause: under the 60 s threshold), 400-460 s (a 270 s
# gap), 450-500 s on another device (overlaps the previous by 10 s). Officer p2: one clip.
CLIPS = [
    Clip("p1", "cam-1", 0, 60, (CASE,)),
    Clip("p1", "cam-1", 70, 60, (CASE,)),
    Clip("p1", "cam-1", 400, 60, (CASE,)),
    Clip("p1", "cam-9", 450, 50, (CASE,)),
    Clip("p2", "cam-2", 30, 300, (CASE,)),
    Clip("p3", "cam-3", 0, 10, ("C-GRANTED",)),
    Clip("p4", "cam-4", 0, 10, ("C-OTHER",)),
]


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(web={"login_failures_per_user": 3, "login_failures_per_address": 5})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, workers=0)
    app.state.web_directory = directory()
    with TestClient(app) as c:
        yield c


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


@pytest.fixture
def items(runtime: Runtime, tmp_path: Path) -> list[str]:
    ids = seal_clips(runtime, tmp_path, CLIPS)
    set_units(
        runtime,
        cases={CASE: "unit-a", "C-OTHER": "unit-b"},
        persons={"p1": "unit-a", "p2": "unit-a", "p4": "unit-b"},
        devices={"cam-3": "unit-c"},
    )
    return ids


def test_pages_need_a_login_and_come_back_after_it(client: TestClient, items: list[str]) -> None:
    r = client.get(f"/cases/{CASE}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")
    cookie = r.headers["set-cookie"]  # every visitor gets a session (for the CSRF token)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    r = client.get(r.headers["location"])
    assert "csrf" in r.text and 'name="username"' in r.text
    r = client.post(
        "/login",
        data={"username": "admin1", "password": PASSWORD, "csrf": csrf_of(r.text),
              "next": f"/cases/{CASE}"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{CASE}"
    page = client.get(f"/cases/{CASE}")
    assert page.status_code == 200
    for item_id in items[:5]:
        assert f'href="/items/{item_id}"' in page.text
    assert items[5] not in page.text  # another case's item


def test_secure_cookie_over_https(settings: Settings) -> None:
    app = create_app(settings, workers=0)
    app.state.web_directory = directory()
    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/login")
        assert "Secure" in r.headers["set-cookie"]
        assert login(c, "admin1").status_code == 303


def test_login_refuses_an_open_redirect(client: TestClient) -> None:
    form = client.get("/login")
    r = client.post(
        "/login",
        data={"username": "admin1", "password": PASSWORD, "csrf": csrf_of(form.text),
              "next": "//evil.example/"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.headers["location"] == "/me"


def test_login_failures_are_logged_and_limited_per_user_and_address(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    for _ in range(3):
        assert login(client, "off1", "wrong").status_code == 401
    assert caplog.text.count("login failed: user='off1'") == 3
    r = login(client, "off1")  # the right password, but the user name is locked for now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "login refused (rate limit): user='off1'" in caplog.text
    # Other names from the same address: two more failures reach the address limit (5).
    assert login(client, "nobody", "x").status_code == 401
    assert login(client, "nobody2", "x").status_code == 401
    assert login(client, "admin1").status_code == 429
    assert "login: user=" not in caplog.text  # nobody got in


def test_a_good_login_is_logged_and_issues_a_fresh_session(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    before = client.get("/login")
    anonymous_csrf = csrf_of(before.text)
    assert login(client, "admin1").status_code == 303
    assert "login: user=admin1 role=admin" in caplog.text
    me = client.get("/me")
    assert me.status_code == 200 and "admin1" in me.text
    assert csrf_of(me.text) != anonymous_csrf


def test_every_post_needs_the_csrf_token(
    client: TestClient, items: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    # Logging in without the token fails, with the right password.
    client.get("/login")
    r = client.post("/login", data={"username": "admin1", "password": PASSWORD})
    assert r.status_code == 403 and "CSRF" in r.text
    assert login(client, "admin1").status_code == 303
    page = client.get(f"/items/{items[0]}").text
    targets = [
        f"/items/{items[0]}:verify",
        f"/cases/{CASE}:link",
        f"/cases/{CASE}:unlink",
        f"/cases/{CASE}:hold",
        f"/cases/{CASE}:release",
        f"/cases/{CASE}:export",
        "/me/tokens",
        "/logout",
    ]
    before = _custody_actions(client, items[0])
    for path in targets:
        for bad in ({}, {"csrf": "forged"}):
            r = client.post(path, data={"reason": "x", "item_id": items[0], **bad})
            assert r.status_code == 403, path
    assert _custody_actions(client, items[0]) == before  # no verify ran
    assert caplog.text.count("bad or missing CSRF token") == 2 * len(targets) + 1
    # With the token, verify runs; the rest answer 501 (their services are not here yet).
    r = post_form(client, f"/items/{items[0]}:verify", page)
    assert r.status_code == 200 and 'id="verify-result"' in r.text
    assert "verify" in _custody_actions(client, items[0])
    for path in targets[1:7]:
        r = post_form(client, path, page, reason="test", item_id=items[0])
        assert r.status_code == 501, path
    assert client.get("/me").status_code == 200
    assert post_form(client, "/logout", page).status_code == 303
    assert client.get("/me", follow_redirects=False).status_code == 303  # logged out


def _custody_actions(client: TestClient, item_id: str) -> list[str]:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as s:
        return [e.action for e in repo.custody_of(s, item_id=item_id)]


def test_case_page_marks_the_gap_and_the_overlap(client: TestClient, items: list[str]) -> None:
    login(client, "admin1")
    r = client.get(f"/cases/{CASE}")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    page = r.text
    # One gap (p1: 130 s -> 400 s = 4 min 30 s); the 10 s pause is under the threshold.
    assert page.count('class="gap-row"') == 1
    assert "4 分 30 秒" in page  # Chinese by default
    assert f'href="/items/{items[1]}"' in page and f'href="/items/{items[2]}"' in page
    assert page.count('<g class="gap">') == 1
    assert page.count('class="overlap"') == 1  # p1's two devices, 450-460 s
    assert 'id="gap-count">录像间断: 1' in page
    # A lower threshold turns the 10 s pause into a gap too.
    assert client.get(f"/cases/{CASE}?gap=5").text.count('class="gap-row"') == 2
    assert client.get(f"/cases/{CASE}?gap=abc").text.count('class="gap-row"') == 1  # default
    en = client.get(f"/cases/{CASE}?lang=en").text
    assert "Recording gaps" in en and "4 min 30 s" in en
    # The choice is remembered.
    assert "Recording gaps" in client.get(f"/cases/{CASE}").text
    client.cookies.delete("liuhen_lang")
    assert "Timeline" in client.get(f"/cases/{CASE}", headers={"Accept-Language": "en-US"}).text
    assert (
        "时间轴" in client.get(f"/cases/{CASE}", headers={"Accept-Language": "fr, zh;q=0.5"}).text
    )


def test_who_may_see_which_case(
    client: TestClient, items: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    login(client, "rev1")  # reviewer, granted C-GRANTED only
    assert client.get("/cases/C-GRANTED").status_code == 200
    r = client.get(f"/cases/{CASE}")
    assert r.status_code == 403 and "您没有查看此案件的权限" in r.text
    assert items[0] not in r.text
    assert f"denied: user=rev1 role=reviewer path=/cases/{CASE} case={CASE}" in caplog.text
    # An item of a case not granted: refused, logged, and a custody event of that item.
    r = client.get(f"/items/{items[0]}")
    assert r.status_code == 403
    assert client.get(f"/items/{items[0]}/files/original").status_code == 403
    assert _custody_actions(client, items[0]).count("denied") == 2
    assert client.get("/supervision").status_code == 403
    # An officer of unit-a sees the unit's case, not unit-b's.
    client.cookies.clear()
    login(client, "off1")
    assert client.get(f"/cases/{CASE}").status_code == 200
    assert client.get("/cases/C-OTHER").status_code == 403
    assert client.get(f"/items/{items[6]}").status_code == 403
    # Unknown case and item: 404 pages, not errors.
    assert client.get("/cases/NOPE-1").status_code == 403  # not granted either
    client.cookies.clear()
    login(client, "audit1")
    assert client.get("/cases/NOPE-1").status_code == 404
    assert client.get("/items/0000000000").status_code == 404


def test_item_files_stream_with_ranges_and_are_custody_events(
    client: TestClient, items: list[str]
) -> None:
    login(client, "off1")
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=items[0])
    r = client.get(f"/items/{items[0]}/files/original", headers={"Range": "bytes=0-15"})
    assert r.status_code == 206 and r.content[:8] == b"\x00\x00\x00\x18ftyp"
    assert r.headers["content-range"] == f"bytes 0-15/{item.size}"
    full = client.get(f"/items/{items[0]}/files/original")
    assert full.status_code == 200 and len(full.content) == item.size
    assert "attachment" in full.headers["content-disposition"]
    assert client.get(f"/items/{items[0]}/files/proxy").status_code == 404  # never processed
    with rt.sessions() as s:
        actors = [(e.action, e.actor) for e in repo.custody_of(s, item_id=items[0])]
    assert actors.count(("download", "web:off1")) == 2


def test_search_filters_and_hides_what_the_user_may_not_see(
    client: TestClient, items: list[str]
) -> None:
    login(client, "rev1")
    r = client.get("/search?officer=p4")
    assert r.status_code == 200 and items[6] not in r.text  # C-OTHER is not granted
    r = client.get("/search?case=C-GRANTED")
    assert items[5] in r.text and 'href="/cases/C-GRANTED"' in r.text
    client.cookies.clear()
    login(client, "admin1")
    r = client.get("/search?officer=p1")
    assert all(i in r.text for i in items[:4]) and items[4] not in r.text
    assert items[3] in client.get("/search?device=cam-9").text
    r = client.get("/search?unit=unit-b")
    assert items[6] in r.text and items[0] not in r.text
    r = client.get("/search?from=2026-03-02")  # local dates (UTC+8): all items are on 03-01
    assert r.text.count('href="/items/') == 0
    r = client.get("/search?bbox=1,2,3")
    assert r.status_code == 422 and "W,S,E,N" in r.text


def test_supervision_figures_chart_and_csv(client: TestClient, items: list[str]) -> None:
    login(client, "audit1")
    page = client.get("/supervision?from=2026-03-01&to=2026-03-01")
    assert page.status_code == 200
    assert page.text.count('<section class="unit">') == 3  # unit-a, unit-b, unit-c
    assert page.text.count('<svg class="bars"') == 3
    r = client.get("/supervision.csv?from=2026-03-01&to=2026-03-01")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    by = {(row["unit"], row["officer"]): row for row in rows}
    p1 = by[("unit-a", "p1")]
    assert p1["items"] == "4"
    assert float(p1["recorded_hours"]) == pytest.approx((60 + 60 + 60 + 50) / 3600, abs=1e-3)
    assert p1["cases_with_gaps"] == "1"
    assert p1["late_uploads"] == "4"  # recorded on 2026-03-01, uploaded months later
    assert by[("unit-a", "p2")]["cases_with_gaps"] == "0"
    assert by[("unit-a", "*")]["items"] == "5"
    assert by[("unit-b", "p4")]["items"] == "1"
    assert by[("unit-c", "p3")]["items"] == "1"  # the device's unit, the officer has none
    # Another window holds nothing; a bad one is refused with a page that says why.
    empty = client.get("/supervision.csv?from=2025-01-01&to=2025-01-02")
    assert len(list(csv.reader(io.StringIO(empty.text)))) == 1  # the header only
    assert client.get("/supervision?from=2026-03-05&to=2026-03-01").status_code == 422
    client.cookies.clear()
    login(client, "off1")
    assert client.get("/supervision.csv").status_code == 403
