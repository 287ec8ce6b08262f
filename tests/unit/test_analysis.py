from __future__ import annotations

import json
import math

import numpy as np
import pytest

from immutable.analysis import (
    AnalysisConfig,
    GateDecision,
    IntervalResult,
    MetricConfig,
    MetricResult,
    MetricSamples,
    SampleSummary,
    classify_score,
    format_table,
    gate_decision,
    hodges_lehmann,
    judge_interval,
    judge_metric,
    score_interval,
)

N = 200  # samples per side: comfortably above the default min_samples of 50


def normal(seed: int, mean: float, sd: float, n: int = N) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).normal(mean, sd, n)]


def metric_result(
    name: str,
    passed: bool,
    *,
    counted: bool = True,
    group: str = "default",
    critical: bool = False,
) -> MetricResult:
    """A hand-made result, to test the scoring apart from the statistics."""
    summary = SampleSummary(N, 1.0, 1.0)
    return MetricResult(
        name=name,
        classification="pass" if passed else "high",
        passed=passed,
        counted=counted,
        canary=summary,
        baseline=summary,
        p_value=0.5,
        shift=0.0,
        tolerance=0.25,
        reason="hand-made",
        group=group,
        critical=critical,
    )


def interval(score: float) -> IntervalResult:
    return IntervalResult(metrics=(), score=score, classification=classify_score(score), reason=f"scored {score}")


# --- one metric ---------------------------------------------------------------------------------


def test_same_distribution_passes() -> None:
    result = judge_metric(MetricConfig("latency_s"), normal(1, 0.2, 0.02), normal(2, 0.2, 0.02))
    assert result.classification == "pass"
    assert result.passed and result.counted
    assert result.p_value is not None and result.p_value >= 0.02
    assert "no significant difference" in result.reason
    assert result.canary.count == N and result.baseline.count == N


def test_upward_regression_fails_an_increase_metric() -> None:
    result = judge_metric(MetricConfig("latency_s", direction="increase"), normal(3, 0.5, 0.05), normal(4, 0.2, 0.05))
    assert result.classification == "high"
    assert not result.passed and result.counted
    assert result.p_value is not None and result.p_value < 0.02
    assert result.shift == pytest.approx(0.3, abs=0.03)
    assert "significantly higher" in result.reason
    assert "canary median 0.50 vs baseline 0.20" in result.reason


def test_downward_regression_fails_a_decrease_metric() -> None:
    result = judge_metric(MetricConfig("throughput_rps", direction="decrease"), normal(5, 60, 5), normal(6, 100, 5))
    assert result.classification == "low"
    assert not result.passed
    assert result.shift == pytest.approx(-40, abs=2)
    assert "significantly lower" in result.reason


def test_drop_of_an_increase_metric_passes_but_reports_low() -> None:
    result = judge_metric(MetricConfig("latency_s", direction="increase"), normal(7, 0.1, 0.02), normal(8, 0.3, 0.02))
    assert result.classification == "low"  # the true classification is kept
    assert result.passed and result.counted
    assert "significantly lower" in result.reason and "only a rise is bad" in result.reason


def test_rise_of_a_decrease_metric_passes_but_reports_high() -> None:
    result = judge_metric(MetricConfig("throughput_rps", direction="decrease"), normal(7, 150, 5), normal(8, 100, 5))
    assert result.classification == "high"
    assert result.passed
    assert "only a fall is bad" in result.reason


@pytest.mark.parametrize(("canary_mean", "expected"), [(0.5, "high"), (0.05, "low")])
def test_either_direction_fails_both_ways(canary_mean: float, expected: str) -> None:
    result = judge_metric(MetricConfig("cpu", direction="either"), normal(9, canary_mean, 0.02), normal(10, 0.2, 0.02))
    assert result.classification == expected
    assert not result.passed


def test_noisy_equal_distributions_pass() -> None:
    # Heavy-tailed and noisy (lognormal with a large sigma) but drawn from the same distribution.
    rng = np.random.default_rng(7)
    canary = list(rng.lognormal(0.0, 1.5, 300))
    baseline = list(rng.lognormal(0.0, 1.5, 300))
    result = judge_metric(MetricConfig("latency_s"), canary, baseline)
    assert result.classification == "pass"
    assert result.passed


def test_small_significant_shift_within_tolerance_passes() -> None:
    # A 5% rise with tiny noise: Mann-Whitney is sure it is real, but 5% is within the 25% tolerance.
    metric = MetricConfig("latency_s", direction="increase")
    result = judge_metric(metric, normal(11, 1.05, 0.01, 500), normal(12, 1.0, 0.01, 500))
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.classification == "pass" and result.passed
    assert result.tolerance == pytest.approx(0.25, rel=0.02)
    assert "within tolerance" in result.reason
    # With no relative tolerance and an absolute one below the shift, the same samples fail.
    strict = MetricConfig("latency_s", direction="increase", tolerance_rel=0.0, tolerance_abs=0.01)
    tight = judge_metric(strict, normal(11, 1.05, 0.01, 500), normal(12, 1.0, 0.01, 500))
    assert tight.classification == "high" and not tight.passed
    assert tight.tolerance == pytest.approx(0.01)


def test_tolerance_abs_wins_over_a_zero_baseline() -> None:
    # A baseline median of 0 gives no relative tolerance; the absolute one still applies.
    metric = MetricConfig("errors_per_s", tolerance_abs=0.5)
    result = judge_metric(metric, normal(13, 0.2, 0.01), [0.0] * N)
    assert result.tolerance == pytest.approx(0.5)
    assert result.classification == "pass"


def test_reason_keeps_small_values_readable() -> None:
    result = judge_metric(MetricConfig("error_ratio"), normal(31, 0.0123, 0.001), normal(32, 0.0123, 0.001))
    assert "canary median 0.012 vs baseline 0.012" in result.reason
    tiny = judge_metric(MetricConfig("error_ratio"), normal(33, 2e-6, 1e-7), normal(34, 2e-6, 1e-7))
    assert "e-06" in tiny.reason


def test_too_few_samples_names_the_counts_and_fails() -> None:
    result = judge_metric(MetricConfig("latency_s"), normal(14, 1, 0.1, 12), normal(15, 1, 0.1, 40))
    assert result.classification == "too_few"
    assert not result.passed and result.counted
    assert "too few samples: canary 12, baseline 40, need 50" in result.reason
    assert result.p_value is None and result.shift is None
    assert result.canary.count == 12 and result.baseline.count == 40


def test_min_samples_is_configurable() -> None:
    result = judge_metric(
        MetricConfig("latency_s"), normal(14, 1, 0.1, 12), normal(15, 1, 0.1, 40), AnalysisConfig(min_samples=10)
    )
    assert result.classification == "pass"


def test_nan_values_are_dropped_before_judging() -> None:
    canary = normal(16, 1, 0.1, 60) + [math.nan] * 20
    result = judge_metric(MetricConfig("latency_s"), canary, normal(17, 1, 0.1, 60))
    assert result.canary.count == 60
    assert result.classification == "pass"
    only_nan = judge_metric(MetricConfig("latency_s"), [math.nan] * 80, normal(17, 1, 0.1, 60))
    assert only_nan.classification == "nodata"


def test_nodata_fails_a_metric_that_must_have_data() -> None:
    result = judge_metric(MetricConfig("latency_s"), [], normal(18, 1, 0.1))
    assert result.classification == "nodata"
    assert result.counted and not result.passed
    assert "canary 0, baseline 200" in result.reason and "fails" in result.reason
    assert result.canary.median is None and result.baseline.median is not None


def test_nodata_is_left_out_of_the_score_when_optional() -> None:
    metrics = [
        MetricConfig("latency_s"),
        MetricConfig("queue_depth", must_have_data=False),
    ]
    samples = {"latency_s": MetricSamples(normal(19, 1, 0.1), normal(20, 1, 0.1)), "queue_depth": ([], [])}
    result = judge_interval(samples, metrics, AnalysisConfig())
    queue = result.metrics[1]
    assert queue.classification == "nodata"
    assert not queue.counted
    assert "left out of the score" in queue.reason
    assert result.score == pytest.approx(100.0) and result.classification == "pass"


def test_too_few_is_left_out_of_the_score_when_optional() -> None:
    metrics = [MetricConfig("latency_s"), MetricConfig("rare", must_have_data=False)]
    samples = {
        "latency_s": (normal(19, 1, 0.1), normal(20, 1, 0.1)),
        "rare": (normal(21, 5, 1, 3), normal(22, 1, 1, 3)),
    }
    result = judge_interval(samples, metrics)
    assert result.metrics[1].classification == "too_few" and not result.metrics[1].counted
    assert result.score == pytest.approx(100.0)


def test_metric_missing_from_samples_counts_as_nodata() -> None:
    result = judge_interval({}, [MetricConfig("latency_s")])
    assert result.metrics[0].classification == "nodata"
    assert result.score == pytest.approx(0.0) and result.classification == "fail"


def test_identical_constant_samples_pass() -> None:
    # All ties: no evidence of any difference (an error rate that stays at zero, say).
    result = judge_metric(MetricConfig("errors"), [0.0] * N, [0.0] * N)
    assert result.classification == "pass"
    assert result.p_value == pytest.approx(1.0) and result.shift == pytest.approx(0.0)


def test_hodges_lehmann_is_the_median_of_pairwise_differences() -> None:
    assert hodges_lehmann([1.0, 2.0, 3.0], [0.0, 10.0]) == pytest.approx(-3.0)  # diffs -9,-8,-7,1,2,3
    assert hodges_lehmann([5.0], [2.0]) == pytest.approx(3.0)


def test_hodges_lehmann_on_large_samples_stays_close() -> None:
    rng = np.random.default_rng(7)
    shift = hodges_lehmann(rng.normal(5.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000))  # 9e6 pairs: thinned
    assert shift == pytest.approx(5.0, abs=0.1)


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="direction"):
        MetricConfig("x", direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerances"):
        MetricConfig("x", tolerance_rel=-0.1)
    with pytest.raises(ValueError, match="confidence"):
        AnalysisConfig(confidence=1.0)
    with pytest.raises(ValueError, match="marginal_score"):
        AnalysisConfig(pass_score=70, marginal_score=75)
    with pytest.raises(ValueError, match="unique"):
        judge_interval({}, [MetricConfig("x"), MetricConfig("x")])


# --- scoring ------------------------------------------------------------------------------------


def test_score_is_the_share_of_passed_metrics() -> None:
    result = score_interval([metric_result("a", True), metric_result("b", True), metric_result("c", False)])
    assert result.score == pytest.approx(66.666667)
    assert result.classification == "fail"
    assert "2 of 3 counted metrics passed" in result.reason


def test_critical_failure_zeroes_the_score() -> None:
    results = [metric_result(f"m{i}", True) for i in range(9)] + [metric_result("errors", False, critical=True)]
    result = score_interval(results)
    assert result.score == pytest.approx(0.0)
    assert result.classification == "fail"
    assert "critical" in result.reason and "errors" in result.reason


def test_critical_failure_from_real_samples_zeroes_the_score() -> None:
    metrics = [MetricConfig("latency_s"), MetricConfig("error_rate", direction="increase", critical=True)]
    samples = {
        "latency_s": (normal(23, 1, 0.1), normal(24, 1, 0.1)),
        "error_rate": (normal(25, 0.3, 0.02), normal(26, 0.01, 0.005)),
    }
    result = judge_interval(samples, metrics)
    assert result.metrics[0].passed
    assert result.score == pytest.approx(0.0) and result.classification == "fail"


def test_group_weights_change_the_total() -> None:
    results = [
        metric_result("latency_s", True, group="latency"),
        metric_result("errors", False, group="errors"),
    ]
    equal = score_interval(results)
    assert equal.score == pytest.approx(50.0)
    assert equal.group_scores == pytest.approx({"latency": 100.0, "errors": 0.0})
    weighted = score_interval(results, AnalysisConfig(group_weights={"latency": 3, "errors": 1}))
    assert weighted.score == pytest.approx(75.0)
    assert "groups: latency 100 (weight 3), errors 0 (weight 1)" in weighted.reason
    unlisted_gets_weight_one = score_interval(results, AnalysisConfig(group_weights={"latency": 3}))
    assert unlisted_gets_weight_one.score == pytest.approx(75.0)


def test_group_with_nothing_counted_is_left_out() -> None:
    results = [
        metric_result("latency_s", True, group="latency"),
        metric_result("queue", False, counted=False, group="queue"),
    ]
    result = score_interval(results, AnalysisConfig(group_weights={"queue": 10}))
    assert result.score == pytest.approx(100.0)
    assert "queue" not in result.group_scores


def test_nothing_counted_scores_zero_and_says_why() -> None:
    result = score_interval([metric_result("queue", False, counted=False)])
    assert result.score == pytest.approx(0.0) and result.classification == "fail"
    assert "no metric counted" in result.reason


@pytest.mark.parametrize(
    ("score", "expected"),
    [(100.0, "pass"), (95.0, "pass"), (94.9, "marginal"), (75.1, "marginal"), (75.0, "fail"), (0.0, "fail")],
)
def test_score_classification_boundaries(score: float, expected: str) -> None:
    assert classify_score(score, AnalysisConfig()) == expected


def test_score_classification_boundaries_through_scoring() -> None:
    # 19 of 20 passed is exactly 95 (pass); 3 of 4 is exactly 75 (at or under marginal: fail).
    nineteen = score_interval([metric_result(f"m{i}", i != 0) for i in range(20)])
    assert nineteen.score == pytest.approx(95.0)
    assert nineteen.classification == "pass"
    three = score_interval([metric_result(f"m{i}", i != 0) for i in range(4)])
    assert three.score == pytest.approx(75.0)
    assert three.classification == "fail"
    assert "at or under the marginal score 75" in three.reason


# --- gating -------------------------------------------------------------------------------------


def test_gate_fails_fast_on_a_low_interval() -> None:
    decision = gate_decision([interval(100), interval(40)], 5, AnalysisConfig())
    assert decision.decision == "fail"
    assert "interval 2 of 5" in decision.reason and "failing fast" in decision.reason
    assert decision.intervals_judged == 2


def test_gate_continues_while_intervals_remain() -> None:
    assert gate_decision([], 3, AnalysisConfig()).decision == "continue"
    decision = gate_decision([interval(100), interval(80)], 3, AnalysisConfig())
    assert decision.decision == "continue"  # a marginal interval before the last one is not fatal
    assert "1 to go" in decision.reason


def test_gate_passes_when_the_last_planned_interval_passes() -> None:
    decision = gate_decision([interval(80), interval(100)], 2, AnalysisConfig())
    assert decision.decision == "pass"


def test_gate_fails_when_the_last_interval_is_marginal() -> None:
    decision = gate_decision([interval(100), interval(80)], 2, AnalysisConfig())
    assert decision.decision == "fail"
    assert "the last was only marginal: it scored 80" in decision.reason
    assert decision.reason.endswith("the final interval must pass (on_marginal: fail)")


def test_gate_asks_a_person_when_the_last_interval_is_marginal_and_the_spec_says_ask() -> None:
    ask = AnalysisConfig(on_marginal="ask")
    decision = gate_decision([interval(100), interval(80)], 2, ask)
    assert decision.decision == "marginal"
    assert decision.reason.endswith("a person decides (on_marginal: ask)")
    # Asking changes only the marginal end: a failing interval still fails fast, a pass still passes.
    assert gate_decision([interval(100), interval(40)], 3, ask).decision == "fail"
    assert gate_decision([interval(80), interval(100)], 2, ask).decision == "pass"
    with pytest.raises(ValueError, match="on_marginal must be 'fail' or 'ask'"):
        AnalysisConfig(on_marginal="maybe")  # type: ignore[arg-type]


def test_gate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="planned"):
        gate_decision([interval(100)] * 3, 2)
    with pytest.raises(ValueError, match="at least 1"):
        gate_decision([], 0)


# --- output -------------------------------------------------------------------------------------


def judged_interval() -> IntervalResult:
    metrics = [
        MetricConfig("latency_p99_s", direction="increase"),
        MetricConfig("error_rate", direction="increase", critical=True),
        MetricConfig("queue_depth", must_have_data=False),
    ]
    samples = {
        "latency_p99_s": (normal(27, 0.6, 0.05), normal(28, 0.3, 0.05)),
        "error_rate": (normal(29, 0.01, 0.002), normal(30, 0.01, 0.002)),
    }
    return judge_interval(samples, metrics, AnalysisConfig())


def test_table_shows_every_metric_and_the_score() -> None:
    result = judged_interval()
    table = format_table(result)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "canary", "baseline", "classification", "why"]
    for metric in result.metrics:
        row = next(line for line in lines if line.startswith(metric.name))
        assert metric.classification in row
    assert "FAIL" in next(line for line in lines if line.startswith("latency_p99_s"))
    assert lines[-1].startswith(f"score {result.score:g} ({result.classification})")
    # fixed width: the "why" column starts at the same offset on every metric row
    offsets = {line.index(metric.reason) for metric in result.metrics for line in lines if metric.reason in line}
    assert len(offsets) == 1


def test_as_dict_survives_json_and_round_trips() -> None:
    result = judged_interval()
    data = json.loads(json.dumps(result.as_dict()))
    assert data["classification"] == result.classification
    assert [m["name"] for m in data["metrics"]] == ["latency_p99_s", "error_rate", "queue_depth"]
    assert data["metrics"][2]["p_value"] is None
    assert IntervalResult.from_dict(data) == result
    decision = gate_decision([IntervalResult.from_dict(data)], 1)
    assert isinstance(decision, GateDecision)
    assert json.loads(json.dumps(decision.as_dict()))["decision"] == decision.decision
