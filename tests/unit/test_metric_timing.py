"""The gates' timing on a backend whose points come once a period and late (CloudWatch's ALB metrics)."""

from __future__ import annotations

import pytest

from immutable.metric_timing import (
    BackendTiming,
    GateTimingError,
    canary_timing,
    samples_for_confidence,
    step_for,
    threshold_timing,
)

PROMETHEUS = BackendTiming()
CLOUDWATCH = BackendTiming(period_s=60, delay_s=180)


def test_prometheus_keeps_the_specs_step_and_samples() -> None:
    timing = canary_timing(PROMETHEUS, step_s=5, interval_s=300, min_samples=50, confidence=0.98)
    assert (timing.step_s, timing.delay_s, timing.min_samples) == (5, 0, 50)


@pytest.mark.parametrize(("confidence", "samples"), [(0.9, 4), (0.95, 4), (0.98, 5), (0.99, 5), (0.999, 7)])
def test_the_samples_a_comparison_needs_follow_the_confidence(confidence: float, samples: int) -> None:
    assert samples_for_confidence(confidence) == samples


@pytest.mark.parametrize(("step", "expected"), [(5, 60), (60, 60), (61, 120), (180, 180)])
def test_the_step_is_a_whole_number_of_periods(step: float, expected: float) -> None:
    assert step_for(step, CLOUDWATCH) == expected


def test_a_canary_on_cloudwatch_steps_by_the_minute_waits_out_the_delay_and_asks_what_an_interval_holds() -> None:
    timing = canary_timing(CLOUDWATCH, step_s=5, interval_s=600, min_samples=50, confidence=0.98)
    assert timing.step_s == 60
    assert timing.delay_s == 180
    assert timing.min_samples == 9  # ten minutes hold nine whole one-minute points (the tenth is not over)
    assert canary_timing(CLOUDWATCH, step_s=60, interval_s=600, min_samples=6, confidence=0.98).min_samples == 6


def test_an_interval_too_short_for_a_verdict_names_the_field_and_the_least_that_works() -> None:
    with pytest.raises(
        GateTimingError,
        match=r"canary\.interval_s 300 holds 4 whole point\(s\).*needs at least 5 per side: make it at least 360s",
    ):
        canary_timing(CLOUDWATCH, step_s=5, interval_s=300, min_samples=50, confidence=0.98)


def test_the_post_flip_gate_looks_back_two_periods_and_waits_out_the_delay() -> None:
    timing = threshold_timing(CLOUDWATCH, step_s=5, window_s=600, rate_window_s=30)
    assert (timing.step_s, timing.delay_s, timing.lookback_s) == (60, 180, 120)
    local = threshold_timing(PROMETHEUS, step_s=5, window_s=120, rate_window_s=30)
    assert (local.step_s, local.delay_s, local.lookback_s) == (5, 0, 30)


def test_a_post_flip_window_shorter_than_a_period_names_the_field() -> None:
    with pytest.raises(GateTimingError, match=r"bluegreen\.post_flip_window_s 30 .* at least 60s"):
        threshold_timing(CLOUDWATCH, step_s=5, window_s=30, rate_window_s=30)
