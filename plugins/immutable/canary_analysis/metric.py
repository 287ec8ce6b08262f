"""One metric judged: Mann-Whitney says whether the canary moved, Hodges-Lehmann by how much."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import mannwhitneyu

from immutable.canary_analysis.model import (
    AnalysisConfig,
    Classification,
    MetricConfig,
    MetricResult,
    SampleSummary,
)
from immutable.canary_analysis.table import _num, _num_p

# Hodges-Lehmann needs every canary-baseline pair; above this many pairs both samples are thinned
# to evenly spaced order statistics first, so memory stays bounded (about 8 bytes per pair).
MAX_PAIRWISE_DIFFERENCES = 1_000_000


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
