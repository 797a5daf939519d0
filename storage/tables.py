"""The index schema (SQLAlchemy 2). Alembic migrations in ``storage/migrations`` build it.

Facts that must never silently change (an item's SHA-256, size, object version, its log leaf)
are plain columns here and are also in the Merkle log, so ``liuhen verify`` can compare them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACTOR_LENGTH = 80
"""Who did it: ``device:`` or ``user:`` and a name of up to 64 characters, or ``cli``."""

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the index; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(100))
    public_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    # Enrollment (migration 0002). A device seen only in a manifest or a file name has a row
    # with none of these: it is known, not enrolled, and cannot authenticate.
    model: Mapped[str | None] = mapped_column(String(200))
    officer_id: Mapped[str | None] = mapped_column(String(64))
    """The officer the device is assigned to now (history in ``device_assignments``)."""
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    """SHA-256 (hex) of the device's bearer token; the token itself is never stored."""
    enrolled_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Highest manifest ``seq`` accepted from the device; the next must be greater."""


class Person(Base):
    """An officer (or any person who acts on evidence)."""

    __tablename__ = "persons"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str | None] = mapped_column(String(400))
    unit: Mapped[str | None] = mapped_column(String(100), index=True)  # an officer's unit's cases
    created_at: Mapped[datetime]


class Item(Base):
    __tablename__ = "items"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    original_name: Mapped[str | None] = mapped_column(Text)
    object_key: Mapped[str] = mapped_column(String(200))
    version_id: Mapped[str] = mapped_column(String(200))
    retain_until: Mapped[datetime]
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), index=True)
    officer_id: Mapped[str | None] = mapped_column(ForeignKey("persons.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    problems: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(index=True)
    captured_at: Mapped[datetime | None] = mapped_column(index=True)
    captured_at_source: Mapped[str | None] = mapped_column(String(32))
    captured_end: Mapped[datetime | None]
    device_clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)
    utc_offset_minutes: Mapped[int | None] = mapped_column(Integer)
    gps_lat: Mapped[str | None] = mapped_column(String(16))
    gps_lon: Mapped[str | None] = mapped_column(String(16))
    bbox: Mapped[list[str] | None] = mapped_column(JSON)
    """[min_lon, min_lat, max_lon, max_lat] as decimal strings, from a GPS track."""
    track_item_id: Mapped[str | None] = mapped_column(ForeignKey("items.id"))
    """The item holding the GPS track (NMEA/GPX) recorded alongside this one."""
    media: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What the probe found (container, codecs, duration, dimensions)."""
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    log_index: Mapped[int] = mapped_column(BigInteger, unique=True)


# Search pages in this order (``ingest.search``): without it every listing read and sorted the
# whole table (0.3 to 2.8 s a page at 400,000 items). The expression is the queries' own.
Index("ix_items_time_id", func.coalesce(Item.captured_at, Item.received_at), Item.id)


class ItemCase(Base):
    __tablename__ = "item_cases"
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True, index=True)
    linked_at: Mapped[datetime]
    linked_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class Derivative(Base):
    __tablename__ = "derivatives"
    __table_args__ = (UniqueConstraint("item_id", "role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    object_key: Mapped[str] = mapped_column(String(200))
    version_id: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    log_index: Mapped[int] = mapped_column(BigInteger, unique=True)


class CustodyEvent(Base):
    """Who did what to an item, when and why; each one is also a log leaf."""

    __tablename__ = "custody_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str | None] = mapped_column(ForeignKey("items.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    log_index: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[str] = mapped_column(String(64))


# The items taken out of a case, for its export package (``ingest.export``): unlinks are
# few among the custody events (one per read), so only they are indexed.
_UNLINK = text("action = 'unlink'")
Index(
    "ix_custody_events_unlink",
    CustodyEvent.item_id,
    postgresql_where=_UNLINK,
    sqlite_where=_UNLINK,
)


class LogLeaf(Base):
    __tablename__ = "log_leaves"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    data: Mapped[str] = mapped_column(Text)
    """The exact canonical JSON that was hashed (UTF-8)."""
    kind: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime]


class LogState(Base):
    """One row: the sequencer. Incrementing it inside a transaction hands out dense indexes."""

    __tablename__ = "log_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    """The signed checkpoint note, exactly as published."""
    created_at: Mapped[datetime]
    object_version: Mapped[str | None] = mapped_column(String(200))
    tsr: Mapped[bytes | None] = mapped_column(LargeBinary)
    """RFC 3161 time-stamp response over the note, when a TSA is configured."""
    tsa_time: Mapped[datetime | None]


class Job(Base):
    """Pipeline work for one item; a job carries only the item ID and reloads everything."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_due", "state", "due_at"),)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    due_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)


# --- the log's tree (the sequencer's signer) ---------------------------------------------------


class LogTree(Base):
    """One row: how far the tiles and the latest checkpoint cover the log.

    Only the signer moves it, with ``UPDATE ... WHERE size = <the size it started from>`` in the
    transaction that stores its checkpoint, so two signers can never both extend one state.
    """

    __tablename__ = "log_tree"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogTile(Base):
    """A C2SP tlog-tile of the Merkle tree (``integrity.merkle.TiledTree``): the hashes of
    tree level 8 * ``level``, numbered 256 * ``idx`` onwards; the rightmost tile of a level
    is partial and grows in place."""

    __tablename__ = "log_tiles"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)


# --- people, grants, holds (issue 10) -------------------------------------------------------


class User(Base):
    """A person who signs in: admin, officer, reviewer or auditor. Officers belong to a unit."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(56), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str | None] = mapped_column(String(100))
    password_hash: Mapped[str | None] = mapped_column(Text)
    """Argon2id (PHC string), or None for a token-only account."""
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    disabled_at: Mapped[datetime | None]
    """Set by ``liuhen user disable``: no login, no token, no web session until enabled."""


class WebSession(Base):
    """A web login, so that logging out, revoking a user's credentials or disabling the user
    ends it on the server (the cookie alone cannot be taken back)."""

    __tablename__ = "web_sessions"
    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for scripts. Only its SHA-256 is kept (tokens are 256-bit random)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class CaseGrant(Base):
    """A reviewer may read one case until ``until``; a revoked grant keeps its row."""

    __tablename__ = "case_grants"
    __table_args__ = (Index("ix_case_grants_user_case", "user_name", "case_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"))
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    granted_at: Mapped[datetime]
    granted_by: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))


class CaseEvent(Base):
    """What happened to a case that is not an item's custody: grants, holds, unit changes, and
    denied attempts (a case has no custody chain of its own). Rows without a case are the
    people and sign-in events: users added, tokens issued or revoked, failed sign-ins,
    unauthenticated requests, denials that concern no case or item."""

    __tablename__ = "case_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


# --- device intake (migration 0002) ---------------------------------------------------------


class Unit(Base):
    """A unit (大队, 中队, ...): devices and officers belong to one."""

    __tablename__ = "units"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class DeviceKey(Base):
    """Every signing key a device has had: a manifest is checked against the key of its time."""

    __tablename__ = "device_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    """Base64 of the raw 32-byte Ed25519 public key."""
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class DeviceAssignment(Base):
    """Custody of the device itself: which officer carried it, from when to when."""

    __tablename__ = "device_assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    officer_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime | None]


class DeviceEvent(Base):
    """What happened to or was refused to a device: enroll, disable, rotate-key, assign,
    refused. Kept in the index, not the log (log leaves are about items)."""

    __tablename__ = "device_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CaseHold(Base):
    """A case's legal-hold state. No row: the case is open, and its items are held."""

    __tablename__ = "case_holds"
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    held: Mapped[bool]
    changed_at: Mapped[datetime]
    changed_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)


class ItemHold(Base):
    """The S3 legal-hold state last applied to all of an item's objects."""

    __tablename__ = "item_holds"
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    held: Mapped[bool]
    changed_at: Mapped[datetime]


class ItemUnit(Base):
    """The unit an item was taken in for (the uploading officer's or device's unit)."""

    __tablename__ = "item_units"
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    unit: Mapped[str] = mapped_column(String(100), index=True)


class Upload(Base):
    """A tus upload. Its bytes are in the spool; ``offset`` is only raised after they are
    fsynced, so it never runs ahead of what is on disk."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[str] = mapped_column(Text)
    """The manifest's canonical JSON text, exactly as signed."""
    signature: Mapped[str] = mapped_column(Text)
    """Base64 Ed25519 signature over ``manifest``."""
    public_key: Mapped[str] = mapped_column(String(64))
    """The device key the signature was checked against."""
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    """What the manifest declares."""
    device_clock_offset_ms: Mapped[int] = mapped_column(BigInteger)
    """Server time at creation minus the manifest's ``device_time``."""
    state: Mapped[str] = mapped_column(String(16), index=True)
    """receiving | sealed | failed | terminated | expired"""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    item_id: Mapped[str | None] = mapped_column(ForeignKey("items.id"))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The problem document of a failed seal."""
    served_by: Mapped[str | None] = mapped_column(String(255))
    """``api.advertise_url`` of the process whose spool holds the bytes (None: no address
    given; only a process with the spool, or sharing its home, can take the upload)."""
