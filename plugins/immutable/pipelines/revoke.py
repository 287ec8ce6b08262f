"""revoke_image: withdraw an app or base image from every future deploy, with the reason and who."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from immutable.app_spec import app_spec
from immutable.config import ConfigError, load_base_spec
from immutable.platforms import platform_for
from immutable.provenance import LABEL_VERSION
from immutable.revocation import Revocation, parse_revoke_params, revocation_of, signed_document
from immutable.signing import SignatureError

log = logging.getLogger(__name__)


def revoke(params: dict[str, Any], revoked_by: str, now: datetime) -> dict[str, Any]:
    """Check the form, find the image, record its signed revocation; a second revocation of the same
    image keeps the first record (its reason, who and when) and says so."""
    request = parse_revoke_params(params)
    platform = platform_for()
    repository = app_spec(request.app).repository if request.kind == "app" else load_base_spec().repository
    images = platform.images
    digest = images.resolve(repository, request.reference)
    if digest is None:
        raise ConfigError(
            f"revoke_image trigger: field 'reference': '{request.reference}' is neither a version nor an image of "
            f"{repository} in {images.build_location()}; give a version (such as 1.2.0) or an image digest"
        )
    try:
        earlier = revocation_of(platform, repository, digest)
    except SignatureError as exc:  # altered, or signed with a key since rotated: this run signs it anew
        log.warning("the stored record is not valid (%s); replacing it with this run's", exc)
        earlier = None
    if earlier is not None:
        log.info("already revoked; the first record stays: %s", earlier.sentence())
        return earlier.model_dump() | {"already_revoked": True}
    try:
        version = images.verify_in(None, repository, digest).get(LABEL_VERSION)
    except SignatureError as exc:  # an image we never signed can be revoked all the same
        log.warning("%s@%s has no valid signature (%s); revoking it anyway", repository, digest, exc)
        version = None
    record = Revocation(
        kind=request.kind,
        repository=repository,
        digest=digest,
        version=version,
        reason=request.reason,
        revoked_by=revoked_by,
        revoked_at=now.isoformat(),
    )
    stored = images.store_revocation(repository, digest, signed_document(platform.config, record))
    log.info("%s\nrecorded in %s; no deploy step deploys it from now on", record.sentence(), stored)
    return record.model_dump() | {"stored": stored}
