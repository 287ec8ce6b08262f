"""Signatures of AMIs: ed25519 over the AMI id and its provenance tags, stored as tags on the AMI
(copy_image copies them along with the other tags), checked in the region deployed from."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from immutable.aws.amis import ec2, image_labels
from immutable.aws.copies import find_copy
from immutable.aws.sboms import stored_sbom_digest
from immutable.aws.tags import TAG_SBOM, TAG_SIGNATURE

if TYPE_CHECKING:
    from immutable.config import PlatformConfig


SIGNATURE_CHUNK = 250  # characters per signature tag (EC2 tag values are at most 256)


def signature_tags(document: dict[str, Any]) -> dict[str, str]:
    """The signature document (base64 payload + signature) as AMI tags: only the signature is stored;
    the payload is rebuilt from the image id and its tags at verification."""
    signature = str(document["signature"])
    chunks = [signature[i : i + SIGNATURE_CHUNK] for i in range(0, len(signature), SIGNATURE_CHUNK)]
    return {f"{TAG_SIGNATURE}.{n}": chunk for n, chunk in enumerate(chunks)}


def signature_from_tags(tags: dict[str, str]) -> str | None:
    parts = sorted((k for k in tags if k.startswith(f"{TAG_SIGNATURE}.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return "".join(tags[k] for k in parts) or None


def sign_image(platform: PlatformConfig, *, repository: str, image_id: str) -> str:
    """ed25519 over the AMI id and its provenance tags; the signature is stored as AMI tags."""
    from immutable.signing import load_signer

    labels = image_labels(platform, image_id)
    document = load_signer(platform).sign(repository, image_id, labels, labels.get(TAG_SBOM))
    ec2(platform).create_tags(resource_ids=[image_id], tags=signature_tags(document))
    return str(document["signature"])


def verify_image(platform: PlatformConfig, *, region: str | None, repository: str, image_id: str) -> dict[str, Any]:
    """Check the signature of the image (or of its copy in `region`); returns its tags and region's AMI id."""
    from immutable.signing import SignatureError, load_signer, payload, verify

    build_region = platform.aws_settings.build_region
    where = region or build_region
    if where == build_region:
        local_id: str | None = image_id
        image = ec2(platform).get_image(image_id=image_id)
    else:
        image = find_copy(platform, where, image_id)
        local_id = str(image["ImageId"]) if image else None
    if image is None:
        raise SignatureError(f"{repository} AMI {image_id} has no image in {where}; nothing to deploy")
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    signature = signature_from_tags(tags)
    signed = payload(repository, image_id, tags, tags.get(TAG_SBOM))  # rebuilt from the tags, as at signing
    document = None if signature is None else {"payload": base64.b64encode(signed).decode(), "signature": signature}
    verify(
        document,
        repository=repository,
        digest=image_id,
        labels=tags,
        public_pem=load_signer(platform).public_pem(),
        sbom=stored_sbom_digest(platform, repository, tags[TAG_SBOM]) if TAG_SBOM in tags else None,
    )
    return {"region": where, "image_id": local_id, "labels": tags}
