"""The Airflow Assets that connect pipelines: base image channels feed app releases."""

from __future__ import annotations

from airflow.sdk import Asset

BASE_CANDIDATE = Asset("base-image/candidate")
BASE_STABLE = Asset("base-image/stable")
