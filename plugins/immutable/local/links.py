"""The gates' extra links on the local platform: Prometheus' graph of the gate's queries over its
window, the region's HAProxy stats page at the app's backend, the image's manifest in the region's
registry. Built when the gate starts, from what it knows then, so the links work while it waits."""

from __future__ import annotations

from typing import Any

from immutable.config import PlatformConfig
from immutable.local.loadbalancer import backend_name
from immutable.ui.links import (
    LoadBalancerStatsLink,
    PrometheusGraphLink,
    RegistryImageLink,
    gate_window,
    haproxy_stats_url,
    prometheus_graph_url,
    registry_manifest_url,
)


class LocalLinks:
    """`interface.Links`."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config

    def gate_links(
        self,
        *,
        app: str,
        repository: str,
        region: str,
        digest: str,
        queries: list[Any],
        start_at: float,
        duration_s: float,
    ) -> dict[str, str]:
        where = self.config.region(region)
        start, end = gate_window(start_at, duration_s)
        return {
            PrometheusGraphLink.name: prometheus_graph_url(
                f"http://127.0.0.1:{self.config.local.prometheus_port}", [str(q) for q in queries], start, end
            ),
            LoadBalancerStatsLink.name: haproxy_stats_url(where.lb_admin_port, backend_name(app)),
            RegistryImageLink.name: registry_manifest_url(f"127.0.0.1:{where.registry_port}", repository, digest),
        }
