"""A synchronized rollout whose post-flip gate fails in one region: every region flips back.

Runs after test_production (which leaves its last good release live everywhere). The good
synchronized release is the session's second shared release (tests/integration/conftest.py)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from typing import Any

import pytest

from tests.integration.helpers import (
    REGIONS,
    failed_requests,
    fleet_colors,
    live_versions,
    run_dag,
    synchronized_rollout,
    xcom,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]

VERSION = "1.4.0"
FAILING_REGION = "ap-south"


def faults_archive(faults: dict[str, float]) -> bytes:
    """/tmp/sample-faults.json as a tar stream: the sample app reads it every second (a fault injected
    into a running server, see include/apps/sample/src/sample_app/server.py)."""
    body = json.dumps(faults).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("sample-faults.json")
        info.size, info.mode = len(body), 0o644
        archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def break_new_color_when_launched(region: str, stop: threading.Event, broken: list[str]) -> None:
    """Once this release's new color runs in `region`, make every member answer users with HTTP 500
    (its health check still passes, so it launches and flips like a good one)."""
    import docker

    labels = ["io.immutable.platform=test", "io.immutable.role=fleet", f"io.immutable.region={region}"]
    while not stop.is_set():
        try:
            client = docker.from_env()
            members = [
                c
                for c in client.containers.list(filters={"label": [*labels, f"io.immutable.version={VERSION}"]})
                if c.labels["io.immutable.color"] in ("blue", "green")
            ]
        except docker.errors.DockerException:  # the engine restarting (a drill elsewhere): look again
            time.sleep(0.5)
            continue
        if len(members) >= 2:
            for member in members:
                assert member.put_archive("/tmp", faults_archive({"error_rate": 1.0}))
                broken.append(member.name)
            return
        time.sleep(0.5)


def test_a_post_flip_gate_failing_in_one_region_flips_every_region_back(two_good_releases: dict[str, Any]) -> None:
    before = live_versions()
    assert None not in before.values(), before
    stop, broken = threading.Event(), list[str]()
    saboteur = threading.Thread(target=break_new_color_when_launched, args=(FAILING_REGION, stop, broken))
    saboteur.start()
    started = time.time()
    try:
        with synchronized_rollout():
            run, states = run_dag("releases.py", "release_sample", {"version": VERSION})
    finally:
        stop.set()
        saboteur.join()
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
