"""Production on the local platform, all real: HAProxy per region, Prometheus, a traffic generator,
app fleets as containers. Releases run through release_sample with dag.test(); the good ones are
the session's `two_good_releases` (tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from immutable.config import load_platform
from tests.conftest import TEST_STATE
from tests.integration.helpers import (
    APP,
    REGIONS,
    failed_requests,
    fleet_colors,
    live_versions,
    production,
    run_dag,
    xcom,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]


def test_the_first_release_has_no_baseline_so_no_canary(two_good_releases: dict[str, Any]) -> None:
    canary = xcom(two_good_releases["first"], "canary.analysis")
    assert canary["status"] == "skipped"
    assert "no baseline" in canary["reason"]


def test_a_good_release_passes_the_canary_and_flips_every_region(two_good_releases: dict[str, Any]) -> None:
    canary = xcom(two_good_releases["second"], "canary.analysis")
    assert canary["status"] == "pass", canary
    assert live_versions() == dict.fromkeys(REGIONS, "1.1.0")
    outcome = xcom(two_good_releases["second"], "record_release")
    for region in REGIONS:
        assert outcome["regions"][region]["live"]["version"] == "1.1.0"
        # The old color is kept, without traffic, for the rollback window.
        assert outcome["regions"][region]["kept"]["version"] == "1.0.0"
        assert sorted(fleet_colors(region).values()) == ["1.0.0", "1.1.0"]
        shares = production().shares(APP, region)
        assert shares[outcome["regions"][region]["live"]["color"]] == pytest.approx(100)


def test_the_good_release_flipped_every_region_in_lockstep(two_good_releases: dict[str, Any]) -> None:
    """1.1.0 ran with `rollout.synchronized: true`: one task moved every region's weights together."""
    from immutable.pipelines.production import spec_for
    from immutable.platforms import platform_for

    run, states = two_good_releases["second"], two_good_releases["states"]
    assert states["all_regions.flip_all"] == "success", states
    assert [states[f"all_regions.post_flip_gate[{n}]"] for n in range(3)] == ["success"] * 3, states
    assert not [task for task in states if task.startswith("wave_")], states
    flips = xcom(run, "all_regions.flip_all")
    assert sorted(f["region"] for f in flips) == sorted(REGIONS) and all(f["flipped"] for f in flips), flips
    skew_s = xcom(run, "all_regions.flip_all", key="skew_s")
    # Every region reached 100% in the same round: well within one pause between weight steps.
    assert 0 <= skew_s < spec_for(platform_for(), APP).bluegreen.step_pause_s, skew_s


def test_no_user_request_failed_during_the_good_release(two_good_releases: dict[str, Any]) -> None:
    from immutable.local.traffic import read_stats

    start, end = two_good_releases["window"]
    assert failed_requests(start, end) == []
    stats = read_stats(TEST_STATE)
    assert stats, "the traffic generator wrote no statistics"


def test_a_bad_release_is_stopped_by_the_canary(two_good_releases: dict[str, Any], capfd: Any) -> None:
    before = {region: fleet_colors(region) for region in REGIONS}
    run, states = run_dag("releases.py", "release_sample", {"version": "1.2.0"})  # 30% errors, +40 ms
    capfd.readouterr()
    assert str(run.state) == "failed"
    assert states["canary.analysis"] == "failed"
    assert states["canary.end_canary"] == "success"
    assert states["wave_1.launch_new_color[0]"] == "upstream_failed"
    assert states["rollback"] == "success"
    # The cause sentence of the failed gate is asserted where users read it: the task log over REST
    # and in the browser (tests/e2e); dag.test() does not print an AirflowFailException's message.
    assert live_versions() == dict.fromkeys(REGIONS, "1.1.0")
    after = {region: fleet_colors(region) for region in REGIONS}
    assert after == before, "canary, baseline or a new color was left behind"


def test_a_post_flip_regression_flips_back_within_seconds(two_good_releases: dict[str, Any]) -> None:
    from immutable.operators.gates import GateFailed, PostFlipGateOperator
    from immutable.pipelines import production as steps
    from immutable.platforms import platform_for
    from immutable.registry import RegistryClient
    from immutable.triggers import ThresholdGateTrigger

    platform = load_platform()
    region = "us-east"
    digest = RegistryClient(f"127.0.0.1:{platform.region(region).registry_port}").manifest_digest(
        "apps/sample", "1.2.0"
    )
    assert digest, "1.2.0 was copied to every region by the bad release"
    plan = {"app": APP, "version": "1.2.0"}
    launched = steps.launch_new_color(plan, {"digest": digest}, region, "test-post-flip")
    flipped = steps.flip(plan, launched, "test-post-flip")
    assert live_versions()[region] == "1.2.0"
    operator = PostFlipGateOperator(task_id="gate", app=APP, flipped=flipped)
    spec_checks = __import__("immutable.app_spec", fromlist=["app_spec"]).app_spec(APP).for_platform(platform)

    async def first_event() -> dict[str, Any]:
        trigger = ThresholdGateTrigger(
            backend=platform_for().metrics.backend(APP, region),
            checks=[c.model_dump() for c in spec_checks.bluegreen.post_flip_checks],
            labels={"app": APP, "region": region, "color": flipped["color"]},
            start_at=time.time() + spec_checks.bluegreen.post_flip_warmup_s,
            window_s=60,
            step_s=1,
            rate_window=spec_checks.canary.rate_window,
            failures_allowed=2,
        )
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    assert event["status"] == "fail", event
    assert "error_rate" in event["reason"]
    with pytest.raises(GateFailed, match="went back to"):
        operator.execute_complete({}, event)
    flipped_back_s = time.time() - event["failed_at"]
    assert flipped_back_s < 10, f"flipping back took {flipped_back_s:.1f}s"
    assert live_versions()[region] == "1.1.0"
    assert "1.2.0" not in fleet_colors(region).values()
    production().release(APP, region, "test-post-flip")


def test_the_rollback_dag_restores_the_previous_version(two_good_releases: dict[str, Any]) -> None:
    run, states = run_dag("rollbacks.py", "rollback_sample", {"regions": REGIONS, "reason": "test"})
    assert str(run.state) == "success", states
    outcomes = {done["region"]: done for done in (xcom(run, "rollback_region", map_index=i) for i in range(3))}
    assert sorted(outcomes) == sorted(REGIONS)
    for region, done in outcomes.items():
        assert done["to"]["version"] == "1.0.0", done
        if region == "us-east":
            # The post-flip test's new color replaced the kept 1.0.0 fleet there: redeployed by digest.
            assert done["how"] == "redeployed the previous release by digest", done
        else:
            assert done["how"] == "flipped back to the kept color", done
    assert live_versions() == dict.fromkeys(REGIONS, "1.0.0")


def test_prometheus_down_during_a_gate_is_waited_out_and_never_judged(two_good_releases: dict[str, Any]) -> None:
    """Fault drill: Prometheus stops in the middle of a post-flip gate on the live (good) release. The
    gate waits for it, judges no evaluation whose look-back overlaps the outage, and passes."""
    from immutable.localctl import production_services
    from immutable.pipelines.production import spec_for
    from immutable.platforms import platform_for
    from immutable.triggers import ThresholdGateTrigger

    platform = platform_for()
    region = "eu-west"
    live = production().live(APP, region)
    assert live is not None
    spec = spec_for(platform, APP)
    prometheus = next(s for s in production_services() if s.name == "prometheus")
    trigger = ThresholdGateTrigger(
        backend=platform.metrics.backend(APP, region),
        checks=[c.model_dump() for c in spec.bluegreen.post_flip_checks],
        labels={"app": APP, "region": region, "color": live["color"]},
        start_at=time.time(),
        window_s=20,
        step_s=1,
        rate_window=spec.canary.rate_window,
        failures_allowed=2,
        outage_limit_s=60,
        retry_s=1,
    )

    async def gate_with_an_outage() -> tuple[dict[str, Any], float, float]:
        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("the trigger ended without an event")

        gate = asyncio.create_task(first_event())
        await asyncio.sleep(4)
        await asyncio.to_thread(prometheus.stop)
        stopped = time.time()
        await asyncio.sleep(8)
        await asyncio.to_thread(prometheus.start)
        return await gate, stopped, time.time()

    try:
        event, stopped, restarted = asyncio.run(gate_with_an_outage())
    finally:
        prometheus.start()  # idempotent: the drill must not leave Prometheus down for the next tests
    assert event["status"] == "pass", event
    assert event["evaluations"] == 20
    # No evaluation read missing data: the outage cost time, not evidence.
    assert all(check["value"] is not None for row in event["history"] for check in row), event["history"]
    assert restarted - stopped >= 8
