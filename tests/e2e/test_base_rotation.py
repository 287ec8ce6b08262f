"""The base rotation on the demo's running Airflow: its scheduler, not the tests, starts every
release here. A new base candidate schedules the canary-tier app's release (its live version again,
on the new base); once that runs everywhere, promote_base makes the candidate stable, which
schedules the critical tier's. A canary that fails stops the rotation there; a fast-tracked
security rebuild goes to stable at once. The tests read the outcome where a user would: the
Releases page's JSON (what runs where, on which base) and the runs' task states and logs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import APP, CRITICAL_APP, api, releases_api, why_failed
from tests.integration.helpers import faults_in_new_containers

pytestmark = [pytest.mark.e2e, pytest.mark.changes_the_demo, pytest.mark.usefixtures("docker_engine")]

RUN_TIMEOUT_S = 900  # a whole release here takes two to four minutes
SCHEDULED_WITHIN_S = 120  # the scheduler creates an Asset-triggered run within seconds of the event


def rebuild_base(client: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """Trigger base_image as a person does; returns what it published (version, digest, ...)."""
    run_id = client.trigger_ok("base_image", conf)
    assert client.wait_for_run("base_image", run_id, timeout_s=RUN_TIMEOUT_S) == "success", why_failed(
        client, "base_image", run_id
    )
    assert client.task_states("base_image", run_id)["publish"] == "success"
    published: dict[str, Any] = client.xcom("base_image", run_id, "publish")
    return published


def at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def scheduled_runs(client: Any, dag_id: str, since: datetime) -> list[dict[str, Any]]:
    """The DAG's runs the scheduler started from an Asset event after `since`, oldest first."""
    runs = client.get(f"/dags/{dag_id}/dagRuns", order_by="-run_after", limit=20)["dag_runs"]
    return sorted(
        (r for r in runs if r["run_type"] == "asset_triggered" and at(r["run_after"]) >= since),
        key=lambda r: at(r["run_after"]),
    )


def next_scheduled_run(client: Any, dag_id: str, since: datetime) -> dict[str, Any]:
    deadline = time.monotonic() + SCHEDULED_WITHIN_S
    while not (found := scheduled_runs(client, dag_id, since)):
        assert time.monotonic() < deadline, f"the scheduler started no {dag_id} run since {since}"
        time.sleep(1)
    return found[0]


def finished(client: Any, dag_id: str, run: dict[str, Any]) -> tuple[str, dict[str, str]]:
    state = client.wait_for_run(dag_id, run["dag_run_id"], timeout_s=RUN_TIMEOUT_S)
    return state, client.task_states(dag_id, run["dag_run_id"])


def now() -> datetime:
    return datetime.now(UTC)


def bases(password: str) -> tuple[dict[tuple[str, str], tuple[str, str | None]], dict[str, Any] | None]:
    """(app, region) -> (live version, digest of the base under it); and the stable base."""
    served = releases_api(password)
    placements = {
        (p["app"], p["region"]): (p["live"]["version"], (p["base"] or {}).get("digest")) for p in served["placements"]
    }
    return placements, served["stable_base"]


def test_a_new_candidate_reaches_the_canary_tier_then_stable_then_the_critical_tier(demo: dict[str, Any]) -> None:
    client = api(demo["password"])
    before, _ = bases(demo["password"])
    since = now()
    candidate = rebuild_base(client, {"reason": "manual", "force": True})
    assert candidate["digest"] not in {digest for _, digest in before.values()}

    # The candidate's Asset event scheduled the canary tier's release: the live version, rebaked.
    canary_run = next_scheduled_run(client, f"release_{APP}", since)
    state, states = finished(client, f"release_{APP}", canary_run)
    assert state == "success", states
    assert all(states[t] == "success" for t in ("package", "bake", "canary.analysis", "record_release")), states
    plan = client.xcom(f"release_{APP}", canary_run["dag_run_id"], "validate")
    assert plan["rereleased"] and plan["base"]["digest"] == candidate["digest"], plan

    # Its release's Asset event ran promote_base, which promoted; stable then scheduled the critical tier.
    critical_run = next_scheduled_run(client, f"release_{CRITICAL_APP}", since)
    promotions = [
        r
        for r in scheduled_runs(client, "promote_base", since)
        if client.wait_for_run("promote_base", r["dag_run_id"], timeout_s=120) == "success"
        and client.task_states("promote_base", r["dag_run_id"]).get("promote") == "success"
    ]
    assert len(promotions) == 1, scheduled_runs(client, "promote_base", since)
    # The critical tier waited for stable: its run was queued once promote_base's promote task ran.
    promote = client.get(f"/dags/promote_base/dagRuns/{promotions[0]['dag_run_id']}/taskInstances/promote")
    assert at(critical_run["queued_at"]) >= at(promote["start_date"]), (critical_run, promote)
    state, states = finished(client, f"release_{CRITICAL_APP}", critical_run)
    assert state == "success", states
    critical_plan = client.xcom(f"release_{CRITICAL_APP}", critical_run["dag_run_id"], "validate")
    assert critical_plan["base"]["channel"] == "stable" and critical_plan["base"]["digest"] == candidate["digest"]

    after, stable = bases(demo["password"])
    assert stable is not None and stable["digest"] == candidate["digest"], stable
    assert set(after) == set(before)
    for where, (version, base) in after.items():
        assert version == before[where][0], (where, version, before[where])  # the same version, rebaked
        assert base == candidate["digest"], (where, base)
    assert releases_api(demo["password"])["behind_stable"] == []


def test_a_candidate_whose_canary_fails_stays_a_candidate_and_the_critical_tier_is_untouched(
    demo: dict[str, Any],
) -> None:
    client = api(demo["password"])
    before, stable_before = bases(demo["password"])
    assert stable_before is not None
    since = now()
    # This base breaks the app in production: its canary fails every request it gets (the fault is put
    # into the canary container as the engine creates it; dev and staging ran their own containers).
    canary_labels = ["io.immutable.platform=e2e", f"io.immutable.app.name={APP}", "io.immutable.region=eu-west"]
    with faults_in_new_containers(canary_labels, ("canary",), {"error_rate": 1.0}) as broken:
        candidate = rebuild_base(client, {"reason": "manual", "force": True})
        canary_run = next_scheduled_run(client, f"release_{APP}", since)
        state, states = finished(client, f"release_{APP}", canary_run)
    assert broken, "no canary container was created"
    assert state == "failed", states
    assert states["canary.analysis"] == "failed" and states["rollback"] == "success", states

    promotions = scheduled_runs(client, "promote_base", since)
    assert promotions, "the candidate's Asset event did not schedule promote_base"
    for run in promotions:
        assert client.wait_for_run("promote_base", run["dag_run_id"], timeout_s=120) == "success"
        assert client.task_states("promote_base", run["dag_run_id"])["promote"] == "skipped"
    said = client.task_log("promote_base", promotions[-1]["dag_run_id"], "check_promotion")
    assert f"candidate {candidate['version']} is not yet in production on every canary-tier app" in said, said
    assert f"{APP} in eu-west runs base {stable_before['digest']}" in said, said

    after, stable = bases(demo["password"])
    assert stable == stable_before
    assert after == before  # every app and region as it was: the canary tier rolled back, the critical untouched
    assert scheduled_runs(client, f"release_{CRITICAL_APP}", since) == []
    assert client.get(f"/dags/release_{CRITICAL_APP}/dagRuns", run_after_gte=since.isoformat())["total_entries"] == 0


def test_a_fast_tracked_security_rebuild_goes_to_stable_at_once_and_both_tiers_take_it(demo: dict[str, Any]) -> None:
    client = api(demo["password"])
    before, _ = bases(demo["password"])
    since = now()
    candidate = rebuild_base(
        client, {"reason": "security", "cves": ["CVE-2023-4911"], "force": True, "fast_track": True}
    )
    # The rebuild proved its fix (glibc at or above the tracker's fixed version) before it published.
    assert candidate["cves_verified"] == ["CVE-2023-4911"] and candidate["security_tracker"], candidate
    # Both tiers were scheduled at once: the critical tier's release did not wait for the canary tier's.
    canary_run = next_scheduled_run(client, f"release_{APP}", since)
    critical_run = next_scheduled_run(client, f"release_{CRITICAL_APP}", since)
    for dag_id, run in ((f"release_{APP}", canary_run), (f"release_{CRITICAL_APP}", critical_run)):
        state, states = finished(client, dag_id, run)
        assert state == "success", (dag_id, states)
    canary_ended = at(client.get(f"/dags/release_{APP}/dagRuns/{canary_run['dag_run_id']}")["end_date"])
    assert at(critical_run["queued_at"]) < canary_ended
    promotion = [
        r
        for r in scheduled_runs(client, "promote_base", since)
        if client.task_states("promote_base", r["dag_run_id"]).get("promote") == "success"
    ]
    assert len(promotion) == 1
    said = client.task_log("promote_base", promotion[0]["dag_run_id"], "promote")
    assert "fast_track: a security rebuild skips the canary-tier trial" in said, said

    after, stable = bases(demo["password"])
    assert stable is not None and stable["digest"] == candidate["digest"]
    for where, (version, base) in after.items():
        assert version == before[where][0] and base == candidate["digest"], (where, version, base)
