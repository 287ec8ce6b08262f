"""The rollout approval: what it says to the approver, and how each answer (or none) ends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from immutable.operators.approval import ApprovalRefused, RolloutApprovalOperator, approval_body, refusal_message

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
