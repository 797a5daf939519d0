"""Shared fixtures: real SeaweedFS and PostgreSQL, started for the session, and a liuhen
runtime per test on SQLite or PostgreSQL (``backend`` parametrises the integration tests)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from configs.settings import Settings
from ingest.runtime import Runtime, open_runtime
from storage.seaweed import EmbeddedS3
from tests.services import PostgresServer, seaweedfs

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as s3:
        yield s3


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    with server.database() as url:
        yield url


SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def bucket() -> str:
    """One bucket for the session: SeaweedFS gives each bucket volumes of its own (a bucket
    per test exhausts them), and originals are content-addressed, so sharing is harmless."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
def make_settings(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, bucket: str
) -> SettingsFactory:
    """Settings for one test: its own home and database; overrides as keywords."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "profile": "embedded",
            "home": tmp_path / "home",
            "s3": {
                "embedded": False,
                "endpoint": s3_server.endpoint,
                "access_key": s3_server.access_key,
                "secret_key": s3_server.secret_key,
                "bucket": bucket,
            },
            "database": {"url": database_url},
            "pipeline": {"workers": 0, "thumbnails": 3},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return Settings(**base)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()
