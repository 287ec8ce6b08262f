"""The Airflow Assets that connect pipelines: base image channels feed app releases."""

from __future__ import annotations

from airflow.sdk import Asset

BASE_CANDIDATE = Asset("base-image/candidate")
BASE_STABLE = Asset("base-image/stable")


def release_asset(app: str) -> Asset:
    """Emitted when a release of `app` is live everywhere; promote_base listens to canary-tier apps'."""
    return Asset(f"release/{app}")
