"""Prometheus metrics of the service: requests by route and status, latency, the share
of boxes with fallback items, snapshot age and live-update backlog.

With several workers, ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before they start, so
``/metrics`` (answered by any one worker) adds up every worker's counts.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("similar_articles_requests", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram("similar_articles_request_seconds", "Time to answer a request", ["route"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
BOXES = Counter("similar_articles_boxes", "Boxes served", ["with_fallback"])
SNAPSHOT_AGE = Gauge("similar_articles_snapshot_age_seconds", "Age of the snapshot being served",
                     multiprocess_mode="max")
BACKLOG = Gauge("similar_articles_live_update_backlog", "Live-update records applied on top of the snapshot, "
                "waiting for the next build to fold them in", multiprocess_mode="max")
ARTICLES = Gauge("similar_articles_live_articles", "Articles a box can show", multiprocess_mode="max")


def observe(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def count_box(has_fallback: bool) -> None:
    BOXES.labels("yes" if has_fallback else "no").inc()


def exposition() -> tuple[bytes, str]:
    """The metrics as Prometheus text: of every worker when several run."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every request by its route template (never the raw path, so
    ids do not explode the label set)."""

    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            observe(getattr(scope.get("route"), "path", "unmatched"), scope["method"], status[0],
                    time.perf_counter() - started)
