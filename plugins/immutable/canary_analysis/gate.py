"""The rollout's gate: go on, pass or fail after the intervals judged so far."""

from __future__ import annotations

from collections.abc import Sequence

from immutable.canary_analysis.model import AnalysisConfig, Decision, GateDecision, IntervalResult
from immutable.canary_analysis.scoring import classify_score


def gate_decision(
    intervals: Sequence[IntervalResult], planned_intervals: int, config: AnalysisConfig | None = None
) -> GateDecision:
    """Argo-style gating: fail as soon as an interval fails, pass only when the last planned one passes.
    A last one that is only marginal fails too, unless `config.on_marginal` is "ask": then a person decides."""
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
    marginal = (
        f"all {planned_intervals} intervals judged, but the last was only marginal: it scored {last.score:g}, "
        f"above the marginal score {config.marginal_score:g} but under the pass score {config.pass_score:g}"
    )
    if config.on_marginal == "ask":
        return decide("marginal", f"{marginal}; a person decides (on_marginal: ask)")
    return decide("fail", f"{marginal}; the final interval must pass (on_marginal: fail)")
