"""Human approvals, answered over the REST API of the running Airflow (Airflow's HITL endpoints, as
the UI's approve and reject buttons call them). For these tests the sample's spec (the demo's copy
of include/apps) asks twice: after a marginal canary (`canary.on_marginal: ask`) and between the
pilot and the second wave (`approval: true`); the running dag-processor picks the edit up as it
would a user's. One release is approved at both questions and goes everywhere; one is rejected
after the pilot flipped; one gets no answer within the spec's `approval_timeout_s` (30 s in
tests/e2e/platform.yaml). Each release up to the approval takes minutes, so there are three."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.e2e.conftest import AIRFLOW_URL, APP, APPS_DIR, REGIONS, WEBHOOK_PORT, api, live_versions, why_failed
from tests.http_receiver import json_receiver

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


MARGINAL = "approve_marginal_canary"


def asks_twice(spec: str) -> str:
    asked = spec.replace("  on_marginal: fail\n", "  on_marginal: ask\n")
    return asked + "\napproval: true  # tests/e2e/test_rollout_approvals.py\n"


Approvals = tuple[Any, list[dict[str, Any]]]  # the REST client, and what the webhook received so far


@pytest.fixture(scope="module")
def approvals(demo: dict[str, Any]) -> Iterator[Approvals]:
    """The sample asks after a marginal canary and before its second wave while these tests run; the
    platform's webhook receives each question (yielded: the client, and the notifications so far)."""
    client = api(demo["password"])
    with json_receiver(WEBHOOK_PORT) as (_, notified), spec_edited(client, asks_twice, APPROVAL):
        wait_for_task(client, MARGINAL, present=True)
        yield client, notified


def assert_notified_once(notified: list[dict[str, Any]], run_id: str, task_id: str, subject: str) -> None:
    """The webhook heard of the question once, with what to answer and where."""
    found = [n for n in notified if n["run_id"] == run_id and n["task_id"] == task_id]
    assert len(found) == 1, notified
    assert found[0]["event"] == "approval_waiting" and found[0]["app"] == APP, found
    assert found[0]["subject"] == subject and found[0]["dag_id"] == DAG_ID, found
    assert found[0]["link"].startswith(f"{AIRFLOW_URL}/dags/{DAG_ID}/runs/"), found  # the task in this UI
    assert found[0]["link"].endswith(f"/tasks/{task_id}"), found


def awaiting_approval(client: Any, run_id: str, task_id: str = APPROVAL, timeout_s: float = 900) -> dict[str, Any]:
    """The approval's request (its subject, body and form) once the run waits for an answer."""
    from immutable.airflow_api import TERMINAL_RUN_STATES

    deadline = time.monotonic() + timeout_s
    # Airflow 3.3 parks a task waiting for a person in `awaiting_input` (no trigger, no triggerer).
    while client.task_states(DAG_ID, run_id).get(task_id) not in ("awaiting_input", "deferred"):
        assert time.monotonic() < deadline, client.task_states(DAG_ID, run_id)
        assert client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"] not in TERMINAL_RUN_STATES
        time.sleep(1)
    return dict(client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"))


# Airflow 3.3 resumes a parked task at once when the answer comes. An answer that comes before the
# scheduler has handled the parked workload's end (seconds on a busy machine: 5 s was not enough
# in CI) makes it take the resumed task for one killed from outside: it retries the task, which asks
# again, and the answer is lost. People take longer than that to answer; so does this test. The
# README says so under "What happens when…".
ANSWER_NOT_BEFORE_S = 20.0


def answer(client: Any, run_id: str, option: str, reason: str | None = None, task_id: str = APPROVAL) -> None:
    time.sleep(ANSWER_NOT_BEFORE_S)
    response = client.request(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {"reason": reason}},
    )
    assert response.status_code == 200, response.text


def approval_log(client: Any, run_id: str) -> str:
    """Every try's log (Airflow retries an approval answered too early: see ANSWER_NOT_BEFORE_S)."""
    tries = int(client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{APPROVAL}")["try_number"])
    return "\n".join(str(client.task_log(DAG_ID, run_id, APPROVAL, n)) for n in range(1, tries + 1))


def assert_asks_with_what_passed(request: dict[str, Any], version: str, canary: str = "pass") -> None:
    assert request["subject"] == f"Roll {APP} out to {', '.join(REGIONS[1:])}?", request
    body = request["body"]
    assert f"**{APP} {version}** waits for your approval" in body, body
    assert f"- Canary: {canary}, score" in body, body
    assert f"- Flipped so far: {PILOT} (post-flip gates passed)." in body, body
    assert "[This run](/dags/release_sample/runs/" in body, body
    assert request["options"] == ["Approve", "Reject"], request


def test_a_release_approved_after_a_marginal_canary_and_after_its_pilot_goes_everywhere(approvals: Approvals) -> None:
    """1.7.0 only turns slower: its last canary interval scores 50, marginal for the sample's spec, so
    instead of failing the release asks, showing the score tables. Approved, it flips the pilot and
    asks again before the second wave; approved again, it goes everywhere."""
    client, notified = approvals
    run_id = client.trigger_ok(DAG_ID, {"version": "1.7.0", "note": "e2e: approved twice"})
    request = awaiting_approval(client, run_id, MARGINAL)
    assert request["subject"] == f"Release {APP} 1.7.0 on a marginal canary?", request
    assert_notified_once(notified, run_id, MARGINAL, request["subject"])
    body = request["body"]
    assert "its canary was only marginal" in body and "a person decides (on_marginal: ask)" in body, body
    assert "interval 2:" in body and "latency_p90_s" in body and "error_rate" in body, body
    assert "nothing is flipped yet" in body and "1.7.0" not in live_versions().values()
    answer(client, run_id, "Approve", task_id=MARGINAL)

    request = awaiting_approval(client, run_id)
    assert_asks_with_what_passed(request, "1.7.0", canary="marginal")
    assert_notified_once(notified, run_id, APPROVAL, request["subject"])
    # While it waits, the pilot runs the new version and the second wave still the old one.
    waiting = live_versions()
    assert waiting[PILOT] == "1.7.0" and "1.7.0" not in [waiting[r] for r in REGIONS[1:]], waiting
    answer(client, run_id, "Approve")
    assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "success", why_failed(client, DAG_ID, run_id)
    assert live_versions() == dict.fromkeys(REGIONS, "1.7.0")
    assert "Approved by" in approval_log(client, run_id)


def test_a_rejected_rollout_flips_back_what_it_flipped_and_names_who_and_why(approvals: Approvals) -> None:
    client, notified = approvals
    before = live_versions()
    run_id = client.trigger_ok(DAG_ID, {"version": "1.6.0", "note": "e2e: rejected"})
    request = awaiting_approval(client, run_id)
    assert_asks_with_what_passed(request, "1.6.0")
    assert_notified_once(notified, run_id, APPROVAL, request["subject"])
    assert not [n for n in notified if n["run_id"] == run_id and n["task_id"] == MARGINAL]  # nothing asked
    assert live_versions()[PILOT] == "1.6.0"
    answer(client, run_id, "Reject", "error budget spent this week")
    assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "failed"
    states = client.task_states(DAG_ID, run_id)
    assert states[MARGINAL] == "success", states  # a canary that passed asks nothing
    assert states[APPROVAL] == "failed" and states["rollback"] == "success", states
    second_wave = {task: state for task, state in states.items() if task.startswith("wave_2.")}
    assert set(second_wave.values()) <= {"upstream_failed", "none"}, second_wave  # never launched
    log = approval_log(client, run_id)
    assert "Rejected by admin: error budget spent this week." in log, log[-2000:]
    assert live_versions() == before  # the pilot is back on what ran before


def test_an_approval_nobody_answers_ends_as_a_rejection_saying_it_timed_out(approvals: Approvals) -> None:
    client, notified = approvals
    before = live_versions()
    run_id = client.trigger_ok(DAG_ID, {"version": "1.6.0", "note": "e2e: nobody answers"})
    assert_notified_once(notified, run_id, APPROVAL, awaiting_approval(client, run_id)["subject"])
    asked_at = time.monotonic()
    assert client.wait_for_run(DAG_ID, run_id, timeout_s=900) == "failed"
    assert time.monotonic() - asked_at >= 25  # it waited for the timeout (30 s), not less
    states = client.task_states(DAG_ID, run_id)
    assert states[APPROVAL] == "failed" and states["rollback"] == "success", states
    log = approval_log(client, run_id)
    assert "Nobody answered the approval to roll sample out to us-east, ap-south within 0:00:30" in log, log[-2000:]
    assert live_versions() == before
    # 1.6.0 a second time, from the same source on the same base: the same image as the rejected run's,
    # not a new one baked from the same inputs; its labels still name the run that baked it.
    baked = client.xcom(DAG_ID, run_id, "bake")
    assert baked["labels"]["io.immutable.airflow.run-id"] != run_id, baked["labels"]
    assert "reusing it" in client.task_log(DAG_ID, run_id, "bake"), client.task_log(DAG_ID, run_id, "bake")[-2000:]
