"""The base_image DAG's task bodies. Each is idempotent: a retry repeats no side effect twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from immutable.base_policy import BaseImageError
from immutable.config import BaseImageRunParams, load_base_spec, parse_base_params, state_dir
from immutable.payloads import BuiltBase
from immutable.platforms import platform_for

log = logging.getLogger(__name__)


def resolve_upstream(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the trigger and the config, then find the upstream image's immutable id."""
    run_params = parse_base_params(params)
    image, digest = platform_for().images.resolve_upstream(load_base_spec())
    log.info("upstream %s is %s", image, digest)
    return {"image": image, "digest": digest, "params": run_params.model_dump()}


def check_updates(upstream: dict[str, Any], run_after: datetime) -> dict[str, Any] | None:
    """Decide whether anything is new; returns the build plan, or None to skip the rest."""
    from immutable.base_policy import decide_rebuild
    from immutable.versioning import next_version

    spec, images = load_base_spec(), platform_for().images
    params = BaseImageRunParams.model_validate(upstream["params"])
    candidate = images.base_candidate(spec)
    pending: list[str] = []
    if not params.force and candidate.digest and candidate.upstream_digest == upstream["digest"]:
        pending = images.pending_upgrades(spec, candidate.digest, run_id=f"check-{run_after.isoformat()}")
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
    versions = images.base_versions(spec.repository)
    version = next_version(versions, run_after.date())
    log.info("new version: %s (existing versions: %d)", version, len(versions))
    return {
        "version": version,
        "why": decision.why,
        "created": run_after.isoformat(),
        "previous": candidate.version,
    }


def build(upstream: dict[str, Any], plan: dict[str, Any], run_id: str) -> dict[str, Any]:
    from immutable.provenance import build_labels

    spec = load_base_spec()
    labels = build_labels(
        spec=spec,
        version=plan["version"],
        created=datetime.fromisoformat(plan["created"]),
        upstream_digest=upstream["digest"],
        params=BaseImageRunParams.model_validate(upstream["params"]),
        run_id=run_id,
    )
    built = platform_for().images.build_base(
        spec=spec, upstream=upstream, version=plan["version"], labels=labels, run_id=run_id
    )
    log.info("built %s as %s", plan["version"], built.image_id)
    return built.dump()


def test(built: dict[str, Any]) -> list[dict[str, Any]]:
    from immutable.base_policy import format_checks

    image = BuiltBase.of(built)
    results = platform_for().images.test_base(spec=load_base_spec(), built=image)
    table = format_checks(results)
    log.info("base image checks for %s:\n%s", image.version, table)
    failed = [r for r in results if not r.passed]
    if failed:
        raise BaseImageError(
            f"base image {image.version} failed {len(failed)} check(s): {', '.join(r.name for r in failed)}.\n"
            f"{table}\nNothing was published. Fix the script under include/base/scripts/ or the lists in "
            "include/base/base.yaml behind the failing check, then trigger base_image with force=true."
        )
    return [{"name": r.name, "detail": r.detail} for r in results]


def record_manifest(built: dict[str, Any]) -> dict[str, Any]:
    from immutable.base_policy import write_manifest

    image = BuiltBase.of(built)
    manifest = platform_for().images.base_packages(image)
    path, digest = write_manifest(manifest, version=image.version, out_dir=state_dir() / "manifests")
    log.info("package manifest of %s: %d packages, %s (%s)", image.version, len(manifest), path, digest)
    for label, value in sorted(image.labels.items()):
        log.info("label %s=%s", label, value)
    return {"path": str(path), "sha256": digest, "packages": len(manifest)}


def publish(upstream: dict[str, Any], built: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    images = platform_for().images
    published = images.publish_base(spec=load_base_spec(), built=BuiltBase.of(built))
    params = upstream["params"]
    log.info("published %s as %s@%s (candidate moved)", published.version, published.repository, published.digest)
    # Weekly rebuilds must not fill the disk: older bases nothing names any more go.
    retained = images.retain(published.repository, datetime.now(UTC), protect=[published.digest])
    log.info("base image retention: %s", retained or "nothing to do")
    return published.dump() | {
        "reason": params["reason"],
        "cves": params["cves"],
        "fast_track": params["fast_track"],
        "upstream_digest": upstream["digest"],
        "manifest_sha256": manifest["sha256"],
    }
