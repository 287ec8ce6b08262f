"""One interface, several clouds: `platform_for(config)` gives the platform's parts (see `interface`)."""

from immutable.platforms.factory import metrics_client_for, platform_for

__all__ = ["metrics_client_for", "platform_for"]
