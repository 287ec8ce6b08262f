"""CloudWatch metric series for the gates, through get_metric_data."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from immutable.aws.hooks import RegionalAwsHook

HIGH_RESOLUTION_PERIODS_S = (1, 5, 10, 30)  # below a minute CloudWatch accepts only these


def period_for(step_s: float) -> int:
    """The CloudWatch period closest to (not above) one gate step."""
    if step_s >= 60:
        return int(step_s // 60) * 60
    return max(p for p in HIGH_RESOLUTION_PERIODS_S if p <= max(1, step_s))


def _stat_query(query_id: str, metric: dict[str, Any], period_s: int) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": metric["namespace"],
                "MetricName": metric["name"],
                "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(metric["dimensions"].items())],
            },
            "Period": period_s,
            "Stat": metric["stat"],
        },
        "ReturnData": True,
    }


def whole_periods(start: float, end: float, period_s: int) -> tuple[int, int]:
    """The span of the periods wholly inside [start, end], on the period's edges (epoch multiples, as
    CloudWatch stamps an ALB's points). A period still running at `end` may have its point or not,
    depending on when it arrived: the gate waited out the delay for the periods that ended by `end`,
    not for that one. Aligned, the span is also what AWS and the emulator cut into the same periods
    (AWS rounds an unaligned start down, the emulator counts its periods from it)."""
    return math.ceil(start / period_s) * period_s, math.floor(end / period_s) * period_s


def ratio_series(numerator: dict[float, float], denominator: dict[float, float]) -> list[float]:
    """numerator / denominator in time order, where the denominator has a non-zero point. A period
    without a numerator point counts as zero: an ALB reports no 5xx count for a period without one."""
    return [numerator.get(stamp, 0.0) / value for stamp, value in sorted(denominator.items()) if value]


class CloudWatchMetricsHook(RegionalAwsHook):
    client_type = "cloudwatch"

    def points(
        self, metrics: dict[str, dict[str, Any]], start: float, end: float, step_s: float
    ) -> dict[str, dict[float, float]]:
        """Each named metric statistic as timestamp (epoch seconds) → value, for the periods wholly
        inside [start, end]. One read for all of them: read one after the other, a point put in
        between would be in one and not the other (a ratio of zero from a period full of errors)."""
        period = period_for(step_s)
        first, last = whole_periods(start, end, period)
        found: dict[str, dict[float, float]] = {query_id: {} for query_id in metrics}
        if last <= first:
            return found
        paginator = self.conn.get_paginator("get_metric_data")
        for page in paginator.paginate(
            MetricDataQueries=[_stat_query(query_id, metric, period) for query_id, metric in metrics.items()],
            StartTime=datetime.fromtimestamp(first, UTC),
            EndTime=datetime.fromtimestamp(last, UTC),
            ScanBy="TimestampAscending",
        ):
            for result in page["MetricDataResults"]:
                found[result["Id"]] |= {
                    t.timestamp(): float(v)
                    for t, v in zip(result["Timestamps"], result["Values"], strict=True)
                    if first <= t.timestamp() <= last - period
                }
        return found

    def series(self, query: dict[str, Any], start: float, end: float, step_s: float) -> list[float]:
        """The query's values in time order; a ratio only where its denominator has a non-zero point."""
        if not query.get("divide_by"):
            values = self.points({"m": query["metric"]}, start, end, step_s)["m"]
            return [values[stamp] for stamp in sorted(values)]
        both = self.points({"n": query["metric"], "d": query["divide_by"]}, start, end, step_s)
        return ratio_series(both["n"], both["d"])
