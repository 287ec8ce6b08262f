"""Production on the local platform, all real: HAProxy per region, Prometheus, a traffic generator,
app fleets as containers. Releases run through release_sample with dag.test(); the good ones are
the session's `two_good_releases` (tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from immutable.pipelines.production import REDEPLOYED
from tests.conftest import TEST_STATE
from tests.integration.helpers import (
    APP,
    REGIONS,
    expire_rollback_window,
    failed_requests,
    fleet_colors,
    live_versions,
    platform_variant,
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
    assert failed_requests(start, end, runs=[two_good_releases["second"]]) == []
    stats = read_stats(TEST_STATE)
    assert stats, "the traffic generator wrote no statistics"


def test_fleets_run_with_their_bases_network_tuning(two_good_releases: dict[str, Any]) -> None:
    """Each member's network namespace carries the drop-in's settings (read from /proc/sys inside
    it), which a container of the same image started without them does not."""
    from immutable.images.engine import docker_client, run_in_image
    from immutable.network_tuning import differences, for_container, proc_path, shipped_network_tuning

    expected = for_container(shipped_network_tuning())
    script = "; ".join(f"echo {key}=$(cat {proc_path(key)})" for key in expected)
    client = docker_client()
    for region in REGIONS:
        for member in production().fleets.members(APP, region):
            code, out = client.containers.get(member.name).exec_run(["sh", "-c", script])
            assert code == 0, out
            found = dict(line.split("=", 1) for line in out.decode().splitlines())
            assert differences(expected, found) == [], (member.name, found)
    image = client.containers.get(member.name).image.id
    code, untuned = run_in_image(client, image, ["sh", "-c", script])
    assert code == 0 and differences(expected, dict(line.split("=", 1) for line in untuned.splitlines())), untuned


def test_the_candidate_the_canary_tier_runs_everywhere_is_promoted_and_told(
    two_good_releases: dict[str, Any], notified: Any
) -> None:
    from immutable.config import load_base_spec, load_platform
    from immutable.registry import RegistryClient

    registry, repository = RegistryClient(load_platform().build_registry), load_base_spec().repository
    candidate = registry.manifest_digest(repository, "candidate")
    run, states = run_dag("promote_base.py", "promote_base", {})
    assert str(run.state) == "success" and states["promote"] == "success", states
    assert registry.manifest_digest(repository, "stable") == candidate
    [told] = notified.posted(run.run_id, "base_promoted")
    assert told["digest"] == candidate and "canary-tier apps ['sample'] run it" in told["cause"], told
    assert len(notified.mailed(run.run_id, "is stable")) == 1


def test_a_bad_release_is_stopped_by_the_canary_after_retiring_what_expired(
    two_good_releases: dict[str, Any], capfd: Any, notified: Any
) -> None:
    """The bad release's first production step retires kept colors past their window (us-east and
    ap-south here), never one still inside it (eu-west); then its canary stops it."""
    inside_window, expired = "eu-west", ["us-east", "ap-south"]
    kept = {region: production().kept(APP, region) for region in REGIONS}
    assert all(kept.values()), kept
    for region in expired:
        expire_rollback_window(production(), APP, region)
    before = {region: fleet_colors(region) for region in REGIONS}
    run, states = run_dag("releases.py", "release_sample", {"version": "1.2.0"})  # 30% errors, +40 ms
    capfd.readouterr()
    assert str(run.state) == "failed"
    assert states["retire_expired"] == "success", states
    assert states["canary.analysis"] == "failed"
    assert states["canary.end_canary"] == "success"
    assert states["wave_1.launch_new_color[0]"] == "upstream_failed"
    assert states["rollback"] == "success"
    # The cause sentence of the failed gate is asserted where users read it: the task log over REST
    # and in the browser (tests/e2e); dag.test() does not print an AirflowFailException's message.
    assert live_versions() == dict.fromkeys(REGIONS, "1.1.0")
    # Whoever configured notifications heard of it once, with the cause; nothing was flipped, so no
    # "rolled back" (the canary and baseline are removed by their teardown).
    [told] = notified.posted(run.run_id, "release_failed")
    assert told["app"] == APP and told["version"] == "1.2.0" and told["regions"] == REGIONS, told
    assert "failed its analysis" in told["cause"] and told["task_id"] == "canary.analysis", told
    assert told["link"].endswith("/tasks/canary.analysis")
    assert len(notified.mailed(run.run_id, "The release of sample 1.2.0 failed at canary.analysis")) == 1
    assert notified.posted(run.run_id, "rolled_back") == []
    retired = xcom(run, "retire_expired")
    assert {region: bool(names) for region, names in retired.items()} == {
        inside_window: False,
        **dict.fromkeys(expired, True),
    }, retired
    for region in expired:
        assert fleet_colors(region) == {production().live(APP, region)["color"]: "1.1.0"}, fleet_colors(region)
        assert production().kept(APP, region) is None
    # Inside its window: untouched. And neither canary, baseline nor a new color was left behind.
    assert production().kept(APP, inside_window) == kept[inside_window]
    assert fleet_colors(inside_window) == before[inside_window]


def test_a_marginal_canary_fails_the_release_when_the_spec_says_fail(two_good_releases: dict[str, Any]) -> None:
    """1.7.0 only turns slower: the latency metric fails, error_rate passes, the last interval scores 50,
    marginal for the sample's spec (marginal_score 40). With on_marginal: fail (the sample's setting)
    the gate runs every interval, then fails the release; production is untouched."""
    before = {region: fleet_colors(region) for region in REGIONS}
    run, states = run_dag("releases.py", "release_sample", {"version": "1.7.0"})
    assert str(run.state) == "failed", states
    assert states["canary.analysis"] == "failed" and states["rollback"] == "success", states
    assert "approve_marginal_canary" not in states, states  # on_marginal: fail asks nobody
    verdict = xcom(run, "canary.analysis", key="verdict")
    assert verdict["status"] == "fail", verdict
    assert "all 2 intervals judged, but the last was only marginal: it scored 50" in verdict["reason"], verdict
    assert verdict["reason"].endswith("(on_marginal: fail)"), verdict
    assert {region: fleet_colors(region) for region in REGIONS} == before


def test_the_rollback_dag_flips_back_or_redeploys_past_the_window_and_watches_it(
    two_good_releases: dict[str, Any], notified: Any
) -> None:
    """eu-west still keeps 1.0.0: a flip back. us-east and ap-south retired theirs: 1.0.0 is launched
    anew by digest, flipped to, and watched by the post-flip gate."""
    run, states = run_dag("rollbacks.py", "rollback_sample", {"regions": REGIONS, "reason": "test"})
    assert str(run.state) == "success", states
    outcomes = {done["region"]: done for done in (xcom(run, "rollback_region", map_index=i) for i in range(3))}
    assert sorted(outcomes) == sorted(REGIONS)
    redeployed = sorted(region for region, done in outcomes.items() if done["how"] == REDEPLOYED)
    assert redeployed == ["ap-south", "us-east"], outcomes
    assert outcomes["eu-west"]["how"] == "flipped back to the kept color", outcomes
    for done in outcomes.values():
        assert done["to"]["version"] == "1.0.0", done
    # One post-flip gate per redeployed region, and each passed on the platform's live series.
    watched = sorted(xcom(run, "post_flip_gate", map_index=i)["region"] for i in range(len(redeployed)))
    assert watched == redeployed
    assert [states[f"post_flip_gate[{i}]"] for i in range(len(redeployed))] == ["success"] * 2, states
    assert live_versions() == dict.fromkeys(REGIONS, "1.0.0")
    [told] = notified.posted(run.run_id, "rolled_back")
    assert told["app"] == APP and told["version"] == "1.0.0" and told["regions"] == sorted(REGIONS), told
    assert REDEPLOYED in told["cause"] and "flipped back to the kept color" in told["cause"], told
    assert len(notified.mailed(run.run_id, "sample was rolled back to 1.0.0")) == 1


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


def test_a_release_keeps_only_the_newest_images_and_those_in_use_and_frees_their_storage(
    two_good_releases: dict[str, Any],
) -> None:
    """Last of this module (it deletes images). With `local.image_retention.keep: 1`, the bad
    release's `retire_expired` leaves in each registry the app's newest image (its own), and every
    image still in use: live and kept colors, the release a rollback past its window would redeploy.
    The rest go with their signatures and wheels, and the registries' disk use goes down."""
    from immutable.config import load_platform
    from immutable.local.images import LocalImages
    from immutable.local.registry_retention import digests_in_use, disk_use, manifest_revisions, stored_images
    from immutable.signing import signature_tag

    images = LocalImages(load_platform())
    repository = "apps/sample"
    registries = {"build": images.build} | {region: images.registry(region) for region in REGIONS}

    def stored(name: str) -> dict[str, Any]:
        return {i.digest: i for i in stored_images(registries[name], repository, manifest_revisions(name, repository))}

    before = {name: stored(name) for name in registries}
    bytes_before = {name: disk_use(name) for name in registries}
    in_use = set(digests_in_use("test"))
    assert all(len(stored) > len(in_use & set(stored)) + 1 for stored in before.values()), (before, in_use)

    def keep_one(data: dict[str, Any]) -> None:
        data["local"]["image_retention"] = {"keep": 1}

    with platform_variant("retention", keep_one):
        # 1.2.1: as bad as 1.2.0, but never built, so its image is the newest (1.2.0 again would reuse
        # the image baked earlier in this module).
        run, states = run_dag("releases.py", "release_sample", {"version": "1.2.1"})  # stopped by its canary
    assert states["retire_expired"] == "success" and states["canary.analysis"] == "failed", states
    releasing = xcom(run, "bake")["digest"]
    for name, registry in registries.items():
        after = stored(name)
        assert set(after) == {releasing} | (in_use & set(before[name])), (name, after, in_use)
        kept_tags = {tag for image in after.values() for tag in image.tags}
        for gone in set(before[name]) - set(after):
            assert registry.manifest_digest(repository, signature_tag(gone)) is None, (name, gone)
            if name == "build":  # and the wheels of a version no kept image carries
                for tag in set(before[name][gone].tags) - kept_tags:
                    assert registry.manifest_digest("artifacts/sample", tag) is None, (gone, tag)
        assert disk_use(name) < bytes_before[name], name
    assert live_versions() == dict.fromkeys(REGIONS, "1.0.0")  # what runs was never touched
