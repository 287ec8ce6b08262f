"""App images on the local platform: a build registry and one OCI registry per region, on loopback.

The wheel is built in a container from the base and stored in the build registry as an OCI
artifact; the bake installs it onto the base pinned by digest and pushes by digest; the signature
is one more artifact beside the image; a region gets the image by a blob-level copy (only the
blobs it lacks travel), then its signature is checked there. An image's digest is the same in
every registry, so `RegionCopy.image_id` is the digest itself.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from immutable.app_spec import SEMVER, AppSpec
from immutable.config import load_base_spec
from immutable.images import app as app_images
from immutable.images import base as base_images
from immutable.images.replicate import CopyError, copy_with_retries
from immutable.local import registry_retention
from immutable.local.base_images import LocalBaseImages
from immutable.payloads import Baked, ImageRef, Packaged, Plan, RegionCopy
from immutable.provenance import LABEL_ARTIFACT
from immutable.registry import RegistryClient, RegistryError
from immutable.revocation import REVOCATION_MEDIA_TYPE
from immutable.sbom import sbom_tag
from immutable.signing import SignatureError, load_signer, revocation_tag, signature_tag, verify

log = logging.getLogger(__name__)

SIGNATURE_MEDIA_TYPE = "application/vnd.immutable.signature.v1+json"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.immutable.signature.v1"
REVOCATION_ARTIFACT_TYPE = "application/vnd.immutable.revocation.v1"


class BakeError(RuntimeError):
    """The bake's inputs or outputs are not what the release pinned; the message says which step to rerun."""


class LocalImages(LocalBaseImages):
    """`interface.Images` for the Docker engine and the loopback registries."""

    # --- where images live ----------------------------------------------------------------------

    def registry(self, region: str | None) -> RegistryClient:
        if region is None:
            return self.build
        return RegistryClient(self.address(region))

    def address(self, region: str | None) -> str:
        if region is None:
            return self.config.build_registry
        return f"127.0.0.1:{self.config.region(region).registry_port}"

    def uri(self, region: str | None, repository: str, digest: str) -> str:
        return f"{self.address(region)}/{repository}@{digest}"

    def build_location(self) -> str:
        return self.config.build_registry

    def digest_in(self, region: str, repository: str, reference: str) -> str | None:
        return self.registry(region).manifest_digest(repository, reference)

    def versions_in(self, region: str, repository: str) -> list[str]:
        return [t for t in self.registry(region).tags(repository) if re.fullmatch(SEMVER, t)]

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
            document = json.loads(registry.blob(repository, signature["layers"][0]["digest"]))
        public_pem = load_signer(self.config).public_pem()
        sbom = self.sbom_digest(region, repository, digest)
        verify(document, repository=repository, digest=digest, labels=labels, public_pem=public_pem, sbom=sbom)
        return labels

    def resolve(self, repository: str, reference: str) -> str | None:
        return self.build.manifest_digest(repository, reference)

    @registry_retention.writes_registries
    def store_revocation(self, repository: str, digest: str, document: bytes) -> str:
        """An artifact beside the image in the build registry, which every deploy step reads (whatever
        region it deploys to); it goes when retention removes the image."""
        name = revocation_tag(digest)
        self.build.push_artifact(
            repository,
            name,
            [(document, REVOCATION_MEDIA_TYPE, {"io.immutable.revoked.digest": digest})],
            REVOCATION_ARTIFACT_TYPE,
        )
        return f"{self.build.address}/{repository}:{name}"

    def revocation_document(self, repository: str, digest: str) -> bytes | None:
        manifest = self.build.manifest(repository, revocation_tag(digest))
        if not manifest or not manifest.get("layers"):
            return None
        return self.build.blob(repository, manifest["layers"][0]["digest"])

    def retain(self, repository: str, now: datetime, *, protect: Sequence[str] = ()) -> dict[str, Any]:
        """Per registry: the newest `local.image_retention.keep` and every image in use stay; the rest
        are deleted and their storage collected (immutable.local.registry_retention)."""
        registries = {"build": self.build} | {r.name: self.registry(r.name) for r in self.config.regions}
        return registry_retention.retain(self.config, repository, registries, protect=protect)

    # --- package, bake, sign --------------------------------------------------------------------

    @registry_retention.writes_registries
    def package(self, *, plan: Plan, spec: AppSpec, uid: int) -> Packaged:
        """The wheels are built in a container from the base itself, so they match its Python and
        libc; they are stored as one OCI artifact, which the bake fetches by digest. The artifact is
        also tagged with what it was made of (`app_images.package_key`): a release of the same
        source on the same base (a rejected version tried again, a retry) reuses those wheels, and
        so the same artifact digest, instead of building different bytes from the same inputs."""
        base_ref = self.uri(None, plan.base.repository, plan.base.digest)
        with app_images.with_tempdir() as tmp:
            tree = app_images.checkout(spec, plan.ref, Path(tmp))
            source_tar = app_images.source_archive(tree, plan.version, uid)
        artifact_repo = f"artifacts/{spec.name}"
        key = app_images.package_key(source_tar, plan.base.digest)
        wheels = self._packaged_before(artifact_repo, key)
        built = wheels is None
        if wheels is None:
            from immutable.images.engine import docker_client

            docker_client().images.pull(base_ref)
            wheels = app_images.build_wheels(base_ref=base_ref, source_tar=source_tar, uid=uid)
        wheel = app_images.app_wheel_name(wheels, spec.packaging.distribution, plan.version)
        artifact_digest = app_images.push_wheels(self.build, artifact_repo, plan.version, wheels, wheel)
        if built:  # a reused package is already under its key
            app_images.push_wheels(self.build, artifact_repo, key, wheels, wheel)
        return Packaged(
            wheel=wheel,
            sha256=app_images.sha256(wheels[wheel]),
            dependencies=sorted(n for n in wheels if n != wheel),
            artifact=f"{self.config.build_registry}/{artifact_repo}@{artifact_digest}",
            artifact_repository=artifact_repo,
            artifact_digest=artifact_digest,
            revision=tree.revision,
            source=tree.description,
        )

    def _packaged_before(self, artifact_repo: str, key: str) -> dict[str, bytes] | None:
        """The wheels stored under `key` by an earlier package of the same inputs, or None."""
        digest = self.build.manifest_digest(artifact_repo, key)
        if digest is None:
            return None
        try:
            wheels = app_images.fetch_wheels(self.build, artifact_repo, digest)
        except RegistryError as error:  # retention took its blobs: build again
            log.info("the package made of the same source on the same base is gone (%s); building it", error)
            return None
        log.info(
            "the same source on the same base was packaged before as %s@%s: reusing its wheels", artifact_repo, digest
        )
        return wheels

    @registry_retention.writes_registries
    def bake(
        self,
        *,
        plan: Plan,
        spec: AppSpec,
        packaged: Packaged,
        labels: dict[str, str],
        run_id: str,
        wait: bool = True,
    ) -> Baked:
        """An image already under this build tag is reused when this run baked it (a retry: a bake
        that pushed and then lost its worker does not bake a second, different digest) or when it
        holds the same package on the same base (a version released again): the same inputs keep
        their digest, and its labels still name the run that baked it. A local bake is done when it
        returns, whatever `wait` says (never `pending`)."""
        build_tag = f"{plan.version}-b{plan.base.version}"
        tags = [plan.version, build_tag]
        existing = self.build.labels(spec.repository, build_tag)
        extra = packaged.model_extra or {}
        wheels = app_images.fetch_wheels(self.build, str(extra["artifact_repository"]), str(extra["artifact_digest"]))
        reusable = existing is not None and (
            existing.get(base_images.LABEL_RUN_ID) == run_id
            or (
                existing.get(LABEL_ARTIFACT) == packaged.sha256
                and existing.get(base_images.LABEL_BASE_DIGEST) == plan.base.digest
            )
        )
        digest = self.build.manifest_digest(spec.repository, build_tag) if reusable else None
        if existing is not None and digest is not None:
            log.info(
                "%s already holds this package on this base (baked by run %s); reusing it",
                digest,
                existing.get(base_images.LABEL_RUN_ID),
            )
            self.store_sbom(spec.repository, digest, existing, wheels)
            raw = self.build.raw_manifest(spec.repository, digest)
            if raw is not None and self.build.manifest_digest(spec.repository, plan.version) != digest:
                self.build.put_manifest(spec.repository, plan.version, raw[0], raw[1])  # the version's tag: this image
            return self._baked(spec.repository, digest, existing, tags)

        if app_images.sha256(wheels[packaged.wheel]) != packaged.sha256:
            raise BakeError(f"artifact {packaged.artifact} no longer matches sha256 {packaged.sha256}; package again")
        base_ref = self.uri(None, plan.base.repository, plan.base.digest)
        context = app_images.bake_context(
            spec=spec, base=load_base_spec(), base_ref=base_ref, version=plan.version, wheels=wheels
        )
        from immutable.images.engine import docker_client

        docker_client().images.pull(base_ref)  # a reused package pulled nothing
        image_id = app_images.bake(context=context, labels=labels, tag=f"{spec.repository}:{build_tag}")
        repository = f"{self.config.build_registry}/{spec.repository}"
        digest = base_images.push(image_id, repository, build_tag)
        moved = base_images.push(image_id, repository, plan.version)
        if moved != digest:
            raise BakeError(f"pushing tag {plan.version} gave {moved}, expected {digest}; rerun bake")
        log.info("baked %s %s as %s@%s", spec.name, plan.version, repository, digest)
        self.store_sbom(spec.repository, digest, labels, wheels)
        return self._baked(spec.repository, digest, labels, tags)

    def bake_waiter(self, baked: Baked) -> tuple[Any, float]:
        raise NotImplementedError("a local bake is never pending: there is nothing to wait for")

    def finish_bake(self, baked: Baked) -> Baked:
        return baked

    def sbom_url(self, region: str | None, repository: str, digest: str) -> str | None:
        """The SBOM document itself, served by the region's registry as a blob."""
        sbom = self.sbom_digest(region, repository, digest)
        return None if sbom is None else f"http://{self.address(region)}/v2/{repository}/blobs/{sbom}"

    def sbom_digest(self, region: str | None, repository: str, digest: str) -> str | None:
        """The digest of the SBOM document stored beside the image in `region` (None: no SBOM there)."""
        manifest = self.registry(region).manifest(repository, sbom_tag(digest))
        return str(manifest["layers"][0]["digest"]) if manifest and manifest.get("layers") else None

    def _baked(self, repository: str, digest: str, labels: dict[str, str], tags: list[str]) -> Baked:
        return Baked(
            repository=repository,
            digest=digest,
            tags=tags,
            labels=labels,
            image=self.uri(None, repository, digest),
        )

    @registry_retention.writes_registries
    def sign(self, image: ImageRef) -> str:
        """Over the digest and the labels the registry holds (not the ones the caller believes), stored
        as an artifact under `signature_tag(digest)` that a region copy carries along. ed25519 is
        deterministic, so signing again stores the same artifact."""
        name = signature_tag(image.digest)
        labels = self.build.labels(image.repository, image.digest) or {}
        sbom = self.sbom_digest(None, image.repository, image.digest)
        document = json.dumps(
            load_signer(self.config).sign(image.repository, image.digest, labels, sbom), sort_keys=True
        ).encode()
        self.build.push_artifact(
            image.repository,
            name,
            [(document, SIGNATURE_MEDIA_TYPE, {"io.immutable.signed.digest": image.digest})],
            SIGNATURE_ARTIFACT_TYPE,
        )
        log.info("stored signature %s of %s@%s", app_images.sha256(document), image.repository, image.digest)
        return name

    # --- regions --------------------------------------------------------------------------------

    @registry_retention.writes_registries
    def copy_to(self, region: str, image: Baked, *, wait: bool = True) -> RegionCopy:
        """A registry-to-registry copy, blob by blob; done when it returns (never pending). The caller
        has verified the signature at the source; `finish_copy` verifies it in the region."""
        settings = self.config.copy_settings
        report = copy_with_retries(
            self.build,
            self.registry(region),
            image.repository,
            image.digest,
            list(image.tags),
            region=region,
            attempts=settings.attempts,
            backoff_s=settings.backoff_s,
        )
        figures = report.as_dict()
        detail = (
            f"{len(report.pushed_blobs)} blob(s) sent ({report.bytes_pushed} bytes), "
            f"{len(report.skipped_blobs)} already there"
        )
        return RegionCopy(
            **figures,
            region=region,
            repository=image.repository,
            image_id=report.digest,
            copied=bool(report.pushed_blobs),
            pending=False,
            detail=detail,
            registry=self.address(region),
        )

    def copy_waiter(self, copy: RegionCopy) -> tuple[Any, float]:
        raise RuntimeError(
            f"{copy.region}: local copies finish inside copy_to and are never pending; nothing to wait for"
        )

    def finish_copy(self, image: Baked, copy: RegionCopy, failure: str | None = None) -> RegionCopy:
        if failure is not None:
            raise CopyError(f"{copy.region}: copying {image.digest} failed: {failure}; retry the copy task")
        self.verify_in(copy.region, image.repository, image.digest)
        extra = copy.model_extra or {}
        log.info(
            "%s: %s present with a valid signature; %d blob(s) sent (%d bytes), %d already there",
            copy.region,
            image.digest,
            len(extra.get("pushed_blobs", [])),
            extra.get("bytes_pushed", 0),
            len(extra.get("skipped_blobs", [])),
        )
        return copy

    def describe_copies(self, image: Baked, copies: Sequence[RegionCopy]) -> str:
        """The table for the log; a region holding another digest is an error, not a line in it."""
        by_region = {c.region: c.digest for c in copies}
        if set(by_region.values()) != {image.digest}:
            raise CopyError(f"regions hold different digests: {by_region}; expected {image.digest} everywhere")
        lines = [f"{'region':<12} {'digest':<71} blobs sent"]
        lines += [f"{c.region:<12} {c.digest:<71} {len((c.model_extra or {}).get('pushed_blobs', []))}" for c in copies]
        return "\n".join(lines)
