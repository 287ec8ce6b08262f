"""Stopping a release in progress, as a person does it in the running Airflow: the stop_<app> form
(over REST, as the UI's trigger form sends it), and marking the release run failed. Either way every
region ends on the version that ran before, with no user request failed and no fleet of the stopped
release left. Runs after the approval tests (tests/e2e/test_rollout_approvals.py)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.conftest import APP, PLATFORM_FILE, REGIONS, STATE, WEBHOOK_PORT, api, live_versions
from tests.http_receiver import json_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.changes_the_demo, pytest.mark.usefixtures("docker_engine")]

DAG_ID = f"release_{APP}"
STOP_DAG_ID = f"stop_{APP}"
VERSION = "1.6.0"  # built by the approval tests: these releases reuse its image
PILOT = REGIONS[0]


def wait_for_task_state(client: Any, run_id: str, task: str, state: str, timeout_s: float = 900) -> None:
    from immutable.airflow_api import TERMINAL_RUN_STATES

    deadline = time.monotonic() + timeout_s
    while client.task_states(DAG_ID, run_id).get(task) != state:
        assert time.monotonic() < deadline, client.task_states(DAG_ID, run_id)
        assert client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"] not in TERMINAL_RUN_STATES
        time.sleep(0.5)


def versions_running() -> set[str]:
    from immutable.images.engine import docker_client

    found = docker_client().containers.list(
        ignore_removed=True,
        all=True,
        filters={"label": ["io.immutable.platform=e2e", "io.immutable.role=fleet", f"io.immutable.app.name={APP}"]},
    )
    return {c.labels["io.immutable.version"] for c in found}


def assert_as_before(before: dict[str, str | None], started: float) -> None:
    from immutable.local.traffic import failures_between

    assert live_versions() == before
    assert VERSION not in versions_running()
    assert failures_between(STATE, started, time.time()) == []


def test_the_stop_form_stops_a_release_within_seconds_and_it_flips_back_what_it_flipped(
    demo: dict[str, Any],
) -> None:
    client = api(demo["password"])
    before = live_versions()
    assert VERSION not in before.values(), before
    started = time.time()
    run_id = client.trigger_ok(DAG_ID, {"version": VERSION, "note": "e2e: stopped by a person"})
    wait_for_task_state(client, run_id, "wave_1.post_flip_gate[0]", "deferred")  # the pilot is flipped
    assert live_versions()[PILOT] == VERSION
    with json_receiver(WEBHOOK_PORT) as (_, notified):
        stop_run = client.trigger_ok(STOP_DAG_ID, {"reason": "e2e: the payment provider is down"})
        assert client.wait_for_run(DAG_ID, run_id, timeout_s=600) == "failed"
        assert client.wait_for_run(STOP_DAG_ID, stop_run, timeout_s=600) == "success"
    # The webhook that asked for stops heard of this one once: who, why, where (tests/e2e/platform.yaml).
    [told] = [n for n in notified if n["event"] == "stopped"]
    assert told["app"] == APP and told["cause"] == "stopped by admin: e2e: the payment provider is down", told
    assert told["run_id"] == stop_run and sorted(told["regions"]) == sorted(REGIONS), told
    states = client.task_states(DAG_ID, run_id)
    assert states["wave_1.post_flip_gate[0]"] == "failed" and states["rollback"] == "success", states
    gate = client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/wave_1.post_flip_gate/0")
    recorded_at = client.xcom(STOP_DAG_ID, stop_run, "request_stop")["at"]
    verdict = client.xcom(DAG_ID, run_id, "wave_1.post_flip_gate", key="verdict", map_index=0)
    assert verdict["status"] == "stopped", verdict
    # The trigger looks every 2 s: it hears of the stop within seconds. Read from its log line in the
    # gate's first try: Airflow may start a second one (a late executor event of the try's deferral,
    # read after the resumed try had started, counts as "state changed externally": up for retry),
    # and that one hears of the stop at once, after the retry delay, and overwrites the verdict.
    heard = [
        datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        for event in client.task_log_events(DAG_ID, run_id, "wave_1.post_flip_gate", 1, map_index=0)
        if isinstance(event, dict) and "the gate ends here" in str(event.get("event")) and event.get("timestamp")
    ]
    assert heard, "the gate's first try never logged the stop"
    heard_s = min(heard) - recorded_at
    assert 0 < heard_s < 10, f"the gate heard of the stop {heard_s:.1f}s after it was recorded"
    # Then the task resumes on a worker and flips the pilot back (a drain): well under a minute.
    ended_s = datetime.fromisoformat(gate["end_date"]).timestamp() - recorded_at
    assert ended_s < 60, f"the gate ended {ended_s:.1f}s after the stop was recorded"
    log = client.task_log(DAG_ID, run_id, "wave_1.post_flip_gate", 1, map_index=0)
    assert "Stopped by admin: e2e: the payment provider is down." in log, log[-2000:]
    assert_as_before(before, started)
    after = client.xcom(STOP_DAG_ID, stop_run, "make_safe")
    assert sorted(after) == sorted(REGIONS), after
    assert all(line.startswith("its release undid itself; live: ") for line in after.values()), after


def test_a_release_marked_failed_halfway_through_a_flip_is_undone(demo: dict[str, Any]) -> None:
    """The run ends at once: its rollback task never runs. The stop DAG, triggered by the project's
    listener when a person marks a release failed, undoes the half-done flip instead."""
    from immutable.config import load_platform
    from immutable.local.loadbalancer import LoadBalancer

    client = api(demo["password"])
    before = live_versions()
    started = time.time()
    run_id = client.trigger_ok(DAG_ID, {"version": VERSION, "note": "e2e: marked failed"})
    wait_for_task_state(client, run_id, "wave_1.flip[0]", "running")
    balancer = LoadBalancer(load_platform(PLATFORM_FILE).region(PILOT), STATE)
    deadline = time.monotonic() + 120
    while sorted(v for v in balancer.shares(APP).values() if v) != [50.0, 50.0]:
        assert time.monotonic() < deadline, balancer.shares(APP)
        time.sleep(0.1)
    response = client.request("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    assert response.status_code == 200, response.text

    deadline = time.monotonic() + 120
    while not (runs := client.get(f"/dags/{STOP_DAG_ID}/dagRuns", order_by="-run_after", limit=5)["dag_runs"]) or (
        run_id not in str(runs[0].get("conf", {}).get("reason", ""))
    ):
        assert time.monotonic() < deadline, f"no {STOP_DAG_ID} run for {run_id}: {runs}"
        time.sleep(1)
    assert client.wait_for_run(STOP_DAG_ID, runs[0]["dag_run_id"], timeout_s=600) == "success"
    states = client.task_states(DAG_ID, run_id)
    assert states["rollback"] != "success", states  # the run's own rollback never ran: the stop DAG undid it
    undone = client.xcom(STOP_DAG_ID, runs[0]["dag_run_id"], "make_safe")
    # Back to the color live before, the new one removed (the run's teardown may have freed its lease).
    assert "traffic went back to" in undone[PILOT] and "removed" in undone[PILOT], undone
    assert_as_before(before, started)
    shares = balancer.shares(APP)
    assert sorted(v for v in shares.values() if v) == [100.0], shares  # one color, all the traffic
