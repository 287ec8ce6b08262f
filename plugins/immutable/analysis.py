"""Canary analysis: judge canary metrics against a baseline, score them, gate a rollout. No I/O.

In the spirit of Spinnaker Kayenta (per-metric Mann-Whitney classification, weighted group
scores, critical metrics) and Argo Rollouts (analysis runs over intervals, failing fast).
Kept pure so the judgement can be unit-tested and replayed from the samples alone; the Airflow
tasks fetch the samples and pass the results on through XCom as `as_dict()` output.
"""

from __future__ import annotations

from immutable.canary_analysis.gate import gate_decision
from immutable.canary_analysis.metric import hodges_lehmann, judge_metric

# The parts live in immutable.canary_analysis: model (configs and verdicts), metric (one metric),
# scoring (an interval), gate (the rollout decision), table (the log table); import them from here.
from immutable.canary_analysis.model import (
    AnalysisConfig,
    Classification,
    Decision,
    Direction,
    GateDecision,
    IntervalResult,
    MetricConfig,
    MetricResult,
    MetricSamples,
    SampleSummary,
    ScoreClassification,
)
from immutable.canary_analysis.scoring import classify_score, judge_interval, score_interval
from immutable.canary_analysis.table import format_table

__all__ = [
    "AnalysisConfig",
    "Classification",
    "Decision",
    "Direction",
    "GateDecision",
    "IntervalResult",
    "MetricConfig",
    "MetricResult",
    "MetricSamples",
    "SampleSummary",
    "ScoreClassification",
    "classify_score",
    "format_table",
    "gate_decision",
    "hodges_lehmann",
    "judge_interval",
    "judge_metric",
    "score_interval",
]
