"""Copies of a build-region AMI in the other regions (found again by their source tag), and retention.

A copy that fails is deregistered, so a retry starts clean. Retention deregisters a repository's old
AMIs in every region, never one that runs or that a channel points at.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from immutable.aws.amis import OCI, AwsImageError, created_at, ec2
from immutable.aws.tags import TAG_CHANNEL, TAG_REPOSITORY, TAG_SOURCE_IMAGE, TAG_SOURCE_REGION

if TYPE_CHECKING:
    from immutable.config import PlatformConfig

log = logging.getLogger(__name__)


def find_copy(platform: PlatformConfig, region: str, source_image_id: str) -> dict[str, Any] | None:
    images = ec2(platform, region).find_images(tags={TAG_SOURCE_IMAGE: source_image_id})
    return images[0] if images else None


def copy_image(platform: PlatformConfig, *, region: str, source_image_id: str, wait: bool = True) -> dict[str, Any]:
    """The AMI in `region`: the build region's own, an existing copy (found by tag), or a new copy.

    Tags are copied (and the source recorded); with the region's kms_key_id the copy is encrypted.
    A copy that fails is deregistered, so a retry starts clean. With `wait=False` the copy may
    still be pending: the caller waits (a deferred task in the triggerer, `ImageAvailableTrigger`)
    and calls `discard_failed_copy` if it never becomes available.
    """
    settings = platform.aws_settings
    source_region = settings.build_region
    if region == source_region:
        return {"region": region, "image_id": source_image_id, "copied": False, "reused": True, "state": "available"}
    aws_region = platform.aws_region(region)
    hook = ec2(platform, region)
    try:
        enabled = hook.region_enabled()
    except Exception as exc:
        raise AwsImageError(f"region {region} cannot be reached to copy {source_image_id}: {exc}") from exc
    if not enabled:
        raise AwsImageError(
            f"region {region} is not enabled for this account, so {source_image_id} cannot be copied there; "
            "enable it (Account settings > AWS Regions) or remove it from the platform file"
        )
    source_hook = ec2(platform)
    source = source_hook.get_image(image_id=source_image_id)
    if source is None:
        raise AwsImageError(f"the AMI {source_image_id} to copy does not exist in {source_region}")
    tags = {k: v for k, v in source_hook.image_tags(source).items() if not k.startswith("aws:")}
    tags = {k: v for k, v in tags.items() if not k.startswith(TAG_CHANNEL)}  # channels live in the build region only
    tags |= {TAG_SOURCE_IMAGE: source_image_id, TAG_SOURCE_REGION: source_region}
    existing = find_copy(platform, region, source_image_id)
    if existing is not None and existing.get("State") in ("available", "pending"):
        image_id = str(existing["ImageId"])
        copied = False
        log.info("%s: %s is already copied as %s (%s)", region, source_image_id, image_id, existing.get("State"))
    else:
        if existing is not None:  # failed or deregistering: start again
            hook.deregister_image(image_id=str(existing["ImageId"]))
        try:
            image_id = hook.copy_image(
                source_image_id=source_image_id,
                source_region=source_region,
                name=str(source.get("Name", source_image_id)),
                description=str(source.get("Description", "")),
                # One token per attempt: botocore's own retries of this call reuse it, but a copy
                # that failed and was deregistered would come back for the same token.
                client_token=f"immutable-{source_image_id}-{uuid.uuid4().hex}",
                tags=tags,
                kms_key_id=aws_region.kms_key_id,
            )
        except Exception as exc:
            raise AwsImageError(f"copying {source_image_id} from {source_region} to {region} failed: {exc}") from exc
        copied = True
    try:
        if not copied:
            hook.create_tags(resource_ids=[image_id], tags=tags)  # a copy an earlier version tagged after the fact
        hook.wait_image_visible(image_id=image_id)
        if wait:
            hook.wait_image_available(image_id=image_id)
    except Exception as exc:
        raise discard_failed_copy(
            platform, region=region, source_image_id=source_image_id, image_id=image_id, copied=copied, cause=exc
        ) from exc
    image = hook.get_image(image_id=image_id) or {}
    created = created_at(image)
    return {
        "region": region,
        "image_id": image_id,
        "copied": copied,
        "reused": not copied,
        "encrypted": bool(aws_region.kms_key_id),
        "state": image.get("State"),
        # When the copy began (an earlier attempt's, for a copy found pending): waits count from it.
        "started_at": created.timestamp() if created else time.time(),
    }


def discard_failed_copy(
    platform: PlatformConfig, *, region: str, source_image_id: str, image_id: str, copied: bool, cause: object
) -> AwsImageError:
    """Deregister a copy this run started that never became available (so a retry starts clean), and
    return the error that says so, for the caller to raise."""
    if copied:
        ec2(platform, region).deregister_image(image_id=image_id)
    return AwsImageError(
        f"the copy {image_id} of {source_image_id} in {region} did not become available: {cause}"
        + ("; the copy was deregistered, retry copies it again" if copied else "")
    )


# ---- retention ---------------------------------------------------------------------------------


def retention(
    platform: PlatformConfig, *, repository: str, now: datetime, dry_run: bool = False, protect: Sequence[str] = ()
) -> dict[str, Any]:
    """Deregister the repository's AMIs (and their snapshots) beyond the newest `keep` and older than
    `min_age_days`, in every region; never one a launch template uses, a channel points at, or that
    `protect` names (a release's own AMI, or its copies' source)."""
    policy = platform.aws_settings.image_retention
    cutoff = now - timedelta(days=policy.min_age_days)
    report: dict[str, Any] = {}
    for region in [r.name for r in platform.regions]:
        hook = ec2(platform, region)
        in_use = hook.images_in_launch_templates()
        images = hook.find_images(tags={TAG_REPOSITORY: repository})
        removed, kept = [], []
        for index, image in enumerate(images):  # newest first
            image_id = str(image["ImageId"])
            tags = hook.image_tags(image)
            created = created_at(image)
            reason = None
            if index < policy.keep:
                reason = f"one of the newest {policy.keep}"
            elif image_id in protect or tags.get(TAG_SOURCE_IMAGE) in protect:
                reason = "a release is taking it out now"
            elif created is not None and created > cutoff:
                reason = f"younger than {policy.min_age_days} days"
            elif image_id in in_use:
                reason = f"used by launch template {', '.join(in_use[image_id])}"
            elif channels := [k.removeprefix(TAG_CHANNEL) for k in tags if k.startswith(TAG_CHANNEL)]:
                reason = f"the {', '.join(channels)} channel points at it"
            elif region == platform.aws_settings.build_region and _has_live_copies(platform, image_id):
                reason = "a copy of it in another region is in use"
            if reason:
                kept.append({"image_id": image_id, "why": reason})
                continue
            snapshots = [] if dry_run else hook.deregister_image(image_id=image_id)
            removed.append({"image_id": image_id, "snapshots": snapshots})
        report[region] = {"removed": removed, "kept": kept}
        log.info("retention in %s for %s: removed %s, kept %s", region, repository, removed, kept)
    return report


def _has_live_copies(platform: PlatformConfig, image_id: str) -> bool:
    """A copy of this build-region image is in a launch template of another region."""
    for region in [r.name for r in platform.regions if r.name != platform.aws_settings.build_region]:
        copy = find_copy(platform, region, image_id)
        if copy is not None and copy["ImageId"] in ec2(platform, region).images_in_launch_templates():
            return True
    return False


def digest_in(platform: PlatformConfig, region: str, repository: str, reference: str) -> str | None:
    """The AMI id in `region` of the build-region AMI `reference` (or of that version of the repository)."""
    source = reference
    if not reference.startswith("ami-"):
        found = ec2(platform).find_images(tags={TAG_REPOSITORY: repository, f"{OCI}.version": reference})
        if not found:
            return None
        source = str(found[0]["ImageId"])
    if region == platform.aws_settings.build_region:
        return source if ec2(platform).get_image(image_id=source) else None
    copy = find_copy(platform, region, source)
    return str(copy["ImageId"]) if copy else None


def image_in(platform: PlatformConfig, region: str | None, repository: str, image_id: str) -> str:
    """What runs in `region` for the build-region AMI `image_id`: itself or its copy there."""
    if region is None:
        return image_id
    found = digest_in(platform, region, repository, image_id)
    if not found:
        raise AwsImageError(f"no copy of {image_id} ({repository}) in {region}; run the release's copy step first")
    return found
