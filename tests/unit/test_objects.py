"""storage.objects without a server: part sizes, bucket names, retention dates."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from storage.errors import ObjectStoreError, StoreUnavailable
from storage.objects import MAX_PARTS, MIB, PART_SIZE, ObjectStore, part_size_for, retain_until

TIB = 1024 * 1024 * MIB


@pytest.mark.parametrize("length", [-1, 0, 1, PART_SIZE, 4 * 1024 * MIB, PART_SIZE * MAX_PARTS])
def test_part_size_is_the_default_up_to_ten_thousand_parts(length: int) -> None:
    assert part_size_for(length) == PART_SIZE


@pytest.mark.parametrize("length", [PART_SIZE * MAX_PARTS + 1, 200 * 1024 * MIB, TIB])
def test_bigger_objects_get_bigger_parts_within_the_limit(length: int) -> None:
    size = part_size_for(length)
    assert size > PART_SIZE
    assert size % MIB == 0
    assert -(-length // size) <= MAX_PARTS
    assert -(-length // (size - MIB)) > MAX_PARTS  # the smallest whole MiB that fits


def test_the_default_part_is_small_enough_for_constant_memory() -> None:
    # S3's minimum part is 5 MiB; four parts (three uploading, one read) stay < 64 MiB.
    assert 5 * MIB <= PART_SIZE <= 16 * MIB


@pytest.mark.parametrize("bucket", ["b1", "Bad_Bucket", "a..b", "192.168.0.1", "x" * 64, ""])
def test_an_invalid_bucket_name_is_a_store_error_at_once(bucket: str) -> None:
    with pytest.raises(ObjectStoreError, match="bucket name"):
        ObjectStore(endpoint="127.0.0.1:1", access_key="a", secret_key="b", bucket=bucket)


def test_a_valid_bucket_name_opens_nothing() -> None:
    store = ObjectStore(endpoint="127.0.0.1:1", access_key="a", secret_key="b", bucket="liuhen-x")
    assert store.bucket == "liuhen-x"


def test_retain_until_is_whole_seconds_from_now() -> None:
    now = datetime(2026, 1, 1, 8, 0, 0, 999_999, tzinfo=UTC)
    assert retain_until(timedelta(days=366), now=now) == datetime(2027, 1, 2, 8, tzinfo=UTC)
    until = retain_until(timedelta(days=183))
    assert until.microsecond == 0 and until.tzinfo is not None
    assert until > datetime.now(UTC) + timedelta(days=182)


def test_a_stream_shorter_than_its_length_is_not_an_unreachable_store() -> None:
    store = ObjectStore(endpoint="127.0.0.1:1", access_key="a", secret_key="b", bucket="liuhen-x")
    with pytest.raises(ObjectStoreError, match="ended after 3 of 10 bytes") as caught:
        store.put_stream("k", io.BytesIO(b"abc"), length=10)  # fails before any request
    assert not isinstance(caught.value, StoreUnavailable)
