"""The factory: the only place outside the platform packages that knows which platforms exist.

`platform_for(config)` reads `platform:` from include/platform.yaml and returns that platform's
`Platform` (see `interface`); `metrics_client_for(backend)` opens a trigger's metrics client
from the JSON a gate operator handed it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from immutable.config import PlatformConfig
    from immutable.platforms.interface import MetricsClient, Platform

# platform name -> the class that implements `interface.Platform` for it
PLATFORMS = {
    "local": "immutable.local.platform:LocalPlatform",
    "aws": "immutable.aws.platform:AwsPlatform",
}
# metrics backend kind (a trigger's `backend["kind"]`) -> its `interface.MetricsClient`
METRICS_CLIENTS = {
    "prometheus": "immutable.local.metrics:PrometheusMetricsClient",
    "cloudwatch": "immutable.aws.metrics:CloudWatchMetricsClient",
}


def _load(table: dict[str, str], key: str, what: str) -> Any:
    if key not in table:
        raise NotImplementedError(f"{what} {key!r} is not implemented; the known ones are {', '.join(sorted(table))}")
    module, name = table[key].split(":")
    return getattr(import_module(module), name)


def platform_for(config: PlatformConfig | None = None) -> Platform:
    """The platform include/platform.yaml names (or `config`), with all its parts."""
    from immutable.config import load_platform

    config = config or load_platform()
    platform: Platform = _load(PLATFORMS, config.platform, "platform")(config)
    return platform


def metrics_client_for(backend: dict[str, Any]) -> MetricsClient:
    client: MetricsClient = _load(METRICS_CLIENTS, str(backend.get("kind")), "metrics backend")(backend)
    return client
