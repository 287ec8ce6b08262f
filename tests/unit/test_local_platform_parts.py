"""The local platform's parts that need no engine or registry: names, addresses, links, the metrics
client's one connection pool per trigger run, and the copy table's same-digest rule."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from immutable.config import PlatformConfig, load_platform
from immutable.local.images import LocalImages
from immutable.local.links import LocalLinks
from immutable.local.metrics import LocalMetrics, PrometheusMetricsClient
from immutable.naming import environment_name
from immutable.payloads import Baked, RegionCopy
from immutable.ui.links import LoadBalancerStatsLink, PrometheusGraphLink, RegistryImageLink

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture
def config() -> PlatformConfig:
    return load_platform(ROOT / "tests" / "e2e" / "platform.yaml")


def baked(digest: str = DIGEST) -> Baked:
    return Baked(repository="immutable/sample", digest=digest, tags=["1.0.0", "1.0.0-b1"], labels={})


def copy(region: str, digest: str, pushed: list[str]) -> RegionCopy:
    return RegionCopy(
        region=region,
        repository="immutable/sample",
        digest=digest,
        image_id=digest,
        copied=bool(pushed),
        pushed_blobs=pushed,
        skipped_blobs=[],
        bytes_pushed=0,
    )


def test_an_image_is_found_by_digest_in_the_build_or_the_regions_registry(config: PlatformConfig) -> None:
    images = LocalImages(config)
    assert images.uri(None, "immutable/sample", DIGEST) == f"{config.build_registry}/immutable/sample@{DIGEST}"
    assert images.uri("us-east", "immutable/sample", DIGEST) == f"127.0.0.1:5702/immutable/sample@{DIGEST}"
    assert images.base_name("immutable/base", "2026.11.1") == f"{config.build_registry}/immutable/base:2026.11.1"
    assert images.build_location() == config.build_registry


def test_a_local_copy_never_pends_and_a_table_of_one_digest_everywhere_is_the_log(config: PlatformConfig) -> None:
    images = LocalImages(config)
    copies = [copy("eu-west", DIGEST, ["sha256:1", "sha256:2"]), copy("us-east", DIGEST, [])]
    table = images.describe_copies(baked(), copies).splitlines()
    assert table[0].split() == ["region", "digest", "blobs", "sent"]
    assert table[1].split() == ["eu-west", DIGEST, "2"] and table[2].split() == ["us-east", DIGEST, "0"]
    with pytest.raises(RuntimeError, match="different digests"):
        images.describe_copies(baked(), [*copies, copy("ap-south", OTHER, [])])
    with pytest.raises(RuntimeError, match="never pending"):
        images.copy_waiter(copies[0])


def test_the_gate_links_point_at_the_regions_own_ports(config: PlatformConfig) -> None:
    found = LocalLinks(config).gate_links(
        app="sample",
        repository="immutable/sample",
        region="us-east",
        digest=DIGEST,
        queries=["up"],
        start_at=0.0,
        duration_s=40.0,
    )
    assert found[RegistryImageLink.name] == f"http://127.0.0.1:5702/v2/immutable/sample/manifests/{DIGEST}"
    assert found[LoadBalancerStatsLink.name] == "http://127.0.0.1:8752/stats#app_sample"
    assert found[PrometheusGraphLink.name].startswith("http://127.0.0.1:9790/graph?g0.expr=up")


def test_a_check_renders_to_promql_for_the_backend_the_gate_hands_its_trigger(config: PlatformConfig) -> None:
    metrics = LocalMetrics(config)
    assert metrics.query_field == "query"
    backend = metrics.backend("sample", "us-east")
    assert backend == {"kind": "prometheus", "url": "http://127.0.0.1:9790", "region": "us-east"}
    check = {"name": "errors", "query": 'sum(rate(x{app="$app",color="$color"}[$window]))'}
    query = PrometheusMetricsClient(backend).query(check, app="sample", color="green", window="5s")
    assert query == 'sum(rate(x{app="sample",color="green"}[5s]))'


def test_one_trigger_run_reuses_one_connection_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[httpx.AsyncClient] = []
    queries: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["query"])
        matrix = [{"metric": {}, "values": [[1.0, "0.5"], [2.0, "0.25"]]}]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": matrix}})

    real = httpx.AsyncClient

    def pool(**kwargs: Any) -> httpx.AsyncClient:
        client = real(transport=httpx.MockTransport(answer), **kwargs)
        opened.append(client)
        return client

    monkeypatch.setattr(httpx, "AsyncClient", pool)

    async def gate() -> list[list[float]]:
        async with PrometheusMetricsClient({"kind": "prometheus", "url": "http://127.0.0.1:9"}) as client:
            return [await client.series(q, 0.0, 2.0, 1.0) for q in ("a", "b", "c")]

    assert asyncio.run(gate()) == [[0.5, 0.25]] * 3
    assert queries == ["a", "b", "c"]
    assert len(opened) == 1 and opened[0].is_closed


def test_an_environments_name_depends_only_on_kind_app_and_run() -> None:
    run_id = "manual__2026-01-01"
    name = environment_name("dev", "sample", run_id)
    assert name == environment_name("dev", "sample", run_id)
    assert name.startswith("immutable-dev-sample-") and name != environment_name("staging", "sample", run_id)


def test_the_servers_running_now_are_read_from_haproxys_state_dump() -> None:
    """What a reload writes into the configuration: every server of every app, at its address."""
    from immutable.local.loadbalancer import LoadBalancerError, parse_servers_state

    header = (
        "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
        "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
        "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
        "srv_check_addr srv_agent_addr srv_agent_port"
    )
    rows = [
        "3 app_sample 1 blue-1 172.17.0.5 2 0 256 256 12 15 3 2 6 0 0 0 - 8000 - 0 0 - - 0",
        "3 app_sample 2 green-1 172.17.0.6 2 0 0 0 3 15 3 2 6 0 0 0 - 8000 - 0 0 - - 0",
        "4 app_other 1 blue-1 172.17.0.7 2 0 256 256 9 15 3 2 6 0 0 0 - 9000 - 0 0 - - 0",
        "5 admin_backend 1 x 127.0.0.1 2 0 1 1 9 15 3 2 6 0 0 0 - 1 - 0 0 - - 0",
    ]
    assert parse_servers_state("\n".join(["1", header, *rows])) == {
        "sample": [("blue-1", "172.17.0.5", 8000), ("green-1", "172.17.0.6", 8000)],
        "other": [("blue-1", "172.17.0.7", 9000)],
    }
    with pytest.raises(LoadBalancerError, match="unexpected"):
        parse_servers_state("Unknown command")


def test_a_reload_writes_the_running_servers_into_the_configuration(config: PlatformConfig, tmp_path: Path) -> None:
    from immutable.local.haproxy_config import render_config

    region = config.regions[0]
    text = render_config(region, {"sample": "/healthz"}, tmp_path, {"sample": [("blue-1", "172.17.0.5", 8000)]})
    backend = text.split("\nbackend app_sample", 1)[1].split("\n\n", 1)[0]
    assert "    server blue-1 172.17.0.5:8000 weight 0 check inter 1000 rise 1 fall 2" in backend
    assert f"server-state-file {tmp_path / 'haproxy' / region.name / 'servers.state'}" in text
    assert "load-server-state-from-file global" in text and "expose-fd listeners" in text
