"""The base_image DAG's task bodies. Each is idempotent: a retry repeats no side effect twice."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from immutable.config import BaseImageRunParams, load_base_spec, load_platform, parse_base_params
from immutable.paths import state_dir

log = logging.getLogger(__name__)


def resolve_upstream(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the trigger and the config, then find the upstream image's digest."""
    from immutable.images.upstream import upstream_digest

    run_params = parse_base_params(params)
    spec = load_base_spec()
    load_platform()
    digest = upstream_digest(spec.upstream.image)
    log.info("upstream %s is %s", spec.upstream.image, digest)
    return {"image": spec.upstream.image, "digest": digest, "params": run_params.model_dump()}


def check_updates(upstream: dict[str, Any], run_after: datetime) -> dict[str, Any] | None:
    """Decide whether anything is new; returns the build plan, or None to skip the rest."""
    from immutable.base_policy import decide_rebuild
    from immutable.images import base
    from immutable.registry import RegistryClient
    from immutable.versioning import next_version

    spec, platform = load_base_spec(), load_platform()
    params = BaseImageRunParams.model_validate(upstream["params"])
    candidate = base.current_candidate(spec, platform)
    pending: list[str] = []
    if not params.force and candidate.digest and candidate.upstream_digest == upstream["digest"]:
        image_ref = base.pull_candidate(spec, platform, candidate.digest)
        pending = base.pending_upgrades(image_ref)
    decision = decide_rebuild(
        upstream_digest=upstream["digest"],
        candidate_version=candidate.version,
        candidate_upstream_digest=candidate.upstream_digest,
        pending_upgrades=pending,
        force=params.force,
    )
    log.info("rebuild: %s, because %s", decision.rebuild, decision.why)
    if not decision.rebuild:
        log.info("skipping build, test and publish: %s", decision.why)
        return None
    tags = RegistryClient(platform.build_registry).tags(spec.repository)
    version = next_version(tags, run_after.date())
    log.info("new version: %s (existing versions: %d)", version, len(tags))
    return {
        "version": version,
        "why": decision.why,
        "created": run_after.isoformat(),
        "previous": candidate.version,
    }


def build(upstream: dict[str, Any], plan: dict[str, Any], run_id: str) -> dict[str, Any]:
    from immutable.images import base

    spec = load_base_spec()
    labels = base.build_labels(
        spec=spec,
        version=plan["version"],
        created=datetime.fromisoformat(plan["created"]),
        upstream_digest=upstream["digest"],
        params=BaseImageRunParams.model_validate(upstream["params"]),
        run_id=run_id,
    )
    image_id = base.build(spec=spec, upstream_ref=upstream["image"], version=plan["version"], labels=labels)
    log.info("built %s as %s", plan["version"], image_id)
    return {"image_id": image_id, "version": plan["version"], "labels": labels}


def test(built: dict[str, Any]) -> list[dict[str, Any]]:
    from immutable.images import base

    results = base.test_image(built["image_id"], load_base_spec())
    table = base.format_checks(results)
    log.info("base image checks for %s:\n%s", built["version"], table)
    failed = [r for r in results if not r.passed]
    if failed:
        raise base.BaseImageError(
            f"base image {built['version']} failed {len(failed)} check(s): {', '.join(r.name for r in failed)}.\n"
            f"{table}\nNothing was published. Fix the script under include/base/scripts/ or the lists in "
            "include/base/base.yaml behind the failing check, then trigger base_image with force=true."
        )
    return [{"name": r.name, "detail": r.detail} for r in results]


def record_manifest(built: dict[str, Any]) -> dict[str, Any]:
    from immutable.images import base

    manifest = base.package_manifest(built["image_id"])
    path, digest = base.write_manifest(manifest, version=built["version"], out_dir=state_dir() / "manifests")
    log.info("package manifest of %s: %d packages, %s (%s)", built["version"], len(manifest), path, digest)
    for label, value in sorted(built["labels"].items()):
        log.info("label %s=%s", label, value)
    return {"path": str(path), "sha256": digest, "packages": len(manifest)}


def publish(upstream: dict[str, Any], built: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    from immutable.images import base

    spec, platform = load_base_spec(), load_platform()
    published = base.publish(image_id=built["image_id"], spec=spec, platform=platform, version=built["version"])
    params = upstream["params"]
    log.info("published %s as %s (candidate moved)", published.version, published.image)
    return {
        "version": published.version,
        "digest": published.digest,
        "image": published.image,
        "reason": params["reason"],
        "cves": params["cves"],
        "fast_track": params["fast_track"],
        "upstream_digest": upstream["digest"],
        "manifest_sha256": manifest["sha256"],
    }
