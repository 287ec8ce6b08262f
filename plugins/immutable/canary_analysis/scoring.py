"""An interval scored: Kayenta's weighted group scores of the metric verdicts, and their classification."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from immutable.canary_analysis.metric import judge_metric
from immutable.canary_analysis.model import (
    MAX_SCORE_PCT,
    AnalysisConfig,
    IntervalResult,
    MetricConfig,
    MetricResult,
    ScoreClassification,
)

DEFAULT_GROUP_WEIGHT = 1.0  # for groups missing from AnalysisConfig.group_weights
SCORE_DECIMALS = 6  # rounding keeps e.g. 94.99999999999999 from failing a score that is really 95


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
