"""Log leaf data: canonical JSON and the three kinds of leaf (DESIGN.md, "Integrity formats").

Canonical JSON here is: UTF-8, object keys sorted by code point, separators "," and ":",
no insignificant whitespace, non-ASCII written as itself. Only objects with string keys,
arrays (lists), strings, integers, booleans and null are allowed. Floats are refused because
their text is not stable across languages: pass measured values such as GPS coordinates as
decimal strings (``"40.8423"``), never as numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from integrity.errors import CanonicalJSONError
from integrity.merkle import leaf_hash

LEAF_VERSION = 1
KIND_ITEM = "item"
KIND_DERIVATIVE = "derivative"
KIND_CUSTODY = "custody"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

JSON = dict[str, Any]


_SCALARS = frozenset({str, int, bool, type(None)})


def _valid(value: object) -> bool:
    """Fast check of exact types, without building paths (the log's hot path). False sends
    the value to ``_check_value``, which names what is wrong (or accepts a subclass)."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str or (type(v) not in _SCALARS and not _valid(v)):
                return False
        return True
    if t is list:
        for v in value:  # type: ignore[attr-defined]
            if type(v) not in _SCALARS and not _valid(v):
                return False
        return True
    return False  # a cycle ends in RecursionError, which canonical_json reports


def _check_value(value: object, path: str) -> None:
    """Find and name the first value that cannot go into leaf JSON."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJSONError(f"{path}: key {key!r} is not a string")
            _check_value(item, f"{path}.{key}")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]")
        return
    if isinstance(value, float):
        raise CanonicalJSONError(f"{path}: floats are not allowed; use a decimal string")
    raise CanonicalJSONError(f"{path}: {type(value).__name__} is not allowed in leaf JSON")


def canonical_json(obj: object) -> bytes:
    """Serialise ``obj`` as canonical JSON bytes; CanonicalJSONError if it cannot be."""
    try:
        if not _valid(obj):
            _check_value(obj, "$")
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError) as e:
        raise CanonicalJSONError(f"cannot encode leaf JSON: {e}") from None


def leaf_hash_hex(data: bytes) -> str:
    """The RFC 9162 leaf hash of ``data``, in lowercase hex."""
    return leaf_hash(data).hex()


def rfc3339_utc(moment: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with "Z"; microseconds only when present."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CanonicalJSONError(f"datetime {moment.isoformat()} has no time zone")
    utc = moment.astimezone(UTC)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _sha256(value: str, what: str) -> str:
    if not _SHA256_HEX.fullmatch(value):
        raise CanonicalJSONError(f"{what} is not a lowercase hex SHA-256: {value[:70]!r}")
    return value


def _size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CanonicalJSONError(f"size must be a non-negative integer, got {value!r}")
    return value


def _leaf(kind: str, fields: Mapping[str, object]) -> JSON:
    leaf: JSON = {"v": LEAF_VERSION, "kind": kind, **fields}
    canonical_json(leaf)  # fail at build time, not when the leaf is logged
    return leaf


def item_leaf(
    *,
    sha256: str,
    size: int,
    media_type: str,
    device_id: str | None,
    officer_id: str | None,
    case_ids: Iterable[str],
    received_at: datetime,
    original_name: str | None,
    manifest_signature: str | None = None,
) -> JSON:
    """The leaf that logs an original. ``case_ids`` are stored sorted and without repeats."""
    return _leaf(
        KIND_ITEM,
        {
            "sha256": _sha256(sha256, "sha256"),
            "size": _size(size),
            "media_type": media_type,
            "device_id": device_id,
            "officer_id": officer_id,
            "case_ids": sorted(set(case_ids)),
            "received_at": rfc3339_utc(received_at),
            "original_name": original_name,
            "manifest_signature": manifest_signature,
        },
    )


def derivative_leaf(
    *,
    item_id: str,
    sha256: str,
    size: int,
    parent_sha256: str,
    role: str,
    recipe: dict[str, Any],
) -> JSON:
    """The leaf that logs a derivative (proxy, thumbnail, ...) and the recipe that made it."""
    return _leaf(
        KIND_DERIVATIVE,
        {
            "item_id": item_id,
            "sha256": _sha256(sha256, "sha256"),
            "size": _size(size),
            "parent_sha256": _sha256(parent_sha256, "parent_sha256"),
            "role": role,
            "recipe": recipe,
        },
    )


def custody_leaf(
    *,
    item_id: str,
    item_sha256: str,
    action: str,
    actor: str,
    at: datetime,
    reason: str | None,
    prev: str | None,
    details: dict[str, Any] | None = None,
) -> JSON:
    """A chain-of-custody event. ``prev`` is the hex leaf hash of the item's previous custody
    leaf (None for the first), making a per-item hash chain inside the global log."""
    return _leaf(
        KIND_CUSTODY,
        {
            "item_id": item_id,
            "item_sha256": _sha256(item_sha256, "item_sha256"),
            "action": action,
            "actor": actor,
            "at": rfc3339_utc(at),
            "reason": reason,
            "prev": None if prev is None else _sha256(prev, "prev"),
            "details": details,
        },
    )
