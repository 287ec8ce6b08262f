"""The rollout planner and the post-flip threshold gate: pure decisions."""

from __future__ import annotations

import pytest

from immutable.gates import ThresholdState, evaluate, step
from immutable.rollout import plan_rollout

WAVES = [["eu-west"], ["us-east", "ap-south"], ["sa-east"]]
LIMITS = {"error_rate": (0.02, True), "latency_p90_s": (0.25, False)}


def test_waves_pilot_first_then_each_wave() -> None:
    steps = plan_rollout(WAVES, synchronized=False, approval=False)
    assert [(s.name, s.regions) for s in steps] == [
        ("wave_1", ("eu-west",)),
        ("wave_2", ("us-east", "ap-south")),
        ("wave_3", ("sa-east",)),
    ]
    assert not any(s.approval_before or s.synchronized for s in steps)


def test_approval_comes_before_leaving_the_pilot() -> None:
    steps = plan_rollout(WAVES, synchronized=False, approval=True)
    assert [s.approval_before for s in steps] == [False, True, False]


def test_synchronized_is_one_step_over_every_region() -> None:
    [only] = plan_rollout(WAVES, synchronized=True, approval=True)
    assert only.regions == ("eu-west", "us-east", "ap-south", "sa-east")
    assert only.synchronized and only.approval_before


def test_a_rollout_needs_a_pilot() -> None:
    with pytest.raises(ValueError, match="pilot"):
        plan_rollout([], synchronized=False, approval=False)


def test_values_within_limits_pass_and_missing_optional_data_is_fine() -> None:
    results = evaluate({"error_rate": 0.0, "latency_p90_s": None}, LIMITS)
    assert all(r.passed for r in results)


def test_missing_required_data_fails() -> None:
    [error_rate, _] = evaluate({"latency_p90_s": 0.1}, LIMITS)
    assert not error_rate.passed
    assert "must have data" in error_rate.reason


def test_one_bad_evaluation_is_noise_two_in_a_row_fail() -> None:
    state = ThresholdState()
    bad = evaluate({"error_rate": 0.3, "latency_p90_s": 0.1}, LIMITS)
    good = evaluate({"error_rate": 0.0, "latency_p90_s": 0.1}, LIMITS)
    state, verdict, _ = step(state, bad, failures_allowed=2, evaluations_planned=10)
    assert verdict == "continue"
    state, verdict, _ = step(state, good, failures_allowed=2, evaluations_planned=10)
    assert verdict == "continue" and state.consecutive_failures == 0
    state, verdict, _ = step(state, bad, failures_allowed=2, evaluations_planned=10)
    state, verdict, reason = step(state, bad, failures_allowed=2, evaluations_planned=10)
    assert verdict == "fail"
    assert "error_rate: 0.3 > max 0.02" in reason


def test_the_window_ends_in_a_pass() -> None:
    state = ThresholdState()
    good = evaluate({"error_rate": 0.0, "latency_p90_s": 0.1}, LIMITS)
    for _ in range(2):
        state, verdict, _ = step(state, good, failures_allowed=2, evaluations_planned=3)
        assert verdict == "continue"
    state, verdict, reason = step(state, good, failures_allowed=2, evaluations_planned=3)
    assert verdict == "pass"
    assert reason == "all 3 evaluations within limits"
    assert len(state.history) == 3
