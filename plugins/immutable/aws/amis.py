"""What every AMI step shares: the error it raises, the hooks of a region, an AMI's labels and age.

An AMI is referred to by its id (the aws "digest"); provenance travels as tags with the same keys
as the local platform's OCI labels.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from immutable.aws.hooks.ec2 import Ec2ImageHook
    from immutable.aws.hooks.s3 import ArtifactS3Hook
    from immutable.aws.hooks.ssm import SsmHook
    from immutable.config import PlatformConfig

OCI = "org.opencontainers.image"
TAG_VALUE_MAX = 256  # EC2 tag values are at most 256 characters


class AwsImageError(RuntimeError):
    """An AMI step failed; the message names the region and the resource, and what was cleaned up."""


def ec2(platform: PlatformConfig, region: str | None = None) -> Ec2ImageHook:
    from immutable.aws.hooks.ec2 import Ec2ImageHook

    return Ec2ImageHook.for_region(platform, region or platform.aws_settings.build_region)


def ssm(platform: PlatformConfig, region: str | None = None) -> SsmHook:
    from immutable.aws.hooks.ssm import SsmHook

    return SsmHook.for_region(platform, region or platform.aws_settings.build_region)


def ami_tags(labels: dict[str, str]) -> dict[str, str]:
    """Labels as AMI tags; a value too long for EC2 is refused rather than cut (it is signed)."""
    too_long = sorted(k for k, v in labels.items() if len(v) > TAG_VALUE_MAX)
    if too_long:
        raise AwsImageError(f"provenance values longer than {TAG_VALUE_MAX} characters cannot be AMI tags: {too_long}")
    return dict(labels)


def image_labels(platform: PlatformConfig, image_id: str, region: str | None = None) -> dict[str, str]:
    hook = ec2(platform, region)
    image = hook.get_image(image_id=image_id)
    if image is None:
        raise AwsImageError(f"AMI {image_id} does not exist in {region or platform.aws_settings.build_region}")
    return hook.image_tags(image)


def created_at(image: dict[str, Any]) -> datetime | None:
    """When the AMI was created (its CreationDate, in UTC), or None when it does not say."""
    try:
        created = datetime.fromisoformat(str(image["CreationDate"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def s3(platform: PlatformConfig) -> ArtifactS3Hook:
    from immutable.aws.hooks.s3 import ArtifactS3Hook

    return ArtifactS3Hook.for_region(platform, platform.aws_settings.build_region)
