"""``GET /metrics``: what was sealed and refused, errors by component, and the index's figures
(queue, log, checkpoint) read at scrape time, in the Prometheus text format."""

from __future__ import annotations

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
