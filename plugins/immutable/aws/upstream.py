"""The base's upstream AMI, and the base's channels and versions in the build region.

Moving pointers (`candidate`, `stable`) are the tag `immutable:channel:<name>` on exactly one image
per repository.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from immutable.aws.amis import OCI, AwsImageError, ec2, ssm
from immutable.aws.tags import TAG_REPOSITORY, channel_tag

if TYPE_CHECKING:
    from immutable.base_policy import CandidateInfo
    from immutable.config import PlatformConfig

log = logging.getLogger(__name__)


def resolve_upstream(platform: PlatformConfig) -> tuple[str, str]:
    """(what was asked for, the AMI id it resolves to now), checked to exist in the build region."""
    settings = platform.aws_settings
    region = settings.build_region
    source = settings.upstream_ami
    if source.image_id:
        asked, image_id = source.image_id, source.image_id
    else:
        assert source.ssm_parameter is not None  # validated: exactly one of the two
        asked = source.ssm_parameter
        found = ssm(platform).get_parameter(name=source.ssm_parameter)
        if not found:
            raise AwsImageError(
                f"the upstream AMI parameter {source.ssm_parameter} does not exist in {region}; check "
                "aws.upstream_ami.ssm_parameter in the platform file, or pin aws.upstream_ami.image_id"
            )
        image_id = found
    image = ec2(platform).get_image(image_id=image_id)
    if image is None or image.get("State") != "available":
        raise AwsImageError(
            f"the upstream AMI {image_id} (from {asked}) is not available in {region} "
            f"(state: {image.get('State') if image else 'not found'}); fix aws.upstream_ami in the platform file"
        )
    return asked, image_id


def channel_image(platform: PlatformConfig, repository: str, channel: str) -> dict[str, Any] | None:
    """The image the channel tag points at in the build region (None before the first publish)."""
    images = ec2(platform).find_images(tags={TAG_REPOSITORY: repository, channel_tag(channel): "true"})
    return images[0] if images else None


def versions(platform: PlatformConfig, repository: str) -> list[str]:
    """The versions (OCI version tag) of the repository's images in the build region."""
    hook = ec2(platform)
    found = hook.find_images(tags={TAG_REPOSITORY: repository})
    return sorted({hook.image_tags(i).get(f"{OCI}.version", "") for i in found} - {""})


def move_channel(platform: PlatformConfig, repository: str, channel: str, image_id: str) -> list[str]:
    """Point `channel` at image_id: tag it, then take the tag off every other image of the repository."""
    hook = ec2(platform)
    hook.create_tags(resource_ids=[image_id], tags={channel_tag(channel): "true"})
    others = [
        i["ImageId"]
        for i in hook.find_images(tags={TAG_REPOSITORY: repository, channel_tag(channel): "true"})
        if i["ImageId"] != image_id
    ]
    for other in others:
        hook.delete_tags(resource_ids=[other], keys=[channel_tag(channel)])
    log.info("%s:%s now points at %s (moved off %s)", repository, channel, image_id, others or "nothing")
    return others


def points_at(platform: PlatformConfig, repository: str, name: str) -> tuple[str, dict[str, str]] | None:
    """(AMI id, tags) of the image the channel points at, or None."""
    from immutable.aws.hooks import tag_dict

    image = channel_image(platform, repository, name)
    return (str(image["ImageId"]), tag_dict(image.get("Tags"))) if image else None


def candidate(platform: PlatformConfig, repository: str) -> CandidateInfo:
    """The base on the candidate channel: its version, AMI id and the upstream AMI it was built from."""
    from immutable.base_policy import CANDIDATE_TAG, CandidateInfo
    from immutable.provenance import LABEL_BASE_DIGEST, LABEL_VERSION

    found = points_at(platform, repository, CANDIDATE_TAG)
    if found is None:
        return CandidateInfo(None, None, None)
    image_id, tags = found
    return CandidateInfo(tags.get(LABEL_VERSION), image_id, tags.get(LABEL_BASE_DIGEST))


def versions_in(platform: PlatformConfig, region: str, repository: str) -> list[str]:
    """The release versions (semver only) of the repository's AMIs in `region`."""
    from immutable.app_spec import SEMVER

    hook = ec2(platform, region)
    found = hook.find_images(tags={TAG_REPOSITORY: repository})
    tagged = {hook.image_tags(i).get(f"{OCI}.version", "") for i in found}
    return sorted(v for v in tagged if re.fullmatch(SEMVER, v))
