"""``liuhen serve`` as an operator runs it: a user made with ``liuhen user add NAME --role R
--password-stdin`` logs in to the web pages with that password and sees what the API's
policy lets them see; nothing but that password gets in."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from configs.settings import Settings
from tests.cli import LIUHEN, cli_env, run_cli
from tests.httpserver import free_port
from tests.webdata import csrf_of

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    form = client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf_of(form.text)},
    )


def test_a_user_added_by_the_cli_logs_in_to_liuhen_serve(
    settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home", settings)
    for name, role, unit in (("110001", "officer", "U-1"), ("rev", "reviewer", None)):
        args = [str(LIUHEN), "user", "add", name, "--role", role, "--password-stdin", "--json"]
        proc = subprocess.run(
            args + (["--unit", unit] if unit else []),
            input=f"{PASSWORD}\n".encode(),
            capture_output=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(MP4_HEAD + os.urandom(4096))
    sealed = run_cli(
        "ingest", clip, "--case", "K-1", "--officer", "110001", "--json", env=env, cwd=tmp_path
    )
    assert sealed.returncode == 0, str(sealed)
    item_id = sealed.json()["items"][0]["id"]

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(LIUHEN), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "liuhen serve did not come up"
            time.sleep(0.3)

        with httpx.Client(base_url=base, timeout=30) as client:
            assert _login(client, "110001", "wrong").status_code == 401
            assert _login(client, "nobody", PASSWORD).status_code == 401
            r = _login(client, "110001", PASSWORD)
            assert r.status_code == 303 and r.headers["location"] == "/me"
            case = client.get("/cases/K-1")
            assert case.status_code == 200 and f'href="/items/{item_id}"' in case.text
            assert client.get(f"/items/{item_id}").status_code == 200
        with httpx.Client(base_url=base, timeout=30) as client:
            assert _login(client, "rev", PASSWORD).status_code == 303
            assert client.get("/cases/K-1").status_code == 403  # not granted
            grant = run_cli(
                "user", "grant", "rev", "--case", "K-1", "--json", env=env, cwd=tmp_path
            )
            assert grant.returncode == 0, str(grant)
            assert client.get("/cases/K-1").status_code == 200  # the grant counts at once
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
