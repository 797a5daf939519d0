"""Benchmark the case page against the JSON API for the same case (a benchmark, not a test).

    .venv/bin/python bench/web.py [--items 200] [--rounds 5] [--no-media]

One private SeaweedFS and SQLite; a case of ``--items`` recordings of one officer (small
H.264 clips made once by ffmpeg, each made unique by trailing bytes, then run through the real
pipeline so the page has thumbnails to load; ``--no-media`` seals fake MP4 bytes instead:
quicker, no pictures). Served by uvicorn in this process; measured, median of ``--rounds``:

(a) plain HTTP (httpx): time to first byte (response headers in) and to the last byte, for
    ``GET /cases/{id}`` (logged in) and ``GET /v1/cases/{id}``;
(b) Debian's chromium (Playwright, not ``playwright install``): navigation timing of both
    URLs: responseStart (TTFB) and loadEventEnd (full load: for the page, its stylesheet and
    the thumbnails in view, which load lazily; each thumbnail read is a custody event).

Printed: each figure and ``page/api`` ratios (goal: within 2x).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from api.app import create_app
from bench.common import bench_runtime, line
from ingest import people
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from storage import people as pstore
from storage.db import transaction
from tests.httpserver import serving
from tests.integration import mediagen

CASE = "BENCH-200"
PASSWORD = secrets.token_urlsafe(16)  # a throwaway user of this run
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def build_case(rt: Runtime, n: int, *, media: bool, tmp: Path) -> None:
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    base = (
        mediagen.timed_clip(tmp, "base.mp4", creation_time="2026-03-01T08:00:00Z")
        if media
        else None
    )
    ids = []
    for i in range(n):
        path = tmp / f"clip-{i:04d}.mp4"
        if base is not None:
            shutil.copyfile(base, path)
            with path.open("ab") as f:
                f.write(os.urandom(64))  # unique bytes, still a playable MP4
        else:
            path.write_bytes(MP4_HEAD + os.urandom(4096))
        start = t0 + timedelta(seconds=90 * i + (600 if i % 17 == 0 else 0))
        manifest = Manifest(
            officer_id=f"p{i % 4}",
            device_id=f"cam-{i % 4}",
            case_ids=(CASE,),
            file_name=path.name,
            capture_start=start,
            capture_end=start + timedelta(seconds=60),
        )
        ids.append(seal_file(rt, path, manifest, actor="bench").item_id)
        path.unlink()
    if media:
        t = time.perf_counter()
        left = rt.queue.wait_for(ids, timeout_s=3600)
        print(f"pipeline: {n} items in {time.perf_counter() - t:.1f} s ({len(left)} unfinished)")


def http_times(client: httpx.Client, url: str, rounds: int) -> tuple[float, float, int]:
    """Median (TTFB, total) seconds and the body size."""
    ttfb, total, size = [], [], 0
    for _ in range(rounds + 1):  # the first is a warm-up
        t = time.perf_counter()
        with client.stream("GET", url) as r:
            first = time.perf_counter()
            size = len(r.read())
            r.raise_for_status()
        ttfb.append(first - t)
        total.append(time.perf_counter() - t)
    return statistics.median(ttfb[1:]), statistics.median(total[1:]), size


def bench_user(rt: Runtime) -> str:
    """An officer of the case's unit (made as ``liuhen user add`` makes one); its API token."""
    new = people.add_user(
        rt.sessions, name="bench", role="officer", unit="U-BENCH", password=PASSWORD, actor="bench"
    )
    with transaction(rt.sessions) as session:
        pstore.claim_case_unit(session, case_id=CASE, unit="U-BENCH")
    return new.token


def browser_times(base: str, rounds: int, token: str) -> dict[str, tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    if exe is None:
        print("chromium not installed: browser figures skipped")
        return {}
    out: dict[str, tuple[float, float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900},
            extra_http_headers={"Authorization": f"Bearer {token}"},  # the API's; pages ignore it
        )
        page = context.new_page()
        page.goto(base + "/login")
        page.fill("input[name=username]", "bench")
        page.fill("input[name=password]", PASSWORD)
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_load_state()
        for name, path in (("api", f"/v1/cases/{CASE}"), ("page", f"/cases/{CASE}")):
            ttfb, load = [], []
            for _ in range(rounds + 1):
                page.goto(base + path, wait_until="load")
                nav = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return [n.responseStart - n.requestStart, n.loadEventEnd || n.duration]; }"
                )
                ttfb.append(nav[0] / 1000)
                load.append(nav[1] / 1000)
            out[name] = (statistics.median(ttfb[1:]), statistics.median(load[1:]))
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-media", action="store_true")
    args = ap.parse_args()
    with (
        bench_runtime() as rt,
        tempfile.TemporaryDirectory() as tmp,
    ):
        build_case(rt, args.items, media=not args.no_media, tmp=Path(tmp))
        app = create_app(rt.settings, workers=0)
        token = bench_user(rt)
        with (
            serving(app) as base,
            httpx.Client(
                base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"}
            ) as client,
        ):
            form = client.get("/login").text
            csrf = form.split('name="csrf" value="')[1].split('"')[0]
            r = client.post(
                "/login", data={"username": "bench", "password": PASSWORD, "csrf": csrf}
            )
            if r.status_code != 303:
                raise SystemExit(f"login failed: {r.status_code}")
            print(f"case {CASE}: {args.items} items, media={not args.no_media}")
            api = http_times(client, f"/v1/cases/{CASE}", args.rounds)
            page = http_times(client, f"/cases/{CASE}", args.rounds)
            line("http api TTFB", api[0] * 1000, "ms", f"{api[2]:,} bytes")
            line("http page TTFB", page[0] * 1000, "ms", f"{page[2]:,} bytes")
            line("http api total", api[1] * 1000, "ms")
            line("http page total", page[1] * 1000, "ms")
            line("http page/api TTFB ratio", page[0] / api[0], "x", "goal <= 2")
            line("http page/api total ratio", page[1] / api[1], "x", "goal <= 2")
            nav = browser_times(base, args.rounds, token)
            if nav:
                line("browser api TTFB", nav["api"][0] * 1000, "ms")
                line("browser page TTFB", nav["page"][0] * 1000, "ms")
                line("browser api load", nav["api"][1] * 1000, "ms")
                line("browser page load (thumbnails in view)", nav["page"][1] * 1000, "ms")
                line(
                    "browser page/api TTFB ratio", nav["page"][0] / nav["api"][0], "x", "goal <= 2"
                )
                line(
                    "browser page/api load ratio", nav["page"][1] / nav["api"][1], "x", "goal <= 2"
                )


if __name__ == "__main__":
    main()
