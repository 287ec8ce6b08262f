"""The local platform: the Docker engine, a build registry and one OCI registry per region, a real
load balancer (HAProxy) per region, and one Prometheus; everything on loopback.

`platforms.platform_for` loads `LocalPlatform` when include/platform.yaml says `platform: local`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from immutable.config import PlatformConfig, state_dir
from immutable.local.environments import LocalEnvironments
from immutable.local.images import LocalImages
from immutable.local.links import LocalLinks
from immutable.local.metrics import LocalMetrics
from immutable.local.production import LocalProduction

if TYPE_CHECKING:
    from immutable.platforms.interface import Environments, Images, Links, Metrics, Platform
    from immutable.production_state import ProductionState


class LocalPlatform:
    """Every part of `interface.Platform`, built from the platform config and the state folder.

    The parts are typed as the interface's protocols (a protocol's attributes are invariant), so
    mypy checks each class against its protocol here; local code that needs more than the
    interface builds the class itself (`LocalImages(config)`).
    """

    def __init__(self, config: PlatformConfig) -> None:
        images = LocalImages(config)
        self.config = config
        self.images: Images = images
        self.environments: Environments = LocalEnvironments(images)
        self.production: ProductionState = LocalProduction(config, state_dir())
        self.metrics: Metrics = LocalMetrics(config)
        self.links: Links = LocalLinks(config)


if TYPE_CHECKING:
    # mypy checks here that LocalPlatform (and so each of its parts) implements the interface.
    _conforms: type[Platform] = LocalPlatform
