"""promote_base: a base candidate becomes stable once the canary-tier apps run it in production."""

from __future__ import annotations

import logging
from typing import Any

from immutable.app_spec import load_app_specs
from immutable.base_policy import CANDIDATE_TAG, STABLE_TAG
from immutable.config import load_base_spec
from immutable.pipelines.release import bases_in_production
from immutable.platforms import platform_for
from immutable.provenance import LABEL_CVES, LABEL_FAST_TRACK, LABEL_VERSION
from immutable.revocation import refuse_revoked

log = logging.getLogger(__name__)


def check_promotion() -> dict[str, Any] | None:
    """The promotion plan, or None (with the reason in the log) when it is not time yet."""
    platform, spec = platform_for(), load_base_spec()
    images = platform.images
    found = images.channel(spec.repository, CANDIDATE_TAG)
    if found is None:
        log.info("no candidate base image yet; nothing to promote")
        return None
    candidate, labels = found
    plan = {"digest": candidate, "version": labels.get(LABEL_VERSION), "cves": labels.get(LABEL_CVES, "")}
    refuse_revoked(
        platform,
        spec.repository,
        candidate,
        refusing=f"to promote the candidate base {plan['version']} to stable",
        remedy="Publish a fixed base (base_image); it becomes the candidate",
    )
    stable = images.channel(spec.repository, STABLE_TAG)
    if stable is not None and stable[0] == candidate:
        log.info("candidate %s is already stable", plan["version"])
        return None
    if labels.get(LABEL_FAST_TRACK) == "true":
        return plan | {"why": "fast_track: a security rebuild skips the canary-tier trial"}
    specs, _ = load_app_specs()
    trial = [s for s in specs.values() if s.tier == "canary"]
    if not trial:
        return plan | {"why": "no canary-tier apps to trial it"}
    waiting = [
        f"{app.name} in {region} runs " + (f"base {on}" if on else "nothing")
        for app in trial
        for region, on in bases_in_production(platform, app).items()
        if on != candidate
    ]
    if waiting:
        log.info(
            "candidate %s is not yet in production on every canary-tier app: %s", plan["version"], "; ".join(waiting)
        )
        return None
    return plan | {"why": f"canary-tier apps {[a.name for a in trial]} run it in production in every region"}


def promote(plan: dict[str, Any]) -> dict[str, Any]:
    platform, spec = platform_for(), load_base_spec()
    platform.images.move_channel(spec.repository, STABLE_TAG, plan["digest"])
    log.info("base %s (%s) is now stable: %s", plan["version"], plan["digest"], plan["why"])
    return plan
