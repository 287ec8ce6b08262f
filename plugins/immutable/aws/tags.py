"""Tags that make AMIs, instances and copies findable again: the truth lives on the platform."""

from __future__ import annotations

TAG_REPOSITORY = "immutable:repository"  # base repository or app name
TAG_KIND = "immutable:kind"  # base | app
# A moving pointer (candidate, stable), unique per repository: `immutable:channel:<name>` = "true".
# One key per channel, so one image can be on both (a promoted candidate).
TAG_CHANNEL = "immutable:channel:"


def channel_tag(channel: str) -> str:
    return f"{TAG_CHANNEL}{channel}"


TAG_SOURCE_IMAGE = "immutable:source-image"  # on a copy: the AMI id in the build region it was copied from
TAG_SOURCE_REGION = "immutable:source-region"
TAG_ROLE = "immutable:role"  # builder | dev | staging: what an instance of ours is for
TAG_RUN = "immutable:run"  # the Airflow run that launched an instance (for cleanup)
TAG_SIGNATURE = "immutable:signature"  # immutable:signature.0, .1, ...: the ed25519 signature in chunks
TAG_SBOM = "immutable:sbom"  # sha256:<hex> of the AMI's SBOM in the artifact bucket (signed with it)
