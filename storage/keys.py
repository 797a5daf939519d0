"""The one place that knows object keys (DESIGN.md, "Storage layout")."""

from __future__ import annotations

import re

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_EXT = re.compile(r"[a-z0-9]{1,8}")
_ITEM_ID = re.compile(r"[0-9A-Za-z]{10,40}")


def original_key(sha256: str) -> str:
    if not _HEX64.fullmatch(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return f"originals/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def derivative_key(item_id: str, role: str, ext: str) -> str:
    if not (_ITEM_ID.fullmatch(item_id) and _ROLE.fullmatch(role) and _EXT.fullmatch(ext)):
        raise ValueError(f"bad derivative key parts: {item_id!r} {role!r} {ext!r}")
    return f"derived/{item_id}/{role}.{ext}"


def checkpoint_key(tree_size: int) -> str:
    return f"log/checkpoints/{tree_size}"


PUBLISHED_CHECKPOINT = "log/checkpoint"
"""The newest checkpoint, put again with each one (C2SP tlog-tiles' ``<prefix>/checkpoint``):
one read tells a signer how far the log was published, whatever the index says."""


def timestamp_key(tree_size: int) -> str:
    return f"log/checkpoints/{tree_size}.tsr"


def leaf_bundle_key(first: int, last: int) -> str:
    return f"log/leaves/{first}-{last}.jsonl"


# --- reading keys back (the verifier lists the mirror) -----------------------------------------

LEAF_BUNDLES_PREFIX = "log/leaves/"
CHECKPOINTS_PREFIX = "log/checkpoints/"
_BUNDLE = re.compile(r"log/leaves/(0|[1-9][0-9]*)-(0|[1-9][0-9]*)\.jsonl")
_CHECKPOINT = re.compile(r"log/checkpoints/(0|[1-9][0-9]*)")


def leaf_bundles_from(first: int) -> str:
    """The prefix of every leaf bundle that begins at leaf ``first``."""
    return f"{LEAF_BUNDLES_PREFIX}{first}-"


def parse_leaf_bundle_key(key: str) -> tuple[int, int] | None:
    """(first, last) of a leaf bundle key, or None if ``key`` is not one."""
    m = _BUNDLE.fullmatch(key)
    return (int(m[1]), int(m[2])) if m else None


def parse_checkpoint_key(key: str) -> int | None:
    """The tree size of a checkpoint key, or None (a time-stamp ``.tsr``, anything else)."""
    m = _CHECKPOINT.fullmatch(key)
    return int(m[1]) if m else None


def derivative_file_name(key: str) -> str | None:
    """``<role>.<ext>`` of a derivative key, or None if ``key`` is not one."""
    m = re.fullmatch(r"derived/([0-9A-Za-z]{10,40})/([a-z][a-z0-9_-]{0,31}\.[a-z0-9]{1,8})", key)
    return m[2] if m else None


def tile_key(level: int, index: int) -> str:
    """A full hash tile, at its C2SP tlog-tiles path under ``log/`` (index 1234067 is
    ``x001/x234/067``)."""
    if level < 0 or index < 0:
        raise ValueError(f"bad tile {level}/{index}")
    digits = str(index)
    digits = digits.rjust(-(-len(digits) // 3) * 3, "0")
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return f"log/tile/{level}/" + "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


TILES_PREFIX = "log/tile/"
_TILE = re.compile(r"log/tile/(0|[1-9][0-9]*)/((?:x[0-9]{3}/)*[0-9]{3})")


def parse_tile_key(key: str) -> tuple[int, int] | None:
    """(level, index) of a full tile key as :func:`tile_key` writes it, or None (a partial
    tile, a non-canonical path, anything else)."""
    m = _TILE.fullmatch(key)
    if m is None:
        return None
    level, index = int(m[1]), int(m[2].replace("x", "").replace("/", ""))
    return (level, index) if tile_key(level, index) == key else None
