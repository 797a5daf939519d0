"""api.ranges: one byte range per request (RFC 9110 §14)."""

from __future__ import annotations

import pytest

from api.ranges import RangeNotSatisfiable, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-50", (950, 999)),
        ("bytes=0-0", (0, 0)),
        ("bytes=999-999", (999, 999)),
        ("bytes=999-", (999, 999)),
        ("bytes=990-5000", (990, 999)),  # the last position is cut to the end
        ("bytes=-1000", (0, 999)),
        ("bytes=-5000", (0, 999)),  # a suffix longer than the representation is all of it
        ("bytes=0-99999999999999999999999", (0, 999)),
        ("bytes=0-" + "9" * 5000, (0, 999)),  # more digits than int() takes
        ("bytes=-" + "9" * 5000, (0, 999)),
        ("  bytes=0-99  ", (0, 99)),
    ],
)
def test_satisfiable(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=-",
        "bytes=0-1,5-9",  # several ranges: served whole
        "items=0-9",  # another unit
        "bytes=abc",
        "bytes=0x10-20",
        "bytes 0-9",
        "bytes=1.5-2",
        "bytes=\u0663-",  # an Arabic-Indic 3: a digit to Python, not to HTTP
        "bytes=\uff11-\uff12",  # full-width digits
    ],
)
def test_ignored_means_the_whole_representation(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=1000-1001",
        "bytes=5000-",
        "bytes=5-2",
        "bytes=-0",
        "bytes=" + "9" * 5000 + "-",
    ],
)
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, SIZE)


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-5"])
def test_nothing_in_an_empty_representation_is_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 0)


def test_ranges_stay_inside_the_representation() -> None:
    for size in (1, 2, 7, 1000):
        for header in ("bytes=0-", "bytes=-1", f"bytes=-{size + 3}", f"bytes={size - 1}-"):
            first, last = parse_range(header, size) or (0, size - 1)
            assert 0 <= first <= last < size, (size, header)
