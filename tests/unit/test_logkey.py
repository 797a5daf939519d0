"""Which key signs: production never makes one (two machines would sign two logs); the
embedded profile makes its own on first start; ``liuhen log init-key`` makes one explicitly."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from configs.settings import PROFILE_DIR, Settings
from ingest.errors import LogKeyExists, LogKeyMissing
from ingest.logkey import init_key, load_log_key
from integrity.errors import NoteError
from integrity.note import generate_signer_key
from tests.cli import run_cli

ORIGIN = "evidence.example.gov.cn/liuhen"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIUHEN_"):
            monkeypatch.delenv(name)


def _production(tmp_path: Path, **log: Any) -> Settings:
    return Settings(
        profile="production",
        home=tmp_path / "home",
        s3={
            "embedded": False,
            "access_key": "liuhen-prod",
            "secret_key": "kR3x9-not-an-example-secret",
        },
        database={"url": "postgresql+psycopg://liuhen@db.internal/liuhen"},
        log={"origin": ORIGIN, **log},
    )


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    settings = _production(tmp_path)
    with pytest.raises(LogKeyMissing, match="liuhen log init-key"):
        load_log_key(settings)
    assert not settings.log_key_path.exists()  # and it made none


def test_production_takes_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "log.key"
    made = init_key(path, origin=ORIGIN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_log_key(_production(tmp_path, key_path=path))
    assert loaded.verifier_key == made.verifier_key


def test_production_takes_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skey, vkey = generate_signer_key(ORIGIN)
    monkeypatch.setenv("LIUHEN_LOG__KEY", skey)
    assert load_log_key(_production(tmp_path)).verifier_key == vkey
    other, _ = generate_signer_key("another.example/log")
    monkeypatch.setenv("LIUHEN_LOG__KEY", other)
    with pytest.raises(NoteError, match=r"LIUHEN_LOG__KEY is for 'another\.example/log'"):
        load_log_key(_production(tmp_path))
    monkeypatch.setenv("LIUHEN_LOG__KEY", "not a key")
    with pytest.raises(NoteError, match="not a signer key"):
        load_log_key(_production(tmp_path))


def test_embedded_makes_its_key_once(tmp_path: Path) -> None:
    settings = Settings(profile="embedded", home=tmp_path / "home", log={"origin": ORIGIN})
    first = load_log_key(settings)
    assert stat.S_IMODE(settings.log_key_path.stat().st_mode) == 0o600
    assert load_log_key(settings).verifier_key == first.verifier_key


def test_init_key_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    init_key(path, origin=ORIGIN)
    before = path.read_bytes()
    with pytest.raises(LogKeyExists, match="never overwritten"):
        init_key(path, origin=ORIGIN)
    assert path.read_bytes() == before


def test_the_init_key_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env["LIUHEN_HOME"] = str(tmp_path / "home")
    out = tmp_path / "keys" / "log.key"
    made = run_cli(
        "log", "init-key", "-o", str(out), "--origin", ORIGIN, "--json", env=env, cwd=tmp_path
    )
    assert made.returncode == 0, made
    doc = made.json()
    assert doc["path"] == str(out) and doc["origin"] == ORIGIN
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert load_log_key(_production(tmp_path, key_path=out)).verifier_key == doc["verifier_key"]
    again = run_cli("log", "init-key", "-o", str(out), "--json", env=env, cwd=tmp_path)
    assert again.returncode != 0
    assert again.json()["error"]["code"] == "log_key_exists"


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The production profile with nothing else set yet: the key comes first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    return env | {
        "LIUHEN_CONFIG": str(PROFILE_DIR / "production.toml"),
        "LIUHEN_HOME": str(tmp_path / "home"),
        **extra,
    }


def test_init_key_in_a_production_profile_not_set_up_yet(tmp_path: Path) -> None:
    """Making the key is the first step of a deployment: with --output and --origin it needs
    no store or database settings; without them it says so."""
    env = _production_env(tmp_path)
    out = tmp_path / "log.key"
    made = run_cli("log", "init-key", "-o", str(out), "--origin", ORIGIN, env=env, cwd=tmp_path)
    assert made.returncode == 0, made
    assert out.is_file()
    lacking = run_cli("log", "init-key", "--json", env=env, cwd=tmp_path)
    assert lacking.returncode == 78, lacking
    assert "give both --output and --origin" in lacking.json()["error"]["detail"]


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"]])
def test_a_production_process_without_its_key_says_so_and_exits_78(
    tmp_path: Path, command: list[str]
) -> None:
    env = _production_env(
        tmp_path,
        LIUHEN_S3__ENDPOINT="127.0.0.1:1",
        LIUHEN_S3__ACCESS_KEY="liuhen-prod",
        LIUHEN_S3__SECRET_KEY="kR3x9-not-an-example-secret",
        LIUHEN_DATABASE__URL="postgresql+psycopg://postgres@127.0.0.1:1/liuhen",
    )
    ran = run_cli(*command, env=env, cwd=tmp_path)
    assert ran.returncode == 78, ran
    assert "Traceback" not in ran.stderr
    assert "liuhen log init-key" in ran.stderr
