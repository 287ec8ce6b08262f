"""CloudWatch metric series for the gates, through get_metric_data."""

from __future__ import annotations

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


class CloudWatchMetricsHook(RegionalAwsHook):
    client_type = "cloudwatch"

    def points(self, metric: dict[str, Any], start: float, end: float, step_s: float) -> dict[float, float]:
        """Timestamp (epoch seconds) → value of one metric statistic over [start, end]."""
        period = period_for(step_s)
        found: dict[float, float] = {}
        paginator = self.conn.get_paginator("get_metric_data")
        for page in paginator.paginate(
            MetricDataQueries=[_stat_query("m", metric, period)],
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(end, UTC),
            ScanBy="TimestampAscending",
        ):
            for result in page["MetricDataResults"]:
                found |= {t.timestamp(): float(v) for t, v in zip(result["Timestamps"], result["Values"], strict=True)}
        return found

    def series(self, query: dict[str, Any], start: float, end: float, step_s: float) -> list[float]:
        """The query's values in time order; a ratio only where its denominator has a non-zero point."""
        numerator = self.points(query["metric"], start, end, step_s)
        if not query.get("divide_by"):
            return [numerator[t] for t in sorted(numerator)]
        denominator = self.points(query["divide_by"], start, end, step_s)
        return [numerator.get(t, 0.0) / d for t, d in sorted(denominator.items()) if d]
