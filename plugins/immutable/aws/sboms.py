"""SBOMs of AMIs: the CycloneDX document in the artifact bucket under its own sha256, and that
digest in the AMI's `immutable:sbom` tag, set as the AMI is created (so even an AMI still pending
has it), covered by the signature and carried by every copy. The document cannot name the AMI id,
which does not exist before it is made: the signed tag is what binds the two."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from immutable.aws.amis import ec2, s3
from immutable.aws.hooks.base import error_code
from immutable.aws.tags import TAG_SBOM

if TYPE_CHECKING:
    from immutable.config import PlatformConfig

log = logging.getLogger(__name__)

SBOM_URL_TTL_S = 3600  # seconds a presigned link to an SBOM stays valid


def sbom_key(repository: str, digest: str) -> str:
    """Where the SBOM whose sha256 is `digest` (sha256:<hex>) is kept in the artifact bucket (under
    `sboms/`, a prefix the pipeline's IAM policy may write: base and app repositories alike)."""
    return f"sboms/{repository}/{digest.removeprefix('sha256:')}.cdx.json"


def store_sbom(platform: PlatformConfig, *, repository: str, document: bytes) -> str:
    """Validate and store the document; returns its digest, the value of the AMI's `immutable:sbom`
    tag. The same document is stored at the same key, so a retried bake stores it unchanged."""
    from immutable.sbom import validate

    validate(document.decode())
    digest = f"sha256:{hashlib.sha256(document).hexdigest()}"
    bucket, key = platform.aws_settings.artifact_bucket, sbom_key(repository, digest)
    s3(platform).put_artifact(bucket=bucket, key=key, body=document, metadata={"sha256": digest.split(":", 1)[1]})
    log.info("stored the SBOM in s3://%s/%s (%d bytes)", bucket, key, len(document))
    return digest


def sbom_from_listing_on_builder(
    platform: PlatformConfig,
    *,
    listing: str,
    repository: str,
    describes: str,
    labels: dict[str, str],
    wheel_sha256: dict[str, str] | None = None,
) -> str:
    """The SBOM of what the builder held when its script ended (`listing`: what LIST_PACKAGES printed
    there, see `builders.with_inventory`), stored; returns its digest for the AMI's tag. `describes`
    names the image in the document (the AMI id does not exist yet), e.g. its version or build tag and
    the run."""
    from immutable.images.inventory import sbom_from_listing

    document = sbom_from_listing(
        listing, repository=repository, digest=describes, labels=labels, wheel_sha256=wheel_sha256 or {}
    )
    return store_sbom(platform, repository=repository, document=document)


def stored_sbom_digest(platform: PlatformConfig, repository: str, tagged: str) -> str | None:
    """The sha256 of the document the artifact bucket holds where the tag `tagged` points (None: none
    is there), computed from its bytes: what a reader gets, whatever the object's metadata says."""
    try:
        body = s3(platform).get_artifact(bucket=platform.aws_settings.artifact_bucket, key=sbom_key(repository, tagged))
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def sbom_url(platform: PlatformConfig, repository: str, image_id: str) -> str | None:
    """A presigned link to the SBOM of the AMI `image_id` (in the build region; signed locally, no
    API call for the link); None when the AMI has none."""
    hook = ec2(platform)
    image = hook.get_image(image_id=image_id)
    tagged = hook.image_tags(image).get(TAG_SBOM) if image is not None else None
    if tagged is None:
        return None
    bucket = platform.aws_settings.artifact_bucket
    return s3(platform).presigned_get(bucket=bucket, key=sbom_key(repository, tagged), expires_s=SBOM_URL_TTL_S)
