"""A synchronized rollout whose post-flip gate fails in one region: every region flips back.

Runs after test_production (which leaves its last good release live everywhere). The good
synchronized release is the session's second shared release (tests/integration/conftest.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.helpers import (
    REGIONS,
    failed_requests,
    faults_in_new_fleets,
    fleet_colors,
    live_versions,
    run_dag,
    synchronized_rollout,
    xcom,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]

VERSION = "1.4.0"
FAILING_REGION = "ap-south"


def test_a_post_flip_gate_failing_in_one_region_flips_every_region_back(two_good_releases: dict[str, Any]) -> None:
    before = live_versions()
    assert None not in before.values(), before
    started = time.time()
    # The new color in one region fails its users but passes its health checks: it launches and
    # flips like a good one, and only the post-flip gate can see it.
    with faults_in_new_fleets(VERSION, FAILING_REGION, {"error_rate": 1.0}) as broken, synchronized_rollout():
        run, states = run_dag("releases.py", "release_sample", {"version": VERSION})
    ended = time.time()
    assert len(broken) == 2, broken

    assert str(run.state) == "failed", states
    assert states["all_regions.flip_all"] == "success", states  # every region flipped together...
    gates = {region: states[f"all_regions.post_flip_gate[{n}]"] for n, region in enumerate(REGIONS)}
    assert gates[FAILING_REGION] == "failed", gates  # ...one region's gate failed...
    assert states["rollback"] == "success", states
    # ...and every region went back to what was live before, with nothing of this release left.
    assert live_versions() == before
    for region in REGIONS:
        assert VERSION not in fleet_colors(region).values(), (region, fleet_colors(region))
    undone = xcom(run, "rollback")
    assert sorted(undone) == sorted(REGIONS), undone
    # Users' requests failed only where the new color was broken, between the flip and the flip back.
    failed_regions = {failure.get("region") for failure in failed_requests(started, ended)}
    assert failed_regions <= {FAILING_REGION}, failed_regions
