"""promote_base: a base candidate becomes stable once the canary-tier apps run it in production."""

from __future__ import annotations

import logging
from typing import Any

from immutable.app_spec import load_app_specs
from immutable.config import load_base_spec, load_platform

log = logging.getLogger(__name__)


def check_promotion() -> dict[str, Any] | None:
    """The promotion plan, or None (with the reason in the log) when it is not time yet."""
    from immutable.images import base
    from immutable.local.production import LocalProduction
    from immutable.paths import state_dir
    from immutable.registry import RegistryClient

    platform, spec = load_platform(), load_base_spec()
    build = RegistryClient(platform.build_registry)
    candidate = build.manifest_digest(spec.repository, base.CANDIDATE_TAG)
    if candidate is None:
        log.info("no candidate base image yet; nothing to promote")
        return None
    labels = build.labels(spec.repository, candidate) or {}
    plan = {"digest": candidate, "version": labels.get(base.LABEL_VERSION), "cves": labels.get(base.LABEL_CVES, "")}
    if build.manifest_digest(spec.repository, base.STABLE_TAG) == candidate:
        log.info("candidate %s is already stable", plan["version"])
        return None
    if labels.get(base.LABEL_FAST_TRACK) == "true":
        return plan | {"why": "fast_track: a security rebuild skips the canary-tier trial"}
    specs, _ = load_app_specs()
    trial = [s for s in specs.values() if s.tier == "canary"]
    if not trial:
        return plan | {"why": "no canary-tier apps to trial it"}
    production = LocalProduction(platform, state_dir())
    waiting = []
    for app in trial:
        for region in app.rollout_regions(platform):
            live = production.live(app.name, region)
            region_registry = RegistryClient(f"127.0.0.1:{platform.region(region).registry_port}")
            on = (
                (region_registry.labels(app.repository, live["digest"]) or {}).get(base.LABEL_BASE_DIGEST)
                if live
                else None
            )
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
    from immutable.registry import RegistryClient

    platform, spec = load_platform(), load_base_spec()
    build = RegistryClient(platform.build_registry)
    found = build.raw_manifest(spec.repository, plan["digest"])
    if found is None:
        raise RuntimeError(f"candidate {plan['digest']} vanished from {platform.build_registry}/{spec.repository}")
    body, media_type, _ = found
    build.put_manifest(spec.repository, base.STABLE_TAG, body, media_type)
    if build.manifest_digest(spec.repository, base.STABLE_TAG) != plan["digest"]:
        raise RuntimeError("the stable tag does not point at the promoted digest; run promote_base again")
    log.info("base %s (%s) is now stable: %s", plan["version"], plan["digest"], plan["why"])
    return plan
