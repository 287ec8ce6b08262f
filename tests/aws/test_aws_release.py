"""Whole releases on the aws platform with dag.test(), as on the local platform: a first release
flips every region, a healthy one goes through canary and blue/green by listener weights, and a bad
one is stopped by the canary gate and rolled back; a person's stop (recorded in the artifact
bucket) ends a canary gate; a regression in the second wave flips every region back; kept groups
past their rollback window are retired, and a rollback past the window redeploys the AMI. CloudWatch
gets the ALB's points from the test (`AlbMetrics`): the emulator reports none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.aws.conftest import REGIONS, AwsAccount
from tests.aws.deferrals import RecordingTi
from tests.aws.test_aws_production import APP, AlbMetrics, groups, listener_weights
from tests.integration.helpers import run_dag, xcom

pytestmark = pytest.mark.usefixtures("airflow_db")

HEALTHY, BAD = "1.1.0", "1.2.0"
STOPPED, FAILS_IN_THE_SECOND_WAVE, SYNCHRONIZED = "1.3.0", "1.4.0", "1.5.0"
KEPT_EVERYWHERE = "1.6.0"
INSIDE_THE_WINDOW, PAST_THE_WINDOW = REGIONS[0], REGIONS[1:]


@pytest.fixture(scope="module")
def metrics(aws_account: AwsAccount) -> Iterator[AlbMetrics]:
    with AlbMetrics(aws_account, {BAD: 0.3, f"{FAILS_IN_THE_SECOND_WAVE}@{REGIONS[1]}": 1.0}) as putting:
        yield putting


@pytest.fixture(scope="module")
def first_release(aws_account: AwsAccount, aws_base_candidate: str, metrics: AlbMetrics) -> dict[str, Any]:
    run, states = run_dag("releases.py", f"release_{APP}", {"version": "1.0.0"})
    assert str(run.state) == "success", states
    assert states["canary.prepare_canary"] == "success"
    return {"run": run, "states": states}


def live_colors(account: AwsAccount) -> dict[str, dict[str, int]]:
    return {region: listener_weights(account, region) for region in REGIONS}


def test_a_first_release_takes_every_region_without_a_canary(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    assert xcom(first_release["run"], "canary.prepare_canary")["skipped"] is True
    record = xcom(first_release["run"], "record_release")
    assert set(record["regions"]) == set(REGIONS)
    for region, weights in live_colors(aws_account).items():
        assert weights == {f"{APP}-{record['regions'][region]['live']['color']}": 100}, region


def test_a_healthy_release_goes_through_canary_and_blue_green_everywhere(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    before = xcom(first_release["run"], "record_release")["regions"]
    run, states = run_dag("releases.py", f"release_{APP}", {"version": HEALTHY})
    assert str(run.state) == "success", states
    assert states["canary.analysis"] == "success", states
    record = xcom(run, "record_release")
    for region in REGIONS:
        new, old = record["regions"][region]["live"], before[region]["live"]
        assert new["version"] == HEALTHY and new["color"] != old["color"]
        # The listener sends everything to the new color; the old group is kept for rollback.
        assert listener_weights(aws_account, region) == {f"{APP}-{new['color']}": 100}
        assert record["regions"][region]["kept"]["version"] == "1.0.0"
        assert f"{APP}-{region}-{old['color']}" in groups(aws_account, region)
        assert not {f"{APP}-{region}-canary", f"{APP}-{region}-baseline"} & groups(aws_account, region)
    # Both gates recorded their AWS console links during the run (what the task's extra links show).
    from immutable.ui.links import LINKS_XCOM_KEY, LoadBalancerStatsLink, PrometheusGraphLink, RegistryImageLink

    pilot = REGIONS[0]
    canary_links = xcom(run, "canary.analysis", key=LINKS_XCOM_KEY)
    assert canary_links[PrometheusGraphLink.name].startswith(f"https://{pilot}.console.aws.amazon.com/cloudwatch/")
    assert canary_links[LoadBalancerStatsLink.name].startswith(f"https://{pilot}.console.aws.amazon.com/ec2/")
    assert canary_links[RegistryImageLink.name].endswith(f"ImageDetails:imageId={record['digest']}")
    post_flip_links = xcom(run, "wave_1.post_flip_gate", map_index=0, key=LINKS_XCOM_KEY)
    assert post_flip_links[PrometheusGraphLink.name].startswith(f"https://{pilot}.console.aws.amazon.com/cloudwatch/")
    assert post_flip_links[RegistryImageLink.name].endswith(f"ImageDetails:imageId={record['digest']}")


def test_the_candidate_base_becomes_stable_once_the_canary_tier_runs_it(
    aws_account: AwsAccount, aws_base_candidate: str, first_release: dict[str, Any]
) -> None:
    def stable() -> list[str]:
        images = aws_account.client("ec2").describe_images(
            Owners=["self"], Filters=[{"Name": "tag:immutable:channel:stable", "Values": ["true"]}]
        )["Images"]
        return [i["ImageId"] for i in images]

    assert stable() == []
    run, states = run_dag("promote_base.py", "promote_base", {})
    assert str(run.state) == "success", states
    assert states["promote"] == "success", states  # sample (canary tier) runs the candidate everywhere
    assert stable() == [aws_base_candidate]


def test_a_bad_release_is_stopped_by_the_canary_and_rolled_back(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    weights_before = live_colors(aws_account)
    groups_before = {region: groups(aws_account, region) for region in REGIONS}
    run, states = run_dag("releases.py", f"release_{APP}", {"version": BAD})
    assert str(run.state) == "failed", states
    assert states["canary.analysis"] == "failed", states
    assert states["rollback"] == "success", states
    # Traffic never moved, and the canary and baseline groups are gone.
    assert live_colors(aws_account) == weights_before
    assert {region: groups(aws_account, region) for region in REGIONS} == groups_before
    assert all(weights for weights in weights_before.values())


def test_the_releases_page_reads_what_runs_where_on_aws(
    aws_account: AwsAccount, aws_base_candidate: str, first_release: dict[str, Any]
) -> None:
    """After the healthy release (and the bad one, rolled back): 1.1.0 live, 1.0.0 kept, per region,
    on the base AMI that promote_base made stable."""
    from immutable.config import load_platform
    from immutable.ui.releases import behind_stable, stable_base, what_runs_where

    placements = {p.region: p for p in what_runs_where([APP], load_platform())}
    assert sorted(placements) == sorted(REGIONS)
    stable = stable_base(load_platform())
    assert stable is not None and stable["digest"] == aws_base_candidate, stable
    assert behind_stable(list(placements.values()), stable) == []
    for region, placement in placements.items():
        assert placement.base == stable, (region, placement.base)
        assert placement.live is not None and placement.live["version"] == HEALTHY, placement
        assert listener_weights(aws_account, region) == {f"{APP}-{placement.live['color']}": 100}
        assert placement.kept is not None and placement.kept["version"] == "1.0.0", placement
        assert placement.sbom is not None and "/sboms/apps/sample/" in placement.sbom, placement  # its link


def test_the_rollback_dag_flips_every_region_back_to_the_kept_color(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    from immutable.config import load_platform
    from immutable.ui.releases import what_runs_where

    kept = {p.region: p.kept for p in what_runs_where([APP], load_platform())}
    run, states = run_dag("rollbacks.py", f"rollback_{APP}", {"regions": list(REGIONS), "reason": "test on aws"})
    assert str(run.state) == "success", states
    outcomes = {done["region"]: done for done in (xcom(run, "rollback_region", map_index=i) for i in range(3))}
    assert sorted(outcomes) == sorted(REGIONS)
    for region, done in outcomes.items():
        assert done["how"] == "flipped back to the kept color", done
        assert done["to"]["version"] == "1.0.0", done
        kept_color = (kept[region] or {}).get("color")
        assert kept_color, kept
        assert listener_weights(aws_account, region) == {f"{APP}-{kept_color}": 100}, region


def test_a_post_flip_regression_flips_back_to_the_live_color(
    aws_account: AwsAccount, first_release: dict[str, Any], metrics: AlbMetrics
) -> None:
    """The bad 1.2.0 flipped in by hand in one region: the post-flip gate (CloudWatch) fails it and
    the listener goes back to the color that was live, and the 1.2.0 group is removed."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from immutable.operators.gates import GateFailed, PostFlipGateOperator
    from immutable.pipelines import production as steps
    from immutable.ui.links import LINKS_XCOM_KEY, LoadBalancerStatsLink, PrometheusGraphLink, RegistryImageLink

    region = REGIONS[1]
    bad = aws_account.client("ec2").describe_images(
        Owners=["self"],
        Filters=[
            {"Name": "tag:immutable:repository", "Values": ["apps/sample"]},
            {"Name": "tag:org.opencontainers.image.version", "Values": [BAD]},
        ],
    )["Images"]
    assert bad, "the bad release baked 1.2.0 and copied it to every region"
    weights_before = listener_weights(aws_account, region)
    plan = {"app": APP, "version": BAD}
    launched = steps.launch_new_color(plan, {"digest": bad[0]["ImageId"]}, region, "test-post-flip")
    flipped = steps.flip(plan, launched, "test-post-flip")
    assert listener_weights(aws_account, region) == {f"{APP}-{flipped['color']}": 100}

    operator = PostFlipGateOperator(task_id="gate", app=APP, flipped=flipped)
    ti = RecordingTi()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti})
    # The gate's links are the AWS console's: the region's CloudWatch and ALB, the build region's AMI.
    links = ti.pushed[LINKS_XCOM_KEY]
    assert links[PrometheusGraphLink.name].startswith(f"https://{region}.console.aws.amazon.com/cloudwatch/")
    assert links[LoadBalancerStatsLink.name].startswith(f"https://{region}.console.aws.amazon.com/ec2/")
    assert links[RegistryImageLink.name].endswith(f"ImageDetails:imageId={flipped['digest']}")

    async def first_event() -> dict[str, Any]:
        async for event in deferred.value.trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    assert event["status"] == "fail", event
    with pytest.raises(GateFailed, match="went back to"):
        operator.execute_complete({"ti": ti}, event)
    assert ti.pushed["verdict"]["status"] == "fail"
    assert listener_weights(aws_account, region) == weights_before
    assert f"{APP}-{region}-{flipped['color']}" not in groups(aws_account, region)
    # The steps above ran outside a DAG run, so no teardown frees the region for the next release.
    assert steps.release_leases(APP, [region], "test-post-flip") == [region]


def test_a_synchronized_release_moves_every_regions_listener_in_lockstep_on_aws(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    """`rollout.synchronized: true`: after the canary every region's new group is launched, then one
    task moves all three listeners' weights step by step together."""
    from tests.integration.helpers import synchronized_rollout

    with synchronized_rollout():
        run, states = run_dag("releases.py", f"release_{APP}", {"version": SYNCHRONIZED})
    assert str(run.state) == "success", states
    assert states["all_regions.flip_all"] == "success", states
    assert not [task for task in states if task.startswith("wave_")], states
    flips = xcom(run, "all_regions.flip_all")
    assert sorted(f["region"] for f in flips) == sorted(REGIONS) and all(f["flipped"] for f in flips), flips
    assert 0 <= xcom(run, "all_regions.flip_all", key="skew_s") < 5
    record = xcom(run, "record_release")
    for region in REGIONS:
        live = record["regions"][region]["live"]
        assert live["version"] == SYNCHRONIZED, (region, live)
        assert listener_weights(aws_account, region) == {f"{APP}-{live['color']}": 100}, region


def test_a_stop_ends_the_canary_gate_on_aws_and_nothing_changes(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    """The stop is recorded in the artifact bucket (as stop_<app> does it); the canary gate, waiting
    for its intervals, hears of it within seconds and the release undoes itself."""
    import threading
    import time

    from immutable.platforms import platform_for

    pilot = REGIONS[0]
    weights_before = live_colors(aws_account)
    groups_before = {region: groups(aws_account, region) for region in REGIONS}
    production = platform_for().production
    asked: list[float] = []

    def stop_once_the_canary_runs() -> None:
        """Once the canary takes its share of the pilot's traffic: the gate is judging it then (its
        fleets were waited for in the triggerer before the listener gave it any)."""
        deadline = time.monotonic() + 600
        while not listener_weights(aws_account, pilot).get(f"{APP}-canary") and time.monotonic() < deadline:
            time.sleep(0.5)
        asked.append(time.time())
        for region in REGIONS:
            production.request_stop(APP, region, by="ops", reason="a test on aws", at=asked[0])

    stopper = threading.Thread(target=stop_once_the_canary_runs, daemon=True)
    stopper.start()
    run, states = run_dag("releases.py", f"release_{APP}", {"version": STOPPED})
    stopper.join(timeout=60)
    assert asked, "the canary never started"
    assert str(run.state) == "failed", states
    assert states["canary.analysis"] == "failed" and states["rollback"] == "success", states
    verdict = xcom(run, "canary.analysis", key="verdict")
    assert (verdict["status"], verdict["reason"]) == ("stopped", "Stopped by ops: a test on aws"), verdict
    assert verdict["failed_at"] - asked[0] < 10, verdict
    assert live_colors(aws_account) == weights_before
    assert {region: groups(aws_account, region) for region in REGIONS} == groups_before


def test_a_regression_in_the_second_wave_flips_every_region_back_on_aws(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    """us-east's new color answers 5xx to everyone (as the ALB reports it): its post-flip gate fails
    after the pilot's passed, and every region ends on the color live before."""
    weights_before = live_colors(aws_account)
    run, states = run_dag("releases.py", f"release_{APP}", {"version": FAILS_IN_THE_SECOND_WAVE})
    assert str(run.state) == "failed", states
    assert states["wave_1.post_flip_gate[0]"] == "success", states
    gates = {region: states[f"wave_2.post_flip_gate[{n}]"] for n, region in enumerate(REGIONS[1:])}
    assert gates == {REGIONS[1]: "failed", REGIONS[2]: "success"}, gates
    assert states["rollback"] == "success", states
    assert live_colors(aws_account) == weights_before
    for region in REGIONS:  # and no Auto Scaling group of the failed release is left
        running = versions_running(aws_account, region)
        assert running and FAILS_IN_THE_SECOND_WAVE not in running, (region, running)


def test_a_release_retires_only_the_kept_groups_past_their_window_on_aws(
    aws_account: AwsAccount, first_release: dict[str, Any]
) -> None:
    """A good release first, so that every region keeps the color it replaced; then two regions'
    rollback windows end. The bad release's `retire_expired` removes their kept groups, never the
    one still inside its window, and then its canary stops it."""
    from immutable.platforms import platform_for
    from tests.integration.helpers import expire_rollback_window

    production = platform_for().production
    run, states = run_dag("releases.py", f"release_{APP}", {"version": KEPT_EVERYWHERE})
    assert str(run.state) == "success", states
    kept: dict[str, dict[str, Any]] = {}
    for region in REGIONS:
        kept_there = production.kept(APP, region)
        assert kept_there is not None, region
        kept[region] = kept_there
    for region in PAST_THE_WINDOW:
        expire_rollback_window(production, APP, region)
    groups_before = {region: groups(aws_account, region) for region in REGIONS}

    run, states = run_dag("releases.py", f"release_{APP}", {"version": BAD})
    assert str(run.state) == "failed", states
    assert states["retire_expired"] == "success" and states["canary.analysis"] == "failed", states
    retired = xcom(run, "retire_expired")
    assert {region: bool(names) for region, names in retired.items()} == {
        INSIDE_THE_WINDOW: False,
        **dict.fromkeys(PAST_THE_WINDOW, True),
    }, retired
    for region in PAST_THE_WINDOW:
        assert production.kept(APP, region) is None, region
        kept_group = f"{APP}-{region}-{kept[region]['color']}"
        assert groups(aws_account, region) == groups_before[region] - {kept_group}, region
        assert versions_running(aws_account, region) == {KEPT_EVERYWHERE}, region
    assert production.kept(APP, INSIDE_THE_WINDOW) == kept[INSIDE_THE_WINDOW]
    assert groups(aws_account, INSIDE_THE_WINDOW) == groups_before[INSIDE_THE_WINDOW]


def test_the_rollback_dag_redeploys_by_ami_past_the_window_and_watches_it_on_aws(
    aws_account: AwsAccount, first_release: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the test above: eu-west flips back to its kept group; us-east and ap-south, whose kept
    groups were retired, get the earlier release's AMI launched anew (its fleet waited for in the
    triggerer, not on a worker), flipped to, and watched by the post-flip gate on CloudWatch."""
    from immutable.operators.fleets import RollbackRegionOperator
    from immutable.pipelines.production import REDEPLOYED

    deferred: list[tuple[str, str]] = []
    defer = RollbackRegionOperator.defer

    def recorded(self: RollbackRegionOperator, **kwargs: Any) -> None:
        deferred.append((self.region, type(kwargs["trigger"]).__name__))
        defer(self, **kwargs)

    monkeypatch.setattr(RollbackRegionOperator, "defer", recorded)
    run, states = run_dag("rollbacks.py", f"rollback_{APP}", {"regions": list(REGIONS), "reason": "past the window"})
    assert str(run.state) == "success", states
    # Only the redeploys wait, each in the triggerer (the provider's waiter on target health).
    assert sorted(set(deferred)) == [(region, "WaiterTrigger") for region in sorted(PAST_THE_WINDOW)], deferred
    outcomes = {done["region"]: done for done in (xcom(run, "rollback_region", map_index=i) for i in range(3))}
    assert outcomes[INSIDE_THE_WINDOW]["how"] == "flipped back to the kept color", outcomes
    assert sorted(r for r, done in outcomes.items() if done["how"] == REDEPLOYED) == sorted(PAST_THE_WINDOW), outcomes
    watched = sorted(xcom(run, "post_flip_gate", map_index=i)["region"] for i in range(len(PAST_THE_WINDOW)))
    assert watched == sorted(PAST_THE_WINDOW)
    assert all(states[f"post_flip_gate[{i}]"] == "success" for i in range(len(PAST_THE_WINDOW))), states
    for region, done in outcomes.items():
        assert done["to"]["version"] == SYNCHRONIZED, done
        assert listener_weights(aws_account, region) == {f"{APP}-{done['to']['color']}": 100}, region
        assert SYNCHRONIZED in versions_running(aws_account, region), region


def versions_running(account: AwsAccount, region: str) -> set[str]:
    found = account.client("autoscaling", region).describe_auto_scaling_groups()["AutoScalingGroups"]
    tags = [{t["Key"]: t["Value"] for t in g.get("Tags", [])} for g in found]
    return {t["immutable:version"] for t in tags if t.get("immutable:app") == APP and "immutable:version" in t}
