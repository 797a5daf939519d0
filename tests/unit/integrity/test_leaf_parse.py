"""The reading side of leaf data: ``parse_leaf`` takes back exactly what the builders make."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from integrity.errors import IntegrityError, LeafFormatError
from integrity.leaves import (
    CustodyLeaf,
    DerivativeLeaf,
    ItemLeaf,
    canonical_json,
    custody_leaf,
    derivative_leaf,
    item_leaf,
    parse_leaf,
)

SHA = "ab" * 32
AT = datetime(2026, 12, 1, 9, 30, 5, 123456, tzinfo=UTC)


def _item() -> dict[str, Any]:
    return item_leaf(
        sha256=SHA,
        size=12,
        media_type="video/mp4",
        device_id="D1",
        officer_id=None,
        case_ids=["B", "A", "A"],
        received_at=AT,
        original_name="x.mp4",
    )


def _derivative() -> dict[str, Any]:
    return derivative_leaf(
        item_id="01ABCDEFGHJK",
        sha256="cd" * 32,
        size=0,
        parent_sha256=SHA,
        role="proxy",
        recipe={"codec": "h264", "crf": 23},
    )


def _custody() -> dict[str, Any]:
    return custody_leaf(
        item_id="01ABCDEFGHJK",
        item_sha256=SHA,
        action="link",
        actor="cli:alice",
        at=AT.replace(microsecond=0),
        reason="complaint 7",
        prev="ef" * 32,
        details={"case_id": "C-1"},
    )


def test_every_built_leaf_parses_back_to_its_fields() -> None:
    item = parse_leaf(canonical_json(_item()))
    assert isinstance(item, ItemLeaf)
    assert (item.sha256, item.size, item.case_ids) == (SHA, 12, ("A", "B"))
    assert item.received_at == "2026-12-01T09:30:05.123456Z"
    derivative = parse_leaf(canonical_json(_derivative()).decode())
    assert isinstance(derivative, DerivativeLeaf)
    assert (derivative.role, derivative.recipe) == ("proxy", {"codec": "h264", "crf": 23})
    custody = parse_leaf(canonical_json(_custody()))
    assert isinstance(custody, CustodyLeaf)
    assert (custody.action, custody.case_id, custody.at) == ("link", "C-1", "2026-12-01T09:30:05Z")


def test_leaf_models_are_frozen() -> None:
    leaf = parse_leaf(canonical_json(_item()))
    assert isinstance(leaf, ItemLeaf)
    with pytest.raises(AttributeError):
        leaf.size = 13  # type: ignore[misc]


def _edited(leaf: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**leaf, **changes}, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"}{", "not UTF-8 JSON"),
        (json.dumps(_item()).encode(), "not canonical"),  # spaces after separators
        (json.dumps(_item(), separators=(",", ":")).encode(), "not canonical"),  # key order
        (_edited(_item(), size=1.5), "floats"),
        (_edited(_item(), v=2), "leaf version is 2"),
        (_edited(_item(), v=True), "leaf version"),
        (_edited(_item(), kind="note"), "unknown leaf kind 'note'"),
        (b"[1,2]", "not a JSON object"),
        (_edited(_item(), extra=1), r"unexpected \['extra'\]"),
        (canonical_json({k: v for k, v in _item().items() if k != "size"}), r"missing \['size'\]"),
        (_edited(_item(), size=-1), "'size' is not size"),
        (_edited(_item(), size=True), "'size' is not size"),
        (_edited(_item(), size="12"), "'size' is not size"),
        (_edited(_item(), sha256=SHA.upper()), "'sha256' is not sha"),
        (_edited(_item(), case_ids=["B", "A"]), "'case_ids' is not strs"),
        (_edited(_item(), case_ids=["A", "A"]), "'case_ids' is not strs"),
        (_edited(_item(), received_at="2026-12-01T09:30:05+00:00"), "'received_at' is not time"),
        (_edited(_item(), received_at="2026-12-01T09:30:05.000000Z"), "'received_at'"),
        (_edited(_item(), received_at="2026-13-01T09:30:05Z"), "'received_at'"),
        (_edited(_item(), device_id=7), "'device_id' is not str"),
        (_edited(_derivative(), recipe=None), "'recipe' is not obj"),
        (_edited(_custody(), prev="xyz"), "'prev' is not sha"),
        (_edited(_custody(), details=[]), "'details' is not obj"),
        (_edited(_custody(), item_id=None), "'item_id' is not str"),
    ],
)
def test_parse_leaf_refuses_what_the_builders_would_not_make(data: bytes, message: str) -> None:
    with pytest.raises(LeafFormatError, match=message):
        parse_leaf(data)


def test_leaf_format_error_is_an_integrity_error_with_a_stable_code() -> None:
    assert issubclass(LeafFormatError, IntegrityError)
    assert LeafFormatError.code == "leaf_format"
