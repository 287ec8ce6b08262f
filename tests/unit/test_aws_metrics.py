"""Pure pieces of the platforms' production: names, CloudWatch periods and each metrics client's query rendering."""

from __future__ import annotations

import pytest

from immutable.aws.fleets import group_name, target_group_name
from immutable.aws.hooks.cloudwatch import period_for
from immutable.platforms import metrics_client_for

CHECK = {
    "name": "error_rate",
    "query": 'sum(rate(x{app="$app",color="$color"}[$window]))',
    "cloudwatch": {
        "metric": {
            "namespace": "AWS/ApplicationELB",
            "name": "HTTPCode_Target_5XX_Count",
            "stat": "Sum",
            "dimensions": {"TargetGroup": "$target_group", "LoadBalancer": "$load_balancer"},
        },
        "divide_by": None,
    },
}


@pytest.mark.parametrize(
    ("step_s", "period"), [(0.5, 1), (1, 1), (7, 5), (29, 10), (30, 30), (59, 30), (60, 60), (150, 120)]
)
def test_the_cloudwatch_period_is_one_it_accepts_and_at_most_a_step(step_s: float, period: int) -> None:
    assert period_for(step_s) == period


def test_target_group_names_fit_the_albs_32_characters() -> None:
    assert target_group_name("sample", "baseline") == "sample-baseline"
    long = target_group_name("a-very-long-application-name-indeed", "baseline")
    assert len(long) <= 32 and long.endswith("-baseline")
    assert long != target_group_name("a-very-long-application-name-other", "baseline")
    assert group_name("sample", "eu-west-1", "blue") == "sample-eu-west-1-blue"


def test_a_cloudwatch_query_gets_the_colors_dimensions() -> None:
    backend = {
        "kind": "cloudwatch",
        "dimensions": {"canary": {"target_group": "targetgroup/sample-canary/1", "load_balancer": "app/web/2"}},
    }
    rendered = metrics_client_for(backend).query(CHECK, app="sample", region="eu-west-1", color="canary", window="5s")
    assert isinstance(rendered, dict)
    assert rendered["metric"]["dimensions"] == {
        "TargetGroup": "targetgroup/sample-canary/1",
        "LoadBalancer": "app/web/2",
    }
    assert rendered["divide_by"] is None


def test_prometheus_gets_the_promql_and_a_missing_cloudwatch_query_is_named() -> None:
    assert metrics_client_for({"kind": "prometheus", "url": "http://127.0.0.1:1"}).query(
        CHECK, app="a", color="blue", window="5s"
    ) == ('sum(rate(x{app="a",color="blue"}[5s]))')
    with pytest.raises(ValueError, match="metric 'error_rate' has no `cloudwatch` query"):
        metrics_client_for({"kind": "cloudwatch", "dimensions": {}}).query(CHECK | {"cloudwatch": None}, color="blue")


def test_rate_windows_read_as_seconds() -> None:
    from immutable.triggers import duration_s

    assert [duration_s(w) for w in ("5s", "2m", "1h")] == [5.0, 120.0, 3600.0]


def test_only_periods_wholly_inside_the_window_are_read() -> None:
    """Periods are stamped at their start on epoch multiples; the one still running at the window's
    end, and the one that began before its start, are left out."""
    from immutable.aws.hooks.cloudwatch import whole_periods

    assert whole_periods(100.0, 115.0, 5) == (100, 115)
    assert whole_periods(98.5, 114.9, 5) == (100, 110)
    assert whole_periods(101.0, 104.0, 5) == (105, 100)  # none: the caller reads nothing
    assert whole_periods(30.0, 200.0, 60) == (60, 180)


def test_a_ratio_counts_a_missing_numerator_as_zero_and_skips_an_empty_denominator() -> None:
    from immutable.aws.hooks.cloudwatch import ratio_series

    requests = {100.0: 50.0, 105.0: 0.0, 110.0: 40.0, 115.0: 10.0}
    errors = {110.0: 10.0, 115.0: 10.0}
    assert ratio_series(errors, requests) == [0.0, 0.25, 1.0]
    assert ratio_series(errors, {}) == []
