"""Revocation records of AMIs: the signed record in the artifact bucket, one object per revoked
build-region AMI, read by every deploy step whatever region it deploys to (a copy is revoked with
the AMI it copies: the steps ask by the build-region AMI id)."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from immutable.aws.amis import s3
from immutable.aws.hooks.base import error_code

if TYPE_CHECKING:
    from immutable.config import PlatformConfig

log = logging.getLogger(__name__)


def revocation_key(repository: str, image_id: str) -> str:
    """Under `revocations/`, a prefix the pipeline's IAM policy may write."""
    return f"revocations/{repository}/{image_id}.json"


def store_revocation(platform: PlatformConfig, *, repository: str, image_id: str, document: bytes) -> str:
    bucket, key = platform.aws_settings.artifact_bucket, revocation_key(repository, image_id)
    s3(platform).put_artifact(
        bucket=bucket, key=key, body=document, metadata={"sha256": hashlib.sha256(document).hexdigest()}
    )
    log.info("stored the revocation of %s in s3://%s/%s", image_id, bucket, key)
    return f"s3://{bucket}/{key}"


def revocation_document(platform: PlatformConfig, *, repository: str, image_id: str) -> bytes | None:
    try:
        return s3(platform).get_artifact(
            bucket=platform.aws_settings.artifact_bucket, key=revocation_key(repository, image_id)
        )
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
