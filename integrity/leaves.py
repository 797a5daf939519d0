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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from integrity.errors import CanonicalJSONError, LeafFormatError
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


# --- the reading side: leaf data back into typed values ---------------------------------------

_RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z")


@dataclass(frozen=True)
class ItemLeaf:
    """An original, as :func:`item_leaf` logs it."""

    sha256: str
    """Lowercase hex SHA-256 of the original's bytes."""
    size: int
    """Its length in bytes."""
    media_type: str
    """The type sniffed at seal (the pipeline's probe may refine it in the index)."""
    device_id: str | None
    officer_id: str | None
    case_ids: tuple[str, ...]
    """The cases named at seal, sorted, without repeats."""
    received_at: str
    """RFC 3339 UTC, as written."""
    original_name: str | None
    manifest_signature: str | None

    kind: ClassVar[str] = KIND_ITEM


@dataclass(frozen=True)
class DerivativeLeaf:
    """A derivative and its recipe, as :func:`derivative_leaf` logs it."""

    item_id: str
    sha256: str
    size: int
    parent_sha256: str
    """The SHA-256 of the original it was made from."""
    role: str
    recipe: dict[str, Any]

    kind: ClassVar[str] = KIND_DERIVATIVE


@dataclass(frozen=True)
class CustodyLeaf:
    """A chain-of-custody event, as :func:`custody_leaf` logs it."""

    item_id: str
    item_sha256: str
    action: str
    actor: str
    at: str
    """RFC 3339 UTC, as written."""
    reason: str | None
    prev: str | None
    """Hex leaf hash of the item's previous custody leaf (its item leaf for the first)."""
    details: dict[str, Any] | None

    kind: ClassVar[str] = KIND_CUSTODY

    @property
    def case_id(self) -> str | None:
        """The case a ``link`` / ``unlink`` event names (details ``{"case_id": ...}``)."""
        value = (self.details or {}).get("case_id")
        return value if isinstance(value, str) else None


Leaf = ItemLeaf | DerivativeLeaf | CustodyLeaf

_FIELDS: dict[str, dict[str, str]] = {
    # field -> type rule: str, str?, sha, sha?, size, time, strs (sorted unique), obj, obj?
    KIND_ITEM: {
        "sha256": "sha",
        "size": "size",
        "media_type": "str",
        "device_id": "str?",
        "officer_id": "str?",
        "case_ids": "strs",
        "received_at": "time",
        "original_name": "str?",
        "manifest_signature": "str?",
    },
    KIND_DERIVATIVE: {
        "item_id": "str",
        "sha256": "sha",
        "size": "size",
        "parent_sha256": "sha",
        "role": "str",
        "recipe": "obj",
    },
    KIND_CUSTODY: {
        "item_id": "str",
        "item_sha256": "sha",
        "action": "str",
        "actor": "str",
        "at": "time",
        "reason": "str?",
        "prev": "sha?",
        "details": "obj?",
    },
}
_MODELS: dict[str, type[ItemLeaf] | type[DerivativeLeaf] | type[CustodyLeaf]] = {
    KIND_ITEM: ItemLeaf,
    KIND_DERIVATIVE: DerivativeLeaf,
    KIND_CUSTODY: CustodyLeaf,
}


def _field_ok(rule: str, value: object) -> bool:
    if rule.endswith("?"):
        return value is None or _field_ok(rule[:-1], value)
    if rule == "str":
        return type(value) is str
    if rule == "sha":
        return type(value) is str and _SHA256_HEX.fullmatch(value) is not None
    if rule == "size":
        return type(value) is int and value >= 0
    if rule == "time":
        return type(value) is str and _time_ok(value)
    if rule == "strs":
        return (
            type(value) is list
            and all(type(v) is str for v in value)
            and value == sorted(set(value))
        )
    return type(value) is dict  # "obj"


def _time_ok(text: str) -> bool:
    if not _RFC3339_UTC.fullmatch(text):
        return False
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return rfc3339_utc(moment) == text


def parse_leaf(data: str | bytes) -> Leaf:
    """The leaf that ``data`` is, if ``leaves.py`` would have built exactly these bytes.

    Refuses (LeafFormatError, saying why) anything else: bytes that are not UTF-8, JSON that
    is not canonical (spacing, key order, escapes, floats), another ``v``, an unknown kind,
    a missing or extra field, a field of the wrong type (a hash that is not lowercase hex, a
    negative or boolean size, a time not in the UTC form :func:`rfc3339_utc` writes).
    """
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError) as e:
        raise LeafFormatError(f"leaf data is not UTF-8 JSON: {e}") from None
    try:
        if canonical_json(obj) != raw:
            raise LeafFormatError("leaf data is not canonical JSON (sorted keys, no spaces)")
    except CanonicalJSONError as e:
        raise LeafFormatError(f"leaf data is not canonical: {e}") from None
    if type(obj) is not dict:
        raise LeafFormatError("leaf data is not a JSON object")
    if obj.get("v") != LEAF_VERSION or type(obj.get("v")) is not int:
        raise LeafFormatError(f"leaf version is {obj.get('v')!r}, expected {LEAF_VERSION}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise LeafFormatError(f"unknown leaf kind {kind!r}")
    fields = _FIELDS[kind]
    extra = set(obj) - set(fields) - {"v", "kind"}
    missing = set(fields) - set(obj)
    if extra or missing:
        raise LeafFormatError(f"{kind} leaf: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, rule in fields.items():
        if not _field_ok(rule, obj[name]):
            raise LeafFormatError(f"{kind} leaf: field {name!r} is not {rule}: {obj[name]!r:.80}")
    values = {name: obj[name] for name in fields}
    if kind == KIND_ITEM:
        values["case_ids"] = tuple(values["case_ids"])
    return _MODELS[kind](**values)
