"""CloudWatch for the gates: what a gate hands its trigger (`AwsMetrics.backend`), and the trigger's
client (`CloudWatchMetricsClient`), which fetches the ALB's series per color.

A check's `cloudwatch` query names its metric by dimensions such as `$target_group`; the backend
carries each color's dimension values, so the trigger needs no AWS call to fill them in.
"""

from __future__ import annotations

import asyncio
from string import Template
from typing import TYPE_CHECKING, Any

from immutable.aws.fleets import COLORS, AwsFleets, target_group_name
from immutable.metric_timing import BackendTiming

if TYPE_CHECKING:
    from types import TracebackType

    from immutable.aws.hooks.cloudwatch import CloudWatchMetricsHook
    from immutable.config import PlatformConfig


class AwsMetrics:
    """The platform's `metrics` part."""

    query_field = "cloudwatch"  # the field of a spec's metric checks read on aws

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.fleets = AwsFleets(config)

    def backend(self, app: str, region: str) -> dict[str, Any]:
        """CloudWatch in `region`, with each color's target group and load balancer dimensions."""
        elb = self.fleets.elb(region)
        load_balancer = elb.listener(self.config.aws_region(region).listener_arn)["LoadBalancerArn"]
        dimensions = {}
        for color in COLORS:
            target_group = elb.target_group(target_group_name(app, color))
            if target_group:
                dimensions[color] = elb.dimensions_of(target_group, load_balancer)
        return {
            "kind": "cloudwatch",
            "region": region,
            "connection_id": self.config.aws_settings.connection_id,
            "dimensions": dimensions,
        }

    def timing(self) -> BackendTiming:
        """The ALB's metrics are standard resolution: a point per `alb_metrics.period_s`, that late."""
        settings = self.config.aws_settings.alb_metrics
        return BackendTiming(period_s=settings.period_s, delay_s=settings.delay_s)


class CloudWatchMetricsClient:
    """One trigger run's CloudWatch client: made in `__aenter__`, used for every query of the run.

    boto3 blocks, so each fetch runs in a thread and the triggerer's event loop stays free for the
    other triggers.
    """

    def __init__(self, backend: dict[str, Any]) -> None:
        self.backend = backend
        self._hook: CloudWatchMetricsHook | None = None

    def query(self, check: dict[str, Any], **labels: str) -> dict[str, Any]:
        """The check's `cloudwatch` query with $app, $region, $color, $window and the color's dimensions."""
        if not check.get("cloudwatch"):
            raise ValueError(f"metric '{check['name']}' has no `cloudwatch` query for the aws platform")
        values = labels | self.backend.get("dimensions", {}).get(labels.get("color", ""), {})

        def rendered(metric: dict[str, Any]) -> dict[str, Any]:
            return metric | {"dimensions": {k: Template(v).substitute(values) for k, v in metric["dimensions"].items()}}

        query = check["cloudwatch"]
        return {"metric": rendered(query["metric"]), "divide_by": query["divide_by"] and rendered(query["divide_by"])}

    async def series(self, query: Any, start: float, end: float, step_s: float) -> list[float]:
        hook = self._hook or await self._open()
        return await asyncio.to_thread(hook.series, dict(query), start, end, step_s)

    async def traffic_gap(self, start: float, end: float) -> str | None:
        """None: an ALB is run by AWS and does not restart under a release; when it fails to serve,
        that shows in its own metrics (5xx, rejected connections), which the gates judge."""
        return None

    async def _open(self) -> CloudWatchMetricsHook:
        from immutable.aws.hooks.cloudwatch import CloudWatchMetricsHook

        def connect() -> CloudWatchMetricsHook:
            hook = CloudWatchMetricsHook(region_name=self.backend["region"], aws_conn_id=self.backend["connection_id"])
            _ = hook.conn  # the hook keeps its client: reading the connection and the service model happens once
            return hook

        self._hook = await asyncio.to_thread(connect)
        return self._hook

    async def __aenter__(self) -> CloudWatchMetricsClient:
        await self._open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._hook = None
