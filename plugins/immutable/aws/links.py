"""The gates' extra links on aws: the AWS console's pages for the ALB's metrics, the ALB, the AMI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from immutable.config import PlatformConfig

CONSOLE_URL = "https://{0}.console.aws.amazon.com/{1}/home?region={0}#{2}"  # region, service, page


class AwsLinks:
    """The platform's `links` part."""

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
        """The console shows its own time range and every query of the app: only the region matters."""
        from immutable.ui.links import LoadBalancerStatsLink, PrometheusGraphLink, RegistryImageLink

        listener = self.config.aws_region(region).listener_arn
        load_balancer = listener.replace(":listener/", ":loadbalancer/").rsplit("/", 1)[0]
        build_region = self.config.aws_settings.build_region  # the release's AMI id is the build region's
        return {
            PrometheusGraphLink.name: CONSOLE_URL.format(region, "cloudwatch", f"metricsV2?search={app}"),
            LoadBalancerStatsLink.name: CONSOLE_URL.format(
                region, "ec2", f"LoadBalancer:loadBalancerArn={load_balancer}"
            ),
            RegistryImageLink.name: CONSOLE_URL.format(build_region, "ec2", f"ImageDetails:imageId={digest}"),
        }
