"""The base_image DAG's task bodies. Each is idempotent: a retry repeats no side effect twice."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from immutable.config import BaseImageRunParams, PlatformConfig, load_base_spec, load_platform, parse_base_params
from immutable.paths import state_dir

if TYPE_CHECKING:
    from immutable.images.base import CandidateInfo

log = logging.getLogger(__name__)


def resolve_upstream(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the trigger and the config, then find the upstream image's digest."""
    from immutable.images.upstream import upstream_digest

    run_params = parse_base_params(params)
    spec = load_base_spec()
    platform = load_platform()
    if platform.platform == "aws":
        from immutable.aws import images as amis

        # On aws the "digest" is the upstream AMI id the parameter (or pinned id) resolves to now.
        image, digest = amis.resolve_upstream(platform)
    else:
        image, digest = spec.upstream.image, upstream_digest(spec.upstream.image)
    log.info("upstream %s is %s", image, digest)
    return {"image": image, "digest": digest, "params": run_params.model_dump()}


def check_updates(upstream: dict[str, Any], run_after: datetime) -> dict[str, Any] | None:
    """Decide whether anything is new; returns the build plan, or None to skip the rest."""
    from immutable.base_policy import decide_rebuild
    from immutable.images import base
    from immutable.registry import RegistryClient
    from immutable.versioning import next_version

    spec, platform = load_base_spec(), load_platform()
    params = BaseImageRunParams.model_validate(upstream["params"])
    aws = platform.platform == "aws"
    candidate = _aws_candidate(platform, spec.repository) if aws else base.current_candidate(spec, platform)
    pending: list[str] = []
    if not params.force and candidate.digest and candidate.upstream_digest == upstream["digest"]:
        if aws:
            from immutable.aws import images as amis

            pending = amis.pending_upgrades(
                platform, image_id=candidate.digest, run_id=f"check-{run_after.isoformat()}"
            )
        else:
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
    if aws:
        from immutable.aws import images as amis

        tags = amis.versions(platform, spec.repository)
    else:
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
    platform = load_platform()
    if platform.platform == "aws":
        from immutable.aws import images as amis
        from immutable.paths import BASE_CONTEXT_DIR

        labels[base.LABEL_BASE_NAME] = upstream["image"]  # the SSM parameter or pinned AMI id asked for
        built = amis.build_base(
            platform,
            spec=spec,
            upstream_image=upstream["digest"],  # the AMI id resolved once, so every step uses the same one
            version=plan["version"],
            labels=labels,
            run_id=run_id,
            context=BASE_CONTEXT_DIR,
        )
        log.info("built %s as %s", plan["version"], built["image_id"])
        return {
            "image_id": built["image_id"],
            "version": plan["version"],
            "labels": labels,
            "package_list": built["package_list"],
            "run_id": run_id,
        }
    image_id = base.build(spec=spec, upstream_ref=upstream["image"], version=plan["version"], labels=labels)
    log.info("built %s as %s", plan["version"], image_id)
    return {"image_id": image_id, "version": plan["version"], "labels": labels}


def test(built: dict[str, Any]) -> list[dict[str, Any]]:
    from immutable.images import base

    platform = load_platform()
    if platform.platform == "aws":
        from immutable.aws import images as amis

        checks = amis.test_base(
            platform, spec=load_base_spec(), image_id=built["image_id"], run_id=str(built.get("run_id", ""))
        )
        results = [base.CheckResult(c.name, c.passed, c.detail) for c in checks]
    else:
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

    if load_platform().platform == "aws":
        from immutable.base_policy import parse_package_manifest

        # Read on the builder before it was imaged (an emulator's builder lists nothing).
        manifest = parse_package_manifest(str(built.get("package_list", "")))
    else:
        manifest = base.package_manifest(built["image_id"])
    path, digest = base.write_manifest(manifest, version=built["version"], out_dir=state_dir() / "manifests")
    log.info("package manifest of %s: %d packages, %s (%s)", built["version"], len(manifest), path, digest)
    for label, value in sorted(built["labels"].items()):
        log.info("label %s=%s", label, value)
    return {"path": str(path), "sha256": digest, "packages": len(manifest)}


def publish(upstream: dict[str, Any], built: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    from immutable.images import base

    spec, platform = load_base_spec(), load_platform()
    if platform.platform == "aws":
        from immutable.aws import images as amis

        # The AMI id is the aws digest; `candidate` is a tag on exactly one image of the repository.
        amis.move_channel(platform, spec.repository, base.CANDIDATE_TAG, built["image_id"])
        published = base.Published(
            version=built["version"], digest=built["image_id"], image=built["image_id"], reused=False
        )
    else:
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


def _aws_candidate(platform: PlatformConfig, repository: str) -> CandidateInfo:
    from immutable.aws import images as amis
    from immutable.images.base import CANDIDATE_TAG, LABEL_BASE_DIGEST, LABEL_VERSION, CandidateInfo

    image = amis.channel_image(platform, repository, CANDIDATE_TAG)
    if image is None:
        return CandidateInfo(None, None, None)
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    return CandidateInfo(tags.get(LABEL_VERSION), str(image["ImageId"]), tags.get(LABEL_BASE_DIGEST))
