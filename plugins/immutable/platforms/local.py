"""The local platform: a build registry and one OCI registry per region, on loopback."""

from __future__ import annotations

import re
from typing import Any

from immutable.app_spec import SEMVER
from immutable.config import PlatformConfig
from immutable.images.replicate import copy_with_retries
from immutable.registry import RegistryClient
from immutable.signing import SignatureError, load_signer, signature_tag, verify


class LocalImages:
    def __init__(self, platform: PlatformConfig) -> None:
        self.platform = platform
        self.build = RegistryClient(platform.build_registry)

    def registry(self, region: str | None) -> RegistryClient:
        if region is None:
            return self.build
        return RegistryClient(f"127.0.0.1:{self.platform.region(region).registry_port}")

    def build_location(self) -> str:
        return self.platform.build_registry

    def copy_to(self, region: str, repository: str, digest: str, tags: list[str]) -> dict[str, Any]:
        settings = self.platform.copy_settings
        report = copy_with_retries(
            self.build,
            self.registry(region),
            repository,
            digest,
            tags,
            region=region,
            attempts=settings.attempts,
            backoff_s=settings.backoff_s,
        )
        return {"region": region, "registry": self.registry(region).address} | report.as_dict()

    def digest_in(self, region: str, repository: str, reference: str) -> str | None:
        return self.registry(region).manifest_digest(repository, reference)

    def verify_in(self, region: str | None, repository: str, digest: str) -> dict[str, str]:
        """Check the image's signature where it will be deployed from; returns its labels."""
        registry = self.registry(region)
        where = f"{registry.address}/{repository}@{digest}"
        labels = registry.labels(repository, digest)
        if labels is None:
            raise SignatureError(f"{where} does not exist; nothing to deploy")
        document = None
        signature = registry.manifest(repository, signature_tag(digest))
        if signature is not None and signature.get("layers"):
            import json

            document = json.loads(registry.blob(repository, signature["layers"][0]["digest"]))
        public_pem = load_signer(self.platform).public_pem()
        verify(document, repository=repository, digest=digest, labels=labels, public_pem=public_pem)
        return labels

    def versions_in(self, region: str, repository: str) -> list[str]:
        return [t for t in self.registry(region).tags(repository) if re.fullmatch(SEMVER, t)]
