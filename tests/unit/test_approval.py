"""The rollout approval: what it says to the approver, and how each answer (or none) ends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from immutable.operators.approval import (
    ApprovalRefused,
    MarginalCanaryApprovalOperator,
    RolloutApprovalOperator,
    approval_body,
    marginal_canary_body,
    refusal_message,
)

REGIONS = ["us-east", "ap-south"]


def answer(option: str, reason: str | None = None, user: str = "ops-oncall") -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {"reason": reason},
        "responded_at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        "responded_by_user": {"id": user, "name": user},
    }


def test_the_body_says_what_has_passed_so_far_with_links() -> None:
    body = approval_body(
        app="sample",
        version="1.4.0",
        canary={"status": "pass", "score": 100.0, "reason": "score 100 >= 95 after 2 intervals"},
        flipped=[{"region": "eu-west", "flipped": True}],
        links={"This run": "/dags/release_sample/runs/r1"},
    )
    assert body.startswith("**sample 1.4.0** waits for your approval")
    assert "- Canary: pass, score 100/100. score 100 >= 95 after 2 intervals" in body
    assert "- Flipped so far: eu-west (post-flip gates passed)." in body
    assert "- [This run](/dags/release_sample/runs/r1)" in body
    assert "- Canary: none ran." in approval_body(app="a", version="1.0.0", canary=None, flipped=[], links={})


def test_an_approval_lets_the_rollout_go_on() -> None:
    assert refusal_message(app="sample", regions=REGIONS, event=answer("Approve"), timeout=timedelta(hours=4)) is None


def test_a_rejection_names_who_and_why_and_what_happens_next() -> None:
    message = refusal_message(
        app="sample", regions=REGIONS, event=answer("Reject", "error budget spent"), timeout=timedelta(hours=4)
    )
    assert message == (
        "Rejected by ops-oncall: error budget spent. The rollout of sample to us-east, ap-south stops, and the "
        "rollback task sends back every region this run flipped."
    )
    unexplained = refusal_message(app="s", regions=REGIONS, event=answer("Reject"), timeout=timedelta(0))
    assert unexplained is not None and "Rejected by ops-oncall: no reason given." in unexplained


def test_no_answer_in_time_is_a_refusal_that_says_it_timed_out() -> None:
    event = {"error": "The Human-in-the-loop response timeout has passed without a response.", "error_type": "timeout"}
    message = refusal_message(app="sample", regions=REGIONS, event=event, timeout=timedelta(minutes=2))
    assert message == (
        "Nobody answered the approval to roll sample out to us-east, ap-south within 0:02:00: not approved, so the "
        "rollback task sends back every region this run flipped."
    )


def test_the_operator_fails_on_refusal_and_returns_the_answer_on_approval() -> None:
    operator = RolloutApprovalOperator(
        task_id="approve_rollout", app="sample", regions=REGIONS, timeout_s=120, previous_flips=["wave_1.flip"]
    )
    assert operator.response_timeout == timedelta(seconds=120)
    assert list(operator.params) == ["reason"]  # the approver's form asks for a reason only
    with pytest.raises(ApprovalRefused, match=r"^Rejected by ops-oncall: canary too short"):
        operator.execute_complete({}, answer("Reject", "canary too short"))
    with pytest.raises(ApprovalRefused, match=r"^Nobody answered"):
        operator.execute_complete({}, {"error": "timeout", "error_type": "timeout"})
    approved = operator.execute_complete({}, answer("Approve"))
    assert approved["chosen_options"] == ["Approve"]


def test_an_answer_that_fails_validation_is_a_refusal_naming_the_error() -> None:
    event = {"error": "reason: 'x' is too long", "error_type": "validation"}
    message = refusal_message(app="sample", regions=REGIONS, event=event, timeout=timedelta(minutes=2))
    assert message is not None
    assert message.startswith(
        "The answer to the approval to roll sample out to us-east, ap-south could not be used (reason: 'x' is too "
        "long): not approved"
    )


class CanaryTaskInstance:
    """What the marginal-canary approval pulls: the canary gate's verdict."""

    def __init__(self, canary: dict[str, Any]) -> None:
        self.canary = canary

    def xcom_pull(self, task_ids: str) -> dict[str, Any]:
        assert task_ids == "canary.analysis"
        return self.canary


def test_a_marginal_canary_is_asked_with_its_score_tables_and_a_refusal_stops_the_release() -> None:
    canary = {"status": "marginal", "canary_version": "1.7.0", "baseline_version": "1.6.0", "reason": "scored 50"}
    body = marginal_canary_body(app="sample", canary=canary, score_tables="interval 1:\nlatency_p90_s fail", links={})
    assert body.startswith("**sample 1.7.0**: its canary was only marginal. Release it anyway?")
    assert "- Verdict: scored 50" in body and "Production runs 1.6.0 meanwhile" in body
    assert "interval 1:\nlatency_p90_s fail" in body
    operator = MarginalCanaryApprovalOperator(task_id="approve_marginal_canary", app="sample", timeout_s=60)
    context = {"ti": CanaryTaskInstance(canary)}
    with pytest.raises(
        ApprovalRefused, match=r"^Rejected by ops-oncall: too slow\. The release of sample 1\.7\.0 stops"
    ):
        operator.execute_complete(context, answer("Reject", "too slow"))
    with pytest.raises(ApprovalRefused, match=r"^Nobody answered the approval to release sample 1\.7\.0 on a marginal"):
        operator.execute_complete(context, {"error": "timeout", "error_type": "timeout"})
    # After a clean pass nothing is asked: the task ends at once.
    assert operator.execute({"ti": CanaryTaskInstance({"status": "pass"})}) == {"asked": False, "canary": "pass"}
