"""The rollback edges of a wave-by-wave release, each through a real DAG run (dag.test()) on the local
platform, with faults injected into the new fleets of one region of the second wave as the engine
creates them (helpers.faults_in_new_fleets). Every test starts from and returns to what the earlier
tests left live."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.integration.helpers import (
    APP,
    REGIONS,
    failed_requests,
    faults_in_new_fleets,
    fleet_colors,
    live_versions,
    production,
    run_dag,
    xcom,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]

VERSION = "1.5.0"  # a good version: only the injected faults make it fail
PILOT, SECOND_WAVE = "eu-west", ["us-east", "ap-south"]


@contextmanager
def watching_shares(region: str, every_s: float = 0.2) -> Generator[list[tuple[float, dict[str, float]]], None, None]:
    """Every change of the region's load-balancer shares while the block runs, with when it was seen
    (read from HAProxy, independently of what the tasks say they did)."""
    seen: list[tuple[float, dict[str, float]]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            shares = production().shares(APP, region)
            if not seen or seen[-1][1] != shares:
                seen.append((time.time(), shares))
            stop.wait(every_s)

    watcher = threading.Thread(target=watch, name=f"shares-{region}", daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join(timeout=10)


def new_fleets_anywhere() -> dict[str, dict[str, str]]:
    return {region: c for region in REGIONS if VERSION in (c := fleet_colors(region)).values()}


def test_a_regression_in_the_second_wave_flips_it_back_in_seconds_and_every_earlier_wave_too(
    two_good_releases: dict[str, Any], notified: Any
) -> None:
    failing = SECOND_WAVE[0]
    before = live_versions()
    assert None not in before.values() and VERSION not in before.values(), before
    old_color = production().live(APP, failing)["color"]
    started = time.time()
    with (
        faults_in_new_fleets(VERSION, failing, {"error_rate": 1.0}) as broken,
        watching_shares(failing) as shares_seen,
    ):
        run, states = run_dag("releases.py", "release_sample", {"version": VERSION})
    ended = time.time()
    assert len(broken) == 2, broken

    assert str(run.state) == "failed", states
    # The canary and the pilot's wave passed: the pilot ran the new version when the second wave failed.
    assert states["canary.analysis"] == "success", states
    assert states["wave_1.flip[0]"] == "success" and states["wave_1.post_flip_gate[0]"] == "success", states
    gates = {region: states[f"wave_2.post_flip_gate[{n}]"] for n, region in enumerate(SECOND_WAVE)}
    assert gates == {failing: "failed", SECOND_WAVE[1]: "success"}, gates
    assert states["rollback"] == "success", states

    # The failing region went back within seconds of the gate's verdict, as HAProxy saw it.
    verdict = xcom(run, "wave_2.post_flip_gate", map_index=0, key="verdict")
    assert verdict["status"] == "fail" and "error_rate" in verdict["reason"], verdict
    assert any(shares.get(old_color, 0) == 0 for _, shares in shares_seen), f"never flipped: {shares_seen}"
    back_at = [at for at, shares in shares_seen if at >= verdict["failed_at"] and shares.get(old_color) == 100]
    assert back_at, (verdict["failed_at"], shares_seen)
    assert back_at[0] - verdict["failed_at"] < 5, (verdict["failed_at"], shares_seen)

    # Then the rollback sent the pilot and the rest of the second wave back too: all as before,
    # with nothing of this release left running anywhere.
    undone = xcom(run, "rollback")
    for region in [PILOT, SECOND_WAVE[1]]:
        assert "traffic went back" in undone[region], undone
    assert live_versions() == before
    assert new_fleets_anywhere() == {}
    # Told once each: the failure with the failing gate's cause, the rollback with every region it undid.
    [failed] = notified.posted(run.run_id, "release_failed")
    assert failed["task_id"] == "wave_2.post_flip_gate" and "error_rate" in failed["cause"], failed
    [rolled] = notified.posted(run.run_id, "rolled_back")
    assert rolled["regions"] == sorted(region for region, what in undone.items() if "traffic went back" in what)
    assert PILOT in rolled["regions"] and rolled["version"] == VERSION, rolled
    assert len(notified.mailed(run.run_id, f"The release of sample {VERSION} was rolled back")) == 1
    # Users saw failures only in the broken region, between its flip and its flip back.
    failed_regions = {failure.get("region") for failure in failed_requests(started, ended)}
    assert failed_regions <= {failing}, failed_regions


def test_a_new_color_that_never_turns_healthy_is_never_flipped_to_and_is_removed(
    two_good_releases: dict[str, Any],
) -> None:
    unhealthy = SECOND_WAVE[1]
    before = live_versions()
    assert VERSION not in before.values(), before
    started = time.time()
    with (
        faults_in_new_fleets(VERSION, unhealthy, {"fail_health": True}) as broken,
        watching_shares(unhealthy) as shares_seen,
    ):
        run, states = run_dag("releases.py", "release_sample", {"version": VERSION})
    ended = time.time()
    assert len(broken) == 2, broken

    assert str(run.state) == "failed", states
    assert states["wave_1.post_flip_gate[0]"] == "success", states  # the pilot ran the new version...
    launches = {region: states[f"wave_2.launch_new_color[{n}]"] for n, region in enumerate(SECOND_WAVE)}
    assert launches == {SECOND_WAVE[0]: "success", unhealthy: "failed"}, launches
    assert states["wave_2.flip"] == "upstream_failed", states  # ...no region of the wave was flipped...
    assert states["rollback"] == "success", states
    # ...the unhealthy color never had a share of the load balancer, and nothing of the release is left.
    colors_with_traffic = {color for _, shares in shares_seen for color, share in shares.items() if share > 0}
    assert colors_with_traffic == {production().live(APP, unhealthy)["color"]}, shares_seen
    undone = xcom(run, "rollback")
    assert "traffic went back" in undone[PILOT], undone
    assert "removed" in undone[unhealthy] and "traffic" not in undone[unhealthy], undone
    assert live_versions() == before
    assert new_fleets_anywhere() == {}
    assert failed_requests(started, ended, runs=[run]) == []
