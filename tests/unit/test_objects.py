"""storage.objects without a server: part sizes, bucket names, retention dates, how failures
are classified and retried."""

from __future__ import annotations

import io
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from storage.errors import ObjectNotFound, ObjectStoreError, StoreUnavailable
from storage.objects import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    MAX_PARTS,
    MIB,
    PART_SIZE,
    ObjectStore,
    S3Endpoint,
    backoff_delays,
    part_size_for,
    retain_until,
    translate_errors,
)

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


# --- failure classes and retrying ----------------------------------------------------------


class _Response:
    """The part of a urllib3 response an S3Error keeps: its status."""

    def __init__(self, status: int) -> None:
        self.status = status


def _s3_error(code: str, status: int) -> S3Error:
    return S3Error(_Response(status), code, "msg", "/b/k", "req", "host")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("NoSuchVersion", 404, ObjectNotFound),
        ("NoSuchBucket", 404, ObjectNotFound),
        ("SomethingNew", 404, ObjectNotFound),
        ("InternalError", 500, StoreUnavailable),  # SeaweedFS: "volume id N not found"
        ("ServiceUnavailable", 503, StoreUnavailable),
        ("SlowDown", 503, StoreUnavailable),
        ("RequestTimeout", 400, StoreUnavailable),
        ("Whatever", 502, StoreUnavailable),
        ("AccessDenied", 403, ObjectStoreError),
        ("InvalidRequest", 400, ObjectStoreError),
    ],
)
def test_s3_errors_are_classified(code: str, status: int, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught, translate_errors("get k"):
        raise _s3_error(code, status)
    assert type(caught.value) is expected
    assert "get k" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServerError("HTTP 503", 503), StoreUnavailable),
        (ServerError("HTTP 304", 304), ObjectStoreError),
        (InvalidResponseError(502, "text/html", "<html>bad gateway"), StoreUnavailable),
        (InvalidResponseError(200, "text/html", "<html>"), ObjectStoreError),
        (urllib3.exceptions.ProtocolError("connection reset"), StoreUnavailable),
        (ConnectionRefusedError(111, "refused"), StoreUnavailable),
        (TimeoutError("timed out"), StoreUnavailable),
    ],
)
def test_other_failures_are_classified(error: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught, translate_errors("put k"):
        raise error
    assert type(caught.value) is expected


def test_backoff_grows_is_jittered_and_ends_within_the_budget() -> None:
    delays = list(backoff_delays(30.0, rng=random.Random(7)))
    assert 0 < sum(delays) <= 30.0
    assert len(delays) >= 8
    ceilings = [min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**i) for i in range(len(delays))]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) > 1  # jitter
    assert list(backoff_delays(0.0)) == []


def test_an_unavailable_store_is_retried_then_given_up() -> None:
    calls: list[float] = []

    def connect() -> S3Endpoint:
        calls.append(time.monotonic())
        raise StoreUnavailable("not started")

    store = ObjectStore(bucket="liuhen-x", connect=connect, retry_s=0.6)
    with pytest.raises(StoreUnavailable, match="not started"):
        store.size("k", "v")
    assert len(calls) >= 3  # reconnected before each retry
    assert calls[-1] - calls[0] <= 0.6 + 0.2


def test_the_retry_budget_counts_the_time_tries_take() -> None:
    """Each try takes 0.3 s to fail (a store that waits before its 500): with a 0.5 s budget
    the operation gives up after two or three tries, not after every sleep fitted in it."""
    calls: list[float] = []

    def connect() -> S3Endpoint:
        calls.append(time.monotonic())
        time.sleep(0.3)
        raise StoreUnavailable("slow to fail")

    store = ObjectStore(bucket="liuhen-x", connect=connect, retry_s=0.5)
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="slow to fail"):
        store.size("k", "v")
    assert 2 <= len(calls) <= 3
    assert time.monotonic() - began < 0.5 + 0.3 + 0.2


def test_a_store_connects_only_when_used() -> None:
    calls: list[int] = []

    def connect() -> S3Endpoint:
        calls.append(1)
        return S3Endpoint("127.0.0.1:1", "a", "b")

    store = ObjectStore(bucket="liuhen-x", connect=connect)
    assert not store.connected and calls == []
    _ = store.client
    assert store.connected and calls == [1]


def test_after_giving_up_the_next_operations_fail_fast() -> None:
    calls: list[float] = []

    def connect() -> S3Endpoint:
        calls.append(time.monotonic())
        raise StoreUnavailable("down")

    store = ObjectStore(bucket="liuhen-x", connect=connect, retry_s=0.5)
    with pytest.raises(StoreUnavailable):
        store.size("k", "v")
    retried = len(calls)
    began = time.monotonic()
    for _ in range(5):
        with pytest.raises(StoreUnavailable):
            store.size("k", "v")
    assert time.monotonic() - began < 0.2  # no more backoff while the store is known down
    assert len(calls) == retried + 5  # but each still tried once
