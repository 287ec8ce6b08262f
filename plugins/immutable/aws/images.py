"""The aws platform's `images` part: AMIs by id, in the build region and copied to the others.

An image's `digest` is its AMI id in the build region; a region's copy is found by its source tag.
Each method turns the pipelines' typed payloads into the calls of one module with one job:
`upstream` (the upstream AMI, channels, versions), `base_ami` (build and test the base),
`app_ami` (package and bake the app), `signatures`, `copies` (copies and retention).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from immutable.aws import app_ami, base_ami, copies, revocations, sboms, signatures, upstream
from immutable.aws.amis import AwsImageError, image_labels
from immutable.aws.builders import advance_script, image_after_script, script_waiter
from immutable.aws.tags import TAG_SBOM, TAG_SIGNATURE
from immutable.payloads import Baked, BuiltBase, PublishedBase, RegionCopy

if TYPE_CHECKING:
    from immutable.app_spec import AppSpec
    from immutable.base_policy import CandidateInfo
    from immutable.config import BaseImageSpec, PlatformConfig
    from immutable.payloads import ImageRef, Packaged, Plan

log = logging.getLogger(__name__)


class AwsImages:
    """The platform's `images` part."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.settings = config.aws_settings

    # --- the base image -------------------------------------------------------------------------

    def resolve_upstream(self, spec: BaseImageSpec) -> tuple[str, str]:
        """The upstream AMI comes from the platform file (`aws.upstream_ami`), not from the base spec:
        (the SSM parameter or pinned id asked for, the AMI id it resolves to now)."""
        return upstream.resolve_upstream(self.config)

    def base_candidate(self, spec: BaseImageSpec) -> CandidateInfo:
        return upstream.candidate(self.config, spec.repository)

    def start_pending_upgrades(self, spec: BaseImageSpec, digest: str, *, run_id: str) -> dict[str, Any]:
        """A probe instance of the candidate AMI; its agent and its listing are waited for in the triggerer."""
        return base_ami.start_pending_upgrades(self.config, repository=spec.repository, image_id=digest, run_id=run_id)

    def pending_upgrades_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        return script_waiter(self.config, running["ssm"]) if "ssm" in running else None

    def finish_pending_upgrades(self, running: dict[str, Any]) -> dict[str, Any]:
        return base_ami.finish_pending_upgrades(self.config, running)

    def base_versions(self, repository: str) -> list[str]:
        return upstream.versions(self.config, repository)

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
        """The builder starts from the upstream AMI id resolved once (`upstream["digest"]`), so every
        step uses the same one; `base.name` records what was asked for (the SSM parameter or id).
        `wait=False`: return as soon as the AMI is being made (`pending`), waited for in the
        triggerer (`image_waiter`), then `finish_base`."""
        from immutable.paths import BASE_CONTEXT_DIR
        from immutable.provenance import LABEL_BASE_NAME

        labels = dict(labels) | {LABEL_BASE_NAME: str(upstream["image"])}
        built = base_ami.build_base(
            self.config,
            spec=spec,
            upstream_image=str(upstream["digest"]),
            version=version,
            labels=labels,
            run_id=run_id,
            context=BASE_CONTEXT_DIR,
            wait=wait,
        )
        return BuiltBase.model_validate(
            {
                "image_id": built["image_id"],
                "version": version,
                "labels": labels,
                "run_id": run_id,
                # Read on the builder before it was imaged (an emulator's builder lists nothing).
                "package_list": built["package_list"],
                "pending": built["pending"],
                "started_at": built["started_at"],
            }
            | ({"builder": built["builder"]} if built.get("builder") else {})
        )

    def base_waiter(self, built: BuiltBase) -> tuple[Any, float]:
        """(the trigger a pending base build waits on: its builder's SSM agent or script, then its
        AMI; the wait's timeout in seconds)."""
        extra = built.model_extra or {}
        if extra.get("builder"):
            return script_waiter(self.config, extra["builder"])
        return self._image_waiter(built.image_id, built.dump(), extra.get("started_at"))

    def finish_base(self, built: BuiltBase) -> BuiltBase:
        """After a wait in the triggerer. On the builder: the next stage (the script sent, or its
        result imaged), still pending. On the AMI, settled (or the wait's end): terminate the builder
        it was made from; an AMI that failed is deregistered, one still pending is kept for the retry."""
        from immutable.aws.builders import ami_name, finish_image
        from immutable.config import load_base_spec

        if (built.model_extra or {}).get("builder"):
            return BuiltBase.model_validate(self._after_builder_wait(built.dump(), base_ami.image_the_builder))
        image_id = finish_image(
            self.config,
            image_id=built.image_id,
            name=ami_name(load_base_spec().repository, built.version),
            role="builder",
            run_id=built.run_id,
        )
        return BuiltBase.model_validate(built.dump() | {"image_id": image_id, "pending": False})

    def _after_builder_wait(
        self, record: dict[str, Any], image_the_builder: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """A pending image's record after a wait on its builder: the next stage while the builder
        works (unchanged when the wait must go on); once its script is done, without the builder
        and with the AMI it started (`image_the_builder`), still pending."""
        stage = advance_script(self.config, record["builder"])
        if stage["stage"] != "done":
            return record | {"builder": stage}
        rest = {k: v for k, v in record.items() if k != "builder"}
        return rest | image_after_script(self.config, stage, image_the_builder)

    def _image_waiter(self, image_id: str, return_value: dict[str, Any], started_at: float | None) -> tuple[Any, float]:
        """The trigger that waits for an AMI this run is making (from `started_at`, so a triggerer
        restart does not start the wait over), and its timeout."""
        from immutable.aws.builders import IMAGE_CREATE_TIMEOUT_S
        from immutable.aws.triggers import CREATED_NOT_FOUND_S, ImageAvailableTrigger

        trigger = ImageAvailableTrigger(
            region=self.settings.build_region,
            image_id=image_id,
            aws_conn_id=self.settings.connection_id,
            timeout_s=IMAGE_CREATE_TIMEOUT_S,
            missing_grace_s=CREATED_NOT_FOUND_S,
            return_value=return_value,
            started_at=started_at,
        )
        return trigger, IMAGE_CREATE_TIMEOUT_S

    def start_test_base(self, *, spec: BaseImageSpec, built: BuiltBase) -> dict[str, Any]:
        """A test instance of the new AMI; its agent and its checks are waited for in the triggerer."""
        return base_ami.start_test_base(self.config, spec=spec, image_id=built.image_id, run_id=built.run_id)

    def test_base_waiter(self, running: dict[str, Any]) -> tuple[Any, float] | None:
        return script_waiter(self.config, running["ssm"]) if "ssm" in running else None

    def finish_test_base(self, running: dict[str, Any]) -> dict[str, Any]:
        return base_ami.finish_test_base(self.config, running)

    def base_packages(self, built: BuiltBase) -> dict[str, dict[str, str]]:
        """The package list the builder printed before it was imaged (the AMI cannot be read offline)."""
        from immutable.base_policy import parse_package_manifest

        return parse_package_manifest(str((built.model_extra or {}).get("package_list", "")))

    def publish_base(self, *, spec: BaseImageSpec, built: BuiltBase) -> PublishedBase:
        """The AMI exists once built: publishing is moving the `candidate` tag onto it."""
        from immutable.base_policy import CANDIDATE_TAG

        upstream.move_channel(self.config, spec.repository, CANDIDATE_TAG, built.image_id)
        sbom = image_labels(self.config, built.image_id).get(TAG_SBOM)  # set as the AMI was created
        return PublishedBase(
            repository=spec.repository, digest=built.image_id, version=built.version, reused=False, sbom=sbom
        )

    def channel(self, repository: str, channel: str) -> tuple[str, dict[str, str]] | None:
        return upstream.points_at(self.config, repository, channel)

    def move_channel(self, repository: str, channel: str, digest: str) -> None:
        upstream.move_channel(self.config, repository, channel, digest)

    def base_name(self, repository: str, version: str) -> str:
        return f"{repository}:{version}"

    # --- app images -----------------------------------------------------------------------------

    def package(self, *, plan: Plan, spec: AppSpec, uid: int) -> Packaged:
        from immutable.payloads import Packaged

        return Packaged.model_validate(
            app_ami.package(self.config, spec=spec, version=plan.version, ref=plan.ref, uid=uid)
        )

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
        """`wait=False`: return as soon as the AMI is being made (`pending`): creating it takes minutes
        to most of an hour, waited for in the triggerer (`bake_waiter`), then `finish_bake`."""
        from immutable.config import load_base_spec

        build_tag = f"{plan.version}-b{plan.base.version}"
        made = app_ami.bake_app(
            self.config,
            spec=spec,
            base=load_base_spec(),
            base_image_id=plan.base.digest,
            version=plan.version,
            build_tag=build_tag,
            artifact=app_ami.artifact_of(packaged.artifact, packaged.sha256),
            labels=labels,
            run_id=run_id,
            wait=wait,
        )
        image_id = str(made["image_id"])
        baked = {"repository": spec.repository, "digest": image_id, "tags": [plan.version, build_tag]}
        if made["pending"]:  # its tags are read once it is available (a new AMI is not found for a moment)
            extra = {"started_at": made["started_at"], "run_id": run_id}
            if made.get("builder"):
                extra["builder"] = made["builder"]
            return Baked.model_validate(baked | {"labels": {}, "pending": True} | extra)
        return Baked.model_validate(baked | {"labels": image_labels(self.config, image_id)})

    def bake_waiter(self, baked: Baked) -> tuple[Any, float]:
        """(the trigger a pending bake waits on: its builder's SSM agent or script, then its AMI; the
        wait's timeout in seconds)."""
        extra = baked.model_extra or {}
        if extra.get("builder"):
            return script_waiter(self.config, extra["builder"])
        return self._image_waiter(baked.digest, baked.dump(), extra.get("started_at"))

    def finish_bake(self, baked: Baked) -> Baked:
        """After a wait in the triggerer. On the builder: the next stage (the script sent, or its
        result imaged), still pending. On the AMI, settled (or the wait's end): terminate the builder
        it was made from; an AMI that failed is deregistered, one still pending is kept for the retry."""
        from immutable.aws.builders import ami_name, finish_image

        if (baked.model_extra or {}).get("builder"):
            record = self._after_builder_wait(baked.dump(), app_ami.image_the_builder)
            if "image_id" in record:  # a bake's AMI id is its digest
                record["digest"] = record.pop("image_id")
            return Baked.model_validate(record)
        build_tag = baked.tags[-1]
        run_id = str((baked.model_extra or {}).get("run_id", ""))
        image_id = finish_image(
            self.config,
            image_id=baked.digest,
            name=ami_name(baked.repository, build_tag),
            role="bake",
            run_id=run_id,
        )
        return Baked(
            repository=baked.repository, digest=image_id, tags=baked.tags, labels=image_labels(self.config, image_id)
        )

    def sign(self, image: ImageRef) -> str:
        """Over the AMI id and its provenance tags; the signature is stored as tags on the AMI, and
        copy_image copies it along with the other tags."""
        signature = signatures.sign_image(self.config, repository=image.repository, image_id=image.digest)
        log.info("signed %s (signature %s...)", image.digest, signature[:16])
        return f"{TAG_SIGNATURE}.0"

    def verify_in(self, region: str | None, repository: str, digest: str) -> dict[str, str]:
        """Check the signature of the AMI (or of its copy in `region`); returns its tags (the labels)."""
        labels: dict[str, str] = signatures.verify_image(
            self.config, region=region, repository=repository, image_id=digest
        )["labels"]
        return labels

    def resolve(self, repository: str, reference: str) -> str | None:
        """The build-region AMI id of a version (its tag) or of an AMI id, if it is the repository's."""
        from immutable.aws.tags import TAG_REPOSITORY

        image_id = copies.digest_in(self.config, self.settings.build_region, repository, reference)
        if image_id is None or image_labels(self.config, image_id).get(TAG_REPOSITORY) != repository:
            return None
        return image_id

    def store_revocation(self, repository: str, digest: str, document: bytes) -> str:
        return revocations.store_revocation(self.config, repository=repository, image_id=digest, document=document)

    def revocation_document(self, repository: str, digest: str) -> bytes | None:
        return revocations.revocation_document(self.config, repository=repository, image_id=digest)

    def sbom_url(self, region: str | None, repository: str, digest: str) -> str | None:
        """The same document for every region: it lives in the artifact bucket, and every copy carries
        the build AMI's signed tag that names it."""
        return sboms.sbom_url(self.config, repository, digest)

    def copy_to(self, region: str, image: Baked, *, wait: bool = True) -> RegionCopy:
        """`wait=False`: return once the copy is started. A copy started now is always pending (a real
        one takes minutes): the task hands it to the triggerer (`copy_waiter`), then `finish_copy`."""
        report = copies.copy_image(self.config, region=region, source_image_id=image.digest, wait=wait)
        pending = not wait and (bool(report["copied"]) or report["state"] != "available")
        return RegionCopy.model_validate(
            report
            | {
                "repository": image.repository,
                "digest": image.digest,
                "source_image_id": image.digest,
                "pending": pending,
                "detail": "copied now" if report["copied"] else "already there",
            }
        )

    def copy_waiter(self, copy: RegionCopy) -> tuple[Any, float]:
        """(the trigger that waits for the AMI copy, its timeout in seconds). The wait counts from
        the copy's start, so a triggerer restart does not start it over."""
        from immutable.aws.triggers import COPY_TIMEOUT_S, ImageAvailableTrigger

        trigger = ImageAvailableTrigger(
            region=copy.region,
            image_id=copy.image_id,
            aws_conn_id=self.settings.connection_id,
            return_value=copy.dump(),
            started_at=(copy.model_extra or {}).get("started_at"),
        )
        return trigger, COPY_TIMEOUT_S

    def finish_copy(self, image: Baked, copy: RegionCopy, failure: str | None = None) -> RegionCopy:
        """A copy that failed is deregistered if this run started it, so a retry starts clean."""
        if failure is not None:
            raise copies.discard_failed_copy(
                self.config,
                region=copy.region,
                source_image_id=image.digest,
                image_id=copy.image_id,
                copied=copy.copied,
                cause=failure,
            )
        self.verify_in(copy.region, image.repository, image.digest)
        log.info(
            "%s: %s is %s there (%s), signature valid",
            copy.region,
            image.digest,
            copy.image_id,
            "copied now" if copy.copied else "already there",
        )
        return RegionCopy.model_validate(copy.dump() | {"pending": False, "state": "available"})

    def describe_copies(self, image: Baked, copies: Sequence[RegionCopy]) -> str:
        """Each region has its own AMI id; every one must be a copy of the same signed build-region AMI."""
        sources = {c.region: str((c.model_extra or {}).get("source_image_id", c.digest)) for c in copies}
        if set(sources.values()) != {image.digest}:
            raise AwsImageError(f"regions hold copies of different AMIs: {sources}; expected {image.digest}")
        lines = [f"{'region':<16} {'AMI':<24} copy"]
        lines += [f"{c.region:<16} {c.image_id:<24} {'copied' if c.copied else 'already there'}" for c in copies]
        return "\n".join(lines)

    def uri(self, region: str | None, repository: str, digest: str) -> str:
        """The AMI id in `region`: the build region's own, or its copy there."""
        return copies.image_in(self.config, region, repository, digest)

    def digest_in(self, region: str, repository: str, reference: str) -> str | None:
        """The AMI id in `region` of the build-region AMI `reference` (or of that version of the repository)."""
        return copies.digest_in(self.config, region, repository, reference)

    def versions_in(self, region: str, repository: str) -> list[str]:
        return upstream.versions_in(self.config, region, repository)

    def build_location(self) -> str:
        return f"aws:{self.settings.build_region}"

    def retain(self, repository: str, now: datetime, *, protect: Sequence[str] = ()) -> dict[str, Any]:
        """Deregister the repository's AMIs (and snapshots) beyond aws.image_retention, in every region;
        never one a launch template uses or a channel points at. `now` is the run's date, not the clock."""
        return copies.retention(self.config, repository=repository, now=now, protect=protect)
