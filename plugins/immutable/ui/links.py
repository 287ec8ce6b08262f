"""Operator extra links of the gates: the metrics of the gate's window, the load balancer and the
image. Locally: the Prometheus graph, HAProxy's stats page and the manifest in the region's
registry; on aws: the CloudWatch, load balancer and AMI pages of the AWS console.

The gate computes the URLs with the pure functions below when it starts (it knows the window,
the region and the digest then) and keeps them in one XCom; each link only reads its URL back.
Airflow pushes the links when the task defers as well as when it ends, so they work while the
gate waits in the triggerer.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

LINKS_XCOM_KEY = "gate_links"  # the gate's XCom: {link name: URL}
GRAPH_MARGIN_S = 30.0  # seconds shown before and after the gate's window


def prometheus_graph_url(prometheus: str, exprs: list[str], start: float, end: float) -> str:
    """Prometheus' graph page with one panel per expression, over [start, end] (epoch seconds)."""
    if end <= start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    if not exprs:
        raise ValueError("a graph needs at least one expression")
    end_input = datetime.fromtimestamp(math.ceil(end), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    params: dict[str, str] = {}
    for number, expr in enumerate(exprs):
        params |= {
            f"g{number}.expr": expr,
            f"g{number}.tab": "0",  # the graph, not the table
            f"g{number}.range_input": f"{math.ceil(end - start)}s",
            f"g{number}.end_input": end_input,
        }
    return f"{prometheus.rstrip('/')}/graph?{urlencode(params, quote_via=quote)}"


def haproxy_stats_url(admin_port: int, backend: str) -> str:
    """HAProxy's stats page, at the app's backend (the page anchors each proxy by its name)."""
    return f"http://127.0.0.1:{admin_port}/stats#{quote(backend)}"


def registry_manifest_url(registry: str, repository: str, digest: str) -> str:
    """The image's manifest in a registry (OCI distribution API), addressed by digest."""
    if not digest.startswith("sha256:"):
        raise ValueError(f"an image is addressed by its digest (sha256:...), not {digest!r}")
    return f"http://{registry}/v2/{repository}/manifests/{digest}"


def gate_window(start_at: float, duration_s: float) -> tuple[float, float]:
    """The graph's time range: the gate's planned window with a margin on both sides."""
    return start_at - GRAPH_MARGIN_S, start_at + duration_s + GRAPH_MARGIN_S


class _GateLink(BaseOperatorLink):
    """One entry of the gate's links XCom; empty (no link) when the gate recorded none."""

    name = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        links: Any = XCom.get_value(ti_key=ti_key, key=LINKS_XCOM_KEY)
        return str(links.get(self.name) or "") if isinstance(links, dict) else ""


class PrometheusGraphLink(_GateLink):
    name = "Metrics of the gate's window"


class LoadBalancerStatsLink(_GateLink):
    name = "Load balancer"


class RegistryImageLink(_GateLink):
    name = "Image"
