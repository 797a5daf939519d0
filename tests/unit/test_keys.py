"""storage.keys: the one place that knows object keys (DESIGN.md, "Storage layout")."""

from __future__ import annotations

import hashlib

import pytest

from storage import keys

SHA = hashlib.sha256(b"evidence").hexdigest()
ITEM = "01M8FC9G7VP926XGM1HH3GVY9E"


def test_original_key_is_the_content_address() -> None:
    assert keys.original_key(SHA) == f"originals/sha256/{SHA[:2]}/{SHA[2:4]}/{SHA}"


@pytest.mark.parametrize(
    "bad",
    [SHA.upper(), SHA[:63], SHA + "0", "", "../" + SHA[3:], "g" * 64, f"{SHA[:32]}/{SHA[33:]}"],
)
def test_original_key_refuses_anything_but_lowercase_hex_sha256(bad: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        keys.original_key(bad)


@pytest.mark.parametrize(
    ("role", "ext"),
    [("proxy", "mp4"), ("thumb-000", "jpg"), ("contact", "jpg"), ("track", "geojson")],
)
def test_derivative_key(role: str, ext: str) -> None:
    assert keys.derivative_key(ITEM, role, ext) == f"derived/{ITEM}/{role}.{ext}"


@pytest.mark.parametrize(
    ("item_id", "role", "ext"),
    [
        ("../x", "proxy", "mp4"),
        (ITEM + "/..", "proxy", "mp4"),
        ("short", "proxy", "mp4"),
        (ITEM, "../proxy", "mp4"),
        (ITEM, "proxy/x", "mp4"),
        (ITEM, "Proxy", "mp4"),
        (ITEM, "", "mp4"),
        (ITEM, "a" * 33, "mp4"),
        (ITEM, "proxy", "MP4"),
        (ITEM, "proxy", "mp4/x"),
        (ITEM, "proxy", ""),
        (ITEM, "proxy", "toolongext"),
        (ITEM, "proxy\n", "mp4"),
    ],
)
def test_derivative_key_refuses_path_tricks(item_id: str, role: str, ext: str) -> None:
    with pytest.raises(ValueError, match="bad derivative key"):
        keys.derivative_key(item_id, role, ext)


def test_log_keys() -> None:
    assert keys.checkpoint_key(42) == "log/checkpoints/42"
    assert keys.timestamp_key(42) == "log/checkpoints/42.tsr"
    assert keys.leaf_bundle_key(0, 99) == "log/leaves/0-99.jsonl"


def test_families_of_keys_do_not_overlap() -> None:
    prefixes = {
        keys.original_key(SHA).split("/")[0],
        keys.derivative_key(ITEM, "proxy", "mp4").split("/")[0],
        keys.checkpoint_key(1).split("/")[0],
    }
    assert prefixes == {"originals", "derived", "log"}


def test_mirror_keys_parse_back_and_nothing_else_does() -> None:
    assert keys.parse_leaf_bundle_key(keys.leaf_bundle_key(0, 41)) == (0, 41)
    assert keys.parse_checkpoint_key(keys.checkpoint_key(42)) == 42
    for other in (
        keys.timestamp_key(42),
        "log/leaves/01-2.jsonl",
        "log/leaves/1-2.json",
        "log/checkpoints/42/x",
        keys.original_key("a" * 64),
    ):
        assert keys.parse_leaf_bundle_key(other) is None
        assert keys.parse_checkpoint_key(other) is None
    assert keys.leaf_bundle_key(3, 4).startswith(keys.LEAF_BUNDLES_PREFIX)
    assert keys.checkpoint_key(3).startswith(keys.CHECKPOINTS_PREFIX)
    assert keys.derivative_file_name(keys.derivative_key("01ABCDEFGHJK", "proxy", "mp4")) == (
        "proxy.mp4"
    )
    assert keys.derivative_file_name("derived/../x.mp4") is None


@pytest.mark.parametrize("level,index", [(0, 0), (0, 255), (1, 1000), (2, 1234067), (0, 999)])
def test_tile_keys_read_back(level: int, index: int) -> None:
    assert keys.parse_tile_key(keys.tile_key(level, index)) == (level, index)


@pytest.mark.parametrize(
    "key",
    [
        "log/tile/0/x000/001",  # not canonical: 1 is 001
        "log/tile/0/1",
        "log/tile/0/001.p/5",  # a partial tile: never mirrored
        "log/tile/00/001",
        "log/tile/0/x1234/567",
        "log/tiles/0/001",
        "log/tile/0/",
    ],
)
def test_what_is_not_a_full_tile_key(key: str) -> None:
    assert keys.parse_tile_key(key) is None
