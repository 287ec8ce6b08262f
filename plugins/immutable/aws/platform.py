"""The aws platform: AMIs, copy_image, Auto Scaling blue/green behind ALB weights, CloudWatch gates.

`immutable.platforms.platform_for` builds `AwsPlatform` when include/platform.yaml says
`platform: aws`; the pipelines use its parts and never this package directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from immutable.aws.environments import AwsEnvironments
from immutable.aws.images import AwsImages
from immutable.aws.links import AwsLinks
from immutable.aws.metrics import AwsMetrics
from immutable.aws.production import AwsProduction

if TYPE_CHECKING:
    from immutable.config import PlatformConfig
    from immutable.platforms.interface import Environments, Images, Links, Metrics, MetricsClient, Platform
    from immutable.production_state import ProductionState


class AwsPlatform:
    """Every part the pipelines use, for the account and regions of the platform file."""

    # Typed as the interface's protocols: mypy checks each part against it (settable members are invariant).
    images: Images
    environments: Environments
    production: ProductionState
    metrics: Metrics
    links: Links

    def __init__(self, config: PlatformConfig) -> None:
        if config.platform != "aws":
            raise ValueError(f"AwsPlatform needs `platform: aws` in the platform file, not {config.platform!r}")
        self.config = config
        self.images = AwsImages(config)
        self.environments = AwsEnvironments(config)
        self.production = AwsProduction(config)
        self.metrics = AwsMetrics(config)
        self.links = AwsLinks(config)


# mypy checks that the classes implement the interface (nothing runs here: these are annotations only).
if TYPE_CHECKING:
    from immutable.aws.metrics import CloudWatchMetricsClient

    _platform: type[Platform] = AwsPlatform
    _metrics_client: type[MetricsClient] = CloudWatchMetricsClient
