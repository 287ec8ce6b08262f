"""Revoking an image: a signed record, kept on the platform beside the image, that deploy steps read.

Revoking deletes nothing: the image stays where it is, since fleets may still run it and a rollback
may still need it. From then on no step deploys it again (`refuse_revoked`), a release cannot pin a
revoked base, `promote_base` cannot promote one, and the Releases page names every revoked image
that still runs. The record is signed with the pipeline's key, like a release: a record nobody
signed stops deploys of that image too (it is refused as a record, never ignored), and a signed
record cannot be moved onto another image, since it names its repository and digest.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk.exceptions import AirflowFailException
from pydantic import BaseModel, ConfigDict, Field

from immutable.config import ConfigError, parse_model
from immutable.signing import SignatureError, load_signer, signature_valid

if TYPE_CHECKING:
    from immutable.config import PlatformConfig
    from immutable.platforms.interface import Platform

REVOCATION_MEDIA_TYPE = "application/vnd.immutable.revocation.v1+json"


class RevokeParams(BaseModel):
    """The revoke_image form."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["app", "base"]
    app: str = Field("", max_length=64, description="the app's name (kind app); empty for the base")
    reference: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
    reason: str = Field(min_length=3, max_length=500)


class Revocation(BaseModel):
    """What was revoked, why, by whom and when."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["app", "base"]
    repository: str
    digest: str
    version: str | None = None
    reason: str
    revoked_by: str
    revoked_at: str

    def body(self) -> bytes:
        """The canonical bytes that are signed."""
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":")).encode()

    def sentence(self) -> str:
        version = f" ({self.version})" if self.version else ""
        return (
            f"{self.repository}@{self.digest}{version} was revoked by {self.revoked_by} at {self.revoked_at}: "
            f"{self.reason}"
        )


class RevokedImageError(SignatureError, AirflowFailException):
    """The image was revoked: no step may deploy it. The message says why, who and when. A retry
    would meet the same record, so the task fails at once (AirflowFailException)."""


def parse_revoke_params(params: dict[str, object]) -> RevokeParams:
    known = {k: v for k, v in params.items() if k in RevokeParams.model_fields}
    request = parse_model(RevokeParams, known, "revoke_image trigger")
    if request.kind == "app" and not request.app:
        raise ConfigError("revoke_image trigger: field 'app': required when kind is 'app'; name the app to revoke")
    if request.kind == "base" and request.app:
        raise ConfigError(
            f"revoke_image trigger: field 'app': must be empty when kind is 'base' (got '{request.app}'); the base "
            "image is one repository for every app"
        )
    return request


def signed_document(platform: PlatformConfig, record: Revocation) -> bytes:
    """The record and its signature, as stored on the platform."""
    signature = load_signer(platform).sign_bytes(record.body())
    return json.dumps({"record": record.model_dump(), "signature": signature}, sort_keys=True).encode()


def read_document(platform: PlatformConfig, document: bytes, *, repository: str, digest: str) -> Revocation:
    """The record stored for `repository@digest`, once its signature and its subject are checked."""
    where = f"the revocation record of {repository}@{digest}"
    try:
        stored = json.loads(document)
        record = Revocation.model_validate(stored["record"])
        signature = str(stored["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(
            f"{where} is unreadable ({exc}); deploys of the image stay refused until it is mended"
        ) from exc
    if not signature_valid(record.body(), signature, load_signer(platform).public_pem()):
        raise SignatureError(
            f"{where} does not verify with the pipeline's key ({record.reason!r}, by {record.revoked_by}); deploys "
            "of the image stay refused: revoke it again through revoke_image, or remove the record"
        )
    if (record.repository, record.digest) != (repository, digest):
        raise SignatureError(f"{where} names another image, {record.repository}@{record.digest}; it was moved")
    return record


def revocation_of(platform: Platform, repository: str, digest: str) -> Revocation | None:
    """The verified revocation of the image, or None when it is not revoked."""
    document = platform.images.revocation_document(repository, digest)
    if document is None:
        return None
    return read_document(platform.config, document, repository=repository, digest=digest)


def refuse_revoked(
    platform: Platform, repository: str, digest: str, *, refusing: str = "to deploy the image", remedy: str = ""
) -> None:
    """Raise RevokedImageError ("refusing <refusing>: <the record>. <remedy>") if the image was revoked."""
    record = revocation_of(platform, repository, digest)
    if record is not None:
        raise RevokedImageError(f"refusing {refusing}: {record.sentence()}" + (f". {remedy}" if remedy else ""))


def deployable(platform: Platform, region: str | None, repository: str, digest: str) -> dict[str, str]:
    """What every deploy step asks before it deploys the image: signed by us (where it is deployed
    from), not revoked, and not baked on a revoked base (it runs what was revoked). Returns its labels."""
    from immutable.config import load_base_spec
    from immutable.provenance import LABEL_BASE_DIGEST

    labels = platform.images.verify_in(region, repository, digest)
    refuse_revoked(platform, repository, digest)
    base = labels.get(LABEL_BASE_DIGEST)
    if base:
        refuse_revoked(
            platform, load_base_spec().repository, base, refusing=f"to deploy {repository}@{digest}, whose base"
        )
    return labels


def revoked_running(placements: list[Any]) -> list[dict[str, Any]]:
    """The revoked images that still take traffic, one entry each with the regions (and apps) that run
    them, from the Releases page's placements (`revoked`: the live image's or its base's record). Pure."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for p in placements:
        for record in p.revoked or []:
            entry = found.setdefault((record["repository"], record["digest"]), dict(record) | {"where": []})
            entry["where"].append(f"{p.app} in {p.region}")
    return sorted(found.values(), key=lambda r: str(r["revoked_at"]), reverse=True)
