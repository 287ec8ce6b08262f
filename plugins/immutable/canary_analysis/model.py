"""The canary judge's configuration and verdicts: what to judge, and the results that go through XCom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

Classification = Literal["pass", "high", "low", "nodata", "too_few"]
Direction = Literal["increase", "decrease", "either"]
ScoreClassification = Literal["pass", "marginal", "fail"]
Decision = Literal["continue", "pass", "fail", "marginal"]  # marginal: a person decides
OnMarginal = Literal["fail", "ask"]

DIRECTIONS: tuple[Direction, ...] = ("increase", "decrease", "either")
DEFAULT_GROUP = "default"
DEFAULT_CONFIDENCE = 0.98  # a shift is significant when p < 1 - confidence
DEFAULT_MIN_SAMPLES = 50  # per side; Mann-Whitney on fewer samples is too easily fooled
DEFAULT_TOLERANCE_REL = 0.25  # fraction of |baseline median| a significant shift may still move
DEFAULT_TOLERANCE_ABS = 0.0  # in the metric's own unit
MAX_SCORE_PCT = 100.0
DEFAULT_PASS_SCORE_PCT = 95.0
DEFAULT_MARGINAL_SCORE_PCT = 75.0


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
    # A final interval that is only marginal: "fail" the gate, or "ask" a person (decision "marginal").
    on_marginal: OnMarginal = "fail"

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
        if self.on_marginal not in ("fail", "ask"):
            raise ValueError(f"on_marginal must be 'fail' or 'ask', got {self.on_marginal!r}")
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


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
