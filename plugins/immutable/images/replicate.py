"""Copy an image, by digest, from one registry to another: only the blobs the target lacks travel.

The manifest's exact bytes are copied, so the target serves the very same digest ("bake once,
copy everywhere": nothing is rebuilt per region, nothing can drift).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from immutable.registry import RegistryClient, RegistryError
from immutable.signing import artifact_tags

log = logging.getLogger(__name__)


class CopyError(RuntimeError):
    pass


@dataclass
class CopyReport:
    digest: str
    pushed_blobs: list[str] = field(default_factory=list)
    skipped_blobs: list[str] = field(default_factory=list)
    bytes_pushed: int = 0
    manifests_pushed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _copy_manifest(
    source: RegistryClient, target: RegistryClient, repository: str, reference: str, report: CopyReport
) -> tuple[bytes, str, str]:
    """Copy the blobs and the manifest of `reference`; returns (manifest bytes, media type, digest)."""
    found = source.raw_manifest(repository, reference)
    if found is None:
        raise CopyError(f"{repository}:{reference} is not in the source registry {source.address}")
    body, media_type, digest = found
    manifest = json.loads(body)
    blobs = [manifest["config"], *manifest.get("layers", [])] if "config" in manifest else []
    if not blobs:
        raise CopyError(f"{repository}@{digest} is a {media_type}; only single-platform manifests are copied")
    for blob in blobs:
        blob_digest = blob["digest"]
        if target.blob_exists(repository, blob_digest):
            report.skipped_blobs.append(blob_digest)
            continue
        sent = source.copy_blob_to(target, repository, blob_digest)
        report.pushed_blobs.append(blob_digest)
        report.bytes_pushed += sent
        log.info("copied blob %s (%d bytes) to %s", blob_digest, sent, target.address)
    if target.manifest_digest(repository, digest) != digest:
        target.put_manifest(repository, digest, body, media_type)
        report.manifests_pushed += 1
    return body, media_type, digest


def copy_image(
    source: RegistryClient, target: RegistryClient, repository: str, digest: str, tags: list[str]
) -> CopyReport:
    """Copy `repository@digest`, its tags, its signature and its SBOM. Safe to repeat: nothing present
    is sent."""
    report = CopyReport(digest=digest)
    body, media_type, copied = _copy_manifest(source, target, repository, digest, report)
    if copied != digest:
        raise CopyError(f"source registry served {copied} for {digest}")
    for tag in tags:
        if target.manifest_digest(repository, tag) != digest:
            target.put_manifest(repository, tag, body, media_type)
            report.manifests_pushed += 1
    for beside in artifact_tags(digest):  # its signature and its SBOM
        if source.manifest_digest(repository, beside) is not None:
            beside_body, beside_type, beside_digest = _copy_manifest(source, target, repository, beside, report)
            if target.manifest_digest(repository, beside) != beside_digest:
                target.put_manifest(repository, beside, beside_body, beside_type)
                report.manifests_pushed += 1
    served = target.manifest_digest(repository, digest)
    if served != digest:
        raise CopyError(f"after the copy {target.address} serves {served} for {repository}@{digest}")
    return report


def copy_with_retries(
    source: RegistryClient,
    target: RegistryClient,
    repository: str,
    digest: str,
    tags: list[str],
    *,
    region: str,
    attempts: int,
    backoff_s: float,
) -> CopyReport:
    """Retry transient registry failures with exponential backoff; the last error names the region."""
    delay = backoff_s
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return copy_image(source, target, repository, digest, tags)
        except (RegistryError, CopyError) as exc:
            last = exc
            log.warning("copy to %s (%s), attempt %d of %d failed: %s", region, target.address, attempt, attempts, exc)
            if attempt < attempts:
                time.sleep(delay)
                delay *= 2
    cause = getattr(last, "cause", None) or str(last)
    raise CopyError(
        f"{cause}: copying {repository}@{digest} to region {region} (registry {target.address}) failed after "
        f"{attempts} attempts: {last}. Check that the region's registry is up and has room (`make status`), "
        "then clear this task to retry; blobs already copied are not sent again."
    )
