"""The platform interface the pipelines call; they never name a cloud."""

from __future__ import annotations

from typing import Any, Protocol

from immutable.config import PlatformConfig


class ImagePlatform(Protocol):
    def build_location(self) -> str: ...

    def copy_to(self, region: str, repository: str, digest: str, tags: list[str]) -> dict[str, Any]: ...

    def digest_in(self, region: str, repository: str, reference: str) -> str | None: ...

    def verify_in(self, region: str | None, repository: str, digest: str) -> dict[str, str]: ...

    def versions_in(self, region: str, repository: str) -> list[str]: ...


def images_for(platform: PlatformConfig) -> ImagePlatform:
    if platform.platform == "local":
        from immutable.platforms.local import LocalImages

        return LocalImages(platform)
    if platform.platform == "aws":
        from immutable.platforms.aws import AwsImages

        return AwsImages(platform)
    raise NotImplementedError(f"platform '{platform.platform}' has no image support yet; use 'local'")
