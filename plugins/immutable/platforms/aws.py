"""The aws image platform: AMIs by id, copies found by their source tag, signatures in tags."""

from __future__ import annotations

from typing import Any

from immutable.config import PlatformConfig


class AwsImages:
    """`digest` is the AMI id in the build region; a region's copy is found by its source tag."""

    def __init__(self, platform: PlatformConfig) -> None:
        self.platform = platform
        self.settings = platform.aws_settings

    def build_location(self) -> str:
        return f"aws:{self.settings.build_region}"

    def copy_to(
        self, region: str, repository: str, digest: str, tags: list[str], *, wait: bool = True
    ) -> dict[str, Any]:
        """`wait=False`: return once the copy is started; its "state" may still be "pending"."""
        from immutable.aws import images as amis

        report = amis.copy_image(self.platform, region=region, source_image_id=digest, wait=wait)
        return report | {"repository": repository, "digest": report["image_id"], "source_image_id": digest}

    def digest_in(self, region: str, repository: str, reference: str) -> str | None:
        """The AMI id in `region` of the build-region AMI `reference` (or of that version of the repository)."""
        from immutable.aws import images as amis

        source = reference
        if not reference.startswith("ami-"):
            hook = amis.ec2(self.platform)
            found = hook.find_images(
                tags={"immutable:repository": repository, "org.opencontainers.image.version": reference}
            )
            if not found:
                return None
            source = str(found[0]["ImageId"])
        if region == self.settings.build_region:
            return source if amis.ec2(self.platform).get_image(image_id=source) else None
        copy = amis.find_copy(self.platform, region, source)
        return str(copy["ImageId"]) if copy else None

    def verify_in(self, region: str | None, repository: str, digest: str) -> dict[str, str]:
        """Check the signature of the AMI (or of its copy in `region`); returns its tags (the labels)."""
        from immutable.aws import images as amis

        labels: dict[str, str] = amis.verify_image(
            self.platform, region=region, repository=repository, image_id=digest
        )["labels"]
        return labels

    def versions_in(self, region: str, repository: str) -> list[str]:
        import re

        from immutable.app_spec import SEMVER
        from immutable.aws import images as amis

        hook = amis.ec2(self.platform, region)
        found = hook.find_images(tags={"immutable:repository": repository})
        versions = {hook.image_tags(i).get("org.opencontainers.image.version", "") for i in found}
        return sorted(v for v in versions if re.fullmatch(SEMVER, v))
