"""The base image on the local platform: built by the Docker engine, published to the build registry,
where its channels (`candidate`, `stable`) are tags.

The half of `LocalImages` (in `immutable.local.images`) that the base_image and promote_base DAGs
use; `LocalImages` adds the app images and the regions.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from typing import Any

from immutable.config import BaseImageSpec, PlatformConfig
from immutable.images import base
from immutable.local.registry_retention import writes_registries
from immutable.payloads import BuiltBase, PublishedBase
from immutable.registry import RegistryClient
from immutable.sbom import SBOM_MEDIA_TYPE, sbom_tag
from immutable.sbom import validate as validate_sbom

log = logging.getLogger(__name__)

SBOM_ARTIFACT_TYPE = "application/vnd.immutable.sbom.v1"
SBOM_OF = "io.immutable.sbom.of"  # annotation: the image digest the SBOM describes


class LocalBaseImages:
    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.build = RegistryClient(config.build_registry)

    def resolve_upstream(self, spec: BaseImageSpec) -> tuple[str, str]:
        from immutable.images.upstream import upstream_digest

        return spec.upstream.image, upstream_digest(spec.upstream.image)

    def base_candidate(self, spec: BaseImageSpec) -> base.CandidateInfo:
        return base.current_candidate(spec, self.config)

    def start_pending_upgrades(self, spec: BaseImageSpec, digest: str, *, run_id: str) -> dict[str, Any]:
        """A container of the candidate lists them in seconds: run to its end here. The candidate is
        pulled by digest: the registry's copy is the one that was published."""
        return {"upgradable": base.pending_upgrades(base.pull_candidate(spec, self.config, digest))}

    def pending_upgrades_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        return None

    def finish_pending_upgrades(self, running: dict[str, Any]) -> dict[str, Any]:
        return running

    def base_versions(self, repository: str) -> list[str]:
        return self.build.tags(repository)

    def build_base(
        self,
        *,
        spec: BaseImageSpec,
        upstream: dict[str, Any],
        version: str,
        labels: dict[str, str],
        run_id: str,
        wait: bool = True,
    ) -> BuiltBase:
        """A Docker build: done when it returns, whatever `wait` says (never `pending`)."""
        image_id = base.build(spec=spec, upstream_ref=str(upstream["image"]), version=version, labels=labels)
        return BuiltBase(image_id=image_id, version=version, labels=labels, run_id=run_id)

    def base_waiter(self, built: BuiltBase) -> tuple[Any, float]:
        raise NotImplementedError("a local base build is never pending: there is nothing to wait for")

    def finish_base(self, built: BuiltBase) -> BuiltBase:
        return built

    def start_test_base(self, *, spec: BaseImageSpec, built: BuiltBase) -> dict[str, Any]:
        """Containers from the image, each check in seconds: run to their end here."""
        return {"checks": [asdict(check) for check in base.test_image(built.image_id, spec)]}

    def test_base_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        return None

    def finish_test_base(self, running: dict[str, Any]) -> dict[str, Any]:
        return running

    def base_packages(self, built: BuiltBase) -> dict[str, dict[str, str]]:
        return base.package_manifest(built.image_id)

    @writes_registries
    def publish_base(self, *, spec: BaseImageSpec, built: BuiltBase) -> PublishedBase:
        """The version and `candidate` tags, then the base's SBOM beside it (before the task ends and
        its `base-image/candidate` event starts the releases that take it)."""
        published = base.publish(image_id=built.image_id, spec=spec, platform=self.config, version=built.version)
        sbom = self.store_sbom(spec.repository, published.digest, built.labels)
        return PublishedBase(
            repository=spec.repository,
            digest=published.digest,
            version=published.version,
            reused=published.reused,
            image=published.image,
            sbom=sbom,
        )

    def store_sbom(
        self, repository: str, digest: str, labels: dict[str, str], wheels: dict[str, bytes] | None = None
    ) -> str:
        """The image's SBOM beside it in the build registry (an artifact under `sbom_tag(digest)`),
        read from the image itself; the same image gives the same document, so a retry stores it
        again unchanged. Returns the document's digest."""
        from immutable.images.inventory import image_sbom

        image = f"{self.config.build_registry}/{repository}@{digest}"
        document = image_sbom(image=image, repository=repository, digest=digest, labels=labels, wheels=wheels)
        validate_sbom(document.decode())
        self.build.push_artifact(
            repository, sbom_tag(digest), [(document, SBOM_MEDIA_TYPE, {SBOM_OF: digest})], SBOM_ARTIFACT_TYPE
        )
        sbom = f"sha256:{hashlib.sha256(document).hexdigest()}"
        log.info("stored the SBOM of %s@%s (%s, %d bytes)", repository, digest, sbom, len(document))
        return sbom

    def channel(self, repository: str, channel: str) -> tuple[str, dict[str, str]] | None:
        digest = self.build.manifest_digest(repository, channel)
        return (digest, self.build.labels(repository, digest) or {}) if digest else None

    @writes_registries
    def move_channel(self, repository: str, channel: str, digest: str) -> None:
        """Put the manifest itself under the channel's tag: the image is not pulled or pushed again,
        so the channel's digest is exactly the version's."""
        found = self.build.raw_manifest(repository, digest)
        if found is None:
            raise RuntimeError(f"{digest} vanished from {self.config.build_registry}/{repository}")
        body, media_type, _ = found
        self.build.put_manifest(repository, channel, body, media_type)
        if self.build.manifest_digest(repository, channel) != digest:
            raise RuntimeError(f"the {channel} tag does not point at {digest}; run promote_base again")

    def base_name(self, repository: str, version: str) -> str:
        return f"{self.config.build_registry}/{repository}:{version}"
