"""Deterministic names shared by the pipelines and the platforms; pure, so a DAG task can compute
them without loading any platform's SDK (docker, boto3)."""

from __future__ import annotations

import hashlib


def environment_name(kind: str, app: str, run_id: str) -> str:
    """Deterministic per run: a retry or a teardown after a restart finds the same environment."""
    return f"immutable-{kind}-{app}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"
