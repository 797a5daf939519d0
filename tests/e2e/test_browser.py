"""The web pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright's
Python package; ``playwright install`` is never used), against a real uvicorn server on real
SeaweedFS and SQLite, with clips made by ffmpeg and processed by the real pipeline, and real
users (``ingest.people.add_user``, Argon2 passwords) logging in through the login form.

Screenshots of the case, item and supervision pages (zh and en, desktop and phone) go to
``test-artifacts/`` at the repository root (gitignored).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from api.app import create_app
from configs.settings import Settings
from ingest import people
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime, open_runtime
from integrity.package import verify_package
from storage import people as pstore
from storage import repository as repo
from tests.conftest import TESTDATA, SettingsFactory
from tests.httpserver import serving
from tests.integration import mediagen as gen
from tests.webdata import PASSWORD, make_web_users, set_units

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CASE = "C-WEB-1"
OTHER = "C-WEB-2"


@dataclass(frozen=True)
class World:
    base: str
    clips: list[str]
    """p1's three clips, in time order (a gap between the 2nd and 3rd)."""
    audio: str
    photo: str
    track: str
    rt: Runtime
    """The server's runtime (to look at what the pages recorded)."""
    log_key: str
    """The log's verifier key, as a reviewer gets it out of band (``liuhen log key``)."""


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(pipeline={"thumbnails": 2})


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[World]:
    media = tmp_path / "media"
    media.mkdir()
    rt = open_runtime(settings)
    try:

        def seal(path: Path, officer: str, device: str, case: str) -> str:
            manifest = Manifest(
                officer_id=officer, device_id=device, case_ids=(case,), file_name=path.name
            )
            return seal_file(rt, path, manifest, actor="test").item_id

        starts = ["2026-03-01T08:00:00Z", "2026-03-01T08:00:06Z", "2026-03-01T08:03:00Z"]
        clips = [
            seal(gen.timed_clip(media, f"p1-{i}.mp4", creation_time=t), "p1", "cam-1", CASE)
            for i, t in enumerate(starts)
        ]
        audio = seal(gen.aac_m4a(media), "p2", "rec-2", CASE)
        photo = seal(TESTDATA / "photos" / "gps" / "DSCN0010.jpg", "p1", "cam-1", OTHER)
        track = seal(TESTDATA / "tracks" / "Geotag.gpx", "p1", "cam-1", OTHER)
        assert rt.queue.wait_for([*clips, audio, photo, track], timeout_s=300) == set()
        set_units(
            rt, cases={CASE: "unit-a", OTHER: "unit-a"}, persons={"p1": "unit-a", "p2": "unit-a"}
        )
        make_web_users(rt)  # off1 (officer, unit-a), rev1 (reviewer), audit1, admin1, ...
        people.grant(rt.sessions, name="rev1", case_id=OTHER, until=None, actor="cli:test")
        log_key = rt.ledger.key.verifier_key
    finally:
        rt.close()
    app = create_app(settings, workers=0)  # logins go to the people service by default
    with serving(app) as base:
        yield World(base, clips, audio, photo, track, app.state.runtime, log_key)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is not installed (.ci/run installs it)"
    b = playwright.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    yield b
    b.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Page, base: str, username: str, path: str) -> None:
    page.goto(base + path)
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_load_state()


def test_officer_reviews_a_case_plays_an_item_verifies_exports_and_links(
    world: World, browser: Browser, tmp_path: Path
) -> None:
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the pages' CSP
    # forbids; the phone test below loads pages under their CSP and checks nothing is refused.
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN", bypass_csp=True
    )
    page = context.new_page()
    log_in(page, world.base, "off1", f"/cases/{CASE}")
    assert page.url == f"{world.base}/cases/{CASE}"

    # The gap (08:00:10 -> 08:03:00, 2 min 50 s) is marked on the timeline and listed.
    assert page.locator("#gap-count").inner_text() == "录像间断: 1"
    assert page.locator("tr.gap-row").count() == 1
    row = page.locator("tr.gap-row").inner_text()
    assert "2 分 50 秒" in row and "p1" in row
    assert page.locator("svg.timeline g.gap").count() == 1
    assert page.locator("svg.timeline g.gap").is_visible()
    for item_id in [*world.clips, world.audio]:
        assert page.locator(f"a.card[href='/items/{item_id}']").count() == 1
    page.wait_for_function(  # lazy thumbnails in view have loaded
        "[...document.querySelectorAll('a.card img')].slice(0, 2).every(i => i.naturalWidth > 0)"
    )
    shot(page, "case-zh")
    page.goto(f"{world.base}/cases/{CASE}?lang=en")
    assert page.locator("#gap-count").inner_text() == "Recording gaps: 1"
    shot(page, "case-en")
    page.goto(f"{world.base}/cases/{CASE}?lang=zh")

    # Open the first clip from the case page and play its proxy.
    proxy_ranges: list[int] = []
    page.on(
        "response",
        lambda r: proxy_ranges.append(r.status) if r.url.endswith("/files/proxy") else None,
    )
    page.click(f"a.card[href='/items/{world.clips[0]}']")
    page.wait_for_load_state()
    assert page.url == f"{world.base}/items/{world.clips[0]}"
    video = page.locator("video#player")
    assert video.get_attribute("src") == f"/items/{world.clips[0]}/files/proxy"
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; }")
    page.evaluate("() => document.querySelector('video').play()")
    page.wait_for_function("document.querySelector('video').currentTime > 0.5", timeout=20000)
    duration = page.evaluate("document.querySelector('video').duration")
    assert 3.5 < duration < 4.5
    page.evaluate("() => document.querySelector('video').pause()")
    page.evaluate(
        """() => new Promise(done => {
            const v = document.querySelector('video');
            v.addEventListener('seeked', done, {once: true});
            v.currentTime = v.duration / 2;
        })"""
    )
    middle = page.evaluate("document.querySelector('video').currentTime")
    assert abs(middle - duration / 2) < 0.3
    assert page.evaluate("document.querySelector('video').readyState") >= 2  # a frame is there
    assert 206 in proxy_ranges  # the browser asked for ranges and got them

    # The map of the clip's ISO 6709 point, with a scale bar; the custody list.
    assert page.locator("svg#map .marker").count() == 1
    assert (page.locator("svg#map .scale text").text_content() or "").endswith("m")
    custody = page.locator("#custody li")
    assert custody.count() >= 3
    assert "封存" in custody.first.inner_text()
    assert "user:off1" in page.locator("#custody").inner_text()
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, "item-video-zh")

    # Verify, and see it pass (and the run recorded in the custody chain).
    page.click("#verify")
    page.wait_for_load_state()
    result = page.locator("#verify-result")
    assert "ok" in (result.get_attribute("class") or "")
    assert "校验通过" in result.inner_text()
    assert "校验" in page.locator("#custody li").last.inner_text()
    page.goto(f"{world.base}/items/{world.clips[0]}?lang=en")
    shot(page, "item-video-en")

    # A form whose CSRF token was tampered with is refused.
    page.goto(f"{world.base}/items/{world.clips[0]}?lang=zh")
    page.locator("form[action$=':verify'] input[name=csrf]").evaluate("e => e.value = 'forged'")
    page.click("#verify")
    page.wait_for_load_state()
    assert "表单已失效" in page.content()

    # Export: the package streams to a download, and verifies offline against the log key.
    page.goto(f"{world.base}/cases/{CASE}")
    with page.expect_download() as download:
        page.click("#export-form button[type=submit]")
    assert download.value.suggested_filename.startswith("C-WEB-1-")
    package = tmp_path / download.value.suggested_filename
    download.value.save_as(package)
    report = verify_package(package, verifier_key=world.log_key)
    assert report.ok and report.checked == 4 and report.key == "given", report.failures
    assert "export" in _actions(world.rt, world.clips[0])

    # Link the photo into the case with a reason; it shows on the case page; then unlink it
    # from its own page, with a reason. Both are custody events naming the reason.
    page.fill("#link-form input[name=item_id]", world.photo)
    page.fill("#link-form input[name=reason]", "同一现场的照片")
    page.click("#link-form button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{world.base}/cases/{CASE}?done=link"
    assert page.locator("#done").inner_text().startswith("已关联")
    assert page.locator(f"a.card[href='/items/{world.photo}']").count() == 1
    page.goto(f"{world.base}/items/{world.photo}")
    unlink = page.locator(f"form[action='/cases/{CASE}:unlink']")
    unlink.locator("input[name=reason]").fill("拍错了案件")
    unlink.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert page.url == f"{world.base}/cases/{CASE}?done=unlink"
    assert page.locator(f"a.card[href='/items/{world.photo}']").count() == 0
    with world.rt.sessions() as s:
        events = [(e.action, e.actor, e.reason) for e in repo.custody_of(s, item_id=world.photo)]
        assert repo.case_ids_of(s, item_id=world.photo) == [OTHER]
    assert ("link", "user:off1", "同一现场的照片") in events
    assert ("unlink", "user:off1", "拍错了案件") in events
    page.goto(f"{world.base}/items/{world.photo}")
    assert "拍错了案件" in page.locator("#custody").inner_text()

    # The user's own API token: issued on the page, shown once.
    page.goto(f"{world.base}/me")
    page.click("#issue-token")
    page.wait_for_load_state()
    token = page.locator("#new-token").inner_text()
    assert token.startswith("lh_") and page.locator("#live-tokens").inner_text() == "2"
    shot(page, "me-zh")

    # Log out: the session is gone.
    page.goto(f"{world.base}/me")
    page.click("header form[action='/logout'] button")
    page.wait_for_load_state()
    assert page.url.startswith(f"{world.base}/login")
    page.goto(f"{world.base}/cases/{CASE}")
    assert "/login" in page.url
    context.close()


def test_other_items_audio_photo_track_and_a_phone_screen(world: World, browser: Browser) -> None:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN", bypass_csp=True
    )
    page = context.new_page()
    log_in(page, world.base, "off1", f"/items/{world.audio}")
    assert page.locator("audio#player").count() == 1
    page.wait_for_function("document.querySelector('#waveform img').naturalWidth > 0")
    shot(page, "item-audio-zh")
    page.goto(f"{world.base}/items/{world.photo}")
    page.wait_for_function("document.querySelector('img.photo').naturalWidth > 0")
    assert page.locator("svg#map .marker").count() == 1
    shot(page, "item-photo-zh")
    page.goto(f"{world.base}/items/{world.track}?lang=en")
    assert page.locator("svg#map path.track").count() == 1
    labels = page.locator("svg#map .fix text").all_text_contents()
    assert len(labels) >= 2 and all(":" in t for t in labels)  # capture-time labels
    shot(page, "item-track-en")
    context.close()
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, locale="zh-CN"
    )
    page = phone.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    log_in(page, world.base, "off1", f"/cases/{CASE}")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400  # nothing pushes the page wider than the phone (the SVG scrolls)
    shot(page, "case-phone-zh")
    page.goto(f"{world.base}/items/{world.clips[2]}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    shot(page, "item-phone-zh")
    page.goto(f"{world.base}/items/{world.audio}")  # its script, under the CSP
    page.locator("#waveform").click()
    assert not [m for m in console if "Content Security Policy" in m], console
    phone.close()


def test_supervision_page_and_a_reviewer_kept_out(
    world: World, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN", bypass_csp=True
    )
    page = context.new_page()
    log_in(page, world.base, "audit1", "/supervision?from=2026-03-01&to=2026-03-01")
    assert page.locator("section.unit").count() >= 1
    assert page.locator("svg.bars rect").count() >= 2
    assert page.locator("table.figures").first.inner_text().count("p1") == 1
    shot(page, "supervision-zh")
    page.goto(f"{world.base}/supervision?from=2026-03-01&to=2026-03-01&lang=en")
    shot(page, "supervision-en")
    page.goto(f"{world.base}/supervision?from=2026-03-01&to=2026-03-01&lang=zh")
    with page.expect_download() as download:
        page.click("a[href^='/supervision.csv']")
    assert download.value.suggested_filename == "supervision-2026-03-01-2026-03-01.csv"
    context.close()

    # A reviewer granted the other case only: this one is refused, and the page says so; the
    # denial is logged and kept as a case event, as the API keeps it. The granted one opens.
    context = browser.new_context()
    page = context.new_page()
    log_in(page, world.base, "rev1", f"/cases/{CASE}")
    assert "You may not view this case" in page.content()  # the browser asks for English
    shot(page, "denied-case-en")
    assert f"denied: user=rev1 role=reviewer path=/cases/{CASE} action=case.read" in caplog.text
    with world.rt.sessions() as s:
        denied = [e for e in pstore.case_events(s, case_id=CASE) if e.action == "denied"]
    assert [e.actor for e in denied] == ["user:rev1"]
    page.goto(f"{world.base}/items/{world.clips[0]}")
    assert "You may not view this item" in page.content()
    assert _actions(world.rt, world.clips[0])[-1] == "denied"
    page.goto(f"{world.base}/cases/{OTHER}")
    assert page.locator(f"a.card[href='/items/{world.photo}']").count() == 1
    assert page.locator("#link-form").count() == 0  # read-only
    assert page.locator("#export-form").count() == 1
    context.close()

    # An admin holds and releases a case (with a reason) and sees no evidence on its page.
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    log_in(page, world.base, "admin1", f"/cases/{CASE}")
    assert page.locator("a.card").count() == 0 and page.locator("video, img.photo").count() == 0
    page.fill("#hold-form input[name=reason]", "复议结束")
    page.click("#hold-form button[type=submit]")  # the case starts held: this releases it
    page.wait_for_load_state()
    assert page.locator("#done").inner_text().startswith("案件保全已解除")
    assert page.locator("#held").inner_text() == "未保全"
    with world.rt.sessions() as s:
        assert not pstore.case_is_held(s, case_id=CASE)
        assert not pstore.item_hold_state(s, item_id=world.clips[0])
    shot(page, "case-hold-zh")
    context.close()


def _actions(rt: Runtime, item_id: str) -> list[str]:
    with rt.sessions() as s:
        return [e.action for e in repo.custody_of(s, item_id=item_id)]
