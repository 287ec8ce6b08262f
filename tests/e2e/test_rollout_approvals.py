"""Human approvals, answered over the REST API of the running Airflow (Airflow's HITL endpoints, as
the UI's approve and reject buttons call them). Between the pilot and the second wave: approve,
reject with a reason, and nobody answering within the spec's `approval_timeout_s` (40 s in
tests/e2e/platform.yaml). After a marginal canary with `on_marginal: ask`: the score tables are
shown, and an approval lets the release go on. The sample's spec in the demo's copy of include/apps
is edited for these tests; the running dag-processor picks each change up as it would a user's."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.e2e.conftest import APP, APPS_DIR, REGIONS, api, live_versions

pytestmark = [pytest.mark.e2e, pytest.mark.changes_the_demo, pytest.mark.usefixtures("docker_engine")]

DAG_ID = f"release_{APP}"
APPROVAL = "approve_rollout"
PILOT = REGIONS[0]


def wait_for_task(client: Any, task_id: str, present: bool, timeout_s: float = 180) -> None:
    """Until the parsed release DAG has (or no longer has) the task."""
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = {t["task_id"] for t in client.get(f"/dags/{DAG_ID}/tasks")["tasks"]}
        if (task_id in tasks) == present:
            return
        assert time.monotonic() < deadline, f"{DAG_ID} still {'lacks' if present else 'has'} {task_id}: {tasks}"
        time.sleep(2)


@contextmanager
def spec_edited(client: Any, edit: Callable[[str], str], task_id: str) -> Generator[None]:
    """The sample's spec changed by `edit` until the block ends, each way once the running
    dag-processor has parsed it (the new task appears, then goes)."""
    spec = APPS_DIR / f"{APP}.yaml"
    original = spec.read_text()
    edited = edit(original)
    assert edited != original
    spec.write_text(edited)
    try:
        wait_for_task(client, task_id, present=True)
        yield
    finally:
        spec.write_text(original)
        wait_for_task(client, task_id, present=False)


@pytest.fixture(scope="module")
def approvals(demo: dict[str, Any]) -> Iterator[Any]:
    """The sample asks for approval before its second wave while the rollout tests run."""
    client = api(demo["password"])
    with spec_edited(client, lambda text: text + "\napproval: true  # tests/e2e/test_rollout_approvals.py\n", APPROVAL):
        yield client


def awaiting_approval(client: Any, run_id: str, task_id: str = APPROVAL, timeout_s: float = 900) -> dict[str, Any]:
    """The approval's request (its subject, body and form) once the run waits for an answer."""
    from immutable.airflow_api import TERMINAL_RUN_STATES

    deadline = time.monotonic() + timeout_s
    while client.task_states(DAG_ID, run_id).get(task_id) != "deferred":
        assert time.monotonic() < deadline, client.task_states(DAG_ID, run_id)
        assert client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"] not in TERMINAL_RUN_STATES
        time.sleep(1)
    return dict(client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"))


def answer(client: Any, run_id: str, option: str, reason: str | None = None, task_id: str = APPROVAL) -> None:
    response = client.request(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {"reason": reason}},
    )
    assert response.status_code == 200, response.text


def approval_log(client: Any, run_id: str) -> str:
    return str(client.task_log(DAG_ID, run_id, APPROVAL))


def assert_asks_with_what_passed(request: dict[str, Any], version: str) -> None:
    assert request["subject"] == f"Roll {APP} out to {', '.join(REGIONS[1:])}?", request
    body = request["body"]
    assert f"**{APP} {version}** waits for your approval" in body, body
    assert "- Canary: pass, score" in body, body
    assert f"- Flipped so far: {PILOT} (post-flip gates passed)." in body, body
    assert "[This run](/dags/release_sample/runs/" in body, body
    assert request["options"] == ["Approve", "Reject"], request


def test_an_approved_rollout_goes_on_to_every_region(approvals: Any) -> None:
    client = approvals
    run_id = client.trigger_ok(DAG_ID, {"version": "1.5.0", "note": "e2e: approved"})
    request = awaiting_approval(client, run_id)
    assert_asks_with_what_passed(request, "1.5.0")
    # While it waits, the pilot runs the new version and the second wave still the old one.
    waiting = live_versions()
    assert waiting[PILOT] == "1.5.0" and "1.5.0" not in [waiting[r] for r in REGIONS[1:]], waiting
    answer(client, run_id, "Approve")
    assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "success"
    assert live_versions() == dict.fromkeys(REGIONS, "1.5.0")
    assert "Approved by" in approval_log(client, run_id)


def test_a_rejected_rollout_flips_back_what_it_flipped_and_names_who_and_why(approvals: Any) -> None:
    client = approvals
    before = live_versions()
    run_id = client.trigger_ok(DAG_ID, {"version": "1.6.0", "note": "e2e: rejected"})
    assert_asks_with_what_passed(awaiting_approval(client, run_id), "1.6.0")
    assert live_versions()[PILOT] == "1.6.0"
    answer(client, run_id, "Reject", "error budget spent this week")
    assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "failed"
    states = client.task_states(DAG_ID, run_id)
    assert states[APPROVAL] == "failed" and states["rollback"] == "success", states
    second_wave = {task: state for task, state in states.items() if task.startswith("wave_2.")}
    assert set(second_wave.values()) <= {"upstream_failed", "none"}, second_wave  # never launched
    log = approval_log(client, run_id)
    assert "Rejected by admin: error budget spent this week." in log, log[-2000:]
    assert live_versions() == before  # the pilot is back on what ran before


def test_an_approval_nobody_answers_ends_as_a_rejection_saying_it_timed_out(approvals: Any) -> None:
    client = approvals
    before = live_versions()
    run_id = client.trigger_ok(DAG_ID, {"version": "1.6.0", "note": "e2e: nobody answers"})
    awaiting_approval(client, run_id)
    asked_at = time.monotonic()
    assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "failed"
    assert time.monotonic() - asked_at >= 30  # it waited for the timeout (40 s), not less
    states = client.task_states(DAG_ID, run_id)
    assert states[APPROVAL] == "failed" and states["rollback"] == "success", states
    log = approval_log(client, run_id)
    assert "Nobody answered the approval to roll sample out to us-east, ap-south within 0:00:40" in log, log[-2000:]
    assert live_versions() == before


def test_a_marginal_canary_asks_a_person_with_the_score_tables_when_the_spec_says_ask(demo: dict[str, Any]) -> None:
    """1.7.0 only turns slower: every canary interval scores 50, marginal for the sample's spec. With
    `on_marginal: ask` the release waits for a person instead of failing; approved, it goes on."""
    client = api(demo["password"])
    task_id = "approve_marginal_canary"

    def ask(text: str) -> str:
        return text.replace("  on_marginal: fail\n", "  on_marginal: ask\n")

    with spec_edited(client, ask, task_id):
        run_id = client.trigger_ok(DAG_ID, {"version": "1.7.0", "note": "e2e: marginal canary"})
        request = awaiting_approval(client, run_id, task_id)
        assert request["subject"] == f"Release {APP} 1.7.0 on a marginal canary?", request
        body = request["body"]
        assert "its canary was only marginal" in body and "a person decides (on_marginal: ask)" in body, body
        assert "interval 2:" in body and "latency_p90_s" in body and "error_rate" in body, body
        assert "nothing is flipped yet" in body and "1.7.0" not in live_versions().values()
        answer(client, run_id, "Approve", task_id=task_id)
        assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "success"
    assert live_versions() == dict.fromkeys(REGIONS, "1.7.0")
