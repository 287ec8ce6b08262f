"""The Airflow Assets that connect pipelines: base image channels feed app releases."""

from __future__ import annotations

from airflow.sdk import Asset


class _HashedOnce(Asset):
    """An Asset whose hash is worked out once. Airflow hashes a DAG at every dependency it sets, and a
    DAG's hash hashes its schedule's Assets by serializing them to JSON: with hundreds of apps, a
    quarter of `dags/releases.py`'s parse went there (bench/dag_parse.py). Equal to, and hashed like,
    the plain Asset of the same name and URI."""

    def __hash__(self) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = super().__hash__()
        return cached


BASE_CANDIDATE = _HashedOnce("base-image/candidate")
BASE_STABLE = _HashedOnce("base-image/stable")


def release_asset(app: str) -> Asset:
    """Emitted when a release of `app` is live everywhere; promote_base listens to canary-tier apps'."""
    return _HashedOnce(f"release/{app}")
