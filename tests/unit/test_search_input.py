"""ingest.search: what a query may hold is refused as bad input (422), never a 500."""

from __future__ import annotations

import base64

import pytest

from ingest.errors import InvalidInput
from ingest.search import decode_cursor, encode_cursor, parse_bbox, parse_time


@pytest.mark.parametrize("text", ["nan,0,1,1", "0,0,inf,1", "-inf,0,1,1", "sNaN,0,1,1"])
def test_a_bbox_of_non_numbers_is_bad_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_bbox(text)


@pytest.mark.parametrize("text", ["0001-01-01T00:00+08:00", "9999-12-31T23:59-08:00"])
def test_a_time_beyond_the_calendar_in_utc_is_bad_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="outside the calendar"):
        parse_time(text, "from")


def test_a_deeply_nested_cursor_is_bad_input() -> None:
    forged = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    with pytest.raises(InvalidInput, match="cursor"):
        decode_cursor(forged)
    moment = parse_time("2026-03-01T08:00:00+08:00", "from")
    assert moment is not None
    assert decode_cursor(encode_cursor(moment, "ITEM")) == (moment, "ITEM")
