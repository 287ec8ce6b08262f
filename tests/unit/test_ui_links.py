"""The gates' extra links: URLs built from what a gate knows (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from immutable.ui.links import (
    GRAPH_MARGIN_S,
    LoadBalancerStatsLink,
    PrometheusGraphLink,
    RegistryImageLink,
    gate_window,
    haproxy_stats_url,
    prometheus_graph_url,
    registry_manifest_url,
)

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
START = datetime(2026, 11, 26, 13, 50, 0, tzinfo=UTC).timestamp()


def test_the_graph_shows_every_expression_over_the_window() -> None:
    exprs = ['sum(rate(requests_total{app="sample",color="canary",code=~"5.."}[5s]))', "up"]
    url = prometheus_graph_url("http://127.0.0.1:9790/", exprs, START, START + 100.5)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:9790", "/graph")
    query = parse_qs(parts.query)
    assert query["g0.expr"] == [exprs[0]]  # quoted and back, unchanged
    assert query["g1.expr"] == [exprs[1]]
    for n in (0, 1):
        assert query[f"g{n}.tab"] == ["0"]  # the graph tab
        assert query[f"g{n}.range_input"] == ["101s"]  # rounded up: the window is never cut short
        assert query[f"g{n}.end_input"] == ["2026-11-26 13:51:41"]  # UTC, as Prometheus reads it
    assert " " not in url and '"' not in url


def test_a_graph_needs_a_window_and_an_expression() -> None:
    with pytest.raises(ValueError, match="ends"):
        prometheus_graph_url("http://127.0.0.1:9790", ["up"], START, START)
    with pytest.raises(ValueError, match="expression"):
        prometheus_graph_url("http://127.0.0.1:9790", [], START, START + 10)


def test_the_window_has_a_margin_on_both_sides() -> None:
    assert gate_window(START, 40.0) == (START - GRAPH_MARGIN_S, START + 40.0 + GRAPH_MARGIN_S)


def test_the_stats_page_opens_at_the_apps_backend() -> None:
    assert haproxy_stats_url(8751, "app_sample") == "http://127.0.0.1:8751/stats#app_sample"


def test_the_image_is_its_manifest_by_digest() -> None:
    url = registry_manifest_url("127.0.0.1:5701", "immutable/sample", DIGEST)
    assert url == f"http://127.0.0.1:5701/v2/immutable/sample/manifests/{DIGEST}"
    with pytest.raises(ValueError, match="digest"):
        registry_manifest_url("127.0.0.1:5701", "immutable/sample", "1.2.0")


def test_the_gate_links_use_the_regions_own_ports() -> None:
    from immutable.config import load_platform
    from immutable.platforms import platform_for

    platform = load_platform(ROOT / "tests" / "e2e" / "platform.yaml")
    found = platform_for(platform).links.gate_links(
        app="sample",
        repository="immutable/sample",
        region="us-east",
        digest=DIGEST,
        queries=["up"],
        start_at=START,
        duration_s=40.0,
    )
    assert found[RegistryImageLink.name] == f"http://127.0.0.1:5702/v2/immutable/sample/manifests/{DIGEST}"
    assert found[LoadBalancerStatsLink.name] == "http://127.0.0.1:8752/stats#app_sample"
    graph = parse_qs(urlsplit(found[PrometheusGraphLink.name]).query)
    assert found[PrometheusGraphLink.name].startswith("http://127.0.0.1:9790/graph?")
    assert graph["g0.range_input"] == [f"{40 + 2 * int(GRAPH_MARGIN_S)}s"]


def test_each_link_has_its_own_name_and_xcom_key() -> None:
    from immutable.operators.gates import CanaryGateOperator, PostFlipGateOperator

    links = [PrometheusGraphLink(), LoadBalancerStatsLink(), RegistryImageLink()]
    assert len({link.name for link in links}) == len({link.xcom_key for link in links}) == 3
    for operator in (CanaryGateOperator, PostFlipGateOperator):
        assert [type(link) for link in operator.operator_extra_links] == [type(link) for link in links]


def test_on_aws_the_gates_link_to_the_aws_console() -> None:
    import yaml

    from immutable.config import PlatformConfig
    from immutable.platforms import platform_for

    document = yaml.safe_load((Path(__file__).resolve().parents[2] / "include" / "aws" / "platform.yaml").read_text())
    platform = PlatformConfig.model_validate(document)
    found = platform_for(platform).links.gate_links(
        app="sample",
        repository="apps/sample",
        region="us-east-1",
        digest="ami-0123456789abcdef0",
        queries=[],
        start_at=0.0,
        duration_s=60.0,
    )
    assert found[PrometheusGraphLink.name].startswith("https://us-east-1.console.aws.amazon.com/cloudwatch/")
    assert found[LoadBalancerStatsLink.name].endswith(
        "#LoadBalancer:loadBalancerArn=arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/60dc6c495c0c9188"
    )
    # The release's AMI id is the build region's.
    assert found[RegistryImageLink.name] == (
        "https://eu-west-1.console.aws.amazon.com/ec2/home?region=eu-west-1#ImageDetails:imageId=ami-0123456789abcdef0"
    )
