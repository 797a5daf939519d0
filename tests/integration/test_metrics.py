"""``GET /metrics``: what was sealed and refused, errors by component, and the index's figures
(queue, log, checkpoint) read at scrape time, in the Prometheus text format."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from configs.settings import Settings
from ingest import jobs
from ingest.problems import ItemStatus
from tests.integration import mediagen as gen
from tests.integration.devicekit import (
    OCTETS,
    TUS,
    clip,
    creation_headers,
    enroll,
    manifest_for,
    metadata,
)
from tests.people import bearer, make_user

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, workers=0)) as c:
        rt = c.app.state.runtime  # type: ignore[attr-defined]
        c.headers.update(bearer(make_user(rt, "officer-m", "officer", "U-M")))
        yield c


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_seals_refusals_errors_and_read_the_index(client: TestClient) -> None:
    before = _scrape(client)
    data = MP4_HEAD + os.urandom(5000)
    r = client.post(
        "/v1/items",
        files={"file": ("clip.mp4", data, "application/octet-stream")},
        data={"manifest": json.dumps({})},
    )
    assert r.status_code in (200, 201), r.text
    empty = client.post(
        "/v1/items",
        files={"file": ("empty.mp4", b"", "application/octet-stream")},
        data={"manifest": json.dumps({})},
    )
    assert empty.status_code == 422
    assert client.get("/v1/items/NOSUCHITEM0000").status_code == 404
    after = _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert delta("liuhen_sealed_bytes_total") == len(data)
    assert delta("liuhen_sealed_items_total", duplicate="false") == 1
    assert delta("liuhen_refusals_total", reason="empty_file") == 1
    assert delta("liuhen_errors_total", component="request", code="not_found") == 1
    assert delta("liuhen_stage_duration_seconds_count", stage="seal") == 2
    assert delta("liuhen_checkpoints_signed_total") >= 1
    # From the index at scrape time: this test's own database.
    assert _get(after, "liuhen_index_up") == 1
    assert _get(after, "liuhen_queue_depth") == 1
    assert _get(after, "liuhen_log_size") == 2  # the item leaf and its "sealed" custody leaf
    assert _get(after, "liuhen_checkpoint_size") == 2
    assert 0 <= _get(after, "liuhen_checkpoint_age_seconds") < 300
    assert 0 <= _get(after, "liuhen_queue_oldest_job_age_seconds") < 300


def test_pipeline_stages_are_timed(client: TestClient, tmp_path: Path) -> None:
    """One item through the pipeline: each stage it ran is one more observation."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    video = gen.small_h264(tmp_path)
    r = client.post(
        "/v1/items",
        files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")},
        data={"manifest": json.dumps({})},
    )
    assert r.status_code == 201, r.text
    before = _scrape(client)
    assert jobs.run(rt, r.json()["id"]) == ItemStatus.READY
    after = _scrape(client)
    stages = ("pipeline", "fetch", "probe", "time_and_place", "derive", "store_derivatives")
    for stage in stages:
        count = "liuhen_stage_duration_seconds_count"
        assert _get(after, count, stage=stage) - _get(before, count, stage=stage) == 1, stage
    took = _get(after, "liuhen_stage_duration_seconds_sum", stage="derive") - _get(
        before, "liuhen_stage_duration_seconds_sum", stage="derive"
    )
    assert took > 0


def test_device_uploads_and_their_refusals_are_counted(client: TestClient) -> None:
    """The tus path: a sealed upload moves the seal counters; a forged signature, a wrong
    hash and a bad token are each one refusal of their reason (not two: the seal and the
    edge both see a refusal the seal raised)."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    cred = enroll(rt, "DEV-METRICS")
    before = _scrape(client)

    data = clip(30_000)
    meta = metadata(cred, manifest_for(cred, data, seq=1))
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), meta))
    assert r.status_code == 201, r.text
    patch = {**TUS, "Authorization": f"Bearer {cred.token}", "Content-Type": OCTETS}
    r = client.patch(r.headers["location"], content=data, headers={**patch, "Upload-Offset": "0"})
    assert r.status_code == 204, r.text

    forged = {**meta, "signature": base64.b64encode(bytes(64)).decode()}
    r = client.post("/v1/uploads", headers=creation_headers(cred, len(data), forged))
    assert r.status_code == 403
    other = clip(20_000)
    lying = manifest_for(cred, other, seq=2) | {"sha256": "0" * 64}
    r = client.post(
        "/v1/uploads", headers=creation_headers(cred, len(other), metadata(cred, lying))
    )
    assert r.status_code == 201, r.text
    r = client.patch(r.headers["location"], content=other, headers={**patch, "Upload-Offset": "0"})
    assert r.status_code == 422 and r.json()["code"] == "integrity_mismatch", r.text
    refused = client.post("/v1/uploads", headers={**TUS, "Authorization": "Bearer lhd_nope"})
    assert refused.status_code == 401
    after = _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert delta("liuhen_sealed_items_total", duplicate="false") == 1
    assert delta("liuhen_sealed_bytes_total") == len(data)
    assert delta("liuhen_stage_duration_seconds_count", stage="seal") >= 1
    assert delta("liuhen_refusals_total", reason="bad_signature") == 1
    assert delta("liuhen_refusals_total", reason="unauthenticated") == 1
    assert delta("liuhen_refusals_total", reason="integrity_mismatch") == 1
    assert delta("liuhen_errors_total", component="request", code="bad_signature") == 1


def test_refusals_before_the_seal_and_unexpected_errors_are_counted(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _scrape(client)
    r = client.post(
        "/v1/items",
        files={"file": ("clip.mp4", MP4_HEAD, "application/octet-stream")},
        data={"manifest": "{not json"},
    )
    assert r.status_code == 422 and r.json()["code"] == "bad_manifest", r.text

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("a bug (test)")

    rt = client.app.state.runtime  # type: ignore[attr-defined]
    monkeypatch.setattr(rt.store, "ensure_bucket", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # the test client re-raises it after
        client.get("/healthz")  # the app's handler answered 500 (and counted it)
    after = _scrape(client)
    assert (
        _get(after, "liuhen_refusals_total", reason="bad_manifest")
        - _get(before, "liuhen_refusals_total", reason="bad_manifest")
        == 1
    )
    assert (
        _get(after, "liuhen_errors_total", component="other", code="RuntimeError")
        - _get(before, "liuhen_errors_total", component="other", code="RuntimeError")
        == 1
    )
