"""configs.settings: profiles, precedence, and the refusals that keep production safe."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from configs.errors import ConfigError
from configs.settings import (
    DEFAULT_SECRETS,
    EMBEDDED_PROFILE,
    MIN_RETENTION_DAYS,
    PROFILE_DIR,
    load_settings,
)

PRODUCTION = PROFILE_DIR / "production.toml"
GOOD_SECRET = "kR3x9-not-an-example-secret"
PG_URL = "postgresql+psycopg://liuhen@db.internal/liuhen"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LIUHEN_* from the caller's environment; a private working directory and HOME."""
    import os

    for name in list(os.environ):
        if name.startswith("LIUHEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The production profile with everything it needs; tests take pieces away."""
    monkeypatch.setenv("LIUHEN_CONFIG", str(PRODUCTION))
    monkeypatch.setenv("LIUHEN_S3__ACCESS_KEY", "liuhen-prod")
    monkeypatch.setenv("LIUHEN_S3__SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("LIUHEN_DATABASE__URL", PG_URL)
    return monkeypatch


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "liuhen.toml"
    path.write_text(text)
    return path


def test_the_embedded_default(tmp_path: Path) -> None:
    s = load_settings()
    assert s.profile == "embedded"
    assert s.s3.embedded is True
    assert s.home_dir == tmp_path / "var"
    assert s.database_url == f"sqlite:///{tmp_path / 'var' / 'index.sqlite3'}"
    assert s.log_key_path == tmp_path / "var" / "keys" / "log.key"
    assert s.spool_dir == tmp_path / "var" / "spool"
    assert s.retention == timedelta(days=366)
    assert EMBEDDED_PROFILE.is_file()


def test_liuhen_home_moves_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIUHEN_HOME", "~/evidence")
    s = load_settings()
    assert s.home_dir == tmp_path / "user" / "evidence"
    assert s.database_url == f"sqlite:///{tmp_path / 'user' / 'evidence' / 'index.sqlite3'}"


@pytest.mark.parametrize("name", ["home?mode=ro", "home%41", "home #1", "现场 记录"])
def test_the_index_stays_in_a_home_whatever_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """``?`` and ``%`` in a home's path moved the index out of it (a URL's query, an escape)."""
    monkeypatch.setenv("LIUHEN_HOME", str(tmp_path / name))
    url = make_url(load_settings().database_url)
    assert url.drivername == "sqlite" and not url.query
    assert url.database == str(tmp_path / name / "index.sqlite3")


def test_production_with_everything_set(production: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.profile == "production"
    assert s.s3.embedded is False and s.s3.secure is True
    assert s.database_url == PG_URL
    assert s.retention_days == 1830
    assert GOOD_SECRET not in repr(s) and GOOD_SECRET not in str(s)
    assert GOOD_SECRET not in s.model_dump_json()


@pytest.mark.parametrize("secret", sorted(DEFAULT_SECRETS))
def test_production_refuses_empty_and_example_secrets(
    production: pytest.MonkeyPatch, secret: str
) -> None:
    production.setenv("LIUHEN_S3__SECRET_KEY", secret)
    with pytest.raises(ConfigError, match="S3 credentials"):
        load_settings()


def test_production_refuses_a_missing_secret_or_access_key(
    production: pytest.MonkeyPatch,
) -> None:
    production.delenv("LIUHEN_S3__SECRET_KEY")
    with pytest.raises(ConfigError, match="S3 credentials"):
        load_settings()
    production.setenv("LIUHEN_S3__SECRET_KEY", GOOD_SECRET)
    production.delenv("LIUHEN_S3__ACCESS_KEY")
    with pytest.raises(ConfigError, match="S3 credentials"):
        load_settings()


def test_production_refuses_a_missing_database_url(production: pytest.MonkeyPatch) -> None:
    production.delenv("LIUHEN_DATABASE__URL")
    with pytest.raises(ConfigError, match="database URL"):
        load_settings()


def test_production_refuses_the_embedded_store(production: pytest.MonkeyPatch) -> None:
    production.setenv("LIUHEN_S3__EMBEDDED", "true")
    with pytest.raises(ConfigError, match="embedded S3 server is only for the embedded"):
        load_settings()


def test_the_embedded_profile_needs_no_secrets() -> None:
    assert load_settings().s3.secret_key.get_secret_value() == ""


@pytest.mark.parametrize("days", [0, 1, MIN_RETENTION_DAYS - 1])
def test_retention_below_six_months_is_refused(monkeypatch: pytest.MonkeyPatch, days: int) -> None:
    monkeypatch.setenv("LIUHEN_RETENTION_DAYS", str(days))
    with pytest.raises(ConfigError, match="retention"):
        load_settings()


def test_retention_of_six_months_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIUHEN_RETENTION_DAYS", str(MIN_RETENTION_DAYS))
    assert load_settings().retention == timedelta(days=183)


def test_retention_in_the_toml_is_checked_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIUHEN_CONFIG", str(_toml(tmp_path, "retention_days = 30\n")))
    with pytest.raises(ConfigError, match="retention"):
        load_settings()


def test_environment_overrides_the_toml_field_by_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    profile = _toml(
        tmp_path,
        'retention_days = 400\n[s3]\nendpoint = "s3.toml:9000"\nbucket = "from-toml"\n'
        "[api]\nport = 9000\n",
    )
    monkeypatch.setenv("LIUHEN_CONFIG", str(profile))
    monkeypatch.setenv("LIUHEN_S3__BUCKET", "from-env")
    monkeypatch.setenv("LIUHEN_API__PORT", "9001")
    s = load_settings()
    assert s.s3.bucket == "from-env"
    assert s.s3.endpoint == "s3.toml:9000"  # the rest of [s3] stays as the TOML says
    assert s.api.port == 9001
    assert s.retention_days == 400
    assert s.s3.embedded is False  # the default, since this TOML does not say


def test_explicit_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIUHEN_RETENTION_DAYS", "450")
    assert load_settings().retention_days == 450
    assert load_settings(retention_days=500).retention_days == 500


def test_variables_that_are_not_settings_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIUHEN_ACTOR", "officer-7")  # read by the CLI, not a setting
    monkeypatch.setenv("LIUHEN_LOG_LEVEL", "DEBUG")
    assert load_settings().profile == "embedded"


@pytest.mark.parametrize("where", ["missing.toml", "a-directory", ""])
def test_a_bad_config_path_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    if not where:  # an empty LIUHEN_CONFIG means the default profile
        monkeypatch.setenv("LIUHEN_CONFIG", "")
        assert load_settings().profile == "embedded"
        return
    monkeypatch.setenv("LIUHEN_CONFIG", str(tmp_path / where))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("unheard_of = 1\n", "unheard_of"),
        ("retention_days = 'forever'\n", "retention_days"),
        ('profile = "staging"\n', "profile"),
        ('case_id_pattern = "[unclosed"\n', "case_id_pattern"),
        ("[pipeline]\nworkers = -1\n", "workers"),
    ],
)
def test_invalid_values_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, words: str
) -> None:
    monkeypatch.setenv("LIUHEN_CONFIG", str(_toml(tmp_path, text)))
    with pytest.raises(ConfigError, match=words):
        load_settings()


def test_invalid_environment_values_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIUHEN_API__PORT", "eighty")
    with pytest.raises(ConfigError, match="port"):
        load_settings()


def test_the_schema_head_constant_is_alembics_head() -> None:
    """A current schema is recognised without importing Alembic; the constant must follow
    every new migration."""
    from alembic.script import ScriptDirectory

    from storage.db import SCHEMA_HEAD, alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head == SCHEMA_HEAD
