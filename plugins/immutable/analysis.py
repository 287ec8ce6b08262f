"""Canary analysis: judge canary metrics against a baseline, score them, gate a rollout. No I/O.

In the spirit of Spinnaker Kayenta (per-metric Mann-Whitney classification, weighted group
scores, critical metrics) and Argo Rollouts (analysis runs over intervals, failing fast).
Kept pure so the judgement can be unit-tested and replayed from the samples alone; the Airflow
tasks fetch the samples and pass the results on through XCom as `as_dict()` output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

import numpy as np
from scipy.stats import mannwhitneyu

Classification = Literal["pass", "high", "low", "nodata", "too_few"]
Direction = Literal["increase", "decrease", "either"]
ScoreClassification = Literal["pass", "marginal", "fail"]
Decision = Literal["continue", "pass", "fail"]

DIRECTIONS: tuple[Direction, ...] = ("increase", "decrease", "either")
DEFAULT_GROUP = "default"
DEFAULT_GROUP_WEIGHT = 1.0  # for groups missing from AnalysisConfig.group_weights
DEFAULT_CONFIDENCE = 0.98  # a shift is significant when p < 1 - confidence
DEFAULT_MIN_SAMPLES = 50  # per side; Mann-Whitney on fewer samples is too easily fooled
DEFAULT_TOLERANCE_REL = 0.25  # fraction of |baseline median| a significant shift may still move
DEFAULT_TOLERANCE_ABS = 0.0  # in the metric's own unit
MAX_SCORE_PCT = 100.0
DEFAULT_PASS_SCORE_PCT = 95.0
DEFAULT_MARGINAL_SCORE_PCT = 75.0
SCORE_DECIMALS = 6  # rounding keeps e.g. 94.99999999999999 from failing a score that is really 95
# Hodges-Lehmann needs every canary-baseline pair; above this many pairs both samples are thinned
# to evenly spaced order statistics first, so memory stays bounded (about 8 bytes per pair).
MAX_PAIRWISE_DIFFERENCES = 1_000_000
MIN_PLAIN_NUMBER, MAX_PLAIN_NUMBER = 1e-4, 1e4  # reasons and tables show other magnitudes as 1.23e-05


class MetricSamples(NamedTuple):
    """The samples of one metric for one interval, canary first (a plain 2-tuple works too)."""

    canary: Sequence[float]
    baseline: Sequence[float]


@dataclass(frozen=True)
class MetricConfig:
    """How to judge one metric; the defaults suit a latency or error-rate metric."""

    name: str
    direction: Direction = "either"
    group: str = DEFAULT_GROUP
    critical: bool = False  # a failure zeroes the whole interval's score
    must_have_data: bool = True  # missing or too few samples fail the metric instead of skipping it
    tolerance_rel: float = DEFAULT_TOLERANCE_REL
    tolerance_abs: float = DEFAULT_TOLERANCE_ABS

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a metric needs a name")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction must be one of {DIRECTIONS}, not {self.direction!r}")
        if not (self.tolerance_rel >= 0 and self.tolerance_abs >= 0):
            raise ValueError(
                f"metric {self.name!r}: tolerances must be >= 0, got tolerance_rel={self.tolerance_rel}, "
                f"tolerance_abs={self.tolerance_abs}"
            )


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds shared by all metrics of an analysis."""

    confidence: float = DEFAULT_CONFIDENCE
    min_samples: int = DEFAULT_MIN_SAMPLES
    pass_score: float = DEFAULT_PASS_SCORE_PCT
    marginal_score: float = DEFAULT_MARGINAL_SCORE_PCT
    group_weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be strictly between 0 and 1, got {self.confidence}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {self.min_samples}")
        if not 0.0 <= self.marginal_score <= self.pass_score <= MAX_SCORE_PCT:
            raise ValueError(
                f"need 0 <= marginal_score <= pass_score <= {MAX_SCORE_PCT:g}, "
                f"got marginal_score={self.marginal_score}, pass_score={self.pass_score}"
            )
        negative = {group: weight for group, weight in self.group_weights.items() if not weight >= 0}
        if negative:
            raise ValueError(f"group weights must be >= 0, got {negative}")

    @property
    def alpha(self) -> float:
        """The significance level: a p-value under it is a real difference."""
        return 1.0 - self.confidence


@dataclass(frozen=True)
class SampleSummary:
    """What the table and the reason show of one side's samples (after dropping NaN)."""

    count: int
    median: float | None
    mean: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "median": self.median, "mean": self.mean}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleSummary:
        return cls(count=int(data["count"]), median=_opt_float(data["median"]), mean=_opt_float(data["mean"]))


@dataclass(frozen=True)
class MetricResult:
    """The verdict on one metric. `passed` means something only when `counted` is true."""

    name: str
    classification: Classification
    passed: bool  # after direction: a "low" on an "increase" metric passes
    counted: bool  # whether it counts in the score (missing data with must_have_data=False does not)
    canary: SampleSummary
    baseline: SampleSummary
    p_value: float | None
    shift: float | None  # Hodges-Lehmann estimate of canary - baseline
    tolerance: float
    reason: str
    direction: Direction = "either"
    group: str = DEFAULT_GROUP
    critical: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classification": self.classification,
            "passed": self.passed,
            "counted": self.counted,
            "canary": self.canary.as_dict(),
            "baseline": self.baseline.as_dict(),
            "p_value": self.p_value,
            "shift": self.shift,
            "tolerance": self.tolerance,
            "reason": self.reason,
            "direction": self.direction,
            "group": self.group,
            "critical": self.critical,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricResult:
        return cls(
            name=str(data["name"]),
            classification=cast(Classification, data["classification"]),
            passed=bool(data["passed"]),
            counted=bool(data["counted"]),
            canary=SampleSummary.from_dict(data["canary"]),
            baseline=SampleSummary.from_dict(data["baseline"]),
            p_value=_opt_float(data["p_value"]),
            shift=_opt_float(data["shift"]),
            tolerance=float(data["tolerance"]),
            reason=str(data["reason"]),
            direction=cast(Direction, data.get("direction", "either")),
            group=str(data.get("group", DEFAULT_GROUP)),
            critical=bool(data.get("critical", False)),
        )


@dataclass(frozen=True)
class IntervalResult:
    """The verdict on one analysis interval: every metric, the group scores and the total."""

    metrics: tuple[MetricResult, ...]
    score: float  # percent, 0 to 100
    classification: ScoreClassification
    reason: str
    group_scores: Mapping[str, float] = field(default_factory=dict)  # percent, counted groups only

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": [metric.as_dict() for metric in self.metrics],
            "score": self.score,
            "classification": self.classification,
            "reason": self.reason,
            "group_scores": dict(self.group_scores),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntervalResult:
        """Rebuild a result that went through XCom, e.g. to gate on the intervals judged so far."""
        return cls(
            metrics=tuple(MetricResult.from_dict(metric) for metric in data["metrics"]),
            score=float(data["score"]),
            classification=cast(ScoreClassification, data["classification"]),
            reason=str(data["reason"]),
            group_scores={str(group): float(score) for group, score in data.get("group_scores", {}).items()},
        )


@dataclass(frozen=True)
class GateDecision:
    """Whether the rollout goes on after the intervals judged so far."""

    decision: Decision
    reason: str
    intervals_judged: int
    planned_intervals: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "intervals_judged": self.intervals_judged,
            "planned_intervals": self.planned_intervals,
        }


def judge_metric(
    metric: MetricConfig,
    canary: Iterable[float],
    baseline: Iterable[float],
    config: AnalysisConfig | None = None,
) -> MetricResult:
    """Classify one metric: Mann-Whitney says whether it moved, Hodges-Lehmann by how much."""
    config = config or AnalysisConfig()
    canary_values = _clean(canary)
    baseline_values = _clean(baseline)
    canary_summary = _summarise(canary_values)
    baseline_summary = _summarise(baseline_values)
    tolerance = metric.tolerance_abs
    if baseline_summary.median is not None:
        tolerance = max(metric.tolerance_abs, metric.tolerance_rel * abs(baseline_summary.median))

    def result(
        classification: Classification,
        passed: bool,
        counted: bool,
        reason: str,
        p_value: float | None = None,
        shift: float | None = None,
    ) -> MetricResult:
        return MetricResult(
            name=metric.name,
            classification=classification,
            passed=passed,
            counted=counted,
            canary=canary_summary,
            baseline=baseline_summary,
            p_value=p_value,
            shift=shift,
            tolerance=tolerance,
            reason=reason,
            direction=metric.direction,
            group=metric.group,
            critical=metric.critical,
        )

    counts = f"canary {canary_values.size}, baseline {baseline_values.size}"
    if canary_values.size == 0 or baseline_values.size == 0:
        return result("nodata", False, metric.must_have_data, f"no data: {counts}; {_missing_data_outcome(metric)}")
    if canary_values.size < config.min_samples or baseline_values.size < config.min_samples:
        return result(
            "too_few",
            False,
            metric.must_have_data,
            f"too few samples: {counts}, need {config.min_samples}; {_missing_data_outcome(metric)}",
        )

    p_value = float(mannwhitneyu(canary_values, baseline_values, alternative="two-sided").pvalue)
    if math.isnan(p_value):  # scipy's answer when it cannot tell the samples apart at all
        p_value = 1.0
    shift = hodges_lehmann(canary_values, baseline_values)
    assert canary_summary.median is not None and baseline_summary.median is not None
    head = (
        f"canary median {_num(canary_summary.median)} vs baseline {_num(baseline_summary.median)} "
        f"(shift {_num(shift, signed=True)})"
    )
    if p_value >= config.alpha:
        return result(
            "pass",
            True,
            True,
            f"{head}, p={_num_p(p_value)} >= {_num_p(config.alpha)}: no significant difference",
            p_value,
            shift,
        )
    significant = f"{head}, p={_num_p(p_value)} < {_num_p(config.alpha)}"
    if abs(shift) <= tolerance:
        return result(
            "pass",
            True,
            True,
            f"{significant}: significant, but |shift| {_num(abs(shift))} is within tolerance {_num(tolerance)}",
            p_value,
            shift,
        )
    if shift > 0:
        classification: Classification = "high"
        harmless = metric.direction == "decrease"
        why = f"{significant}: significantly higher"
    else:
        classification = "low"
        harmless = metric.direction == "increase"
        why = f"{significant}: significantly lower"
    if harmless:
        why += f", which passes: only {'a fall' if metric.direction == 'decrease' else 'a rise'} is bad for this metric"
    return result(classification, harmless, True, why, p_value, shift)


def judge_interval(
    samples: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    metrics: Sequence[MetricConfig],
    config: AnalysisConfig | None = None,
) -> IntervalResult:
    """Judge every configured metric and score the interval.

    `samples` maps a metric name to `(canary, baseline)` (a `MetricSamples` reads better).
    A configured metric missing from `samples` is judged as having no data; samples of
    metrics that are not configured are ignored.
    """
    config = config or AnalysisConfig()
    names = [metric.name for metric in metrics]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"metric names must be unique, repeated: {', '.join(duplicates)}")
    results = []
    for metric in metrics:
        canary, baseline = samples.get(metric.name, ((), ()))
        results.append(judge_metric(metric, canary, baseline, config))
    return score_interval(results, config)


def score_interval(results: Sequence[MetricResult], config: AnalysisConfig | None = None) -> IntervalResult:
    """Kayenta's scoring: per group the percentage of counted metrics that passed, then a weighted average."""
    config = config or AnalysisConfig()
    metrics = tuple(results)
    counted = [metric for metric in metrics if metric.counted]
    if not counted:
        why = f"all {len(metrics)} lacked data and were optional" if metrics else "no metrics were configured"
        return IntervalResult(metrics, 0.0, "fail", f"no metric counted ({why}), so the score is 0")

    groups: dict[str, list[MetricResult]] = {}
    for metric in counted:
        groups.setdefault(metric.group, []).append(metric)
    group_scores = {
        group: round(MAX_SCORE_PCT * sum(m.passed for m in members) / len(members), SCORE_DECIMALS)
        for group, members in groups.items()
    }
    weights = {group: float(config.group_weights.get(group, DEFAULT_GROUP_WEIGHT)) for group in group_scores}
    tally = f"{sum(metric.passed for metric in counted)} of {len(counted)} counted metrics passed"
    if len(group_scores) > 1:
        shown = ", ".join(f"{group} {score:g} (weight {weights[group]:g})" for group, score in group_scores.items())
        tally += f"; groups: {shown}"

    failed_critical = [metric.name for metric in counted if metric.critical and not metric.passed]
    if failed_critical:
        return IntervalResult(
            metrics,
            0.0,
            "fail",
            f"critical metric(s) failed: {', '.join(failed_critical)}, so the score is 0 ({tally})",
            group_scores,
        )
    total_weight = sum(weights.values())
    if total_weight <= 0:
        return IntervalResult(
            metrics, 0.0, "fail", f"every counted group has weight 0, so the score is 0 ({tally})", group_scores
        )
    score = round(sum(group_scores[group] * weights[group] for group in group_scores) / total_weight, SCORE_DECIMALS)
    classification = classify_score(score, config)
    if classification == "pass":
        verdict = f"at or above the pass score {config.pass_score:g}"
    elif classification == "marginal":
        verdict = f"above the marginal score {config.marginal_score:g} but under the pass score {config.pass_score:g}"
    else:
        verdict = f"at or under the marginal score {config.marginal_score:g}"
    return IntervalResult(metrics, score, classification, f"{tally}; {verdict}", group_scores)


def classify_score(score: float, config: AnalysisConfig | None = None) -> ScoreClassification:
    """Pass at or above pass_score, fail at or under marginal_score, marginal in between."""
    config = config or AnalysisConfig()
    if score >= config.pass_score:
        return "pass"
    if score > config.marginal_score:
        return "marginal"
    return "fail"


def gate_decision(
    intervals: Sequence[IntervalResult], planned_intervals: int, config: AnalysisConfig | None = None
) -> GateDecision:
    """Argo-style gating: fail as soon as an interval fails, pass only when the last planned one passes."""
    config = config or AnalysisConfig()
    if planned_intervals < 1:
        raise ValueError(f"planned_intervals must be at least 1, got {planned_intervals}")
    judged = len(intervals)
    if judged > planned_intervals:
        raise ValueError(f"{judged} intervals judged but only {planned_intervals} planned")

    def decide(decision: Decision, reason: str) -> GateDecision:
        return GateDecision(decision, reason, judged, planned_intervals)

    for number, interval in enumerate(intervals, start=1):
        if classify_score(interval.score, config) == "fail":
            return decide(
                "fail",
                f"interval {number} of {planned_intervals} scored {interval.score:g}, at or under the marginal "
                f"score {config.marginal_score:g}: failing fast ({interval.reason})",
            )
    if judged == 0:
        return decide("continue", f"no interval judged yet, {planned_intervals} planned")
    last = intervals[-1]
    last_classification = classify_score(last.score, config)
    if judged < planned_intervals:
        return decide(
            "continue",
            f"interval {judged} of {planned_intervals} scored {last.score:g} ({last_classification}); "
            f"{planned_intervals - judged} to go",
        )
    if last_classification == "pass":
        return decide(
            "pass",
            f"all {planned_intervals} intervals judged; the last scored {last.score:g}, "
            f"at or above the pass score {config.pass_score:g}",
        )
    return decide(
        "fail",
        f"all {planned_intervals} intervals judged, but the last was only marginal: it scored {last.score:g}, "
        f"under the pass score {config.pass_score:g}; the final interval must pass",
    )


def format_table(result: IntervalResult) -> str:
    """A fixed-width table for a task log: one row per metric, then the score."""
    header = ("metric", "canary", "baseline", "classification", "why")
    rows = [
        (
            metric.name,
            _num(metric.canary.median) if metric.canary.median is not None else "-",
            _num(metric.baseline.median) if metric.baseline.median is not None else "-",
            metric.classification if metric.passed or not metric.counted else f"{metric.classification} FAIL",
            metric.reason,
        )
        for metric in result.metrics
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if column in (1, 2) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        return "  ".join([*cells, row[-1]]).rstrip()

    rule = "  ".join("-" * width for width in [*widths, len(header[-1])])
    lines = [line(header), rule, *(line(row) for row in rows), rule]
    lines.append(f"score {result.score:g} ({result.classification}): {result.reason}")
    return "\n".join(lines)


def hodges_lehmann(canary: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> float:
    """The median of all pairwise differences canary_i - baseline_j: a shift estimate robust to outliers."""
    canary_values = np.sort(np.asarray(canary, dtype=float))
    baseline_values = np.sort(np.asarray(baseline, dtype=float))
    if canary_values.size == 0 or baseline_values.size == 0:
        raise ValueError("the Hodges-Lehmann estimate needs samples on both sides")
    pairs = canary_values.size * baseline_values.size
    if pairs > MAX_PAIRWISE_DIFFERENCES:
        scale = math.sqrt(MAX_PAIRWISE_DIFFERENCES / pairs)
        canary_values = _thin(canary_values, max(1, int(canary_values.size * scale)))
        baseline_values = _thin(baseline_values, max(1, int(baseline_values.size * scale)))
    return float(np.median(np.subtract.outer(canary_values, baseline_values)))


def _thin(sorted_values: np.ndarray, size: int) -> np.ndarray:
    """Evenly spaced order statistics: keeps the shape of the distribution, not every sample."""
    return sorted_values[np.round(np.linspace(0, sorted_values.size - 1, size)).astype(int)]


def _clean(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float).ravel()
    return array[~np.isnan(array)]


def _summarise(values: np.ndarray) -> SampleSummary:
    if values.size == 0:
        return SampleSummary(0, None, None)
    return SampleSummary(int(values.size), float(np.median(values)), float(np.mean(values)))


def _missing_data_outcome(metric: MetricConfig) -> str:
    if metric.must_have_data:
        return "the metric must have data, so it fails"
    return "left out of the score (must_have_data is off)"


def _num(value: float, signed: bool = False) -> str:
    """At least two decimals and two significant digits; scientific notation for tiny or huge values."""
    sign = "+" if signed else ""
    magnitude = abs(value)
    if value == 0 or MIN_PLAIN_NUMBER <= magnitude < MAX_PLAIN_NUMBER:
        decimals = 2 if value == 0 else max(2, 1 - math.floor(math.log10(magnitude)))
        return f"{value:{sign}.{decimals}f}"
    return f"{value:{sign}.3g}"


def _num_p(value: float) -> str:
    return f"{value:.4g}"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
