"""Provenance that travels with every image, as OCI labels locally and AMI tags on aws: the same keys
on every platform, so the pipelines, the Releases page and promote_base read them the same way."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from immutable.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from datetime import datetime

    from immutable.config import BaseImageRunParams, BaseImageSpec
    from immutable.payloads import Packaged

OCI = "org.opencontainers.image"
LABEL_VERSION = f"{OCI}.version"
LABEL_CREATED = f"{OCI}.created"
LABEL_REVISION = f"{OCI}.revision"
LABEL_SOURCE = f"{OCI}.source"
LABEL_TITLE = f"{OCI}.title"
LABEL_BASE_NAME = f"{OCI}.base.name"
LABEL_BASE_DIGEST = f"{OCI}.base.digest"
LABEL_BASE_VERSION = "io.immutable.base.version"  # on an app image: the version of the base it was baked on
LABEL_RUN_ID = "io.immutable.airflow.run-id"
LABEL_APP = "io.immutable.app.name"
LABEL_REASON = "io.immutable.base.reason"
LABEL_CVES = "io.immutable.base.cves"
LABEL_FAST_TRACK = "io.immutable.base.fast-track"
LABEL_ARTIFACT = "io.immutable.app.artifact.sha256"


def app_labels(
    *,
    version: str,
    created: str,
    app: str,
    base_name: str,
    base_digest: str,
    base_version: str,
    packaged: Packaged,
    run_id: str,
) -> dict[str, str]:
    """The app image's provenance: what, from which source and base, built by which run."""
    return {
        LABEL_VERSION: version,
        LABEL_REVISION: packaged.revision,
        LABEL_CREATED: created,
        LABEL_SOURCE: packaged.source,
        LABEL_TITLE: app,
        LABEL_BASE_NAME: base_name,
        LABEL_BASE_DIGEST: base_digest,
        LABEL_BASE_VERSION: base_version,
        LABEL_APP: app,
        LABEL_ARTIFACT: packaged.sha256,
        LABEL_RUN_ID: run_id,
    }


def project_revision() -> str:
    """The git commit the build context came from, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def build_labels(
    *,
    spec: BaseImageSpec,
    version: str,
    created: datetime,
    upstream_digest: str,
    params: BaseImageRunParams,
    run_id: str,
) -> dict[str, str]:
    """The base image's provenance: its version, where it came from, and why it was built."""
    return {
        LABEL_VERSION: version,
        LABEL_CREATED: created.isoformat(),
        LABEL_REVISION: project_revision(),
        LABEL_SOURCE: "include/base",
        LABEL_TITLE: spec.repository,
        LABEL_BASE_NAME: spec.upstream.image,
        LABEL_BASE_DIGEST: upstream_digest,
        LABEL_REASON: params.reason,
        LABEL_CVES: ",".join(params.cves),
        LABEL_FAST_TRACK: str(params.fast_track).lower(),
        LABEL_RUN_ID: run_id,
    }
