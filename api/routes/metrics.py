"""``GET /metrics``: Prometheus text exposition of this process's counters plus what the index
says at scrape time (queue, log, checkpoint). One process, one scrape target (no multiprocess
mode: see ``ingest.metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.deps import RuntimeDep
from ingest import metrics

router = APIRouter()


@router.get("/metrics", tags=["health"], response_class=Response)
def scrape(rt: RuntimeDep) -> Response:
    """Counters of this process and the index's figures, in the Prometheus text format."""
    index = CollectorRegistry()
    index.register(metrics.IndexCollector(rt.sessions, rt.queue))
    body = generate_latest(metrics.REGISTRY) + generate_latest(index)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
