"""promote_base: a base candidate becomes stable once the canary-tier apps run it in production."""

from __future__ import annotations

import logging
from typing import Any

from immutable.app_spec import AppSpec, load_app_specs
from immutable.config import PlatformConfig, load_base_spec, load_platform

log = logging.getLogger(__name__)


class _LocalChannels:
    """Base channels are tags in the build registry; an app image's labels name its base."""

    def __init__(self, platform: PlatformConfig, repository: str) -> None:
        from immutable.registry import RegistryClient

        self.platform, self.repository = platform, repository
        self.build = RegistryClient(platform.build_registry)

    def points_at(self, channel: str) -> tuple[str, dict[str, str]] | None:
        digest = self.build.manifest_digest(self.repository, channel)
        return (digest, self.build.labels(self.repository, digest) or {}) if digest else None

    def base_of(self, app: AppSpec, region: str, digest: str) -> str | None:
        from immutable.images import base
        from immutable.registry import RegistryClient

        registry = RegistryClient(f"127.0.0.1:{self.platform.region(region).registry_port}")
        return (registry.labels(app.repository, digest) or {}).get(base.LABEL_BASE_DIGEST)

    def move(self, channel: str, digest: str) -> None:
        found = self.build.raw_manifest(self.repository, digest)
        if found is None:
            raise RuntimeError(f"{digest} vanished from {self.platform.build_registry}/{self.repository}")
        body, media_type, _ = found
        self.build.put_manifest(self.repository, channel, body, media_type)
        if self.build.manifest_digest(self.repository, channel) != digest:
            raise RuntimeError(f"the {channel} tag does not point at {digest}; run promote_base again")


class _AwsChannels:
    """Base channels are a tag unique per repository on AMIs; an app AMI's tags name its base."""

    def __init__(self, platform: PlatformConfig, repository: str) -> None:
        self.platform, self.repository = platform, repository

    def points_at(self, channel: str) -> tuple[str, dict[str, str]] | None:
        from immutable.aws import images as amis
        from immutable.aws.hooks import tag_dict

        image = amis.channel_image(self.platform, self.repository, channel)
        return (str(image["ImageId"]), tag_dict(image.get("Tags"))) if image else None

    def base_of(self, app: AppSpec, region: str, digest: str) -> str | None:
        from immutable.images import base
        from immutable.platforms.interface import images_for

        # `digest` is the release's AMI id in the build region, which carries the provenance.
        return images_for(self.platform).verify_in(None, app.repository, digest).get(base.LABEL_BASE_DIGEST)

    def move(self, channel: str, digest: str) -> None:
        from immutable.aws import images as amis

        amis.move_channel(self.platform, self.repository, channel, digest)


def _channels(platform: PlatformConfig, repository: str) -> _LocalChannels | _AwsChannels:
    return _AwsChannels(platform, repository) if platform.platform == "aws" else _LocalChannels(platform, repository)


def check_promotion() -> dict[str, Any] | None:
    """The promotion plan, or None (with the reason in the log) when it is not time yet."""
    from immutable.images import base
    from immutable.production_state import production_for

    platform, spec = load_platform(), load_base_spec()
    channels = _channels(platform, spec.repository)
    found = channels.points_at(base.CANDIDATE_TAG)
    if found is None:
        log.info("no candidate base image yet; nothing to promote")
        return None
    candidate, labels = found
    plan = {"digest": candidate, "version": labels.get(base.LABEL_VERSION), "cves": labels.get(base.LABEL_CVES, "")}
    stable = channels.points_at(base.STABLE_TAG)
    if stable is not None and stable[0] == candidate:
        log.info("candidate %s is already stable", plan["version"])
        return None
    if labels.get(base.LABEL_FAST_TRACK) == "true":
        return plan | {"why": "fast_track: a security rebuild skips the canary-tier trial"}
    specs, _ = load_app_specs()
    trial = [s for s in specs.values() if s.tier == "canary"]
    if not trial:
        return plan | {"why": "no canary-tier apps to trial it"}
    production = production_for(platform)
    waiting = []
    for app in trial:
        for region in app.rollout_regions(platform):
            live = production.live(app.name, region)
            on = channels.base_of(app, region, live["digest"]) if live else None
            if on != candidate:
                waiting.append(f"{app.name} in {region} runs base {on or 'nothing'}")
    if waiting:
        log.info(
            "candidate %s is not yet in production on every canary-tier app: %s", plan["version"], "; ".join(waiting)
        )
        return None
    return plan | {"why": f"canary-tier apps {[a.name for a in trial]} run it in production in every region"}


def promote(plan: dict[str, Any]) -> dict[str, Any]:
    from immutable.images import base

    platform, spec = load_platform(), load_base_spec()
    _channels(platform, spec.repository).move(base.STABLE_TAG, plan["digest"])
    log.info("base %s (%s) is now stable: %s", plan["version"], plan["digest"], plan["why"])
    return plan
