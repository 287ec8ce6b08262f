"""The local platform's metrics: one Prometheus for every region, queried in PromQL.

Light on purpose: the triggerer imports this module (through `platforms.metrics_client_for`) for
every gate, so it loads neither docker nor the registries.
"""

from __future__ import annotations

from string import Template
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from immutable.config import PlatformConfig
from immutable.local.prometheus import HAPROXY_JOB, HTTP_TIMEOUT_S, SCRAPE_INTERVAL, AsyncPrometheusClient
from immutable.metric_timing import BackendTiming

if TYPE_CHECKING:
    from immutable.platforms.interface import Metrics, MetricsClient

KIND = "prometheus"  # `backend["kind"]`, the key of `platforms.METRICS_CLIENTS`


class PrometheusMetricsClient:
    """`interface.MetricsClient`: one HTTP connection pool per trigger run, opened by `async with`."""

    def __init__(self, backend: dict[str, Any]) -> None:
        self.url = str(backend["url"])
        self.region = str(backend.get("region", ""))
        self._http: httpx.AsyncClient | None = None

    def query(self, check: dict[str, Any], **labels: str) -> str:
        """The check's PromQL with $app, $region, $color and $window filled in."""
        return Template(check["query"]).substitute(labels)

    async def series(self, query: Any, start: float, end: float, step_s: float) -> list[float]:
        """Values of the query's single series over [start, end]; [] when there is no data."""
        points = await AsyncPrometheusClient(self.url, client=self._http).query_range(str(query), start, end, step_s)
        return [value for _, value in points]

    async def traffic_gap(self, start: float, end: float) -> str | None:
        """Prometheus records `up` 0 for every scrape of the region's HAProxy that failed: any such
        sample in the window (or none at all) means the load balancer was not serving throughout."""
        if not self.region:
            return None
        scrape_s = float(SCRAPE_INTERVAL.removesuffix("s"))
        query = f'up{{job="{HAPROXY_JOB}",region="{self.region}"}}'
        up = await self.series(query, start, end, scrape_s)
        if not up:
            return f"Prometheus has no scrape of region {self.region}'s load balancer in this window"
        down = sum(1 for value in up if value < 1)
        if down:
            return (
                f"region {self.region}'s load balancer did not answer Prometheus for about {down * scrape_s:.0f}s "
                "of this window (restarted or down): its traffic and counters are not the release's"
            )
        return None

    async def __aenter__(self) -> PrometheusMetricsClient:
        self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


class LocalMetrics:
    """`interface.Metrics`: specs' `query` field, against the Prometheus on loopback."""

    query_field = "query"

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config

    def backend(self, app: str, region: str) -> dict[str, Any]:
        return {"kind": KIND, "url": f"http://127.0.0.1:{self.config.local.prometheus_port}", "region": region}

    def timing(self) -> BackendTiming:
        """Prometheus computes a rate at any step from samples scraped every second: no period, no delay."""
        return BackendTiming()


if TYPE_CHECKING:
    # mypy checks here that both classes implement their protocols.
    _client_conforms: type[MetricsClient] = PrometheusMetricsClient
    _metrics_conforms: type[Metrics] = LocalMetrics
