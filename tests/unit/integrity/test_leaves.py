"""Canonical leaf JSON and the three leaf kinds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from integrity.errors import CanonicalJSONError
from integrity.leaves import (
    canonical_json,
    custody_leaf,
    derivative_leaf,
    item_leaf,
    leaf_hash_hex,
    rfc3339_utc,
)
from integrity.merkle import leaf_hash

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_canonical_json_sorts_keys_without_spaces() -> None:
    value = {"b": [1, True, None, "é"], "a": {"z": 0, "y": -7}, "c": "北京"}
    assert canonical_json(value) == '{"a":{"y":-7,"z":0},"b":[1,true,null,"é"],"c":"北京"}'.encode()


def test_canonical_json_is_independent_of_insertion_order() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "floats are not allowed"),
        ({"lat": 40.8423}, r"\$\.lat: floats"),
        ([1, [float("nan")]], r"\$\[1\]\[0\]: floats"),
        ({1: "x"}, "key 1 is not a string"),
        ({"b": b"bytes"}, "bytes is not allowed"),
        ((1, 2), "tuple is not allowed"),
        ({"s": {1, 2}}, "set is not allowed"),
        ("\udc80", "cannot encode"),
    ],
)
def test_canonical_json_rejects(value: object, message: str) -> None:
    with pytest.raises(CanonicalJSONError, match=message):
        canonical_json(value)


def test_canonical_json_rejects_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(CanonicalJSONError):
        canonical_json(cycle)


def test_leaf_hash_hex() -> None:
    assert leaf_hash_hex(b"x") == leaf_hash(b"x").hex()
    assert len(leaf_hash_hex(b"")) == 64


def test_rfc3339_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    assert rfc3339_utc(datetime(2024, 5, 1, 8, 0, tzinfo=beijing)) == "2024-05-01T00:00:00Z"
    assert rfc3339_utc(datetime(2024, 5, 1, 0, 0, 0, 1500, tzinfo=UTC)) == (
        "2024-05-01T00:00:00.001500Z"
    )
    with pytest.raises(CanonicalJSONError, match="no time zone"):
        rfc3339_utc(datetime(2024, 5, 1))  # noqa: DTZ001 - the naive value is the point


def _item(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "sha256": SHA_A,
        "size": 1234,
        "media_type": "video/mp4",
        "device_id": "DSJ-001",
        "officer_id": "010203",
        "case_ids": ["C-2", "C-1", "C-2"],
        "received_at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        "original_name": "20240501_1230.MP4",
    }
    fields.update(overrides)
    return item_leaf(**fields)


def test_item_leaf() -> None:
    leaf = _item()
    assert leaf["v"] == 1
    assert leaf["kind"] == "item"
    assert leaf["case_ids"] == ["C-1", "C-2"]
    assert leaf["received_at"] == "2024-05-01T12:30:00Z"
    assert leaf["manifest_signature"] is None
    data = canonical_json(leaf)
    assert json.loads(data) == leaf
    assert b" " not in data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sha256": SHA_A.upper()}, "lowercase hex SHA-256"),
        ({"sha256": "a" * 63}, "lowercase hex SHA-256"),
        ({"size": -1}, "non-negative"),
        ({"size": True}, "non-negative"),
        ({"received_at": datetime(2024, 5, 1)}, "no time zone"),  # noqa: DTZ001
        ({"original_name": "x\udc80"}, "cannot encode"),
    ],
)
def test_item_leaf_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(CanonicalJSONError, match=message):
        _item(**overrides)


def test_derivative_leaf() -> None:
    leaf = derivative_leaf(
        item_id="it_1",
        sha256=SHA_B,
        size=99,
        parent_sha256=SHA_A,
        role="proxy",
        recipe={"tool": "ffmpeg", "crf": 28},
    )
    assert (leaf["v"], leaf["kind"], leaf["parent_sha256"]) == (1, "derivative", SHA_A)
    with pytest.raises(CanonicalJSONError, match=r"\$\.recipe\.scale: floats"):
        derivative_leaf(
            item_id="it_1",
            sha256=SHA_B,
            size=99,
            parent_sha256=SHA_A,
            role="proxy",
            recipe={"scale": 0.5},
        )


def test_custody_leaves_chain() -> None:
    at = datetime(2024, 5, 2, tzinfo=UTC)
    first = custody_leaf(
        item_id="it_1", item_sha256=SHA_A, action="ingest", actor="u1", at=at, reason="", prev=None
    )
    prev = leaf_hash_hex(canonical_json(first))
    second = custody_leaf(
        item_id="it_1",
        item_sha256=SHA_A,
        action="export",
        actor="u2",
        at=at,
        reason="review",
        prev=prev,
        details={"lat": "40.8423", "lon": "111.7490"},
    )
    assert first["prev"] is None and first["details"] is None
    assert second["prev"] == prev and second["kind"] == "custody"
    with pytest.raises(CanonicalJSONError, match="prev is not"):
        custody_leaf(
            item_id="it_1", item_sha256=SHA_A, action="x", actor="u", at=at, reason="", prev="zz"
        )
